#!/usr/bin/env bash
# One-line entry for the paper's synthetic experiment at CPU scale (see benchmarks/paper_table.py --help).
set -euo pipefail
cd "$(dirname "$0")/.." && python benchmarks/paper_table.py "$@"
