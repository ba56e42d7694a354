#!/usr/bin/env bash
# Export the pip requirement files from uv.lock (`make requirements`).
# With --check, compare instead of writing, and fail when they drifted from the lock: the
# pins are compared (scripts/compare_requirements.py), not the text, which uv releases print
# differently. uv is the Makefile's pinned one ($UV), else ~/.local/bin/uv.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-$HOME/.local/bin/uv}
common=(export --locked --no-dev --no-hashes --no-emit-project --no-header --format requirements-txt)
declare -A files=(
  [requirements-minimal-celery.txt]=""           # API + CPU workers
  [requirements-celery.txt]="--all-extras"         # everything, GPU workers included
)
status=0
for file in "${!files[@]}"; do
  # shellcheck disable=SC2086
  wanted=$("$uv" "${common[@]}" ${files[$file]} --quiet)
  if [[ "${1:-}" == "--check" ]]; then
    if ! "$uv" run --frozen python scripts/compare_requirements.py <(echo "$wanted") "$file"; then
      echo "$file drifted from uv.lock: run 'make requirements'" >&2
      status=1
    fi
  else
    echo "$wanted" > "$file"
    echo "wrote $file"
  fi
done
exit $status
