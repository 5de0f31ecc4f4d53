#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit/property/integration
# tests, fuzz seed corpora, and the Autobahn|Testsuite in both roles.
# Usage: scripts/test.sh            (everything)
#        AUTOBAHN_CASES='1.*' scripts/test.sh   (restrict Autobahn cases)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build (the duplex binary the interop tests drive)"
cargo build --workspace --bins

step "cargo test"
cargo test --workspace

step "Autobahn|Testsuite: install wstest (no-op when present)"
tests/autobahn/install.sh

cases="${AUTOBAHN_CASES:-*}"
step "Autobahn|Testsuite, server role (duplex serve vs fuzzingclient)"
python3 tests/autobahn/run.py server --cases "$cases"

step "Autobahn|Testsuite, client role (duplex connect --echo vs fuzzingserver)"
python3 tests/autobahn/run.py client --cases "$cases"

step "all tests passed"
