#!/usr/bin/env bash
# Soak and churn test of `duplex serve` (tests/soak/README.md): N connections
# from Node `ws` for a while, echo traffic at a steady rate, a share of the
# connections closed (cleanly or not) and reopened every churn period, the
# server's RSS sampled every second. Passes with 0 errors and the RSS at the
# end within 5 % of the RSS after warm-up.
#
# Usage: tests/soak/run.sh [--ci] [--report] [--minutes M] [--connections N] [soak.mjs options ...]
#   (default)  the full run: 10,000 connections for 10 minutes, 10 % churn every
#              minute, against the release build (cargo build --release -p duplex-cli)
#   --ci       the shortened form: 1,000 connections for 90 s, churn every 15 s,
#              against the debug build (cargo build -p duplex-cli)
#   --report   also write bench/soak.svg and the soak section of BENCHMARKS.md
# DUPLEX_BIN=path runs that binary (no build). Results go to target/soak/.
# Bounded in time (timeout); the server runs on 127.0.0.1 and is killed at
# the end, also on failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

ci=0
report=0
minutes=10
connections=10000
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) ci=1 ;;
    --report) report=1 ;;
    --minutes) minutes="$2"; shift ;;
    --connections) connections="$2"; shift ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$1") ;;
  esac
  shift
done
if [ "$ci" = 1 ]; then
  args=(--seconds 90 --connections 1000 --churn-every 15)
  seconds=90
  profile=debug
else
  seconds="$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')"
  args=(--seconds "$seconds" --connections "$connections")
  profile=release
fi

if [ -z "${DUPLEX_BIN:-}" ]; then
  if [ "$profile" = release ]; then
    echo "==> cargo build --release -p duplex-cli"
    cargo build --release -p duplex-cli
  else
    echo "==> cargo build -p duplex-cli"
    cargo build -p duplex-cli
  fi
  DUPLEX_BIN="$root/target/$profile/duplex"
fi
[ -x "$DUPLEX_BIN" ] || { echo "soak: no duplex binary at $DUPLEX_BIN" >&2; exit 1; }

command -v node >/dev/null || { echo "soak: node is needed (Debian: apt-get install nodejs npm)" >&2; exit 1; }
# The generator uses npm `ws` from the interop suite's lockfile.
if [ ! -d tests/interop/node_modules/ws ]; then
  echo "==> npm ci in tests/interop (ws)"
  (cd tests/interop && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

# Both processes hold one descriptor per connection, plus those still
# closing during a churn round.
n="$(grep -oE -- '--connections [0-9]+' <<<"${args[*]} ${extra[*]:-}" | tail -n 1 | awk '{ print $2 }')"
need=$((n * 3 / 2 + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge "$need" ] \
    || { echo "soak: $n connections need ulimit -n >= $need (it is $(ulimit -n))" >&2; exit 1; }
fi

out_dir="$root/target/soak"
mkdir -p "$out_dir"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
json="$out_dir/soak-$stamp.json"
svg="$out_dir/soak-$stamp.svg"

# timeout puts the generator (and the server it starts) in a process group of
# its own and signals the whole group when the time is up; a signal to this
# script is passed on the same way.
echo "==> node tests/soak/soak.mjs ${args[*]} ${extra[*]:-}"
timeout --kill-after=10 $((seconds + 240)) \
  node tests/soak/soak.mjs --bin "$DUPLEX_BIN" "${args[@]}" ${extra[@]+"${extra[@]}"} --out "$json" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
status=0
wait "$pid" || status=$?
trap - EXIT
[ "$status" -ne 124 ] || echo "soak: FAIL: killed after $((seconds + 240)) s" >&2

if [ -f "$json" ]; then
  if [ "$report" = 1 ]; then
    cmd="tests/soak/run.sh"
    [ "$ci" = 1 ] && cmd+=" --ci"
    [ "$ci" = 0 ] && [ "$minutes" != 10 ] && cmd+=" --minutes $minutes"
    [ "$ci" = 0 ] && [ "$connections" != 10000 ] && cmd+=" --connections $connections"
    [ ${#extra[@]} -gt 0 ] && cmd+=" ${extra[*]}"
    python3 tests/soak/report.py "$json" --svg bench/soak.svg --benchmarks BENCHMARKS.md --command "$cmd --report"
    cp "$json" "$out_dir/soak-report.json"
  else
    python3 tests/soak/report.py "$json" --svg "$svg"
  fi
fi
exit "$status"
