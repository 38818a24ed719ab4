#!/usr/bin/env bash
# Second command of the README: install the test dependencies and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import ticklens.exchange._depthwire, ticklens.domain._bookside, storage.sqlite._tickinsert, pytest, schemathesis, playwright, importlinter, mypy" 2>/dev/null \
  || [ pyproject.toml -nt .venv/.installed-test ] || [ -n "$(find ticklens storage -name '*.c' -newer .venv/.installed-test 2>/dev/null)" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test]"
  touch .venv/.installed-test
fi
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache   # the layers (pyproject.toml [tool.importlinter], docs/architecture.md)
.venv/bin/mypy                      # strict types over the domain and the store interface
exec .venv/bin/python -m pytest "$@"
