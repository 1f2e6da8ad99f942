#!/usr/bin/env bash
# The cost of TLS: put and range throughput over plain HTTP/2 and over TLS
# (with a client certificate, --client-cert-auth), for basalt and etcd 3.4
# in the same run, with loadgen. Certificates are made at run time with
# openssl in a temporary directory (never checked in).
#
#   cargo build --release -p basalt -p basalt-loadgen
#   scripts/tls-bench.sh [DURATION] [ROUNDS]     # default 10s, 3
#
# Prints a Markdown table (median of ROUNDS runs, min–max) to stdout.
set -euo pipefail

DURATION=${1:-10s}
ROUNDS=${2:-3}
TARGET=${CARGO_TARGET_DIR:-target}/release
BASALT=$TARGET/basalt
LOADGEN=$TARGET/loadgen
ETCD=/usr/bin/etcd
WORK=$(mktemp -d)
SERVER_PID=

cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

certs() {
    local d=$WORK/pki
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$d/ca-key.pem" -out "$d/ca.pem" -subj "/CN=bench-ca" 2>/dev/null
    printf "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n" > "$d/ext.cnf"
    for name in server client; do
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$d/$name-key.pem" -out "$d/$name.csr" -subj "/CN=$name" 2>/dev/null
        openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" \
            -CAcreateserial -days 2 -extfile "$d/ext.cnf" -out "$d/$name.pem" 2>/dev/null
    done
}

# start KIND SCHEME: starts a fresh server; sets SERVER_PID and ENDPOINT.
start() {
    local kind=$1 scheme=$2 port peer dir
    port=$(free_port)
    peer=$(free_port)
    dir=$WORK/data-$kind-$scheme-$RANDOM
    ENDPOINT=$scheme://127.0.0.1:$port
    local args=(--name b --data-dir "$dir" --listen-client-urls "$ENDPOINT"
        --advertise-client-urls "$ENDPOINT" --listen-peer-urls "http://127.0.0.1:$peer"
        --initial-advertise-peer-urls "http://127.0.0.1:$peer"
        --initial-cluster "b=http://127.0.0.1:$peer")
    if [ "$scheme" = https ]; then
        args+=(--cert-file "$WORK/pki/server.pem" --key-file "$WORK/pki/server-key.pem"
            --trusted-ca-file "$WORK/pki/ca.pem" --client-cert-auth)
    fi
    local bin=$BASALT
    [ "$kind" = etcd ] && bin=$ETCD
    "$bin" "${args[@]}" > "$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if "$LOADGEN" "${TLS_ARGS[@]}" --endpoints "$ENDPOINT" --no-progress --total 1 \
            range probe > /dev/null 2>&1; then
            return
        fi
        sleep 0.2
    done
    echo "$kind ($scheme) did not start:" >&2
    cat "$WORK/server.log" >&2
    stop
    exit 1
}

stop() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# measure KIND SCHEME WORKLOAD...: one run's throughput (ops/s). Runs in
# a command substitution (a subshell): its own trap stops its server.
measure() {
    local kind=$1 scheme=$2
    shift 2
    trap stop EXIT
    TLS_ARGS=()
    if [ "$scheme" = https ]; then
        TLS_ARGS=(--cacert "$WORK/pki/ca.pem" --cert "$WORK/pki/client.pem"
            --key "$WORK/pki/client-key.pem")
    fi
    start "$kind" "$scheme"
    "$LOADGEN" "${TLS_ARGS[@]}" --endpoints "$ENDPOINT" --no-progress --conns 10 --clients 100 \
        --total 1000 put --key-size 8 --val-size 256 --key-space-size 1000 > /dev/null
    "$LOADGEN" "${TLS_ARGS[@]}" --endpoints "$ENDPOINT" --no-progress --conns 10 --clients 100 \
        --duration "$DURATION" --json "$WORK/run.json" "$@" > /dev/null
    stop
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["throughput_ops_s"]))' \
        "$WORK/run.json"
}

certs
declare -A RUNS
WORKLOADS=("put:put --key-size 8 --val-size 256 --key-space-size 100000"
    "range:range 00000001 --consistency l")
for round in $(seq "$ROUNDS"); do
    for w in "${WORKLOADS[@]}"; do
        name=${w%%:*}
        for kind in basalt etcd; do
            for scheme in http https; do
                # shellcheck disable=SC2086
                ops=$(measure "$kind" "$scheme" ${w#*:})
                RUNS[$name,$kind,$scheme]="${RUNS[$name,$kind,$scheme]:-} $ops"
                echo "round $round: $name $kind $scheme $ops ops/s" >&2
            done
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] " (" a[1] "–" a[NR] ")"}'; }
echo "| workload | server | plain ops/s | TLS ops/s | TLS / plain |"
echo "|---|---|---|---|---|"
for w in "${WORKLOADS[@]}"; do
    name=${w%%:*}
    for kind in basalt etcd; do
        plain=$(echo "${RUNS[$name,$kind,http]}" | median)
        tls=$(echo "${RUNS[$name,$kind,https]}" | median)
        ratio=$(python3 -c "print(f'{${tls%% *}/${plain%% *}:.2f}')")
        echo "| $name | $kind | $plain | $tls | $ratio |"
    done
done
