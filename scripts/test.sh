#!/usr/bin/env bash
# Runs regwatch's whole test suite against real servers (registry, nginx, SMTP sink),
# after installing the Debian packages they come from. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
