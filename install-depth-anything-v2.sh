#!/usr/bin/env bash
# Fetch the depth models (Depth Anything V2 and its ZoeDepth fallback) into Modomo's model
# cache and check that both load. Run `install-depth-anything-v2.sh --help` for the details.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: install-depth-anything-v2.sh [--docker] [--timeout SECONDS]

Downloads the depth weights, MODOMO_DEPTH_WEIGHTS (default
depth-anything/Depth-Anything-V2-Small-hf) and the fallback MODOMO_DEPTH_FALLBACK_WEIGHTS
(default Intel/zoedepth-nyu-kitti; set it empty for none), into the model cache
MODOMO_MODEL_DIR with `modomo models pull depth depth_fallback`, then loads both on the CPU
to check them. Weights already in the cache are not downloaded again, so it is safe to
re-run.

Options:
  --docker          run it inside the celery-ai-worker image of docker-compose.celery.yml
                    (docker compose run), which fills the modomo-models volume
  --timeout SECONDS give up on the download after this long (default 1800)
  -h, --help        show this help

Modomo is run with `uv run` in this repository when uv and its .venv are there, else as
`modomo` from PATH. The download needs https://huggingface.co (or HF_ENDPOINT); for an
offline GPU node, run this on a machine with internet and copy MODOMO_MODEL_DIR over
(workers never download).

Exit status: 0 ready, 1 failed, 2 bad usage, 3 no network.
EOF
}

die() {
  echo "error: $*" >&2
  exit 1
}

offline() {
  cat >&2 <<EOF
error: cannot download the depth models: $1
  This step needs the internet (${HF_ENDPOINT:-https://huggingface.co}). Run this script on a machine
  with internet access, then copy the model cache (MODOMO_MODEL_DIR, here ${cache:-unknown})
  to the offline machine, keeping its layout, and point MODOMO_MODEL_DIR at the copy.
EOF
  exit 3
}

docker_mode=0
timeout_s=1800
while (($#)); do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --docker) docker_mode=1 ;;
    --timeout)
      [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || {
        echo "error: --timeout needs a number of seconds" >&2
        exit 2
      }
      timeout_s=$2
      shift
      ;;
    *)
      echo "error: unknown argument: $1 (see --help)" >&2
      exit 2
      ;;
  esac
  shift
done

here=""
if [[ -f ${BASH_SOURCE[0]:-} ]]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fi

# --- in Docker: the same script, fed to bash inside the AI worker's image ----------------
if ((docker_mode)); then
  [[ -n $here ]] || die "--docker needs the script as a file in the repository"
  if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
  else
    die "neither \`docker compose\` nor docker-compose is installed"
  fi
  # --no-deps: no Redis or database needed; the workers' offline switches are lifted for
  # this one container, which writes into the modomo-models volume.
  exec "${compose[@]}" -f "$here/docker-compose.celery.yml" run --rm --no-deps -T \
    -e HF_HUB_OFFLINE=0 -e YOLO_OFFLINE=0 \
    celery-ai-worker bash -s -- --timeout "$timeout_s" <"${BASH_SOURCE[0]}"
fi

# --- locally: how to run modomo and its Python -------------------------------------------
if [[ -n $here && -d $here/.venv ]] && command -v uv >/dev/null 2>&1; then
  modomo=(uv run --no-sync --project "$here" modomo)
  python=(uv run --no-sync --project "$here" python)
elif command -v modomo >/dev/null 2>&1; then
  modomo=("$(command -v modomo)")
  # the interpreter of modomo's console script, so the check imports the same installation
  shebang="$(sed -n '1s/^#![[:space:]]*//p' "${modomo[0]}")"
  if [[ $shebang == *python* ]]; then
    read -r -a python <<<"$shebang"
  else
    python=(python3)
  fi
else
  die "modomo not found: run \`uv sync --extra ai\` in the repository, install modomo[ai], or use --docker"
fi

# Which of the two are configured and not in the cache yet (prints the cache first).
state="$("${python[@]}" -c '
from modomo.config import get_settings
from modomo.models import MissingWeightsError, resolve

settings = get_settings()
missing = []
for role in ("depth", "depth_fallback"):
    name = getattr(settings, f"{role}_weights")
    if not name:
        continue
    try:
        resolve(role, name, settings.model_cache)
    except MissingWeightsError:
        missing.append(role)
print(settings.model_cache)
print(" ".join(missing))
')" || die "could not read Modomo's settings (see above)"
cache="$(sed -n 1p <<<"$state")"
read -r -a missing <<<"$(sed -n 2p <<<"$state")"
echo "model cache: $cache"

if ((${#missing[@]})); then
  case "${HF_HUB_OFFLINE:-}" in
    1 | [Tt][Rr][Uu][Ee] | [Yy][Ee][Ss] | [Oo][Nn])
      offline "HF_HUB_OFFLINE=$HF_HUB_OFFLINE is set and ${missing[*]} not in the cache"
      ;;
  esac
  endpoint="${HF_ENDPOINT:-https://huggingface.co}"
  "${python[@]}" -c '
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=10)
except urllib.error.HTTPError:
    pass  # an answer, even an error, means the network is there
except OSError as exc:
    sys.exit(f"{sys.argv[1]} is not reachable: {exc}")
' "$endpoint" || offline "$endpoint is not reachable"

  echo "downloading: ${missing[*]}"
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  limit=()
  if command -v timeout >/dev/null 2>&1; then
    limit=(timeout "$timeout_s")
  fi
  set +e
  ${limit[@]+"${limit[@]}"} "${modomo[@]}" models pull "${missing[@]}" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  if ((status == 124)); then
    die "the download did not finish in ${timeout_s} s (--timeout)"
  elif ((status != 0)); then
    if grep -qiE 'connect|resolve|name or service|timed? ?out|unreachable|offline|network|max retries' "$log"; then
      offline "the download failed for lack of a network (see above)"
    fi
    die "\`modomo models pull ${missing[*]}\` failed (see above)"
  fi
else
  echo "already in the cache: nothing to download"
fi

# Load both on the CPU (no inference): proves the files are complete and usable.
"${python[@]}" -c '
import sys

from modomo.config import get_settings
from modomo.models import resolve

try:
    from modomo.models.depth import DepthEstimator
    import transformers  # noqa: F401  (the ai extra)
except ImportError as exc:
    sys.exit(f"error: the ai extra is not installed ({exc}): uv sync --extra ai")

settings = get_settings()
for role in ("depth", "depth_fallback"):
    name = getattr(settings, f"{role}_weights")
    if not name:
        print(f"{role}: disabled")
        continue
    weights = resolve(role, name, settings.model_cache)
    model = DepthEstimator(weights, "cpu", half=False)
    print(f"{role}: {weights.label} loads ({model.unit}, {weights.path})")
' || die "the depth models are in the cache but do not load (see above)"

echo "depth models ready in $cache"
echo "offline GPU nodes: copy that folder over and set MODOMO_MODEL_DIR to it"
