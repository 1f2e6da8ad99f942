#!/usr/bin/env bash
# Installs what the benchmarks need beyond the test suite's dependencies
# (scripts/install-test-deps.sh) on a fresh Debian 12 machine:
#
#   - etcd 3.4 (etcd-server, etcd-client), the server compared against;
#   - etcd's own load generator, `tools/benchmark` from etcd's source tree,
#     which Debian does not ship as a binary. It is built here from Debian's
#     etcd source package with Debian's Go, against Debian's golang-*
#     packages (what `apt-get build-dep etcd` installs), in the GOPATH layout
#     dh-golang uses — no module proxy and no GitHub needed.
#
# The binary lands in target/etcd-benchmark/benchmark (override with
# ETCD_BENCHMARK_OUT=/path/to/dir). Run again: it only rebuilds what is
# missing. docs/benchmarks/loadgen-vs-etcd-benchmark.md uses it.
set -euo pipefail
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${ETCD_BENCHMARK_OUT:-$root/target/etcd-benchmark}"
bin="$out/benchmark"

apt_install() {
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@"
}

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v dpkg-source >/dev/null 2>&1 || need+=(dpkg-dev)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
  $sudo_cmd apt-get update -qq
  apt_install "${need[@]}"
fi
etcd_version="$(etcd --version)"
echo "${etcd_version%%$'\n'*}"

if [ -x "$bin" ]; then
  echo "etcd benchmark tool: $bin (already built)"
  exit 0
fi

# `apt-get source` and `build-dep` need the deb-src lines, which Debian 12's
# default deb822 sources file leaves out.
if ! apt-get indextargets --format '$(IDENTIFIER)' 2>/dev/null | grep -qx 'Sources'; then
  $sudo_cmd tee /etc/apt/sources.list.d/debian-src.sources >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  $sudo_cmd apt-get update -qq
fi
# Debian's Go and every Go library etcd builds against (golang-go,
# golang-github-spf13-cobra-dev, golang-gopkg-cheggaaa-pb.v1-dev, …).
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get build-dep -y -qq etcd

src="$out/src"
rm -rf "$src"
mkdir -p "$src"
(cd "$src" && apt-get source -qq etcd >/dev/null)
tree="$(find "$src" -maxdepth 1 -mindepth 1 -type d -name 'etcd-*' | head -n 1)"
[ -n "$tree" ] || { echo "apt-get source etcd unpacked nothing in $src" >&2; exit 1; }

# dh-golang's layout: the package's import path inside a GOPATH, Debian's
# Go libraries in /usr/share/gocode. etcd 3.4 predates its go.mod being
# authoritative, so GOPATH mode (GO111MODULE=off) resolves every import
# from those two places. Debian's rules exclude tools/ from the package;
# this builds the one tool the benchmarks need.
gopath="$out/gopath"
mkdir -p "$gopath/src/go.etcd.io"
ln -sfn "$tree" "$gopath/src/go.etcd.io/etcd"
(
  cd "$gopath/src/go.etcd.io/etcd"
  GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$out/gocache" \
    go build -o "$bin" ./tools/benchmark
)
"$bin" --help >/dev/null
echo "etcd benchmark tool: $bin ($(go version))"
