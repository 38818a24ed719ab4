#!/usr/bin/env bash
# First command of the README: set up .venv on a fresh machine, then start ticklens
# (local feed replaying bundled real trades, the dataflow, the API and the dashboard).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import ticklens.exchange._depthwire, ticklens.domain._bookside, storage.sqlite._tickinsert, bytewax, panel" 2>/dev/null \
  || [ pyproject.toml -nt .venv/.installed ] || [ -n "$(find ticklens storage -name '*.c' -newer .venv/.installed 2>/dev/null)" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e .
  touch .venv/.installed
fi
exec .venv/bin/ticklens "${@:-up}"
