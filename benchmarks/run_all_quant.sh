#!/usr/bin/env bash
# Every quantization benchmark in order (long: run under nohup). Results in benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python benchmarks/observer_choice.py
bash benchmarks/run_ptq.sh "$@"
.venv/bin/python benchmarks/run_fmpq.py
.venv/bin/python benchmarks/report.py
