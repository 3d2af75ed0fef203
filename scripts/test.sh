#!/usr/bin/env bash
# Set up (idempotent) and run every test tier: core unit tests, real-QGIS
# integration tests (processing.run) and end-to-end tests (qgis_process.bin).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
source scripts/env.sh
exec python -m pytest "$@"
