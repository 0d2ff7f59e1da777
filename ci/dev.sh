#!/usr/bin/env bash
# Runs the daemon in dev mode (installs SoftHSM2 & co. first when missing and running as root).
# Usage: ci/dev.sh [DATA_DIR] [LISTEN]   (defaults: ./scaivault-dev 127.0.0.1:8200)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v softhsm2-util >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then bash ci/install-deps.sh --no-packaging; else echo "install softhsm2 first: sudo bash ci/install-deps.sh" >&2; exit 1; fi
fi
exec cargo run --locked -p scaivault -- dev --data-dir "${1:-scaivault-dev}" --listen "${2:-127.0.0.1:8200}"
