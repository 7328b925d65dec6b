#!/usr/bin/env bash
# OAuth authorization-server load benchmark (a benchmark, never a test): mcpgate in
# `auth.mode = "local"` on SQLite and on PostgreSQL, and FastMCP's in-process authorization
# server (InMemoryOAuthProvider) for reference, all started at once (each mcpgate with users
# bench0..3 added by `mcpgate users add`). Each server must first pass a check: one complete flow,
# a refresh that rotates, tools/call add with the access token and 401 without (abort on
# surprise). Then, ROUNDS times, round-robin over the servers point by point:
#   flows     complete OAuth flows (register -> authorize -> login -> consent -> token) by
#             N concurrent workers (bench/oauth_load.py flows; a new browser per flow, so every
#             flow logs in: mcpgate's Argon2id password hash is tens of ms of CPU on purpose and
#             dominates this figure)
#   register  RFC 7591 DCR throughput (wrk, bench/oauth_register.lua)
#   refresh   /token refresh_token throughput: one wrk thread = one connection = one
#             refresh-token chain of its own client, rotated on every request
#             (bench/oauth_refresh.lua; chains minted just before by bench/oauth_load.py mint)
#   signedin  complete flows by a browser already signed in (the cookie jar kept across flows,
#             signed in once before the clock starts): register -> authorize -> consent page ->
#             consent -> token, no password check (bench/oauth_load.py flows --signed-in)
#   code      /token authorization_code throughput: codes minted just before by signed-in
#             browsers (bench/oauth_load.py codes, not measured), each redeemed once by wrk
#             (bench/oauth_code.lua, one thread per connection)
# Prints a markdown report on stdout; raw output and logs go to bench/out/oauth-<timestamp>/.
#
#   bench/install.sh && bench/run_oauth.sh
#
# Env knobs (defaults in brackets):
#   MCPGATE_BIN [target/release/mcpgate]   DURATION [10] seconds per point   ROUNDS [3]
#   FLOW_WORKERS ["1 4 16"]   REFRESH_CONNS ["1 8 64"]   REGISTER_CONNS ["8"]
#   SIGNED_IN_WORKERS ["1 4"]   CODE_CONNS ["1 8"]   CODES_PER_POINT [25000] codes minted per
#     server and code point (a point that uses them all up before DURATION ends is reported
#     failed: "exhausted")
#   STORES ["sqlite postgres"]   FASTMCP [1] (0 skips the FastMCP reference)
#   BENCH_POSTGRES_URL [unset: a throwaway cluster via scripts/pg-throwaway.sh]; a fresh
#     database is created on it for the run and dropped afterwards
#   PG_DURABLE [1]: set fsync, synchronous_commit and full_page_writes back to on (PostgreSQL's
#     defaults) on the throwaway cluster, which scripts/pg-throwaway.sh turns off for tests;
#     0 keeps them off
#   STORE_MAX_CONNECTIONS [unset = mcpgate's default pool size]
#   REGISTRATIONS_PER_MINUTE [10000000]: auth.local.registrations_per_minute (mcpgate's default,
#     60 per client address, would turn the register/flow points into 429s from one address)
#   FLOW_PROCESSES [0]: 1 runs each flow worker in a process of its own (bench/oauth_load.py
#     flows --processes) instead of threads sharing one GIL, so the driver does not cap the rate
#   RUST_LOG [warn]  MCPGATE_LOG__LEVEL [warn]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # ROOT, PY and the shared knobs: MCPGATE_BIN, DURATION, MCPGATE_SERVE_ARGS, ...
FLOW_WORKERS="${FLOW_WORKERS:-1 4 16}"
REFRESH_CONNS="${REFRESH_CONNS:-1 8 64}"
REGISTER_CONNS="${REGISTER_CONNS:-8}"
SIGNED_IN_WORKERS="${SIGNED_IN_WORKERS-1 4}"
FLOW_PROCESSES="${FLOW_PROCESSES:-0}"
PROCESSES_FLAG=()
[ "$FLOW_PROCESSES" = 1 ] && PROCESSES_FLAG=(--processes)
CODE_CONNS="${CODE_CONNS-1 8}"
CODES_PER_POINT="${CODES_PER_POINT:-25000}"
STORES="${STORES-sqlite postgres}"
FASTMCP="${FASTMCP:-1}"
PG_DURABLE="${PG_DURABLE:-1}"
REGISTRATIONS_PER_MINUTE="${REGISTRATIONS_PER_MINUTE:-10000000}"
ROUNDS="${ROUNDS:-3}"
LOAD="$HERE/oauth_load.py"
PG_STATE="" PG_ADMIN_URL="" PG_DB="" PSQL=""
# Called by lib.sh's cleanup once the servers are stopped: drop the database, stop the cluster.
# shellcheck disable=SC2317  # invoked indirectly
after_servers_stopped() {
  if [ -n "$PG_DB" ] && [ -n "$PSQL" ]; then
    "$PSQL" "$PG_ADMIN_URL" -X -q -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ -n "$PG_STATE" ]; then
    MCPGATE_PG_STATE="$PG_STATE" "$ROOT/scripts/pg-throwaway.sh" stop >/dev/null 2>&1 \
      || echo "run_oauth.sh: warning: could not stop the throwaway PostgreSQL (state $PG_STATE)" >&2
  fi
}
bench_init oauth-

