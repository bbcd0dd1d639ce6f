#!/usr/bin/env bash
# Create (or update) the project's virtualenv in .venv with the pinned stack; idempotent.
#   x86_64:  torch==2.14.1 torchvision==0.29.1 (pip takes them from local disk where present)
#   aarch64: torch==2.9.1  torchvision==0.24.1 (CPU build)
#   other:   set FLATNESS_TORCH="torch==X torchvision==Y" to a matching pair for your platform
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"flatness needs Python >= 3.11 (snakemake 9); {sys.executable} is {sys.version.split()[0]}")
PY
case "$(uname -m)" in
  x86_64) default_torch="torch==2.14.1 torchvision==0.29.1" ;;
  aarch64|arm64) default_torch="torch==2.9.1 torchvision==0.24.1" ;;
  *) default_torch="" ;;
esac
TORCH=${FLATNESS_TORCH:-$default_torch}
if [ -z "$TORCH" ]; then
  echo "setup.sh: no torch pin known for $(uname -m); set FLATNESS_TORCH='torch==X torchvision==Y'" >&2
  exit 2
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.flatness-installed"
want="$(cat requirements.txt pyproject.toml; echo "$TORCH")"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup.sh: $VENV is up to date"
  exit 0
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086  # $TORCH is two requirement specifiers
"$VENV/bin/python" -m pip install -q $TORCH -r requirements.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .
printf '%s' "$want" > "$stamp"
echo "setup.sh: $VENV ready ($TORCH)"
