#!/usr/bin/env bash
# Install Autobahn|Testsuite (wstest) into a private prefix.
#
# wstest needs Python 2.7, which Debian 12 (bookworm) no longer ships. We take
# the Python 2.7 packages (and the two libraries bookworm lacks) from Debian
# bullseye, via a private apt configuration, and unpack them with `dpkg -x`
# into the prefix: the system's apt sources and dpkg database are untouched.
# The Python packages come from PyPI, pinned to the last versions that work on
# Python 2.7.
#
# Usage: tests/autobahn/install.sh
#   DUPLEX_AUTOBAHN_HOME  prefix (default: <repo>/target/autobahn-env)
#
# Result: $DUPLEX_AUTOBAHN_HOME/bin/wstest, a wrapper that sets up the
# environment (LD_LIBRARY_PATH, PYTHONHOME) and runs wstest.
# Idempotent: exits early when the stamp file says the install is complete.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PREFIX=${DUPLEX_AUTOBAHN_HOME:-$REPO/target/autobahn-env}

# Bump when the set of packages or the layout changes: forces a reinstall.
STAMP_VERSION="duplex-autobahn-env 2"
STAMP="$PREFIX/.installed"

DEBS=(
  python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib
  libpython2.7 libpython2.7-dev python2.7-dev
  libssl1.1 libffi7
)
PIP_BOOTSTRAP=(pip==20.3.4 setuptools==44.1.1 wheel==0.37.1)
PY2_PACKAGES=(
  autobahntestsuite==25.10.1 autobahn==0.10.9 Twisted==19.10.0 txaio==2.1.0
  zope.interface==4.6.0 incremental==16.10.1 constantly==15.1.0
  Automat==22.10.0 attrs==21.4.0 hyperlink==21.0.0 idna==2.10
  PyHamcrest==1.10.1 pyOpenSSL==19.1.0 cryptography==3.3.2 cffi==1.15.1
  pycparser==2.21 enum34==1.1.10 ipaddress==1.0.23 six==1.16.0
  service-identity==18.1.0 pyasn1==0.5.1 pyasn1-modules==0.3.0
  Jinja2==2.11.3 MarkupSafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0
  unittest2==1.1.0 traceback2==1.4.0 linecache2==1.0.0 typing==3.10.0.0
  wsaccel==0.6.6 ujson==2.0.3
)

log() { printf '[autobahn-install] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_VERSION" && -x "$PREFIX/bin/wstest" ]]; then
  log "already installed in $PREFIX"
  exit 0
fi

mkdir -p "$PREFIX"
# Serialise concurrent installs into the same prefix.
exec 9>"$PREFIX/.lock"
flock 9
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_VERSION" && -x "$PREFIX/bin/wstest" ]]; then
  log "already installed in $PREFIX (by a concurrent run)"
  exit 0
fi

START=$SECONDS

# --- 1. host tools (bookworm packages) -------------------------------------
need_apt=()
command -v apt-get >/dev/null || die "apt-get not found (Debian 12 expected)"
command -v dpkg >/dev/null || die "dpkg not found"
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
[[ -e /usr/include/stdio.h ]] || need_apt+=(libc6-dev)
[[ -e /etc/ssl/certs/ca-certificates.crt ]] || need_apt+=(ca-certificates)
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || need_apt+=(debian-archive-keyring)
if ! command -v python3 >/dev/null; then
  need_apt+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3-pip)
