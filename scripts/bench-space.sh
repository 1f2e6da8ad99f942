#!/usr/bin/env bash
# Database size, etcd 3.4 next to basalt, in one run (docs/benchmarks/space.md):
#   scripts/bench-space.sh
# 1. `etcdctl check perf --load=s` against each server in turn; dbSize
#    (`endpoint status`) before, right after, and after 60 s idle.
# 2. 10,000 keys of 1 KiB put, 90% deleted, history compacted, 60 s idle;
#    dbSize and dbSizeInUse of each.
# Needs a release build of basalt (CARGO_TARGET_DIR or ./target), and
# /usr/bin/etcd, /usr/bin/etcdctl. Ports 127.0.0.1:2425x.
set -euo pipefail
target=${CARGO_TARGET_DIR:-$(dirname "$0")/../target}
basalt=$target/release/basalt
work=$(mktemp -d)
export ETCDCTL_API=3
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_up() { for _ in $(seq 100); do etcdctl --endpoints "$1" get x >/dev/null 2>&1 && return; sleep 0.2; done; echo "no server on $1"; exit 1; }
start() { # name bin client peer
  "$2" --name default --data-dir "$work/$1" --listen-client-urls "http://127.0.0.1:$3" \
    --advertise-client-urls "http://127.0.0.1:$3" --listen-peer-urls "http://127.0.0.1:$4" \
    --initial-advertise-peer-urls "http://127.0.0.1:$4" --initial-cluster "default=http://127.0.0.1:$4" \
    >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_up "http://127.0.0.1:$3"
}
field() { etcdctl --endpoints "$1" endpoint status -w json | grep -o "\"$2\":[0-9]*" | head -1 | cut -d: -f2; }
mb() { printf '%.2f' "$(echo "scale=3; $1 / 1000000" | bc)"; }
sizes() { # label endpoint
  printf '%-34s dbSize %7s MB  dbSizeInUse %7s MB\n' "$1" "$(mb "$(field "$2" dbSize)")" "$(mb "$(field "$2" dbSizeInUse)")"
}

ETCD=http://127.0.0.1:24251
BASALT=http://127.0.0.1:24253
start etcd /usr/bin/etcd 24251 24252
start basalt "$basalt" 24253 24254
echo "etcd: $(/usr/bin/etcd --version | head -1); basalt: $(git -C "$(dirname "$0")" rev-parse --short HEAD)"

echo "== check perf --load=s"
for s in etcd basalt; do
  ep=$ETCD; [ $s = basalt ] && ep=$BASALT
  sizes "$s before" $ep
  etcdctl --endpoints $ep check perf --load=s >"$work/perf-$s.txt" 2>&1 || true
  tr '\r' '\n' <"$work/perf-$s.txt" | grep -E "^(PASS|FAIL)" | tr '\n' ' '; echo
  sizes "$s after check perf" $ep
done
sleep 60
sizes "etcd after 60 s idle" $ETCD
sizes "basalt after 60 s idle" $BASALT

echo "== 10,000 keys x 1 KiB, delete 90%, compact, 60 s idle"
value=$(head -c 768 /dev/urandom | base64 -w0 | head -c 1024)
for ep in $ETCD $BASALT; do
  for t in $(seq 0 99); do
    # No compares, the puts on success, no failure ops.
    { echo; for j in $(seq 0 99); do printf 'put space/%05d %s\n' $((t * 100 + j)) "$value"; done; echo; echo; } |
      etcdctl --endpoints $ep txn >/dev/null
  done
done
sizes "etcd after 10,000 puts" $ETCD
sizes "basalt after 10,000 puts" $BASALT
for ep in $ETCD $BASALT; do
  etcdctl --endpoints $ep del space/01000 space/1 >/dev/null
  rev=$(etcdctl --endpoints $ep endpoint status -w json | grep -o '"revision":[0-9]*' | head -1 | cut -d: -f2)
  etcdctl --endpoints $ep compact "$rev" >/dev/null
done
sizes "etcd after delete 90% + compact" $ETCD
sizes "basalt after delete 90% + compact" $BASALT
sleep 60
sizes "etcd after 60 s idle" $ETCD
sizes "basalt after 60 s idle" $BASALT
for ep in $ETCD $BASALT; do
  echo "$ep keys left: $(etcdctl --endpoints $ep get space/ --prefix --keys-only | grep -c space/)"
done
grep -h "defragment" "$work/basalt.log" || true