PASSWORD="bench-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
USERS="bench0,bench1,bench2,bench3"   # worker i logs in as bench(i mod 4)

# ---------------------------------------------------------------- PostgreSQL
pg_postmaster=""
if [[ " $STORES " == *" postgres "* ]]; then
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
    [ -x "$d/psql" ] && { PSQL="$d/psql"; break; }
  done
  [ -n "$PSQL" ] || PSQL="$(command -v psql || true)"
  if [ -n "${BENCH_POSTGRES_URL:-}" ]; then
    PG_ADMIN_URL="$BENCH_POSTGRES_URL"
    PG_NOTE="external server from BENCH_POSTGRES_URL (settings as found)"
  else
    PG_STATE="$TMP/pg.state"
    echo "run_oauth.sh: starting a throwaway PostgreSQL (scripts/pg-throwaway.sh)" >&2
    PG_ADMIN_URL="$(MCPGATE_PG_STATE="$PG_STATE" "$ROOT/scripts/pg-throwaway.sh" start </dev/null)" \
      || die "could not start the throwaway PostgreSQL"
    # the PSQL found by pg-throwaway.sh is the same lookup as above
    [ -n "$PSQL" ] || die "psql not found"
    pg_postmaster="$(sed -n 's/^pid=//p' "$PG_STATE")"
    if [ "$PG_DURABLE" = 1 ]; then
      "$PSQL" "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 \
        -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET synchronous_commit = on" \
        -c "ALTER SYSTEM SET full_page_writes = on" -c "SELECT pg_reload_conf()" >/dev/null \
        || die "could not turn fsync/synchronous_commit back on"
      sleep 1
    fi
    PG_NOTE="throwaway cluster (scripts/pg-throwaway.sh), loopback TCP"
  fi
  [ -n "$PSQL" ] || die "psql not found (needed to create the benchmark database)"
  PG_SETTINGS="$("$PSQL" "$PG_ADMIN_URL" -X -q -t -A -F= -c "SELECT name, setting FROM pg_settings WHERE name IN ('fsync','synchronous_commit','full_page_writes','shared_buffers','max_connections') ORDER BY name" | tr '\n' ' ')"
  PG_VERSION="$("$PSQL" "$PG_ADMIN_URL" -X -q -t -A -c 'SHOW server_version' | awk '{print $1}')"
  echo "run_oauth.sh: PostgreSQL $PG_VERSION: $PG_SETTINGS" >&2
fi

