"""Where model weights come from: a local path, the local cache, or (``modomo models pull``)
the Ultralytics asset releases and the Hugging Face hub.

Workers never download: they load from a local path or from the local cache
(``MODOMO_MODEL_DIR``), so an offline GPU node (``HF_HUB_OFFLINE=1``) behaves exactly like an
online one, and a missing weight fails at once with the command that fetches it. Model
configs (random weights, e.g. ``yolo11n.yaml``) are refused: random weights never run
outside tests, which build their own checkpoints and pass them as local paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MissingWeightsError", "ROLES", "Weights", "pull", "resolve"]

ROLES: dict[str, str] = {
    "detector": "ultralytics",  # or the Hugging Face hub for open-vocabulary backends
    "segmenter": "huggingface",
    "depth": "huggingface",
    "depth_fallback": "huggingface",
    "clip": "huggingface",
}
"""Model roles and where their weights come from."""

HF_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "README.md"]
"""What a pull fetches of a hub repository: configs, weights, tokenizers and the model card
(its licence, :mod:`modomo.models.licences`)."""


class MissingWeightsError(RuntimeError):
    """A model's weights are not available locally; the message says how to fetch them."""


@dataclass(frozen=True)
class Weights:
    """Resolved weights of one model.

    Attributes:
        role: ``detector``, ``segmenter``, ``depth``, ``depth_fallback`` or ``clip``.
        name: what the settings name (weight file name, hub id or folder).
        path: the local file (ultralytics) or folder (transformers) to load.
        version: ``ultralytics-X.Y.Z``, the hub snapshot's commit, or ``local``.
    """

    role: str
    name: str
    path: Path
    version: str

    @property
    def label(self) -> str:
        """``name@version``, as recorded with every result the model produced."""
        return f"{self.name}@{self.version}"


def _missing(role: str, name: str, cache: Path, why: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{role} weights {name!r} are not available: {why}. Fetch them with "
        f"`modomo models pull {role}` (into {cache}; on an offline node, run it where there is "
        "internet and copy MODOMO_MODEL_DIR over), or set the weights setting to a local path"
    )


def _source(role: str, name: str) -> str:
    """Where ``name`` comes from: a detector's ``.pt`` file from ultralytics, its hub ids and
    folders (Grounding DINO) from the Hugging Face hub; other roles as :data:`ROLES` says."""
    if role == "detector" and not name.endswith(".pt"):
        return "huggingface"
    return ROLES[role]


def _ultralytics_version() -> str:
    from importlib.metadata import version

    return f"ultralytics-{version('ultralytics')}"


def resolve(role: str, name: str, cache: Path) -> Weights:
    """Find a model's weights locally.

    Args:
        role: one of :data:`ROLES`.
        name: a local path, an ultralytics weight name (``yolo11n.pt``) or a hub id.
        cache: the local weight cache (``MODOMO_MODEL_DIR``).

    Raises:
        MissingWeightsError: neither a local path nor in the cache.
        ValueError: ``name`` is a model config (random weights) or ``role`` is unknown.
    """
    if role not in ROLES:
        raise ValueError(f"unknown model role {role!r}; expected one of {sorted(ROLES)}")
    if name.endswith((".yaml", ".yml")):
        raise ValueError(
            f"{role} weights {name!r} are a model config: random weights are not run; "
            "name trained weights (e.g. yolo11n.pt)"
        )
    local = Path(name).expanduser()
    if _source(role, name) == "ultralytics":
        for candidate in (local, cache / "ultralytics" / name):
            if candidate.is_file():
                return Weights(role, name, candidate.resolve(), _ultralytics_version())
        raise _missing(role, name, cache, f"no file {local} nor {cache / 'ultralytics' / name}")
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise _missing(role, name, cache, f"{local} has no config.json")
        return Weights(role, name, local.resolve(), "local")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(
            snapshot_download(
                name,
                cache_dir=cache / "huggingface",
                allow_patterns=HF_PATTERNS,
                local_files_only=True,
            )
        )
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        # not huggingface_hub's own message: its hint to pass local_files_only=False
        # contradicts what a worker does (it never downloads)
        raise _missing(
            role, name, cache, f"no snapshot of it in the local cache {cache / 'huggingface'}"
        ) from None
    return Weights(role, name, folder, folder.name[:12])


def pull(role: str, name: str, cache: Path) -> Weights:
    """Download a model's weights into the local cache (no-op when already there).

    Raises:
        RuntimeError: the download failed (no network, ``HF_HUB_OFFLINE`` set, unknown id).
    """
    try:
        return resolve(role, name, cache)
    except MissingWeightsError:
        pass
    if _source(role, name) == "ultralytics":
        from ultralytics.utils.downloads import attempt_download_asset

        target = cache / "ultralytics" / Path(name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            attempt_download_asset(str(target))
        except Exception as exc:
            raise RuntimeError(f"could not download {name}: {exc}") from exc
    else:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(name, cache_dir=cache / "huggingface", allow_patterns=HF_PATTERNS)
        except Exception as exc:
            raise RuntimeError(f"could not download {name}: {type(exc).__name__}: {exc}") from exc
    return resolve(role, name, cache)
