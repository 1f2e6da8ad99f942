#!/usr/bin/env bash
# A/B of two basalt binaries on one member: for each of ROUNDS rounds and
# each binary in turn, a fresh basalt on free loopback ports and an empty
# data dir, then a serial put and a 100-client put with loadgen.
#   scripts/bench-ab.sh OLD_BASALT NEW_BASALT [ROUNDS=3] [DURATION=5s]
set -euo pipefail
old=$1; new=$2; rounds=${3:-3}; dur=${4:-5s}
lg="$(dirname "$0")/../target/release/loadgen"
for r in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    d=$(mktemp -d); p=$((30000 + RANDOM % 20000)); q=$((p + 1))
    "$bin" --data-dir "$d/d" --listen-client-urls "http://127.0.0.1:$p" \
      --advertise-client-urls "http://127.0.0.1:$p" --listen-peer-urls "http://127.0.0.1:$q" \
      --initial-advertise-peer-urls "http://127.0.0.1:$q" --initial-cluster "default=http://127.0.0.1:$q" \
      > "$d/log" 2>&1 &
    pid=$!; sleep 1.5
    s=$("$lg" --endpoints "http://127.0.0.1:$p" --conns 1 --clients 1 --duration "$dur" put --val-size 256 2>&1 | grep -E "ops/s|^put " | tr '\n' ' ')
    m=$("$lg" --endpoints "http://127.0.0.1:$p" --conns 10 --clients 100 --duration "$dur" put --val-size 256 --key-space-size 100000 2>&1 | grep -E "ops/s|^put " | tr '\n' ' ')
    kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$d"
    echo "round $r $which serial: $s"
    echo "round $r $which put100: $m"
  done
done
