#!/usr/bin/env bash
# loadgen beside etcd's own benchmark tool (tools/benchmark, built by
# scripts/install-bench-deps.sh), against one etcd 3.4: for each case a
# freshly started etcd, then ROUNDS rounds in which both clients run the same
# request count with the same --conns/--clients, the order alternating from
# round to round. Prints one markdown row per run (throughput, client and
# server CPU seconds) and, per case, the median loadgen/etcd-tool ratio of
# the rounds. Compare ratios from one run only: the machine is shared.
#
#   scripts/bench-loadgen-vs-etcd.sh [ROUNDS]     (default 3)
#
# Environment: LOADGEN (default target/release/loadgen), ETCD_BENCHMARK
# (default target/etcd-benchmark/benchmark), ETCD (default etcd on PATH),
# WORK (scratch dir for etcd's data, default target/loadgen-vs-etcd, on disk
# as the side-by-side harness), CASES (default "put-100 put-1 range-s range-l"),
# PUT_TOTAL, PUT1_TOTAL, RANGE_TOTAL (requests per run), LOADGEN_BEFORE (a
# second loadgen binary, e.g. an older build, run as a third client
# "loadgen-before" in every round; the order rotates over all clients).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rounds="${1:-3}"
target="${CARGO_TARGET_DIR:-$root/target}"
loadgen="${LOADGEN:-$target/release/loadgen}"
tool="${ETCD_BENCHMARK:-$target/etcd-benchmark/benchmark}"
etcd="${ETCD:-$(command -v etcd)}"
work="${WORK:-$target/loadgen-vs-etcd}"
cases="${CASES:-put-100 put-1 range-s range-l}"
put_total="${PUT_TOTAL:-100000}"
put1_total="${PUT1_TOTAL:-5000}"
range_total="${RANGE_TOTAL:-200000}"
for b in "$loadgen" "$tool" "$etcd"; do
  [ -x "$b" ] || { echo "missing $b (scripts/install-bench-deps.sh, cargo build --release -p basalt-loadgen)" >&2; exit 2; }
done
mkdir -p "$work"
etcd_pid=""
cleanup() { [ -z "$etcd_pid" ] || { kill "$etcd_pid" 2>/dev/null; wait "$etcd_pid" 2>/dev/null || true; }; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_etcd() {
  cleanup
  rm -rf "$work/etcd.data"
  local c p
  c="$(free_port)"; p="$(free_port)"
  endpoint="127.0.0.1:$c"
  "$etcd" --name bench --data-dir "$work/etcd.data" \
    --listen-client-urls "http://$endpoint" --advertise-client-urls "http://$endpoint" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "bench=http://127.0.0.1:$p" >"$work/etcd.log" 2>&1 &
  etcd_pid=$!
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$endpoint" put bench-key0 "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "etcd did not start: $work/etcd.log" >&2
  exit 2
}

# CPU seconds (user+system) etcd has used so far.
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$etcd_pid/stat"; }

# Runs one client; sets `rate` (requests/s) and `client_cpu`.
run_client() {
  local who="$1"; shift
  local out="$work/out.txt" times="$work/time.txt"
  case "$who" in
    etcd-tool) /usr/bin/time -f '%U %S' -o "$times" "$tool" --endpoints "$endpoint" "$@" >"$out" 2>&1 ;;
    loadgen) /usr/bin/time -f '%U %S' -o "$times" "$loadgen" --endpoints "http://$endpoint" --no-progress "$@" >"$out" 2>&1 ;;
    loadgen-before) /usr/bin/time -f '%U %S' -o "$times" "$LOADGEN_BEFORE" --endpoints "http://$endpoint" --no-progress "$@" >"$out" 2>&1 ;;
  esac || { echo "$who failed:" >&2; cat "$out" >&2; exit 2; }
  case "$who" in
    etcd-tool) rate="$(awk '/Requests\/sec:/ { print $2 }' "$out")" ;;
    loadgen*) rate="$(awk 'NR == 1 { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^ops\/s,?$/) print $i }' "$out")" ;;
  esac
  client_cpu="$(awk '{ print $1 + $2 }' "$times")"
}

case_args() {
  case "$1" in
    put-100) echo "--conns 10 --clients 100 put --key-size 8 --val-size 256 --key-space-size 100000 --total $put_total" ;;
    put-1) echo "--conns 1 --clients 1 put --key-size 8 --val-size 256 --key-space-size 100000 --total $put1_total" ;;
    range-s) echo "--conns 10 --clients 100 range bench-key0 --consistency s --total $range_total" ;;
    range-l) echo "--conns 10 --clients 100 range bench-key0 --consistency l --total $range_total" ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
}

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "| case | round | client | requests/s | client CPU s | etcd CPU s |"
echo "|---|---|---|---:|---:|---:|"
summary=""
clients=(etcd-tool loadgen)
[ -z "${LOADGEN_BEFORE:-}" ] || clients+=(loadgen-before)
for c in $cases; do
  read -r -a args <<<"$(case_args "$c")"
  start_etcd
  ratios=()
  before_ratios=()
  for r in $(seq "$rounds"); do
    # Rotate who goes first, so that no client always meets a server that
    # has just warmed up (or filled up).
    n=${#clients[@]}
    order=""
    for i in $(seq 0 $((n - 1))); do order+="${clients[$(((r - 1 + i) % n))]} "; done
    declare -A got=()
    for who in $order; do
      before="$(server_cpu)"
      run_client "$who" "${args[@]}"
      after="$(server_cpu)"
      got[$who]="$rate"
      printf '| %s | %d | %s | %.0f | %.2f | %.2f |\n' "$c" "$r" "$who" "$rate" "$client_cpu" \
        "$(echo "$after - $before" | bc -l)"
    done
    ratios+=("$(echo "${got[loadgen]} / ${got[etcd-tool]}" | bc -l)")
    [ -z "${LOADGEN_BEFORE:-}" ] || before_ratios+=("$(echo "${got[loadgen-before]} / ${got[etcd-tool]}" | bc -l)")
    unset got
  done
  row="$(printf '| %s | %s | %.2f |' "$c" "$(printf '%.2f ' "${ratios[@]}")" "$(median "${ratios[@]}")")"
  [ -z "${LOADGEN_BEFORE:-}" ] ||
    row+="$(printf ' %s | %.2f |' "$(printf '%.2f ' "${before_ratios[@]}")" "$(median "${before_ratios[@]}")")"
  summary+="$row"$'\n'
done
echo
if [ -z "${LOADGEN_BEFORE:-}" ]; then
  echo "| case | loadgen / etcd tool, per round | median |"
  echo "|---|---|---:|"
else
  echo "| case | loadgen / etcd tool, per round | median | loadgen-before / etcd tool, per round | median |"
  echo "|---|---|---:|---|---:|"
fi
printf '%s' "$summary"
