#!/usr/bin/env bash
# Interop tests of duplex against real peers, on loopback only:
#   browser  Chromium (Debian's /usr/bin/chromium through playwright-core)
#   node     Node `ws`, as client of `duplex serve` and as server for `duplex connect`
#   python   Python `websockets`, the same both ways
#   api      PyPI `cent` (Centrifugo server-API client) against the hub's /api/<method>
#   centrifuge  npm `centrifuge` (centrifuge-js 5.x) against the hub's /connection/websocket
#            and /api, in Node (ws) and in Chromium (the SDK's browser bundle)
#   pysdk    PyPI `centrifuge-python` (Centrifugo's Python client SDK) against the hub's
#            /connection/websocket (and /api to publish)
#   scaleout 3 `duplex serve` nodes over one redis-server (--broker): npm `centrifuge`
#            clients and /api across nodes, redis killed and restarted, a node killed,
#            FLUSHALL, cross-node presence
#   sse      Server-Sent Events (/connection/sse): npm `eventsource` in Node and Chromium's
#            EventSource (the /live page, a page of another origin), reconnect and recovery
#            through a TCP proxy the test cuts, since=, unrecovered, CORS, auth, heartbeat
#   chat     the /chat page and /duplex.js in Chromium (two pages, one cut through a TCP proxy,
#            recovery, presence) and /duplex.js next to npm `centrifuge` in Node on one channel
#   game     the Protobuf encoding (centrifuge-protobuf): the /game page in Chromium (two pages,
#            binary moves byte for byte), centrifuge-js's Protobuf build in Node and /duplex.js
#            in Chromium on one channel (cut proxies, recovery, history, presence), JSON and
#            Protobuf clients together, malformed Protobuf
#
# Usage: tests/interop/run.sh [browser] [node] [python] [api] [centrifuge] [pysdk] [scaleout] [sse] [chat] [game]   (default: all)
#
# Installs what is missing: npm packages from package-lock.json (`npm ci`),
# Python `websockets`, `cent` and `centrifuge-python` (pip), and, as root,
# Debian's chromium and redis-server (apt-get).
# Builds target/debug/duplex unless DUPLEX_BIN names a binary.
# Every suite prints one line per check and is bounded in time; the script
# exits non-zero if any check fails.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(browser node python api centrifuge pysdk scaleout sse chat game)
SUITE_TIMEOUT="${INTEROP_SUITE_TIMEOUT:-180}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMIUM

step() { printf '\n==> %s\n' "$*"; }
die() { echo "interop: $*" >&2; echo "interop: 0 passed, 1 failed"; exit 1; }
wants() { local s; for s in "${suites[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

for s in "${suites[@]}"; do
  case "$s" in browser | node | python | api | centrifuge | pysdk | scaleout | sse | chat | game) ;; *) die "unknown suite '$s' (browser, node, python, api, centrifuge, pysdk, scaleout, sse, chat, game)" ;; esac
done

# ------------------------------------------------------------- prerequisites
if [ -z "${DUPLEX_BIN:-}" ]; then
  step "cargo build -p duplex-cli (debug)"
  (cd "$root" && cargo build -p duplex-cli) || die "cannot build the duplex binary"
  export DUPLEX_BIN="$root/target/debug/duplex"
fi
[ -x "$DUPLEX_BIN" ] || die "no duplex binary at $DUPLEX_BIN"
command -v openssl >/dev/null || die "openssl is needed to make test certificates"

if wants browser || wants node || wants centrifuge || wants scaleout || wants sse || wants chat || wants game; then
  command -v node >/dev/null || die "node is needed (Debian: apt-get install nodejs npm)"
  if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/ws ] || [ ! -d node_modules/centrifuge ] \
    || [ ! -d node_modules/eventsource ]; then
    step "npm ci (playwright-core, ws, centrifuge, eventsource)"
    # playwright-core downloads no browser; the variable makes sure of it.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund || die "npm ci failed"
  fi
fi

