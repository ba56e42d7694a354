#!/usr/bin/env bash
# Export the pip requirement files from uv.lock (`make requirements`).
# With --check, compare instead of writing, and fail when they drifted from the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=$(command -v uv || echo "$HOME/.local/bin/uv")
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
    if ! diff -q <(echo "$wanted") "$file" >/dev/null 2>&1; then
      echo "$file drifted from uv.lock: run 'make requirements'" >&2
      status=1
    fi
  else
    echo "$wanted" > "$file"
    echo "wrote $file"
  fi
done
exit $status
