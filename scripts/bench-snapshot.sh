#!/usr/bin/env bash
# Snapshot save and restore, etcd 3.4 next to basalt, on the same data:
#   scripts/bench-snapshot.sh KEYS VALUE_BYTES
# Loads KEYS keys of VALUE_BYTES into a real etcd, saves its snapshot,
# restores it into basalt (and the etcd way), saves basalt's snapshot and
# restores that into etcd; prints wall time and peak RSS of each step and
# checks `endpoint hashkv` is equal. Needs release builds of basalt and
# loadgen (CARGO_TARGET_DIR or ./target). Ports 127.0.0.1:2419x.
set -euo pipefail
keys=${1:-200000}
value=${2:-1024}
target=${CARGO_TARGET_DIR:-$(dirname "$0")/../target}
basalt=$target/release/basalt
loadgen=$target/release/loadgen
work=$(mktemp -d)
export ETCDCTL_API=3
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_up() { for _ in $(seq 100); do etcdctl --endpoints "$1" get x >/dev/null 2>&1 && return; sleep 0.2; done; echo "no server on $1"; exit 1; }
# Runs a command under /usr/bin/time; prints "label seconds peakMiB".
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>&1 || { cat "$work/out"; exit 1; }
  read -r secs kib <"$work/time"
  printf '%-44s %8.2f s %8d MiB\n' "$label" "$secs" $((kib / 1024))
}
start() { # name bin client peer datadir
  "$2" --name default --data-dir "$5" --listen-client-urls "http://127.0.0.1:$3" \
    --advertise-client-urls "http://127.0.0.1:$3" --listen-peer-urls "http://127.0.0.1:$4" \
    --initial-advertise-peer-urls "http://127.0.0.1:$4" --initial-cluster "default=http://127.0.0.1:$4" \
    --quota-backend-bytes 8589934592 >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_up "http://127.0.0.1:$3"
}
hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }

echo "data: $keys keys x $value bytes"
start etcd /usr/bin/etcd 24191 24192 "$work/etcd"
"$loadgen" --endpoints http://127.0.0.1:24191 --conns 2 --clients 8 --total $((keys / 100)) --no-progress \
  txn-put --txn-ops 100 --key-size 16 --val-size "$value" --key-space-size "$keys" --sequential-keys >/dev/null
etcd_pid=${pids[-1]}
measure "etcd: etcdctl snapshot save" etcdctl --endpoints http://127.0.0.1:24191 snapshot save "$work/etcd.db"
echo "snapshot file: $(($(stat -c %s "$work/etcd.db") / 1048576)) MiB"
measure "etcd: etcdctl snapshot restore (etcd's file)" etcdctl snapshot restore "$work/etcd.db" \
  --data-dir "$work/etcd-restored" --name default --initial-cluster default=http://127.0.0.1:24196 \
  --initial-advertise-peer-urls http://127.0.0.1:24196
measure "basalt: --restore-snapshot (etcd's file)" "$basalt" --restore-snapshot "$work/etcd.db" --data-dir "$work/basalt"
start basalt "$basalt" 24193 24194 "$work/basalt"
basalt_pid=${pids[-1]}
hashkv() {
  local t0 t1 h
  t0=$(date +%s.%N)
  h=$(etcdctl --command-timeout=300s --endpoints "$1" endpoint hashkv -w json | grep -o '"hash":[0-9]*')
  t1=$(date +%s.%N)
  printf '%-44s %8.2f s   %s\n' "$2: endpoint hashkv" "$(echo "$t1 - $t0" | bc)" "$h" >&2
  echo "$h"
}
h1=$(hashkv http://127.0.0.1:24191 etcd)
h2=$(hashkv http://127.0.0.1:24193 basalt)
[ "$h1" = "$h2" ] || { echo "HASHKV DIFFERS"; exit 1; }
before=$(hwm "$basalt_pid")
measure "basalt: etcdctl snapshot save" etcdctl --endpoints http://127.0.0.1:24193 snapshot save "$work/basalt.db"
echo "basalt server peak RSS: $before MiB before the save, $(hwm "$basalt_pid") MiB after"
echo "etcd server peak RSS after its save: $(hwm "$etcd_pid") MiB"
measure "etcd: etcdctl snapshot status (basalt's file)" etcdctl snapshot status "$work/basalt.db"
measure "etcd: etcdctl snapshot restore (basalt's file)" etcdctl snapshot restore "$work/basalt.db" \
  --data-dir "$work/etcd-from-basalt" --name default --initial-cluster default=http://127.0.0.1:24196 \
  --initial-advertise-peer-urls http://127.0.0.1:24196