# pg_ticks NAME: CPU ticks of the throwaway cluster's postmaster and all its children (the
# backends); 0 unless NAME is mg-postgres (the idle cluster's background work is not counted
# against the other servers)
pg_ticks() {
  if [ "$1" != mg-postgres ] || [ -z "$pg_postmaster" ]; then echo 0; return; fi
  local t=0 p
  for p in "$pg_postmaster" $(pgrep -P "$pg_postmaster" 2>/dev/null); do
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  echo "$t"
}
# pg_stats NAME: "XID WAL_BYTES" of the cluster now ("0 0" unless NAME is mg-postgres). Only
# transactions that write get an xid, so the xid delta counts write transactions (commits that
# wait for a WAL flush with synchronous_commit = on); this query itself takes one.
pg_stats() {
  if [ "$1" != mg-postgres ] || [ -z "$PG_DB" ]; then echo "0 0"; return; fi
  "$PSQL" "$PG_ADMIN_URL" -X -q -t -A -F' ' \
    -c "SELECT pg_current_xact_id()::text::bigint, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint" 2>/dev/null || echo "0 0"
}
# per_op BEFORE AFTER OPS: "write_tx_per_op=X wal_kb_per_op=Y"
per_op() {
  awk -v b="$1" -v a="$2" -v n="$3" 'BEGIN{ split(b, x, " "); split(a, y, " ");
    if (n <= 0 || y[1] == 0) { print "write_tx_per_op=- wal_kb_per_op=-"; exit }
    printf "write_tx_per_op=%.2f wal_kb_per_op=%.1f", (y[1]-x[1]-1)/n, (y[2]-x[2])/1024/n }'
}
pct_of() { awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" -v d="$3" 'BEGIN{ if (d <= 0) print "n/a"; else printf "%.0f", (b-a)/hz/d*100 }'; }

# ---------------------------------------------------------------- servers
declare -A BASE PID RSS
SERVERS=()   # in the order run within each point
# check_and_warm NAME: one checked flow + refresh + tools/call, then 2 s of flows
check_and_warm() {
  local name="$1" chk
  chk="$("$PY" "$LOAD" check "${BASE[$name]}" --user bench0 --password "$PASSWORD" --mcp 2>"$OUT/$name-check.err")" \
    || { cat "$OUT/$name-check.err" >&2; die "$name: check failed (request/response above)"; }
  echo "$chk" >"$OUT/$name-check.json"
  echo "run_oauth.sh: $name: check ok: $chk" >&2
  "$PY" "$LOAD" flows "${BASE[$name]}" --workers 2 --duration 2 --users "$USERS" --password "$PASSWORD" \
    >"$OUT/$name-warmup.txt" 2>&1 || true
}

for store in $STORES; do
  name="mg-$store"
  port="$(free_port)"
  data="$TMP/$name-data"
  case "$store" in
    sqlite) url="sqlite://$data/mcpgate.db" ;;
    postgres)
      PG_DB="mcpgate_bench_$(date +%s)_$$"
      "$PSQL" "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $PG_DB" >/dev/null || die "CREATE DATABASE failed"
      url="$("$PY" -c 'import sys, urllib.parse as p; u = p.urlsplit(sys.argv[1]); print(p.urlunsplit(u._replace(path="/" + sys.argv[2])))' "$PG_ADMIN_URL" "$PG_DB")"
      ;;
    *) die "unknown store $store (sqlite | postgres)" ;;
  esac
  # All load comes from 127.0.0.1: lift the per-address DCR and /authorize limits (default 60
  # per minute each), or the register and flow points would measure 429s; and the cap on
  # registrations that never got a token (10000), which the register point passes in seconds.
  mcpgate_config "$TMP/$name.toml" "$port" "$data" local "[auth.local]
