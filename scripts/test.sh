#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit/property/integration
# tests, fuzz seed corpora, the hyper/axum integration, every fuzz target for
# a bounded time (scripts/fuzz.sh), interop with Chromium, Python websockets
# and Node ws, and the Autobahn|Testsuite in both roles.
# Usage: scripts/test.sh            (everything)
#        AUTOBAHN_CASES='1.*' scripts/test.sh   (restrict Autobahn cases)
#        FUZZ_SECONDS=300 scripts/test.sh       (fuzz longer; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo clippy with the hyper/axum features"
cargo clippy -p duplex --all-targets --features axum -- -D warnings

step "cargo build (the duplex binary the interop tests drive)"
cargo build --workspace --bins

step "cargo test"
cargo test --workspace

step "cargo test: hyper/axum integration (feature axum)"
cargo test -p duplex --features axum --test axum

fuzz_seconds="${FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" -gt 0 ]; then
  step "fuzz: every target in fuzz/ for ${fuzz_seconds} s, from its seed corpus (scripts/fuzz.sh)"
  FUZZ_SECONDS="$fuzz_seconds" scripts/fuzz.sh
fi

step "interop: Chromium, Python websockets, Node ws (tests/interop/run.sh)"
DUPLEX_BIN="$PWD/target/debug/duplex" tests/interop/run.sh

step "Autobahn|Testsuite: install wstest (no-op when present)"
tests/autobahn/install.sh

# The shortened soak and churn test (tests/soak) needs little CPU and takes
# about two minutes: it runs in the background beside the Autobahn roles.
step "soak and churn, shortened (tests/soak/run.sh --ci), in the background beside Autobahn"
mkdir -p target/soak
DUPLEX_BIN="$PWD/target/debug/duplex" tests/soak/run.sh --ci >target/soak/run-ci.out 2>&1 &
soak_pid=$!
trap 'kill "$soak_pid" 2>/dev/null || true' EXIT

cases="${AUTOBAHN_CASES:-*}"
# The two roles are independent (each wstest is one single-threaded Python
# process): run them side by side, then show each log and fail if either did.
step "Autobahn|Testsuite, both roles: server (duplex serve vs fuzzingclient) and client (duplex connect --echo vs fuzzingserver)"
logs=target/autobahn/logs
mkdir -p "$logs"
python3 tests/autobahn/run.py server --cases "$cases" >"$logs/run-server.out" 2>&1 &
server_pid=$!
python3 tests/autobahn/run.py client --cases "$cases" >"$logs/run-client.out" 2>&1 &
client_pid=$!
status=0
wait "$server_pid" || status=1
wait "$client_pid" || status=1
cat "$logs/run-server.out" "$logs/run-client.out"
[ "$status" -eq 0 ] || { echo "Autobahn|Testsuite: differences from the expected results (see above)" >&2; exit 1; }

step "soak and churn, shortened: result (target/soak/run-ci.out)"
soak_status=0
wait "$soak_pid" || soak_status=$?
trap - EXIT
cat target/soak/run-ci.out
[ "$soak_status" -eq 0 ] || { echo "soak and churn: failed (see above)" >&2; exit 1; }

step "all tests passed"
