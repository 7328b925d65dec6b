#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for tests, on 127.0.0.1 only.
#
#   scripts/pg-throwaway.sh start   # prints postgres://USER:PASS@127.0.0.1:PORT/mcpgate_test
#   scripts/pg-throwaway.sh url     # prints the URL of the running cluster (exit 1 if none)
#   scripts/pg-throwaway.sh status  # human-readable status on stderr (exit 1 if not running)
#   scripts/pg-throwaway.sh stop    # stops it and deletes its data dir
#
# Only the URL goes to stdout; everything else goes to stderr.
# If no PostgreSQL server binaries are found, Debian's `postgresql` package is
# installed with apt-get (needs root). When run as root the server runs as the
# `postgres` system user (or a dedicated `mcpgate-pg` user if that is missing).
#
# Environment:
#   MCPGATE_PG_STATE   state file (default: <repo>/.pg-throwaway/state). Use a
#                      different file to run several clusters side by side.
#   MCPGATE_PG_BINDIR  directory holding initdb/pg_ctl/postgres (default: auto).
#   MCPGATE_PG_PORT    port to use (default: a free random port in 20000-49999).
#   TMPDIR             where the cluster's temp dir is created (default: /tmp).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_FILE="${MCPGATE_PG_STATE:-$ROOT/.pg-throwaway/state}"
DB_NAME="mcpgate_test"
DB_USER="mcpgate"

log() { printf 'pg-throwaway: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- helpers

find_bindir() {
  local d
  if [[ -n "${MCPGATE_PG_BINDIR:-}" ]]; then
    [[ -x "$MCPGATE_PG_BINDIR/pg_ctl" ]] || die "MCPGATE_PG_BINDIR=$MCPGATE_PG_BINDIR has no pg_ctl"
    printf '%s\n' "$MCPGATE_PG_BINDIR"; return 0
  fi
  # Debian/Ubuntu layout, highest major version first.
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5 -rn); do
    if [[ -x "$d/postgres" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
      printf '%s\n' "$d"; return 0
    fi
  done
  # Anything on PATH (non-Debian dev machines). Debian's /usr/bin/pg_ctl... are
  # not real binaries, but Debian is handled above.
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

install_postgres() {
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL server not found and apt-get is unavailable; install PostgreSQL or set MCPGATE_PG_BINDIR"
  [[ "$(id -u)" == 0 ]] || die "PostgreSQL server not found; install it (apt-get install postgresql) or run this as root"
  log "PostgreSQL server not found; installing Debian's postgresql package (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  # Keep the package's postinst from starting the default cluster on :5432.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  {
    apt-get -o DPkg::Lock::Timeout=300 update -q &&
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      postgresql postgresql-client
  } >&2 </dev/null || rc=$?
  if [[ $made_policy == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  [[ $rc == 0 ]] || die "apt-get install postgresql failed (exit $rc)"
}

# The OS user the server runs as ("" = current user).
pick_run_user() {
  if [[ "$(id -u)" != 0 ]]; then printf '\n'; return 0; fi
  if id -u postgres >/dev/null 2>&1; then printf 'postgres\n'; return 0; fi
  if ! id -u mcpgate-pg >/dev/null 2>&1; then
    log "creating system user mcpgate-pg to run PostgreSQL (it refuses to run as root)"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mcpgate-pg >&2 \
      || die "could not create user mcpgate-pg"
  fi
  printf 'mcpgate-pg\n'
}

# as_user USER DIR CMD...: run CMD as USER (or as ourselves if USER is empty)
# with DIR as working directory (postgres tools fail in unreadable cwds).
as_user() {
  local user="$1" dir="$2"; shift 2
  if [[ -z "$user" ]]; then
    (cd "$dir" && "$@")
  elif command -v runuser >/dev/null 2>&1; then
    (cd "$dir" && runuser -u "$user" -- "$@")
  else
    (cd "$dir" && setpriv --reuid="$user" --regid="$user" --init-groups -- "$@")
  fi
}

# kill -0 also succeeds for zombies (possible when no init reaps them), so look
# at /proc too when it exists.
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  if [[ -r "/proc/$1/stat" ]]; then
    local st; st="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true)"
    [[ "$st" != Z && "$st" != X ]] || return 1
  fi
  return 0
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

random_port() {
  local p _
  for _ in $(seq 1 50); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
    if ! port_in_use "$p"; then printf '%s\n' "$p"; return 0; fi
  done
  die "could not find a free port"
}

psql_bin() {
  local b
  b="$(find_bindir 2>/dev/null || true)"
  if [[ -n "$b" && -x "$b/psql" ]]; then printf '%s\n' "$b/psql"; return 0; fi
  command -v psql || die "psql not found"
}

# Loads STATE_* variables; returns 1 if there is no state file.
load_state() {
  [[ -f "$STATE_FILE" ]] || return 1
  STATE_PID="" STATE_DIR="" STATE_PORT="" STATE_URL="" STATE_USER="" STATE_BINDIR=""
  local k v
  while IFS='=' read -r k v; do
    case "$k" in
      pid) STATE_PID="$v" ;; dir) STATE_DIR="$v" ;; port) STATE_PORT="$v" ;;
      url) STATE_URL="$v" ;; user) STATE_USER="$v" ;; bindir) STATE_BINDIR="$v" ;;
    esac
  done <"$STATE_FILE"
  return 0
}

