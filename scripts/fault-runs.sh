#!/usr/bin/env bash
# Long fault runs: N seeded runs (seeds 1..=N) of DURATION seconds of
# faults each against a 3-member basalt cluster (release build), each run's
# history checked by basalt-check. Prints each seed's verdict and a
# summary; failed runs are kept in <target>/fault-runs/ (history, nemesis
# timeline, member logs). Needs root for the partition faults.
#
#   scripts/fault-runs.sh [N=20] [DURATION=60] [basalt|etcd]
#
# Other seeds: BASALT_FAULT_SEEDS=100..=120 scripts/fault-runs.sh
# Keep passing runs too: BASALT_FAULT_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20}"
seconds="${2:-60}"
kind="${3:-basalt}"
export BASALT_FAULT_SEEDS="${BASALT_FAULT_SEEDS:-1..=$n}"
export BASALT_FAULT_SECONDS="$seconds"
export BASALT_FAULT_KIND="$kind"
exec cargo test --release --test faults -- --ignored --nocapture --exact fault_runs_from_env
