"""Compare two pip requirement files by what they install, not by how they are written.

``scripts/export-requirements.sh --check`` runs this on ``uv export``'s output and the
committed file. uv releases differ in how they print environment markers (``(a and c) or
(b and c)`` against ``(a or b) and c``), so a textual diff fails on a newer uv with nothing
changed. Here each file becomes, for every environment Modomo ships to (CPython on Linux
x86_64 and aarch64, Python 3.11 to 3.14), the set of ``name[extras]==version`` pins whose
markers hold there (PEP 508 evaluation by ``packaging``); the files agree when every set does.

Usage: ``python scripts/compare_requirements.py WANTED COMMITTED``; exit 0 when they agree,
1 with one line per difference on standard error otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MACHINES = ("x86_64", "aarch64")
PYTHONS = ("3.11.0", "3.11.7", "3.12.0", "3.13.0", "3.14.0")


def environments() -> list[dict[str, str]]:
    """PEP 508 marker environments for every (machine, Python) Modomo ships to."""
    return [
        {
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "platform_system": "Linux",
            "os_name": "posix",
            "sys_platform": "linux",
            "platform_machine": machine,
            "python_full_version": full,
            "python_version": ".".join(full.split(".")[:2]),
            "implementation_version": full,
        }
        for machine in MACHINES
        for full in PYTHONS
    ]


def requirements(path: Path) -> list[Requirement]:
    """The requirements of a pip file: one per line, comments and options skipped.

    Raises:
        packaging.requirements.InvalidRequirement: a line that is no PEP 508 requirement.
    """
    found = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            found.append(Requirement(line))
    return found


def pins(reqs: list[Requirement], env: dict[str, str]) -> set[str]:
    """``name[extras]specifier`` of every requirement whose marker holds in ``env``."""
    return {
        f"{canonicalize_name(r.name)}{sorted(r.extras) if r.extras else ''}{r.specifier}"
        for r in reqs
        if r.marker is None or r.marker.evaluate(env)
    }


def differences(wanted: Path, committed: Path) -> list[str]:
    """One line per pin that one file installs and the other does not, per environment."""
    want, have = requirements(wanted), requirements(committed)
    lines = []
    for env in environments():
        where = f"linux {env['platform_machine']} python {env['python_full_version']}"
        a, b = pins(want, env), pins(have, env)
        lines += [f"{where}: missing {pin}" for pin in sorted(a - b)]
        lines += [f"{where}: not in the lock {pin}" for pin in sorted(b - a)]
    return lines


if __name__ == "__main__":
    diff = differences(Path(sys.argv[1]), Path(sys.argv[2]))
    for line in diff[:20]:
        print(f"{sys.argv[2]}: {line}", file=sys.stderr)
    sys.exit(1 if diff else 0)
