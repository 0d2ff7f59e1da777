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
       ! [ -x /opt/scaivault-ci/moto/bin/moto_server ] || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; }; then
  bash ci/install-deps.sh
fi
# The daemon and the fault-injecting PKCS#11 module the HSM-loss tests load (tests/src/lib.rs
# finds both in the target directory).
cargo build --locked -p scaivault -p scaivault-fault-shim
export SCAIVAULT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/scaivault"
# PostgreSQL on loopback (as root; otherwise export SCAIVAULT_TEST_PG yourself): the store's unit
# tests run against both backends, tests/tests/cluster.rs runs two daemons on one database.
if [ -z "${SCAIVAULT_TEST_PG:-}" ] && [ "$(id -u)" = 0 ]; then
  SCAIVAULT_TEST_PG=$(bash ci/postgres.sh)
  case "$SCAIVAULT_TEST_PG" in
    postgres://*) export SCAIVAULT_TEST_PG ;;
    *) echo "ci/postgres.sh printed something other than a URL: $SCAIVAULT_TEST_PG" >&2; exit 1 ;;
  esac
fi
cargo test --locked --workspace -- --test-threads "${TEST_THREADS:-4}"
# The API suite again, every daemon on a PostgreSQL database of its own. Left out: tests about
# SQLite itself (crash reconciliation reads the file, audit tampering edits it, the disk-full
# test fills the data directory) and about packaging and the service unit.
if [ -n "${SCAIVAULT_TEST_PG:-}" ]; then
  SCAIVAULT_TEST_BACKEND=postgres cargo test --locked -p scaivault-tests \
    --test auth --test ca --test csr --test issue --test revoke --test ocsp --test isolation \
    --test input --test limits --test token_keys --test validate --test webhooks --test acme \
    --test ceremony --test hsm_loss -- --test-threads "${TEST_THREADS:-4}"
fi
