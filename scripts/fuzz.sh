#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, seeded from its
# committed corpus (fuzz/corpus/<target>/) and dictionary (fuzz/dict/), and
# fails if any target finds a crash, a leak, a timeout or runs out of memory;
# each failure is printed with its input (base64) and how to replay it.
# New inputs the fuzzer finds go to a scratch directory, never to the
# committed corpus. Works with the stable toolchain alone (see fuzz/README.md).
#
# Usage: scripts/fuzz.sh [TARGET...]         (default: every target)
#   FUZZ_SECONDS=N  seconds per target (default 30)
#   FUZZ_JOBS=N     targets fuzzed at once (default 2, one per core here)
#   FUZZ_OUT=DIR    scratch directory: new inputs, crashes, logs (default: a
#                   new temporary directory, removed when every target passed)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
jobs="${FUZZ_JOBS:-2}"

# cargo-fuzz from crates.io, pinned; -Zsanitizer and the other nightly flags
# it passes are accepted by the stable compiler with RUSTC_BOOTSTRAP=1 (the
# AddressSanitizer runtime ships with the stable x86_64 Linux std).
cargo_fuzz_version=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $cargo_fuzz_version"; then
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# One build of every target: release, debug assertions, AddressSanitizer.
start=$SECONDS
cargo fuzz build
echo "fuzz: built ${#targets[@]} targets in $((SECONDS - start)) s"
bin=target/x86_64-unknown-linux-gnu/release

if [ -n "${FUZZ_OUT:-}" ]; then
  out="$FUZZ_OUT"
  keep=1
else
  out="$(mktemp -d "${TMPDIR:-/tmp}/duplex-fuzz.XXXXXX")"
  keep=0
fi
mkdir -p "$out"

# Fuzzes one target; its log, new inputs and artifacts go under $out.
run_target() {
  local t=$1 dict=()
  [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
  mkdir -p "$out/corpus/$t" "$out/artifacts/$t"
  local status=0
  "$bin/$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/" "${dict[@]}" \
    "$out/corpus/$t" "corpus/$t" >"$out/$t.log" 2>&1 || status=$?
  echo "$status" >"$out/$t.status"
}

start=$SECONDS
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_target "$t" &
done
wait
echo "fuzz: ran ${#targets[@]} targets for ${seconds} s each, $jobs at a time, in $((SECONDS - start)) s"

failed=0
for t in "${targets[@]}"; do
  status=$(cat "$out/$t.status")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log")
  new=$(find "$out/corpus/$t" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    printf 'fuzz: %-20s ok: %s runs, %s new inputs\n' "$t" "${runs:-?}" "$new"
    continue
  fi
  failed=1
  printf 'fuzz: %-20s FAILED (exit %s); the end of its log:\n' "$t" "$status"
  grep -Ev '^#[0-9]+|^ +#[0-9]+ 0x' "$out/$t.log" | tail -n 40  # no progress or stack lines
  for a in "$out/artifacts/$t"/*; do
    [ -f "$a" ] || continue
    echo "fuzz: $t: input $a, base64:"
    base64 -w0 "$a"
    echo
    echo "fuzz: replay with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $a"
    echo "fuzz: once fixed, keep it as a seed: corpus/$t/<what-it-found>.bin"
  done
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: failed; logs, artifacts and new inputs are in $out" >&2
  exit 1
fi
[ "$keep" -eq 1 ] || rm -rf "$out"
echo "fuzz: no target failed"
