#!/usr/bin/env bash
# Idempotent installer for the load benchmark's tools (benchmark only, not used by tests/CI).
# - wrk (Debian package; `oha` is not packaged in Debian bookworm)
# - bench/.venv with a pinned FastMCP for the side-by-side comparison server, and PyJWT +
#   cryptography (already FastMCP dependencies; pinned here because bench/jwt_tool.py mints the
#   tokens of bench/run_auth.sh with them)
# - openssl (bench/run_auth.sh generates its RSA key with `openssl genpkey`)
# - nginx (bench/run_gateway.sh's plain-proxy leg)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# 4.1.3..4.1.6 need certifi>=2026.10.19 (via fastmcp-slim[server]), which the registry does
# not have (newest: 2026.10.18), so they are uninstallable here; 4.1.2 is the newest 4.1.x that resolves.
FASTMCP_VERSION="${FASTMCP_VERSION:-4.1.2}"
PYJWT_VERSION="${PYJWT_VERSION:-2.15.1}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v wrk >/dev/null 2>&1; then
  echo "install.sh: installing wrk via apt-get" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
# nginx: run_gateway.sh's plain-proxy leg (the floor any HTTP proxy starts from)
if ! command -v nginx >/dev/null 2>&1; then
  echo "install.sh: installing nginx-light via apt-get" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null
fi
if ! command -v curl >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq curl >/dev/null
fi
if ! command -v openssl >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl >/dev/null
fi

VENV="$HERE/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "install.sh: creating $VENV" >&2
  python3 -m venv "$VENV"
fi
have="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("fastmcp"))' 2>/dev/null || true)"
if [ "$have" != "$FASTMCP_VERSION" ]; then
  echo "install.sh: installing fastmcp==$FASTMCP_VERSION into $VENV" >&2
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "fastmcp==$FASTMCP_VERSION"
fi
if ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  echo "install.sh: installing pyjwt[crypto]==$PYJWT_VERSION into $VENV" >&2
  "$VENV/bin/pip" install -q "pyjwt[crypto]==$PYJWT_VERSION"
fi
echo "install.sh: wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), fastmcp $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("fastmcp"))')" >&2
