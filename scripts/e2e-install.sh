#!/usr/bin/env bash
# Install the real third-party MCP clients used by the end-to-end suite, into the repo:
#   tests/e2e/.venv          Python venv from tests/e2e/requirements.txt (mcp 2.3.0, pytest, ...)
#   tests/e2e/node_modules   npm ci from tests/e2e/package-lock.json (TS SDK, mcp-remote,
#                            Inspector, conformance 0.1.16, conformance 0.2.0-alpha.12 under the
#                            alias conformance-requirements (for --requirements), server-everything
#                            (a gateway upstream), and node@22 whose binary runs the Node tools)
# and, system-wide from Debian (apt-get, as root; skipped when present), nginx and wrk for
# test_replicas.py (nginx is run by the test itself, as the current user, never as a service),
# and chromium for test_browser_pages.py (driven headless by puppeteer-core from node_modules;
# puppeteer's own browser download is never used).
# Idempotent: each half is skipped when its lock file's hash matches the last install.
# Usage (from anywhere): scripts/e2e-install.sh [--force]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
E2E="$ROOT/tests/e2e"
NODE22_VERSION="22.23.3"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[e2e-install] %s\n' "$*" >&2; }
hash_of() { sha256sum "$@" | sha256sum | cut -c1-64; }

# ---------------------------------------------------------------- nginx + wrk + chromium (Debian)
# test_replicas.py runs nginx (the balancer in front of three replicas) and wrk (the load during the
# rolling restart). Both come from Debian's packages; the service the nginx package would start is
# kept from starting (policy-rc.d, as scripts/pg-throwaway.sh does for PostgreSQL).
nginx_found() { command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; }
missing=()
nginx_found || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if [[ ${#missing[@]} -eq 0 ]]; then
  log "nginx, wrk and chromium present"
else
  command -v apt-get >/dev/null 2>&1 || { log "${missing[*]} missing and apt-get unavailable: install them"; exit 1; }
  [[ "$(id -u)" == 0 ]] || { log "${missing[*]} missing: install them (apt-get install ${missing[*]}) or run this as root"; exit 1; }
  log "installing Debian's ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  rc=0
  {
    apt-get -o DPkg::Lock::Timeout=300 update -q &&
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  } >&2 </dev/null || rc=$?
  if [[ $made_policy == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  [[ $rc == 0 ]] || { log "apt-get install ${missing[*]} failed (exit $rc)"; exit 1; }
  nginx_found || { log "nginx still missing after apt-get"; exit 1; }
fi

# ---------------------------------------------------------------- Python
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[[ -n "$PY" ]] || { log "no python3 found"; exit 1; }

VENV="$E2E/.venv"
PY_STAMP="$VENV/.installed-hash"
PY_HASH="$(hash_of "$E2E/requirements.txt")"
if [[ $FORCE == 0 && -x "$VENV/bin/python" && -f "$PY_STAMP" && "$(cat "$PY_STAMP")" == "$PY_HASH" ]]; then
  log "python venv up to date"
else
  log "creating python venv with $PY"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$E2E/requirements.txt"
  echo "$PY_HASH" > "$PY_STAMP"
  log "python: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"), "pytest", m.version("pytest"))')"
fi

# ---------------------------------------------------------------- FastMCP (a third-party peer)
# test_doctor.py runs `mcpgate doctor` against FastMCP's own OAuth server: the pinned FastMCP of
# the benchmarks (bench/.venv, idempotent when already installed).
bash "$ROOT/bench/install.sh" >/dev/null || { log "bench/install.sh (FastMCP for test_doctor.py) failed"; exit 1; }

# ---------------------------------------------------------------- Node
command -v npm >/dev/null 2>&1 || { log "npm not found (Node 20+ with npm is required)"; exit 1; }
NM="$E2E/node_modules"
NODE22="$NM/node/bin/node"
NPM_STAMP="$NM/.installed-hash"
NPM_HASH="$(hash_of "$E2E/package.json" "$E2E/package-lock.json" 2>/dev/null || echo none)"

node22_ok() { [[ -x "$NODE22" ]] && [[ "$("$NODE22" --version 2>/dev/null)" == "v$NODE22_VERSION" ]]; }

if [[ $FORCE == 0 && -f "$E2E/package-lock.json" && -f "$NPM_STAMP" && "$(cat "$NPM_STAMP")" == "$NPM_HASH" ]] && node22_ok; then
  log "node_modules up to date"
else
  # The Inspector (>= 22.19) and the conformance CLI need Node 22, and npm resolves engine-aware:
  # bootstrap node@22 from the npm registry and put it first on PATH for the install itself.
  BOOT="$E2E/.work/node22-bootstrap"
  if node22_ok; then
    BOOT_BIN="$NM/node/bin"
  else
    if [[ ! -x "$BOOT/node_modules/node/bin/node" ]]; then
      log "bootstrapping node@$NODE22_VERSION"
      mkdir -p "$BOOT"
      (cd "$BOOT" && npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
        --prefix "$BOOT" "node@$NODE22_VERSION" >/dev/null)
    fi
    BOOT_BIN="$BOOT/node_modules/node/bin"
  fi
  # Copy the bootstrap binary out of node_modules before npm ci deletes it.
  TMPBIN="$(mktemp -d)"
  trap 'rm -rf "$TMPBIN"' EXIT
  cp "$BOOT_BIN/node" "$TMPBIN/node"
  export PATH="$TMPBIN:$PATH"
  log "npm with node $(node --version)"
  cd "$E2E"
  if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund --loglevel=error
  else
    log "no package-lock.json: resolving and writing one (commit it)"
    npm install --no-audit --no-fund --loglevel=error
    NPM_HASH="$(hash_of "$E2E/package.json" "$E2E/package-lock.json")"
  fi
  node22_ok || { log "node@$NODE22_VERSION did not install a working binary at $NODE22"; exit 1; }
  echo "$NPM_HASH" > "$NPM_STAMP"
fi

# ---------------------------------------------------------------- verify
check_version() { # package-dir expected
  local got
  got="$("$NODE22" -p "require('$NM/$1/package.json').version")"
  [[ "$got" == "$2" ]] || { log "$1 is $got, expected $2"; exit 1; }
}
check_version @modelcontextprotocol/sdk 1.32.2
check_version mcp-remote 0.15.1
check_version @modelcontextprotocol/inspector 2.12.0
check_version @modelcontextprotocol/conformance 0.1.16
check_version conformance-requirements 0.2.0-alpha.12
check_version @modelcontextprotocol/server-everything 2026.8.31
check_version puppeteer-core 25.19.0
check_version axe-core 4.14.1
log "ready: node $("$NODE22" --version), $("$VENV/bin/python" --version)"