# True if the recorded cluster is alive and accepts connections.
state_alive() {
  [[ -n "${STATE_PID:-}" && -n "${STATE_URL:-}" ]] || return 1
  pid_alive "$STATE_PID" || return 1
  [[ -f "$STATE_DIR/data/postmaster.pid" ]] || return 1
  [[ "$(head -n1 "$STATE_DIR/data/postmaster.pid")" == "$STATE_PID" ]] || return 1
  PGCONNECT_TIMEOUT=5 "$(psql_bin)" "$STATE_URL" -X -q -t -A -c 'select 1' >/dev/null 2>&1
}

# Stop the recorded cluster (if any) and delete its dir and the state file.
do_stop() {
  load_state || { log "not running (no state file $STATE_FILE)"; return 0; }
  if [[ -n "$STATE_DIR" && -d "$STATE_DIR/data" ]]; then
    local bindir="${STATE_BINDIR:-$(find_bindir || true)}"
    if [[ -n "$bindir" && -f "$STATE_DIR/data/postmaster.pid" ]] && pid_alive "$STATE_PID"; then
      as_user "$STATE_USER" "$STATE_DIR" "$bindir/pg_ctl" -D "$STATE_DIR/data" -m fast -w -t 30 stop >&2 \
        || log "pg_ctl stop failed; killing pid $STATE_PID"
    fi
  fi
  if [[ -n "$STATE_PID" ]] && pid_alive "$STATE_PID"; then
    # Only kill it if it is still that cluster's postmaster.
    if [[ -f "$STATE_DIR/data/postmaster.pid" && "$(head -n1 "$STATE_DIR/data/postmaster.pid")" == "$STATE_PID" ]]; then
      kill -QUIT "$STATE_PID" 2>/dev/null || true
      local _; for _ in $(seq 1 50); do pid_alive "$STATE_PID" || break; sleep 0.1; done
    fi
  fi
  # Refuse to rm anything that does not look like our temp dir.
  if [[ -n "$STATE_DIR" && "$(basename "$STATE_DIR")" == mcpgate-pg-* && -d "$STATE_DIR" ]]; then
    rm -rf -- "$STATE_DIR"
  fi
  rm -f -- "$STATE_FILE"
  log "stopped${STATE_PORT:+ (port $STATE_PORT)}"
}

# ---------------------------------------------------------------- start

START_DIR="" START_USER="" START_BINDIR="" START_OK=1
cleanup_failed_start() {
  [[ $START_OK == 1 || -z "$START_DIR" ]] && return 0
  if [[ -s "$START_DIR/postgres.log" ]]; then
    log "--- server log (tail) ---"; tail -n 40 "$START_DIR/postgres.log" >&2 || true
  fi
  if [[ -f "$START_DIR/data/postmaster.pid" ]]; then
    as_user "$START_USER" "$START_DIR" "$START_BINDIR/pg_ctl" -D "$START_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf -- "$START_DIR"
}

