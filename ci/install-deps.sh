#!/usr/bin/env bash
# Installs the system packages ScaiVault's build and tests need (Debian/Ubuntu, as root):
# SoftHSM2 (the PKCS#11 token), OpenSC (pkcs11-tool, an independent look at the token),
# openssl (the independent judge of certificates), sqlite3 (audit-tamper tests).
set -euo pipefail
need=()
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool   >/dev/null 2>&1 || need+=(opensc)
command -v openssl       >/dev/null 2>&1 || need+=(openssl)
command -v sqlite3       >/dev/null 2>&1 || need+=(sqlite3)
if [ "${#need[@]}" -gt 0 ] || [ "${CI:-}" = "true" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends softhsm2 opensc openssl sqlite3 ca-certificates >/dev/null
fi
test -e /usr/lib/softhsm/libsofthsm2.so || { echo "libsofthsm2.so not found after install" >&2; exit 1; }
echo "system packages ready: $(softhsm2-util --version 2>/dev/null | head -1) / $(openssl version)"
