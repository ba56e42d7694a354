#!/usr/bin/env bash
# Label Studio in an environment of its own (its Django stack is not Modomo's), at pinned
# versions: installed with uv when missing or at another version. Used by
# tests/test_label_studio.py and for reviewing exports locally (README, "Review in Label
# Studio"). Prints the path of the label-studio executable.
set -euo pipefail
LABEL_STUDIO_VERSION=1.23.2
# label-studio 1.23.2 calls sentry_sdk.init with options sentry-sdk 3 no longer accepts
SENTRY_SDK_VERSION=2.76.0
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${MODOMO_LABEL_STUDIO_VENV:-$root/.venv-label-studio}
uv=${UV:-$HOME/.local/bin/uv}
installed=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))' 2>/dev/null || true)
if [[ "$installed" != "$LABEL_STUDIO_VERSION" ]]; then
  "$uv" venv --quiet --clear --python "${PYTHON:-python3}" "$venv" >&2
  VIRTUAL_ENV=$venv "$uv" pip install --quiet \
    "label-studio==$LABEL_STUDIO_VERSION" "sentry-sdk==$SENTRY_SDK_VERSION" >&2
fi
echo "$venv/bin/label-studio"