do_start() {
  if load_state; then
    if state_alive; then
      log "already running on port $STATE_PORT (pid $STATE_PID)"
      printf '%s\n' "$STATE_URL"; return 0
    fi
    log "stale state file $STATE_FILE; cleaning up"
    do_stop
  fi

  if [[ -n "${MCPGATE_PG_BINDIR:-}" && ! -x "$MCPGATE_PG_BINDIR/pg_ctl" ]]; then
    die "MCPGATE_PG_BINDIR=$MCPGATE_PG_BINDIR has no pg_ctl"
  fi
  local bindir
  if ! bindir="$(find_bindir)"; then
    install_postgres
    bindir="$(find_bindir)" || die "PostgreSQL server still not found after install"
  fi
  local run_user; run_user="$(pick_run_user)"

  local base_tmp="${TMPDIR:-/tmp}"
  [[ -d "$base_tmp" ]] || base_tmp=/tmp
  local dir; dir="$(mktemp -d "$base_tmp/mcpgate-pg-XXXXXX")"
  chmod 700 "$dir"
  mkdir -p "$dir/sock"
  if [[ -n "$run_user" ]]; then
    chown -R "$run_user:" "$dir"
    # The server user must be able to reach the dir (e.g. TMPDIR under /root).
    if ! as_user "$run_user" / test -w "$dir"; then
      rm -rf -- "$dir"
      dir="$(mktemp -d /tmp/mcpgate-pg-XXXXXX)"; chmod 700 "$dir"; mkdir -p "$dir/sock"
      chown -R "$run_user:" "$dir"
    fi
  fi
  # Clean up the dir if anything below fails (die exits, so use an EXIT trap).
  START_DIR="$dir" START_USER="$run_user" START_BINDIR="$bindir" START_OK=0
  trap cleanup_failed_start EXIT

  local pass; pass="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
  printf '%s\n' "$pass" >"$dir/pwfile"
  [[ -z "$run_user" ]] || chown "$run_user:" "$dir/pwfile"
  chmod 600 "$dir/pwfile"

  log "initdb in $dir/data ($bindir, running as ${run_user:-$(id -un)})"
  as_user "$run_user" "$dir" "$bindir/initdb" -D "$dir/data" -U "$DB_USER" --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
    || as_user "$run_user" "$dir" "$bindir/initdb" -D "$dir/data" -U "$DB_USER" --pwfile="$dir/pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  rm -f "$dir/pwfile"

  # Loopback only, socket in our dir, tuned for disposable test data.
  cat >>"$dir/data/postgresql.conf" <<EOF

# --- mcpgate throwaway test cluster ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
unix_socket_permissions = 0700
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
EOF

  local port attempt started=0
  for attempt in 1 2 3 4 5; do
    port="${MCPGATE_PG_PORT:-$(random_port)}"
    if as_user "$run_user" "$dir" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
        -o "-p $port" -w -t 60 start >&2; then
      started=1; break
    fi
    if [[ -n "${MCPGATE_PG_PORT:-}" ]] || ! grep -qiE 'could not (bind|create listen)|address already in use' "$dir/postgres.log" 2>/dev/null; then
      break
    fi
    log "port $port taken, retrying ($attempt)"
  done
  [[ $started == 1 ]] || die "postgres failed to start"

  local pid; pid="$(head -n1 "$dir/data/postmaster.pid")"
  local psql; psql="$(psql_bin)"
  "$psql" -X -q -h "$dir/sock" -p "$port" -U "$DB_USER" -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE $DB_NAME" >&2 || die "could not create database $DB_NAME"

  local url="postgres://$DB_USER:$pass@127.0.0.1:$port/$DB_NAME"
  PGCONNECT_TIMEOUT=10 "$psql" "$url" -X -q -t -A -c 'select 1' >/dev/null \
    || die "cluster started but TCP login to $DB_NAME failed"

  mkdir -p "$(dirname "$STATE_FILE")"
  local tmp_state="$STATE_FILE.tmp.$$"
  ( umask 077; printf 'pid=%s\ndir=%s\nport=%s\nuser=%s\nbindir=%s\nurl=%s\n' \
      "$pid" "$dir" "$port" "$run_user" "$bindir" "$url" >"$tmp_state" )
  mv -f "$tmp_state" "$STATE_FILE"
  START_OK=1
  log "started on 127.0.0.1:$port (pid $pid, dir $dir, state $STATE_FILE)"
  printf '%s\n' "$url"
}

# ---------------------------------------------------------------- main

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  url)
    { load_state && state_alive; } || die "no running throwaway cluster (state file $STATE_FILE); run: $0 start"
    printf '%s\n' "$STATE_URL" ;;
  status)
    if load_state && state_alive; then
      log "running on 127.0.0.1:$STATE_PORT (pid $STATE_PID, dir $STATE_DIR)"
    else
      log "not running"; exit 1
    fi ;;
  *) printf 'usage: %s start|stop|url|status\n' "$0" >&2; exit 2 ;;
esac