fi
# Shared libraries that bullseye's python2.7 links against and that a minimal
# bookworm may lack (python3 pulls most of them in; these are cheap anyway).
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
LDCACHE=$("$LDCONFIG" -p 2>/dev/null || true)
for lib in libexpat.so.1 libz.so.1 libbz2.so.1.0 liblzma.so.5 libuuid.so.1 \
           libsqlite3.so.0 libreadline.so.8 libncursesw.so.6 libtinfo.so.6 \
           libdb-5.3.so libnsl.so.2 libtirpc.so.3 libcrypt.so.1; do
  if ! grep -q "^[[:space:]]*$lib " <<<"$LDCACHE"; then
    case $lib in
      libexpat.so.1) need_apt+=(libexpat1) ;;
      libz.so.1) need_apt+=(zlib1g) ;;
      libbz2.so.1.0) need_apt+=(libbz2-1.0) ;;
      liblzma.so.5) need_apt+=(liblzma5) ;;
      libuuid.so.1) need_apt+=(libuuid1) ;;
      libsqlite3.so.0) need_apt+=(libsqlite3-0) ;;
      libreadline.so.8) need_apt+=(libreadline8) ;;
      libncursesw.so.6) need_apt+=(libncursesw6) ;;
      libtinfo.so.6) need_apt+=(libtinfo6) ;;
      libdb-5.3.so) need_apt+=(libdb5.3) ;;
      libnsl.so.2) need_apt+=(libnsl2) ;;
      libtirpc.so.3) need_apt+=(libtirpc3) ;;
      libcrypt.so.1) need_apt+=(libcrypt1) ;;
    esac
  fi