access_token_ttl_secs = 3600
registrations_per_minute = $REGISTRATIONS_PER_MINUTE
authorize_requests_per_minute = $REGISTRATIONS_PER_MINUTE
max_unused_clients = 10000000" "$url"
  for u in ${USERS//,/ }; do
    printf '%s\n' "$PASSWORD" | "$MCPGATE_BIN" users add "$u" --password-stdin --config "$TMP/$name.toml" >>"$OUT/users-add.log" 2>&1 \
      || { tail -20 "$OUT/users-add.log" >&2; die "mcpgate users add $u failed"; }
  done
  start_mcpgate "$name" "$TMP/$name.toml"
  PID[$name]="$STARTED_PID"; BASE[$name]="http://127.0.0.1:$port"
  wait_healthz "$name" "$port" "${PID[$name]}"
  SERVERS+=("$name")
done
if [ "$FASTMCP" = 1 ]; then
  port="$(free_port)"
  "$PY" "$HERE/fastmcp_server.py" "$port" --oauth >"$OUT/fm-memory.log" 2>&1 &
  PID[fm-memory]=$!; PIDS+=("${PID[fm-memory]}"); BASE[fm-memory]="http://127.0.0.1:$port"
  wait_listen fm-memory "$port" "${PID[fm-memory]}"
  SERVERS+=(fm-memory)
fi
[ "${#SERVERS[@]}" -gt 0 ] || die "nothing to measure (STORES empty and FASTMCP=0)"
for s in "${SERVERS[@]}"; do check_and_warm "$s"; done

# ---------------------------------------------------------------- points
# measured NAME KIND N R OPS_FIELD CMD...: runs CMD (which prints the result line on stdout)
# and stores it in RES[NAME,KIND,N,R] with the server's and PostgreSQL's CPU % over the wall
# time of CMD, the PG write transactions and WAL per successful operation (field OPS_FIELD), and
# compiling=1 when cargo/rustc ran at the start or the end of the point.
declare -A RES
measured() {
  local name="$1" kind="$2" n="$3" r="$4" ops="$5" pid="${PID[$1]}" s0 c0 p0 t0 line d comp
  shift 5
  s0="$(pg_stats "$name")"
  comp="$(compiling)"
  c0="$(cpu_ticks "$pid")"; p0="$(pg_ticks "$name")"; t0="$(date +%s.%N)"
  line="$("$@")" || true
  d="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')"
  [ -n "$line" ] || die "$name: $kind n=$n produced no result (see $OUT)"
  [ "$(compiling)" = 0 ] || comp=1
  line="$line server_cpu_pct=$(pct_of "$c0" "$(cpu_ticks "$pid")" "$d") pg_cpu_pct=$(pct_of "$p0" "$(pg_ticks "$name")" "$d") compiling=$comp"
  RES[$name,$kind,$n,$r]="$line $(per_op "$s0" "$(pg_stats "$name")" "$(field "$ops" "$line")")"
}

# flows_run BASE W OUTFILE: complete flows by W workers; prints the BENCH_FLOW line
# shellcheck disable=SC2317  # (flows_run and wrk_run are invoked by measured)
flows_run() {
  "$PY" "$LOAD" flows "$1" --workers "$2" --duration "$DURATION" --users "$USERS" --password "$PASSWORD" \
    "${PROCESSES_FLAG[@]}" 2>>"$OUT/load.err" | tee "$3" | grep '^BENCH_FLOW ' | head -1
}
# signed_in_run BASE W OUTFILE: the same, by signed-in browsers
# shellcheck disable=SC2317
signed_in_run() {
  "$PY" "$LOAD" flows "$1" --workers "$2" --duration "$DURATION" --users "$USERS" --password "$PASSWORD" \
    --signed-in "${PROCESSES_FLAG[@]}" 2>>"$OUT/load.err" | tee "$3" | grep '^BENCH_FLOW ' | head -1
}
# wrk_run BASE CONNS THREADS SCRIPT OUTFILE [ENV=VAL...]: prints the BENCH line
# shellcheck disable=SC2317
wrk_run() {
  local base="$1" c="$2" t="$3" script="$4" out="$5"
  shift 5
  env "$@" timeout $((DURATION + 30)) wrk -t"$t" -c"$c" -d"${DURATION}s" --latency -s "$script" "$base" >"$out" 2>&1 || true
  grep '^BENCH ' "$out" | head -1 || { cat "$out" >&2; true; }
}

STEAL0="$(steal_ticks)"; T0="$(date +%s)"
for r in $(seq 1 "$ROUNDS"); do
  for w in $FLOW_WORKERS; do for s in "${SERVERS[@]}"; do
    echo "run_oauth.sh: round $r/$ROUNDS: $s: flows, $w workers, ${DURATION}s" >&2
    measured "$s" flows "$w" "$r" flows flows_run "${BASE[$s]}" "$w" "$OUT/flows-$s-w$w-r$r.txt"
  done; done
  for w in $SIGNED_IN_WORKERS; do for s in "${SERVERS[@]}"; do
    echo "run_oauth.sh: round $r/$ROUNDS: $s: signed-in flows, $w workers, ${DURATION}s" >&2
    measured "$s" signedin "$w" "$r" flows signed_in_run "${BASE[$s]}" "$w" "$OUT/signedin-$s-w$w-r$r.txt"
  done; done
  for c in $REGISTER_CONNS; do for s in "${SERVERS[@]}"; do
    echo "run_oauth.sh: round $r/$ROUNDS: $s: register, $c connections, ${DURATION}s" >&2
    measured "$s" register "$c" "$r" ok wrk_run "${BASE[$s]}" "$c" "$(wrk_threads "$c")" "$HERE/oauth_register.lua" \
      "$OUT/wrk-$s-register-c$c-r$r.txt"
  done; done
  for c in $REFRESH_CONNS; do for s in "${SERVERS[@]}"; do
    chains="$TMP/chains-$s-$c-$r.txt"
    "$PY" "$LOAD" mint "${BASE[$s]}" --n "$c" --out "$chains" --users "$USERS" --password "$PASSWORD" --workers 4 \
      2>>"$OUT/load.err" || die "$s: could not mint $c refresh-token chains (see $OUT/load.err)"
    echo "run_oauth.sh: round $r/$ROUNDS: $s: refresh, $c connections, ${DURATION}s" >&2
    measured "$s" refresh "$c" "$r" ok wrk_run "${BASE[$s]}" "$c" "$c" "$HERE/oauth_refresh.lua" \
      "$OUT/wrk-$s-refresh-c$c-r$r.txt" REFRESH_CHAINS="$chains"
  done; done
  for c in $CODE_CONNS; do for s in "${SERVERS[@]}"; do
    codes="$TMP/codes-$s-$c-$r.txt"
    echo "run_oauth.sh: round $r/$ROUNDS: $s: minting $CODES_PER_POINT codes" >&2
    "$PY" "$LOAD" codes "${BASE[$s]}" --n "$CODES_PER_POINT" --out "$codes" --users "$USERS" --password "$PASSWORD" \
      --workers 4 2>>"$OUT/load.err" || die "$s: could not mint $CODES_PER_POINT codes (see $OUT/load.err)"
    echo "run_oauth.sh: round $r/$ROUNDS: $s: code redemption, $c connections, ${DURATION}s" >&2
    measured "$s" code "$c" "$r" ok wrk_run "${BASE[$s]}" "$c" "$c" "$HERE/oauth_code.lua" \
      "$OUT/wrk-$s-code-c$c-r$r.txt" CODES="$codes" WRK_THREADS="$c" RESOURCE="${BASE[$s]}/mcp"
  done; done
done
STEAL_PCT="$(steal_pct "$STEAL0" "$T0")"
for s in "${SERVERS[@]}"; do
  kill -0 "${PID[$s]}" 2>/dev/null || die "$s died during the run; see $OUT/$s.log"
  RSS[$s]="$(mb "$(rss_kb "${PID[$s]}")") MB (peak VmHWM $(mb "$(awk '/^VmHWM:/ {print $2}' "/proc/${PID[$s]}/status")") MB)"
done

# ---------------------------------------------------------------- report
label() { case "$1" in
  mg-sqlite) echo 'mcpgate, SQLite' ;; mg-postgres) echo 'mcpgate, PostgreSQL' ;;
  fm-memory) echo 'FastMCP InMemoryOAuthProvider' ;; *) echo "$1" ;; esac; }
