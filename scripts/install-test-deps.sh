#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine:
# real etcd 3.4 and etcdctl (differential tests) and protoc (prost-build).
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
# Debian's etcd-server package starts a system etcd on 127.0.0.1:2379; the
# tests start their own etcd on free ports and never use that one.
etcd --version | head -n 1
