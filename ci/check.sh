#!/usr/bin/env bash
# Static checks run before the tests: formatting and clippy with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
CLIPPY_CONF_DIR="$PWD/ci" cargo clippy --locked --workspace --all-targets --all-features -- -D warnings