done
if ((${#need_apt[@]})); then
  [[ $(id -u) == 0 ]] || die "missing host packages (${need_apt[*]}); install them as root"
  log "installing host packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Start from a clean slate (only the pieces this script creates).
rm -rf "$PREFIX/apt" "$PREFIX/debs" "$PREFIX/root" "$PREFIX/wheels" \
       "$PREFIX/bin" "$PREFIX/tmp" "$STAMP"
mkdir -p "$PREFIX/apt/lists/partial" "$PREFIX/apt/cache/archives/partial" \
         "$PREFIX/debs" "$PREFIX/root" "$PREFIX/wheels" "$PREFIX/bin" "$PREFIX/tmp"

# --- 2. Python 2.7 from bullseye, via a private apt configuration -----------
mirror=""
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  # First URIs of a stanza that is not the security archive.
  mirror=$(awk '
    /^[[:space:]]*$/ { if (u != "" && u !~ /security/) { print u; exit } u = "" ; next }
    /^URIs:/ { u = $2 }
    END { if (u != "" && u !~ /security/) print u }
  ' /etc/apt/sources.list.d/debian.sources | head -n1)
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {
      for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' \
    /etc/apt/sources.list | head -n1)
fi
mirror=${mirror:-http://deb.debian.org/debian}
log "Debian mirror: $mirror (suite bullseye)"

cat >"$PREFIX/apt/bullseye.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

apt_private=(
  -o "Dir::Etc::SourceList=$PREFIX/apt/bullseye.sources"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$PREFIX/apt/lists"
  -o "Dir::Cache=$PREFIX/apt/cache"
  -o "Dir::Cache::pkgcache="
  -o "Dir::Cache::srcpkgcache="
  -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1"
)
log "apt-get update (private bullseye lists)"
apt-get "${apt_private[@]}" update -qq
log "downloading: ${DEBS[*]}"
(cd "$PREFIX/debs" && apt-get "${apt_private[@]}" download -qq "${DEBS[@]}")
for deb in "$PREFIX"/debs/*.deb; do
  dpkg -x "$deb" "$PREFIX/root"
done

ROOT="$PREFIX/root"
PY2="$ROOT/usr/bin/python2.7"
[[ -x $PY2 ]] || die "python2.7 not found after unpacking"
libdirs=()
for d in "$ROOT"/lib/*-linux-gnu "$ROOT"/usr/lib/*-linux-gnu; do
  [[ -d $d ]] && libdirs+=("${d#"$PREFIX"/}")
done
((${#libdirs[@]})) || die "no multiarch library directory under $ROOT"

py2_env() {
  local ld="" d
  for d in "${libdirs[@]}"; do ld+="${ld:+:}$PREFIX/$d"; done
  env -u PYTHONPATH -u PYTHONSTARTUP \
    LD_LIBRARY_PATH="$ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    PYTHONHOME="$ROOT/usr" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE= \
    "$@"
}
py2_env "$PY2" -c 'import ssl, ctypes, zlib, hashlib; print("python " + __import__("sys").version.split()[0] + ", " + ssl.OPENSSL_VERSION)' >&2 \
  || die "bullseye python2.7 does not run here"

# site directory of the private python (a Debian python2.7 reads
# <prefix>/lib/python2.7/dist-packages, .pth files included)
SITE=$(py2_env "$PY2" -c 'import sys, os; print(os.path.join(sys.prefix, "lib", "python2.7", "dist-packages"))')
mkdir -p "$SITE"
py2_env "$PY2" -c 'import sys; p = sys.argv[1]; sys.exit(0 if p in sys.path else 1)' "$SITE" \
  || die "$SITE is not on the private python's sys.path"

# --- 3. pip for Python 2, then the wstest packages --------------------------
log "downloading pip/setuptools/wheel for Python 2.7"
python3 -m pip download -q --no-deps --python-version 2.7 --only-binary=:all: \
  -d "$PREFIX/wheels" "${PIP_BOOTSTRAP[@]}"
PIP_WHL=$(ls "$PREFIX"/wheels/pip-*.whl)

pip2() {
  py2_env TMPDIR="$PREFIX/tmp" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_PYTHON_VERSION_WARNING=1 PIP_FIND_LINKS= \
    CPATH="$ROOT/usr/include/python2.7:$ROOT/usr/include${CPATH:+:$CPATH}" \
    "$PY2" "$@"
}
# pip runs from its wheel only to install itself: building a package from
# source (wsaccel) needs a pip that is really installed.
log "installing pip, setuptools and wheel"
pip2 "$PIP_WHL/pip" install -q --no-deps --no-index --target "$SITE" \
  "$PIP_WHL" "$PREFIX"/wheels/setuptools-*.whl "$PREFIX"/wheels/wheel-*.whl
rm -rf "$SITE/bin"  # scripts; the wrapper below replaces them
log "installing wstest and its dependencies from PyPI"
pip2 -m pip install -q --no-deps --no-build-isolation --target "$SITE" "${PY2_PACKAGES[@]}"
rm -rf "$SITE/bin"

# --- 4. the wstest wrapper --------------------------------------------------
# The launcher makes wstest's listening sockets (fuzzingserver, echoserver)
# bind to WSTEST_LISTEN_INTERFACE, default 127.0.0.1, instead of all
# interfaces; set it to the empty string for wstest's own behaviour.
cat >"$PREFIX/bin/wstest-launcher.py" <<'EOF'
# Generated by tests/autobahn/install.sh: starts wstest on the private Python 2.7.
import os, sys
_iface = os.environ.get("WSTEST_LISTEN_INTERFACE", "127.0.0.1")
if _iface:
    import autobahn.twisted.websocket as _ws  # installs no reactor
    _listenWS = _ws.listenWS
    def listenWS(factory, contextFactory=None, backlog=50, interface=''):
        return _listenWS(factory, contextFactory, backlog, interface or _iface)
    _ws.listenWS = listenWS
from autobahntestsuite.wstest import run
sys.argv[0] = "wstest"
sys.exit(run())
EOF
{
  echo '#!/usr/bin/env bash'
  echo '# Generated by tests/autobahn/install.sh: runs wstest on the private Python 2.7.'
  echo 'set -e'
  echo 'PREFIX=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)'
  ld=""
  for d in "${libdirs[@]}"; do ld+="${ld:+:}\$PREFIX/$d"; done
  echo "export LD_LIBRARY_PATH=\"$ld\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
  echo 'export PYTHONHOME="$PREFIX/root/usr"'
  echo 'export PYTHONNOUSERSITE=1'
  echo 'unset PYTHONPATH PYTHONSTARTUP'
  echo 'exec "$PREFIX/root/usr/bin/python2.7" "$PREFIX/bin/wstest-launcher.py" "$@"'
} >"$PREFIX/bin/wstest"
chmod +x "$PREFIX/bin/wstest"

# --- 5. smoke test ----------------------------------------------------------
"$PREFIX/bin/wstest" --help >/dev/null || die "wstest --help failed"
py2_env "$PY2" -c 'import wsaccel, ujson, twisted, autobahn, autobahntestsuite; from autobahn.websocket.protocol import WebSocketProtocol' \
  || die "import check failed"
log "wstest version: $("$PREFIX/bin/wstest" --autobahnversion 2>&1 | tail -n1 || true)"

rm -rf "$PREFIX/tmp" "$PREFIX/apt/cache"
echo "$STAMP_VERSION" >"$STAMP"
log "done in $((SECONDS - START)) s: $PREFIX/bin/wstest"
