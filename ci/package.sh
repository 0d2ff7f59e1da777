#!/usr/bin/env bash
# Builds the Debian package (cargo-deb) and the RPM (cargo-generate-rpm) from the metadata in
# daemon/Cargo.toml ([package.metadata.deb], [package.metadata.generate-rpm]).
#
#   ci/package.sh                     release build, then both packages in target/packages/
#   ci/package.sh --binary PATH       package PATH instead of building (the tests package the debug
#                                     binary ci/test.sh built: same files, no release build)
#   ci/package.sh --out DIR --fast    output directory; lighter compression (CI)
#   ci/package.sh --check-tools       exit 0 when both tools are installed, 3 otherwise
#
# The tools come from ci/install-deps.sh (into /opt/scaivault-ci/pkgtools) or from PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target="${CARGO_TARGET_DIR:-$root/target}"
bin=""
out="$target/packages"
fast=0
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) fast=1; shift ;;
    --check-tools) check=1; shift ;;
    *) echo "usage: ci/package.sh [--binary PATH] [--out DIR] [--fast] [--check-tools]" >&2; exit 2 ;;
  esac
done
export PATH="$PATH:/opt/scaivault-ci/pkgtools/bin:${CARGO_HOME:-$HOME/.cargo}/bin"
missing=0
for t in cargo-deb cargo-generate-rpm strip; do
  if ! command -v "$t" >/dev/null 2>&1; then
    echo "ci/package.sh: $t is not installed (as root: bash ci/install-deps.sh)" >&2
    missing=1
  fi
done
if [ "$check" = 1 ]; then
  [ "$missing" = 0 ] && exit 0 || exit 3
fi
[ "$missing" = 0 ] || exit 3

if [ -z "$bin" ]; then
  cargo build --locked --release -p scaivault
  bin="$target/release/scaivault"
fi
# Both tools take the binary from <target-dir>/release/scaivault: stage the chosen one there,
# stripped (the package carries no debug information).
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/release" "$out"
strip --strip-unneeded -o "$stage/release/scaivault" "$bin"

deb_args=()
rpm_compress=zstd
if [ "$fast" = 1 ]; then
  deb_args+=(--fast)
  rpm_compress=gzip
fi
CARGO_TARGET_DIR="$stage" cargo-deb -p scaivault --no-build --no-strip "${deb_args[@]}" -o "$out/"
# cargo-generate-rpm 0.16 takes the package's directory for -p.
cargo-generate-rpm -p daemon --target-dir "$stage" --payload-compress "$rpm_compress" -o "$out/"
ls -l "$out"
