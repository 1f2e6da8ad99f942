#!/usr/bin/env bash
# The whole test suite: installs test dependencies, checks formatting and
# lints, then runs every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
