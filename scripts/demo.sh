#!/usr/bin/env bash
# Set up (first run only) and run the whole system on the embedded default: `offerstream demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/offerstream demo "$@"
