#!/usr/bin/env bash
# Fuzzing (issue #10, point 4): builds the cargo-fuzz targets of fuzz/ and runs each for a bounded
# time from its seed corpus (fuzz/corpus/<target>/). Fails on any crash, hang (-timeout) or
# out-of-memory (-rss_limit_mb); prints one summary line per target. See docs/FUZZING.md.
#
# Stable toolchain, no sanitizer: `cargo fuzz build --sanitizer none` needs no nightly (the crates
# under test forbid `unsafe`; AddressSanitizer runs are a local, nightly-only extra).
#
# SCAIVAULT_FUZZ_SECONDS   seconds per target (default 60); 0 skips, for local runs only (refused
#                          when CI=true).
# SCAIVAULT_FUZZ_TARGETS   the targets to run, space-separated (default: all of `cargo fuzz list`).
# Crashing inputs are kept in fuzz/artifacts/<target>/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SCAIVAULT_FUZZ_SECONDS:-60}"
case "$secs" in
  '' | *[!0-9]*) echo "fuzz: SCAIVAULT_FUZZ_SECONDS must be a number of seconds, not '$secs'" >&2; exit 2 ;;
esac
if [ "$secs" = 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "fuzz: SCAIVAULT_FUZZ_SECONDS=0 skips fuzzing, which CI does not allow" >&2
    exit 1
  fi
  echo "fuzz: skipped (SCAIVAULT_FUZZ_SECONDS=0)"
  exit 0
fi

# cargo-fuzz, pinned, in /opt/scaivault-ci/cargo-fuzz (ci/install-deps.sh installs it as root).
version=0.13.2
tools=/opt/scaivault-ci/cargo-fuzz
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q " $version\$"; then
  if [ -w /opt/scaivault-ci ] || [ "$(id -u)" = 0 ]; then
    mkdir -p "$tools"
    cargo install --quiet --locked --root "$tools" "cargo-fuzz@$version"
  elif ! cargo fuzz --version 2>/dev/null | grep -q " $version\$"; then
    echo "fuzz: cargo-fuzz $version is missing: run ci/install-deps.sh as root, or" \
      "cargo install --locked cargo-fuzz@$version" >&2
    exit 1
  fi
fi
[ -x "$tools/bin/cargo-fuzz" ] && export PATH="$tools/bin:$PATH"

target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
host=$(rustc -vV | sed -n 's/^host: //p')
# The fuzz crate is its own workspace, so ci/check.sh does not see it: format check here.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "fuzz: building with $(rustc --version) (sanitizer none), $(cargo fuzz --version)"
(cd fuzz && cargo fuzz build --sanitizer none --target-dir "$target_dir")
bin="$target_dir/$host/release"

targets="${SCAIVAULT_FUZZ_TARGETS:-$(cd fuzz && cargo fuzz list)}"
work=$(mktemp -d "${TMPDIR:-/tmp}/scaivault-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for t in $targets; do
  [ -x "$bin/$t" ] || { echo "fuzz: no target $t in $bin" >&2; exit 1; }
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  log="$work/$t.log"
  seeds=$(find "fuzz/corpus/$t" -type f | wc -l)
  echo "fuzz: $t for ${secs}s from $seeds seeds"
  rc=0
  "$bin/$t" "$work/$t" "fuzz/corpus/$t" \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' || true)
  line="$t: rc=$rc, ${runs:-?} executions in ${secs}s (${speed:-?}/s), ${cov:-no stats}, corpus $seeds seeds + $(find "$work/$t" -type f | wc -l) new, peak RSS ${rss:-?} MB"
  summary+=("$line")
  if [ "$rc" != 0 ]; then
    failed+=("$t")
    echo "fuzz: $t FAILED (crash, hang or out-of-memory); the last lines of its log:" >&2
    tail -40 "$log" >&2
    echo "fuzz: reproduce with: $bin/$t fuzz/artifacts/$t/<file>" >&2
    ls -l "fuzz/artifacts/$t/" >&2 || true
  fi
done
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: 0 crashes, hangs or out-of-memory in ${#summary[@]} targets"