if wants python; then
  if ! python3 -c 'import websockets.asyncio.client, websockets.asyncio.server' 2>/dev/null; then
    step "pip install websockets (the asyncio API needs websockets >= 14)"
    python3 -m pip install --quiet --disable-pip-version-check 'websockets>=14' || die "pip install websockets failed"
  fi
fi

if wants api; then
  if ! python3 -c 'import websockets.asyncio.client' 2>/dev/null; then
    step "pip install websockets (the asyncio API needs websockets >= 14)"
    python3 -m pip install --quiet --disable-pip-version-check 'websockets>=14' || die "pip install websockets failed"
  fi
  if ! python3 -c 'import importlib.metadata as m, cent; assert m.version("cent").startswith("5.")' 2>/dev/null; then
    step "pip install cent 5.x (Centrifugo server-API client)"
    python3 -m pip install --quiet --disable-pip-version-check 'cent>=5,<6' || die "pip install cent failed"
  fi
fi

if wants pysdk; then
  # `import centrifuge` alone could find the unrelated 2015 PyPI package of that name.
  if ! python3 -c 'import importlib.metadata as m, centrifuge; m.version("centrifuge-python")' 2>/dev/null; then
    step "pip install centrifuge-python (Centrifugo's Python client SDK, import name centrifuge)"
    python3 -m pip install --quiet --disable-pip-version-check 'centrifuge-python' || die "pip install centrifuge-python failed"
  fi
fi

if { wants browser || wants centrifuge || wants sse || wants chat || wants game; } && [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "apt-get install chromium"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
      || die "apt-get install chromium failed"
  fi
  [ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM (Debian: apt-get install chromium)"
fi

if wants scaleout; then
  REDIS_SERVER="${REDIS_SERVER:-redis-server}"
  if ! command -v "$REDIS_SERVER" >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      step "apt-get install redis-server"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; } \
        || die "apt-get install redis-server failed"
    fi
    command -v "$REDIS_SERVER" >/dev/null \
      || die "the scaleout suite needs redis-server (Debian: apt-get install redis-server; or REDIS_SERVER=/path/to/redis-server)"
  fi
  # Debian's package also starts a system redis on :6379; the suite uses its own on free ports.
  export REDIS_SERVER
fi

# ------------------------------------------------------------- suites
total_pass=0
total_fail=0
declare -a report=()
log_dir="$(mktemp -d "${TMPDIR:-/tmp}/duplex-interop-logs.XXXXXX")"
trap 'rm -rf "$log_dir"' EXIT

run_suite() {
  local name="$1"; shift
  step "$name: $*"
  local log="$log_dir/$name.log" start=$SECONDS status
  timeout --kill-after=10 "$SUITE_TIMEOUT" "$@" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  local secs=$((SECONDS - start))
  # The suite's closing line: "<suite>: N passed, N failed, N skipped (T s)".
  local counts p f
  counts="$(grep -E '^[^:]+: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)"
  p="$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$counts")"
  f="$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$counts")"
  [ -n "$counts" ] || { p=0; f=0; }
  if [ "$status" -ne 0 ] && [ "$f" = 0 ]; then
    f=1 # died, timed out, or failed before counting
    [ "$status" -eq 124 ] && echo "FAIL $name: killed after ${SUITE_TIMEOUT} s"
  fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  report+=("$(printf '%-8s %-6s %3d passed, %d failed  %4ds' "$name" "$([ "$status" -eq 0 ] && echo ok || echo FAILED)" "$p" "$f" "$secs")")
}

wants browser && run_suite browser node browser.mjs
wants node && run_suite node node node_ws.mjs
wants python && run_suite python python3 python_ws.py
wants api && run_suite api python3 centrifugo_api.py
wants centrifuge && run_suite centrifuge node centrifuge.mjs
wants pysdk && run_suite pysdk python3 centrifuge_python.py
wants scaleout && run_suite scaleout node scaleout.mjs
wants sse && run_suite sse node sse.mjs
wants chat && run_suite chat node chat.mjs
wants game && run_suite game node game.mjs

step "interop summary"
for line in "${report[@]}"; do echo "  $line"; done
echo "interop: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
