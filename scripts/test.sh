#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite: unit, parity, integration (real bundled
# broker, started by the tests themselves) and the doctests of the core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Lint and types of the three packages (STYLE.md 9), then the tests.
.venv/bin/ruff check models stream training offerstream
.venv/bin/mypy models stream training offerstream
exec .venv/bin/python -m pytest -p no:cacheprovider -q tests --doctest-modules models training offerstream "$@"
