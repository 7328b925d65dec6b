#!/usr/bin/env bash
# THE test command: fmt, clippy, unit + integration tests (against a throwaway
# PostgreSQL), then the end-to-end suite against the debug binary.
#
#   scripts/test.sh
#
# Environment:
#   MCPGATE_SKIP_E2E=1            skip the e2e step (quick local runs; CI never sets it)
#   MCPGATE_TEST_POSTGRES_URL=…   use this PostgreSQL instead of starting a throwaway one
#   MCPGATE_SKIP_PG=1             don't start PostgreSQL (PG store tests skip; not allowed in CI)
#   MCPGATE_E2E_TIMEOUT=30m       wall-clock limit for the e2e step
#   CI=true                       set by CI: Cargo.lock must be up to date, PG is mandatory
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

START_TIME=$SECONDS
STEP="setup"
DONE_STEPS=()
SKIPPED=()
PG_STATE=""

is_ci() { [[ "${CI:-}" == true || "${CI:-}" == 1 ]]; }
# Print a section header (stderr, so stdout stays the summary only).
step() { STEP="$1"; printf '\n==> %s\n' "$1" >&2; }
ok() { DONE_STEPS+=("$STEP"); }
fail() { printf '\ntest.sh: error: %s\n' "$*" >&2; exit 1; }

