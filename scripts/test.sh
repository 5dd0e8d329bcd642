#!/usr/bin/env bash
# Install what the tests need and run them. pytest's exit 5 (no tests collected) counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]' || exit 1
# Debian's chromium renders the sweep summary page in tests/analysis/test_results_plots.py; installed once, only when missing.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; } >/dev/null 2>&1 \
    || echo "warning: could not install chromium (apt-get install chromium); the HTML page test needs it" >&2
fi
# The layers contract of pyproject.toml: no import runs back up a layer (cli > analysis > sweeps > launch > ...).
lint-imports --no-cache >/dev/null || { lint-imports --no-cache; exit 1; }
export WANDB_MODE=offline WANDB_ERROR_REPORTING=false WANDB_SILENT=true
# Two pytest-xdist workers (CI has 2 cores): every test of the one local SLURM cluster runs on one worker (the
# xdist_group of tests/conftest.py), the other worker takes the rest. Arguments are passed on (`-n 0`: one process).
# The slowest tests' table only when asked: AN_LAB_TEST_DURATIONS=15 bash scripts/test.sh
python3 -m pytest -n 2 --dist loadgroup ${AN_LAB_TEST_DURATIONS:+--durations=$AN_LAB_TEST_DURATIONS} "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