# joined FIELD K1 K2...: the distinct values of a non-numeric field over the rounds, "-" if none
joined() {
  local f="$1" k r; shift; k="$(IFS=,; echo "$*")"
  for r in $(seq 1 "$ROUNDS"); do field "$f" "${RES[$k,$r]}"; echo; done | grep -v '^-\?$' | sort -u | paste -sd';' | sed 's/^$/-/'
}
# flow_fails K1 K2...: failed flows summed over the rounds
flow_fails() {
  local k r n=0; k="$(IFS=,; echo "$*")"
  for r in $(seq 1 "$ROUNDS"); do n=$(( n + $(field failed "${RES[$k,$r]}") )); done
  echo "$n"
}
# num FMT VALUE: printf FMT for numbers, anything else ("-", "(no login)") as it is
# shellcheck disable=SC2059  # FMT is one of the literal formats below
num() { if [[ "$2" =~ ^-?[0-9.]+$ ]]; then printf "$1" "$2"; else printf '%s' "$2"; fi; }
cpu_cols() { # K1 K2...: server CPU, PG CPU, PG write transactions per op, PG WAL KB per op
  local pg
  pg="$(med pg_cpu_pct "$@")"; [ "$pg" = 0 ] && pg="-"
  printf '%s | %s | %s | %s' "$(num %.0f "$(med server_cpu_pct "$@")")" "$(num %.0f "$pg")" \
    "$(num %.2f "$(med write_tx_per_op "$@")")" "$(num %.1f "$(med wal_kb_per_op "$@")")"
}
# wrk_table KIND CONNS PLURAL SINGULAR: one row per server and connection count
wrk_table() {
  local kind="$1" conns="$2" s c e
  echo "| server | conns | $3/s | range | p50 ms | p99 ms | failed | failed statuses | server CPU % | PG CPU % | PG write tx/$4 | PG WAL KB/$4 |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
  for s in "${SERVERS[@]}"; do for c in $conns; do
    e="$(errsum "$s" "$kind" "$c")"; [ "$e" = 0 ] || ANY_FAIL=1
    printf '| %s | %s | %.0f%s | %s | %s | %s | %s | %s | %s |\n' "$(label "$s")" "$c" "$(med rps "$s" "$kind" "$c")" \
      "$(compiled "$s" "$kind" "$c")" "$(range rps "$s" "$kind" "$c")" "$(ms "$(med p50_us "$s" "$kind" "$c")")" \
      "$(ms "$(med p99_us "$s" "$kind" "$c")")" "$e" "$(joined bad_statuses "$s" "$kind" "$c")" "$(cpu_cols "$s" "$kind" "$c")"
  done; done
}
# rate SERVER KIND N: median flows/s or successful req/s of one point
rate() {
  if [ -z "${RES[$1,$2,$3,1]:-}" ]; then echo 0; elif [ "$2" = flows ] || [ "$2" = signedin ]; then med flows_per_s "$@"; else med rps "$@"; fi
}
ANY_FAIL=0
{
  echo "### OAuth authorization server run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  machine_line
  echo "- mcpgate: \`$MCPGATE_BIN\` ($(mcpgate_version)), \`auth.mode = \"local\"\`, MCPGATE_LOG__LEVEL=$MCPGATE_LOG__LEVEL, store pool ${STORE_MAX_CONNECTIONS:-default}, \`registrations_per_minute = $REGISTRATIONS_PER_MINUTE\` (default 60 per address; all load here comes from one address); SQLite WAL + synchronous=NORMAL"
  [ -z "${PG_VERSION:-}" ] || echo "- PostgreSQL $PG_VERSION, $PG_NOTE: $PG_SETTINGS"
  [ "$FASTMCP" != 1 ] || echo "- FastMCP: $(fastmcp_versions), \`InMemoryOAuthProvider\` (bench/fastmcp_server.py --oauth), 1 uvicorn worker, access log off"
  echo "- load: flows by bench/oauth_load.py ($([ "$FLOW_PROCESSES" = 1 ] && echo "one Python process per worker" || echo "Python threads"), one keep-alive connection per worker, a new cookie jar per flow); register and refresh by wrk $(wrk_version), refresh with one thread per connection; everything on the same $(nproc) cores; all servers up for the whole run, measured one at a time; ${DURATION}s per point, $ROUNDS round(s) of every point, round-robin over the servers (figures are medians over the rounds, range = min-max)"
  echo "- host CPU steal during the points: $STEAL_PCT % of the $(nproc) cores; a rate marked (cN) comes from a point during which cargo/rustc ran (at its start or end) in N of the rounds"
  echo "- **mcpgate's login hashes the password with Argon2id (m = 19 MiB, t = 2), which costs tens of ms of CPU per login on purpose**: it dominates the complete-flow figures (see the login p50 column). FastMCP's InMemoryOAuthProvider has no login and no consent page (its /authorize redirects with a code at once), keeps everything in memory and issues opaque random tokens: see the requests/flow column and docs/benchmarks.md for what differs."
  echo
  echo "Complete flows (register -> authorize -> login -> consent -> token, a new browser per flow):"
  echo
  echo "| server | workers | flows/s | range | p50 ms | p99 ms | login p50 ms | token p50 ms | requests/flow | failed | failures | server CPU % | PG CPU % | PG write tx/flow | PG WAL KB/flow | client CPU % |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
  for s in "${SERVERS[@]}"; do for w in $FLOW_WORKERS; do
    f="$(flow_fails "$s" flows "$w")"; [ "$f" = 0 ] || ANY_FAIL=1
    lp="$(med login_p50_ms "$s" flows "$w")"; [ "$(med login_n "$s" flows "$w")" = 0 ] && lp="(no login)"
    printf '| %s | %s | %.1f%s | %s | %.1f | %.1f | %s | %.1f | %.1f | %s | %s | %s | %.0f |\n' "$(label "$s")" "$w" \
      "$(med flows_per_s "$s" flows "$w")" "$(compiled "$s" flows "$w")" "$(range flows_per_s "$s" flows "$w")" \
      "$(med p50_ms "$s" flows "$w")" "$(med p99_ms "$s" flows "$w")" "$(num %.1f "$lp")" "$(med token_p50_ms "$s" flows "$w")" \
      "$(med requests_per_flow "$s" flows "$w")" "$f" "$(joined fail_kinds "$s" flows "$w")" "$(cpu_cols "$s" flows "$w")" \
      "$(med client_cpu_pct "$s" flows "$w")"
  done; done
  echo
  if [ -n "$SIGNED_IN_WORKERS" ]; then
    echo "Complete flows by a browser already signed in (register -> authorize -> consent page -> consent -> token; the cookie jar kept, signed in once before the clock starts):"
    echo
    echo "| server | workers | flows/s | range | p50 ms | p99 ms | token p50 ms | requests/flow | failed | failures | server CPU % | PG CPU % | PG write tx/flow | PG WAL KB/flow | client CPU % |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    for s in "${SERVERS[@]}"; do for w in $SIGNED_IN_WORKERS; do
      f="$(flow_fails "$s" signedin "$w")"; [ "$f" = 0 ] || ANY_FAIL=1
      printf '| %s | %s | %.1f%s | %s | %.1f | %.1f | %.1f | %.1f | %s | %s | %s | %.0f |\n' "$(label "$s")" "$w" \
        "$(med flows_per_s "$s" signedin "$w")" "$(compiled "$s" signedin "$w")" "$(range flows_per_s "$s" signedin "$w")" \
        "$(med p50_ms "$s" signedin "$w")" "$(med p99_ms "$s" signedin "$w")" "$(med token_p50_ms "$s" signedin "$w")" \
        "$(med requests_per_flow "$s" signedin "$w")" "$f" "$(joined fail_kinds "$s" signedin "$w")" "$(cpu_cols "$s" signedin "$w")" \
        "$(med client_cpu_pct "$s" signedin "$w")"
    done; done
    echo
  fi
  echo "Refresh-token rotation at /token (each connection rotates its own chain; only 200s with a new refresh token count):"
  echo
  wrk_table refresh "$REFRESH_CONNS" refreshes refresh
  echo
  if [ -n "$CODE_CONNS" ]; then
    echo "Authorization-code redemption at /token ($CODES_PER_POINT codes minted per point by signed-in browsers, not measured; each redeemed once; only 200s with an access and a refresh token count):"
    echo
    wrk_table code "$CODE_CONNS" redemptions redemption
    echo
  fi
  echo "Dynamic client registration (POST /register, a new public client per request):"
  echo
  wrk_table register "$REGISTER_CONNS" registrations registration
  if [ "$FASTMCP" = 1 ] && [ -n "$STORES" ]; then
    echo
    echo "mcpgate / FastMCP (medians of successful operations per second, same run):"
    echo
    printf '| point |'; for st in $STORES; do printf ' %s |' "$(label "mg-$st")"; done; printf ' FastMCP |'
    for st in $STORES; do printf ' %s / FastMCP |' "$(label "mg-$st" | sed 's/^mcpgate, //')"; done; echo
    printf '|---|'; for _ in $STORES $STORES; do printf -- '---:|'; done; printf -- '---:|\n'
    for row in $(for w in $FLOW_WORKERS; do echo "flows:$w"; done; for c in $REGISTER_CONNS; do echo "register:$c"; done; \
                 for c in $REFRESH_CONNS; do echo "refresh:$c"; done; for w in $SIGNED_IN_WORKERS; do echo "signedin:$w"; done; \
                 for c in $CODE_CONNS; do echo "code:$c"; done); do
      kind="${row%%:*}"; n="${row#*:}"
      case "$kind" in flows) what="flows/s, $n workers" ;; register) what="registrations/s, $n conns" ;; refresh) what="refreshes/s, $n conns" ;;
        signedin) what="signed-in flows/s, $n workers" ;; code) what="code redemptions/s, $n conns" ;; esac
      fm="$(rate fm-memory "$kind" "$n")"
      printf '| %s |' "$what"; for st in $STORES; do printf ' %.1f |' "$(rate "mg-$st" "$kind" "$n")"; done; printf ' %.1f |' "$fm"
      for st in $STORES; do printf ' %s |' "$(ratio "$(rate "mg-$st" "$kind" "$n")" "$fm")"; done; echo
    done
  fi
  echo
  echo "CPU % = process CPU time during the point / wall time (100 = one core). PG CPU % = the PostgreSQL postmaster and backends. client CPU % = the Python flow driver. PG write tx/op = transactions that wrote (xid delta of the cluster, which only the benchmark database uses) per successful operation, i.e. commits that wait for a WAL flush; PG WAL KB/op = WAL bytes written per successful operation. failed statuses / failures = HTTP status (and endpoint) of the failed responses, over all rounds."
  echo -n "RSS at the end of the run:"
  for s in "${SERVERS[@]}"; do echo -n " $(label "$s") ${RSS[$s]};"; done
  echo
  for s in "${SERVERS[@]}"; do
    [ "${s%%-*}" = mg ] || continue
    echo
    echo "$(label "$s") log, WARN and ERROR lines (count, level, message without the timestamp):"
    echo
    echo '```'
    log_problems "$OUT/$s.log"
    echo '```'
  done
  report_warnings "failed columns; BENCH_FIRST_FAILURE lines there"
} >"$OUT/report.md"
cat "$OUT/report.md"
for k in "${!RES[@]}"; do echo "$k ${RES[$k]}"; done | sort >"$OUT/bench-lines.txt"
echo "run_oauth.sh: raw output in $OUT" >&2
exit "$ANY_FAIL"
