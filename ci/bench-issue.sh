#!/usr/bin/env bash
# Issuance throughput benchmark (issue #3, "Benchmark"): builds the daemon and the benchmark in
# release mode and runs `bench-issue` with its defaults (10 s per run, 4 and 16 connections, EC
# P-256 / RSA-2048 / Ed25519 leaves, the SoftHSM signing ceiling and the cfssl peer). Extra
# arguments are passed on, e.g. `ci/bench-issue.sh --seconds 5 --skip-cfssl`.
# Prints figures only; it never fails on speed. Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v softhsm2-util >/dev/null 2>&1; then
  bash ci/install-deps.sh
fi
# The cfssl peer (Debian package golang-cfssl: cfssl + cfssljson).
if ! command -v cfssl >/dev/null 2>&1 || ! command -v cfssljson >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-cfssl
  else
    echo "cfssl missing and not root: run 'apt-get install golang-cfssl' as root, or pass --skip-cfssl" >&2
  fi
fi
cargo build --locked --release -p scaivault -p scaivault-tests
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
export SCAIVAULT_BIN="$target/scaivault"
echo "uptime before: $(uptime)"
"$target/bench-issue" "$@"
echo "uptime after: $(uptime)"
echo
echo "Paste the tables above, with the command line and the load average, into docs/PERFORMANCE.md"
echo "(section \"Issuance\"), together with the git commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
