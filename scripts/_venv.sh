# Shared by demo.sh and test.sh: create .venv if missing and install fastada (with extras "$1").
# pip's output goes to .venv/install.log and is shown only if the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${1:+[$1]}"; } \
     > .venv/install.log 2>&1; then
  cat .venv/install.log >&2
  echo "fastada: setting up .venv failed (log above, also in .venv/install.log)" >&2
  exit 1
fi
