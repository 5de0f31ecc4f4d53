#!/bin/bash
# User-space instructions a server executes per echoed message, counted
# by valgrind's cachegrind: exact where CPU time on a shared machine is
# not. The server runs under cachegrind twice, against `duplex bench` for
# SHORT and then LONG seconds; the difference of the two totals over the
# difference of the messages leaves out start-up, handshakes and shutdown.
# The kernel's work (system calls, TCP) is not counted: compare servers by
# it only where they make the same calls (bench/notes.md).
#
# usage: bench/instructions.sh [--connections N] [--depth N] [--size B] [--binary] -- SERVER-COMMAND...
#   the server must listen on 127.0.0.1:9001 and serve /echo.
# e.g.:  bench/instructions.sh -- target/release/duplex serve --listen 127.0.0.1:9001 --no-deflate
#        bench/instructions.sh -- bench/target/release/fastwebsockets-echo 127.0.0.1:9001
# needs: valgrind (Debian package), a release build of duplex (the generator).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=100 DEPTH=1 SIZE=20 KIND=--text SHORT=2 LONG=6
while [ $# -gt 0 ]; do
    case "$1" in
        --connections) CONNS=$2; shift 2 ;;
        --depth) DEPTH=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --binary) KIND=; shift ;;
        --) shift; break ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--connections N] [--depth N] [--size B] [--binary] -- SERVER-COMMAND..." >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
GEN=target/release/duplex
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# One run: prints "<instructions> <messages>".
run() {
    DUPLEX_LOG=warn valgrind --tool=cachegrind --cache-sim=no \
        --cachegrind-out-file="$OUT/cg.out" "$@" >/dev/null 2>"$OUT/vg.err" &
    local pid=$!
    for _ in $(seq 150); do
        (echo >/dev/tcp/127.0.0.1/9001) 2>/dev/null && break
        sleep 0.2
    done
    "$GEN" bench echo ws://127.0.0.1:9001/echo -c "$CONNS" --depth "$DEPTH" --size "$SIZE" $KIND \
        --warmup 0 --duration "$DURATION" 2>/dev/null | tail -1 >"$OUT/bench.json"
    # valgrind writes its totals on exit, also on a fatal signal.
    kill -TERM "$pid"
    wait "$pid" || true
    local ir
    ir=$(grep -E 'I +refs' "$OUT/vg.err" | awk '{print $NF}' | tr -d ,)
    python3 -c "import json,sys; print(sys.argv[1], json.load(open(sys.argv[2]))['messages'])" \
        "$ir" "$OUT/bench.json"
}

DURATION=$SHORT; a=$(run "$@")
DURATION=$LONG; b=$(run "$@")
python3 - "$a" "$b" <<'EOF'
import sys
(i1, m1), (i2, m2) = (map(int, s.split()) for s in sys.argv[1:3])
print(f"{(i2 - i1) / (m2 - m1):.0f} instructions per message "
      f"({m1} and {m2} messages; {i1} and {i2} instructions)")
EOF
