#!/usr/bin/env bash
# The whole test suite: builds the daemon binary the system tests drive, then runs every test of
# the workspace (unit tests of hsm/core/store/daemon against SoftSigner and a throwaway SoftHSM
# token; system tests in tests/ against the real binary, SoftHSM2, SQLite and openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh machine: install SoftHSM2, OpenSC, openssl and sqlite3 first (needs root); as root, also
# the service and package tests' tools (lintian, rpm, cargo-deb, cargo-generate-rpm) and the ACME
# and DNS test peers (pebble, Knot, PowerDNS, moto).
if ! command -v softhsm2-util >/dev/null 2>&1 || ! command -v pkcs11-tool >/dev/null 2>&1 || ! command -v sqlite3 >/dev/null 2>&1; then
  bash ci/install-deps.sh
elif [ "$(id -u)" = 0 ] && { ! command -v lintian >/dev/null 2>&1 || ! command -v rpm >/dev/null 2>&1 ||
       ! [ -x /opt/scaivault-ci/pkgtools/bin/cargo-deb ] || ! [ -x /opt/scaivault-ci/pkgtools/bin/cargo-generate-rpm ] ||
       ! command -v pebble >/dev/null 2>&1 || ! [ -x /usr/sbin/knotd ] || ! [ -x /usr/sbin/pdns_server ] ||
       ! [ -x /opt/scaivault-ci/moto/bin/moto_server ]; }; then
  bash ci/install-deps.sh
fi
# The daemon and the fault-injecting PKCS#11 module the HSM-loss tests load (tests/src/lib.rs
# finds both in the target directory).
cargo build --locked -p scaivault -p scaivault-fault-shim
export SCAIVAULT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/scaivault"
cargo test --locked --workspace -- --test-threads "${TEST_THREADS:-4}"
