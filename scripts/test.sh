#!/usr/bin/env bash
# Install what the tests need and run them. pytest's exit 5 (no tests collected) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]' || exit 1
export WANDB_MODE=offline WANDB_ERROR_REPORTING=false WANDB_SILENT=true
python3 -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