on_exit() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ -n "$PG_STATE" ]]; then
    MCPGATE_PG_STATE="$PG_STATE" scripts/pg-throwaway.sh stop >/dev/null 2>&1 \
      || printf 'test.sh: warning: could not stop throwaway PostgreSQL (state %s)\n' "$PG_STATE" >&2
  fi
  local secs=$(( SECONDS - START_TIME ))
  local skipped=""
  if [[ ${#SKIPPED[@]} -gt 0 ]]; then skipped=" (skipped: ${SKIPPED[*]})"; fi
  if [[ $rc == 0 ]]; then
    printf '\ntest.sh: PASS in %ss: %s%s\n' "$secs" "${DONE_STEPS[*]}" "$skipped"
  else
    printf '\ntest.sh: FAIL at step "%s" (exit %s) after %ss; passed before it: %s%s\n' \
      "$STEP" "$rc" "$secs" "${DONE_STEPS[*]:-none}" "$skipped"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Nothing may prompt (CI has no stdin).
export CARGO_TERM_PROGRESS_WHEN=never
export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_yes=true npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

CARGO_LOCKED=()
if is_ci; then
  [[ "${MCPGATE_SKIP_E2E:-}" != 1 ]] || fail "MCPGATE_SKIP_E2E=1 is not allowed in CI"
  [[ "${MCPGATE_SKIP_PG:-}" != 1 ]] || fail "MCPGATE_SKIP_PG=1 is not allowed in CI"
  [[ -f Cargo.lock ]] && CARGO_LOCKED=(--locked)
fi
command -v cargo >/dev/null 2>&1 || fail "cargo not found on PATH"

# ---------------------------------------------------------------- static checks
step fmt
cargo fmt --all -- --check || fail "code is not rustfmt-formatted; run: cargo fmt --all"
ok

step shape
# No import cycle between top-level modules, no source file over 900 lines.
python3 scripts/check-shape.py || fail "the module shape check failed (scripts/check-shape.py; messages above)"
ok

step deploy
# Dockerfile lint, Kubernetes manifests, shipped configs (offline; tools from PyPI).
scripts/check-deploy.sh </dev/null >&2 || fail "the deployment files failed their checks (scripts/check-deploy.sh; messages above)"
ok

step clippy
cargo clippy "${CARGO_LOCKED[@]}" --all-targets -- -D warnings || fail "clippy found problems (warnings are errors)"
ok

# ---------------------------------------------------------------- postgres
step postgres
if [[ -n "${MCPGATE_TEST_POSTGRES_URL:-}" ]]; then
  printf 'using MCPGATE_TEST_POSTGRES_URL from the environment\n' >&2
  export MCPGATE_TEST_POSTGRES_URL
  ok
elif [[ "${MCPGATE_SKIP_PG:-}" == 1 ]]; then
  printf 'MCPGATE_SKIP_PG=1: not starting PostgreSQL; PostgreSQL store tests will skip\n' >&2
  SKIPPED+=(postgres)
else
  # Own state file per run, so we never stop a cluster someone started by hand.
  PG_STATE="$ROOT/.pg-throwaway/test-$$.state"
  MCPGATE_TEST_POSTGRES_URL="$(MCPGATE_PG_STATE="$PG_STATE" scripts/pg-throwaway.sh start </dev/null)" \
    || fail "could not start the throwaway PostgreSQL (scripts/pg-throwaway.sh start; messages above). Locally you can set MCPGATE_TEST_POSTGRES_URL to an existing database instead, or MCPGATE_SKIP_PG=1"
  [[ "$MCPGATE_TEST_POSTGRES_URL" == postgres://* ]] \
    || fail "scripts/pg-throwaway.sh start printed no URL"
  export MCPGATE_TEST_POSTGRES_URL
  ok
fi

# ---------------------------------------------------------------- rust tests
step tests
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run "${CARGO_LOCKED[@]}" --workspace --no-fail-fast \
    || fail "tests failed (cargo nextest run)"
  # nextest does not run doctests.
  if [[ -f src/lib.rs ]]; then
    cargo test "${CARGO_LOCKED[@]}" --workspace --doc || fail "doctests failed (cargo test --doc)"
  fi
else
  printf 'cargo-nextest not found; using cargo test\n' >&2
  cargo test "${CARGO_LOCKED[@]}" --workspace --no-fail-fast || fail "tests failed (cargo test)"
fi
ok

# ---------------------------------------------------------------- e2e
if [[ "${MCPGATE_SKIP_E2E:-}" == 1 ]]; then
  printf '\n==> e2e skipped (MCPGATE_SKIP_E2E=1)\n' >&2
  SKIPPED+=(e2e)
  exit 0
fi

step build
# The fixture upstream (tests/fixture_upstream) is an example: the gateway e2e tests front it.
cargo build "${CARGO_LOCKED[@]}" --bins --examples || fail "cargo build failed"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" == /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
MCPGATE_BIN="$TARGET_DIR/debug/mcpgate"
MCPGATE_FIXTURE_BIN="$TARGET_DIR/debug/examples/fixture-upstream"
[[ -x "$MCPGATE_BIN" ]] || fail "cargo build did not produce $MCPGATE_BIN"
[[ -x "$MCPGATE_FIXTURE_BIN" ]] || fail "cargo build did not produce $MCPGATE_FIXTURE_BIN"
export MCPGATE_BIN MCPGATE_FIXTURE_BIN
ok

step e2e-install
[[ -f scripts/e2e-install.sh ]] || fail "scripts/e2e-install.sh is missing (set MCPGATE_SKIP_E2E=1 to skip e2e locally)"
bash scripts/e2e-install.sh </dev/null || fail "scripts/e2e-install.sh failed"
[[ -x tests/e2e/.venv/bin/python ]] || fail "scripts/e2e-install.sh did not create tests/e2e/.venv"
ok

step e2e
rc=0
timeout -k 30s "${MCPGATE_E2E_TIMEOUT:-30m}" \
  tests/e2e/.venv/bin/python -m pytest tests/e2e -q </dev/null || rc=$?
if [[ $rc == 124 || $rc == 137 ]]; then
  fail "e2e tests timed out after ${MCPGATE_E2E_TIMEOUT:-30m}"
elif [[ $rc != 0 ]]; then
  fail "e2e tests failed (tests/e2e/.venv/bin/python -m pytest tests/e2e -q, MCPGATE_BIN=$MCPGATE_BIN)"
fi
ok
