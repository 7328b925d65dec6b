#!/usr/bin/env bash
# Gateway-overhead benchmark (a benchmark, never a test): tools/call of the fixture upstream's
# `echo {"text": ECHO_TEXT}` at 1 and 64 connections, in one run, over four legs:
#   direct    wrk -> fixture-upstream --http (rmcp Streamable HTTP, the upstream alone)
#   mg-http   wrk -> mcpgate (auth.mode = "none") -> the same fixture process over HTTP
#   mg-stdio  wrk -> mcpgate -> a fixture child of mcpgate over stdio
#   fm-proxy  wrk -> FastMCP's proxy (bench/fastmcp_proxy.py) -> the same fixture over HTTP
#   nginx     wrk -> nginx (one process, keep-alive upstream, no buffering) -> the same fixture
#             over HTTP: a plain HTTP proxy that reads no MCP and checks nothing, the floor any
#             proxy on these cores starts from
# All four get the same request bytes (the stateless 2026-07-28 shape of bench/tools_call.lua)
# and every response is checked (a JSON-RPC result, not isError, containing the echoed text).
# The fixture answers with an SSE stream (rmcp's default, JSON responses off), so the direct leg
# also accepts text/event-stream (so does the nginx leg, which passes the fixture's answer on);
# mcpgate and FastMCP must answer application/json. Every
# point runs ROUNDS times, round-robin over the legs (round 1: c=1 direct, mg-http, mg-stdio,
# fm-proxy, c=64 ...; then round 2 ...), and the report gives medians. Prints a markdown report
# on stdout; raw wrk output and logs go to bench/out/gateway-<timestamp>/.
#
#   bench/install.sh && cargo build --release --bin mcpgate --example fixture-upstream && bench/run_gateway.sh
#
# Env knobs (defaults in brackets):
#   MCPGATE_BIN [target/release/mcpgate]   FIXTURE_BIN [target/release/examples/fixture-upstream]
#   DURATION [10] seconds per point   ROUNDS [3]   WARMUP [3] seconds   CONNS ["1 64"]
#   WRK_THREADS [1 for 1 connection, else 2]   LEGS ["direct mg-http mg-stdio fm-proxy nginx"]
#     (nginx is left out, with a note, when the nginx binary is missing: bench/install.sh)
#   WRK_TIMEOUT [30s]: wrk's --timeout (its 2 s default would drop the FastMCP proxy's
#     64-connection latencies, which are seconds)
#   ERA [2026]: request shape of every leg (see bench/tools_call.lua; "legacy" fails on the
#     direct leg and on mcpgate, which both want a session for a legacy request)
#   ECHO_TEXT [gateway-bench]: the text echoed (letters, digits, space, . _ - only)
#   UPSTREAM_MAX_CALLS [128]: max_concurrent_calls of mcpgate's upstream (default 32 would queue
#     the 64-connection point)   UPSTREAM_CALL_TIMEOUT [30]: its call_timeout_secs
#   MCPGATE_SERVE_ARGS ['serve --config {config}']   RUST_LOG [warn]   MCPGATE_LOG__LEVEL [warn]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # ROOT, PY and the shared knobs: MCPGATE_BIN, DURATION, MCPGATE_SERVE_ARGS, ...
FIXTURE_BIN="${FIXTURE_BIN:-$ROOT/target/release/examples/fixture-upstream}"
WARMUP="${WARMUP:-3}"
CONNS="${CONNS:-1 64}"
ROUNDS="${ROUNDS:-3}"
if [ -z "${LEGS:-}" ]; then
  LEGS="direct mg-http mg-stdio fm-proxy nginx"
  command -v nginx >/dev/null 2>&1 || { LEGS="${LEGS% nginx}"; echo "${0##*/}: nginx not found: no nginx leg (bench/install.sh installs it)" >&2; }
fi
ERA="${ERA:-2026}"
ECHO_TEXT="${ECHO_TEXT:-gateway-bench}"
UPSTREAM_MAX_CALLS="${UPSTREAM_MAX_CALLS:-128}"
UPSTREAM_CALL_TIMEOUT="${UPSTREAM_CALL_TIMEOUT:-30}"
export WRK_TIMEOUT="${WRK_TIMEOUT:-30s}"
LUA="$HERE/tools_call.lua"
# No built-in toolset (lib.sh's mcpgate_config): with one upstream, its tool names pass through
# unprefixed, so every leg calls `echo`.
TOOLSETS_TOML=""
[[ "$ECHO_TEXT" =~ ^[A-Za-z0-9\ ._-]+$ ]] || die "ECHO_TEXT: letters, digits, space, . _ - only (it goes into the JSON as is)"
[ -x "$FIXTURE_BIN" ] || die "fixture-upstream not found at $FIXTURE_BIN (cargo build --release --example fixture-upstream, or set FIXTURE_BIN)"
case "$FIXTURE_BIN" in *debug*) echo "${0##*/}: WARNING: $FIXTURE_BIN looks like a debug build; numbers are not representative" >&2 ;; esac
for leg in $LEGS; do
  case "$leg" in direct | mg-http | mg-stdio | fm-proxy | nginx) ;; *) die "unknown leg $leg (direct | mg-http | mg-stdio | fm-proxy | nginx)" ;; esac
done
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
bench_init gateway-
export TOOL_ARGS="{\"text\":\"$ECHO_TEXT\"}" EXPECT_TEXT="$ECHO_TEXT"

# ---------------------------------------------------------------- servers
declare -A PORT PID UPID   # per leg: the port wrk hits, the process behind it, the fixture serving it
# the fixture over HTTP: port 0, the bound address is on its one stdout line
# (a fixture built before commit 2a450a1 lacks TCP_NODELAY: ~40 ms per request on the HTTP legs)
"$FIXTURE_BIN" --http 127.0.0.1:0 >"$OUT/fixture.out" 2>"$OUT/fixture.log" &
FX_PID=$!; PIDS+=("$FX_PID")
FX_URL=""
for _ in $(seq 1 200); do
  FX_URL="$(sed -n 's/^listening on //p' "$OUT/fixture.out")"
  [ -z "$FX_URL" ] || break
  kill -0 "$FX_PID" 2>/dev/null || die "fixture-upstream exited; see $OUT/fixture.log"
  sleep 0.1
done
[ -n "$FX_URL" ] || die "fixture-upstream not listening in 20 s; see $OUT/fixture.log"
FX_PORT="${FX_URL##*:}"; FX_PORT="${FX_PORT%%/*}"
PORT[direct]="$FX_PORT"; PID[direct]="$FX_PID"; UPID[direct]=""

# wait_upstream NAME PORT PID: bounded (20 s) wait until mcpgate's /readyz says "ready" (its
# upstream link is up), after its /healthz
wait_upstream() {
  local name="$1" port="$2" pid="$3"
  wait_healthz "$name" "$port" "$pid"
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null | grep -q '"status":"ready"' && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited; see $OUT/$name.log"
    sleep 0.1
  done
  curl -sS "http://127.0.0.1:$port/readyz" >&2 || true
  die "$name: upstream not up in 20 s; see $OUT/$name.log"
}
# start_gateway LEG UPSTREAM_TOML: mcpgate, auth.mode = "none", with one [[upstreams]] entry
start_gateway() {
  local leg="$1" port
  port="$(free_port)"
  mcpgate_config "$TMP/$leg.toml" "$port" "$TMP/$leg-data" none "[[upstreams]]
name = \"fixture\"
$2
max_concurrent_calls = $UPSTREAM_MAX_CALLS
call_timeout_secs = $UPSTREAM_CALL_TIMEOUT"
  start_mcpgate "$leg" "$TMP/$leg.toml"
  PORT[$leg]="$port"; PID[$leg]="$STARTED_PID"
  wait_upstream "$leg" "$port" "$STARTED_PID"
}
for leg in $LEGS; do
  case "$leg" in
    mg-http)
      start_gateway mg-http "url = \"$FX_URL\""
      UPID[mg-http]="$FX_PID" ;;
    mg-stdio)
      start_gateway mg-stdio "command = [\"$FIXTURE_BIN\", \"--stdio\"]"
      UPID[mg-stdio]="$(pgrep -P "${PID[mg-stdio]}" -f -- '--stdio' | head -1 || true)"
      [ -n "${UPID[mg-stdio]}" ] || die "mg-stdio: no fixture child of mcpgate found"
      PIDS+=("${UPID[mg-stdio]}") ;;
    fm-proxy)
      port="$(free_port)"
      "$PY" "$HERE/fastmcp_proxy.py" "$port" "$FX_URL" >"$OUT/fm-proxy.log" 2>&1 &
      PID[fm-proxy]=$!; PIDS+=("${PID[fm-proxy]}"); PORT[fm-proxy]="$port"; UPID[fm-proxy]="$FX_PID"
      wait_listen fm-proxy "$port" "${PID[fm-proxy]}" ;;
    nginx)
      command -v nginx >/dev/null 2>&1 || die "nginx leg: no nginx binary (bench/install.sh)"
      port="$(free_port)"; mkdir -p "$TMP/nginx/tmp"
      # One process (no master/worker split), so its CPU is the leg's front CPU. Host is set
      # to the fixture's: rmcp's server refuses Host headers that are not loopback ones.
      cat >"$TMP/nginx/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
error_log $OUT/nginx.log warn;
pid $TMP/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/tmp;
  proxy_temp_path $TMP/nginx/tmp;
  upstream fixture { server 127.0.0.1:$FX_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://fixture;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1;
      proxy_buffering off;
    }
  }
}
NGINX
      nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" >>"$OUT/nginx.log" 2>&1 &
      PID[nginx]=$!; PIDS+=("${PID[nginx]}"); PORT[nginx]="$port"; UPID[nginx]="$FX_PID"
      wait_listen nginx "$port" "${PID[nginx]}" ;;
  esac
done

# ---------------------------------------------------------------- warm-up (also the request check)
for leg in $LEGS; do
  sse=0; { [ "$leg" = direct ] || [ "$leg" = nginx ]; } && sse=1
  ACCEPT_SSE="$sse" verify_and_warm "$leg" "${PORT[$leg]}" "$ERA" echo "${PID[$leg]}"
done
# what each leg answered (first response of the warm-up is not kept; one more by curl)
for leg in $LEGS; do
  {
    echo "== $leg"
    curl -sS -i -X POST "http://127.0.0.1:${PORT[$leg]}/mcp" -H 'Content-Type: application/json' \
      -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' \
      -H 'Mcp-Method: tools/call' -H 'Mcp-Name: echo' \
      -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":$TOOL_ARGS,\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}" 2>&1 || true
    echo
  } >>"$OUT/sample-responses.txt"
done

# ---------------------------------------------------------------- points
ticks_or_0() { if [ -n "$1" ]; then cpu_ticks "$1" 2>/dev/null || echo 0; else echo 0; fi; }
declare -A RES
STEAL0="$(steal_ticks)"; T0="$(date +%s)"
for r in $(seq 1 "$ROUNDS"); do
  for c in $CONNS; do for leg in $LEGS; do
    echo "run_gateway.sh: round $r/$ROUNDS: c=$c: $leg ${DURATION}s" >&2
    sse=0; { [ "$leg" = direct ] || [ "$leg" = nginx ]; } && sse=1
    comp="$(compiling)"; u0="$(ticks_or_0 "${UPID[$leg]}")"
    line="$(ACCEPT_SSE="$sse" run_point "$leg-r$r" "${PORT[$leg]}" "$ERA" echo "$c" "$DURATION" "${PID[$leg]}")"
    u1="$(ticks_or_0 "${UPID[$leg]}")"
    [ "$(compiling)" = 0 ] || comp=1
    upct="-"
    [ -z "${UPID[$leg]}" ] || upct="$(awk -v a="$u0" -v b="$u1" -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN{printf "%.0f", (b-a)/hz/d*100}')"
    RES[$leg,$c,$r]="$line upstream_cpu_pct=$upct compiling=$comp"
  done; done
done
STEAL_PCT="$(steal_pct "$STEAL0" "$T0")"
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
declare -A RSS
for leg in $LEGS; do
  kill -0 "${PID[$leg]}" 2>/dev/null || die "$leg died during the run; see $OUT"
  RSS[$leg]="$(mb "$(rss_kb "${PID[$leg]}")")"
done

# ---------------------------------------------------------------- report
label() { case "$1" in
  direct) echo 'direct: fixture over HTTP' ;; mg-http) echo 'mcpgate -> fixture, HTTP' ;;
  mg-stdio) echo 'mcpgate -> fixture, stdio' ;; fm-proxy) echo 'FastMCP proxy -> fixture, HTTP' ;;
  nginx) echo 'nginx -> fixture, HTTP' ;; *) echo "$1" ;; esac; }
# has LEG: whether LEG was measured
has() { [[ " $LEGS " == *" $1 "* ]]; }
# medv FIELD LEG C: median of a field, or 0 if the leg was not run
medv() { if has "$2"; then med "$@"; else echo 0; fi; }
# added FIELD LEG C: median FIELD of LEG minus that of direct, in ms (n/a without both)
added() {
  if has direct && has "$2"; then
    awk -v a="$(med "$1" "$2" "$3")" -v b="$(med "$1" direct "$3")" 'BEGIN{ printf "%+.2f", (a-b)/1000 }'
  else echo "n/a"; fi
}
ANY_FAIL=0
{
  echo "### Gateway overhead run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  machine_line
  echo "- load average (1/5/15 min) at the start $LOAD_START, at the end $LOAD_END; host CPU steal during the points $STEAL_PCT % of the $(nproc) cores; a req/s marked (cN) comes from a point during which cargo/rustc ran (at its start or end) in N of the rounds"
  echo "- load generator: wrk $(wrk_version) on the same $(nproc) cores as every server; ${DURATION}s per point, ${WARMUP}s warm-up at 8 connections per leg, $ROUNDS round(s) round-robin over the legs (figures are medians, range = min-max of req/s); wrk --timeout $WRK_TIMEOUT"
  echo "- request: \`tools/call echo {\"text\":\"$ECHO_TEXT\"}\`, era $ERA shape, same bytes for every leg; an OK response is 2xx, application/json (text/event-stream accepted on the direct leg only), a JSON-RPC result, not isError, containing the text"
  echo "- fixture: \`$FIXTURE_BIN\` (rmcp Streamable HTTP server defaults: SSE answers, legacy sessions, stateless 2026-07-28)"
  echo "- mcpgate: \`$MCPGATE_BIN\` ($(mcpgate_version)), \`auth.mode = \"none\"\`, no built-in toolset, one \`[[upstreams]]\` (\`max_concurrent_calls = $UPSTREAM_MAX_CALLS\`, \`call_timeout_secs = $UPSTREAM_CALL_TIMEOUT\`), MCPGATE_LOG__LEVEL=$MCPGATE_LOG__LEVEL RUST_LOG=$RUST_LOG"
  has fm-proxy && echo "- FastMCP proxy: $(fastmcp_versions), \`create_proxy(URL)\` (bench/fastmcp_proxy.py), 1 uvicorn worker, stateless_http + json_response, access log off"
  echo
  echo "| conns | leg | req/s | range | p50 ms | p99 ms | failed | front CPU % | fixture CPU % |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
  for c in $CONNS; do for leg in $LEGS; do
    e="$(errsum "$leg" "$c")"; [ "$e" = 0 ] || ANY_FAIL=1
    printf '| %s | %s | %.0f%s | %s | %s | %s | %s | %s | %s |\n' "$c" "$(label "$leg")" "$(med rps "$leg" "$c")" \
      "$(compiled "$leg" "$c")" "$(range rps "$leg" "$c")" "$(ms "$(med p50_us "$leg" "$c")")" \
      "$(ms "$(med p99_us "$leg" "$c")")" "$e" "$(med server_cpu_pct "$leg" "$c")" "$(med upstream_cpu_pct "$leg" "$c")"
  done; done
  echo
  echo "| conns | mcpgate-HTTP / direct | mcpgate-stdio / direct | FastMCP proxy / direct | mcpgate-HTTP / FastMCP proxy | mcpgate-stdio / FastMCP proxy | added p50 / p99 ms: mcpgate-HTTP | mcpgate-stdio | FastMCP proxy |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for c in $CONNS; do
    d="$(medv rps direct "$c")"; h="$(medv rps mg-http "$c")"; s="$(medv rps mg-stdio "$c")"; f="$(medv rps fm-proxy "$c")"
    printf '| %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s |\n' "$c" \
      "$(ratio "$h" "$d")" "$(ratio "$s" "$d")" "$(ratio "$f" "$d")" "$(ratio "$h" "$f")" "$(ratio "$s" "$f")" \
      "$(added p50_us mg-http "$c")" "$(added p99_us mg-http "$c")" "$(added p50_us mg-stdio "$c")" \
      "$(added p99_us mg-stdio "$c")" "$(added p50_us fm-proxy "$c")" "$(added p99_us fm-proxy "$c")"
  done
  if has nginx; then
    echo
    echo "A plain HTTP proxy in the same run (nginx $(nginx -v 2>&1 | sed 's|.*/||'), one process, reads no MCP, no auth): what any proxy on these cores starts from."
    echo
    echo "| conns | nginx / direct | mcpgate-HTTP / nginx | added p50 / p99 ms: nginx |"
    echo "|---:|---:|---:|---:|"
    for c in $CONNS; do
      printf '| %s | %s | %s | %s / %s |\n' "$c" "$(ratio "$(medv rps nginx "$c")" "$(medv rps direct "$c")")" \
        "$(ratio "$(medv rps mg-http "$c")" "$(medv rps nginx "$c")")" "$(added p50_us nginx "$c")" "$(added p99_us nginx "$c")"
    done
  fi
  echo
  echo "Ratios are of median req/s; added latency = the leg's median p50 (p99) minus the direct leg's. front CPU % = CPU time of the process wrk talks to during the point / wall time (100 = one core); fixture CPU % = the fixture process serving that leg (the shared HTTP one, or mcpgate's stdio child)."
  echo -n "RSS at the end of the run (MB):"
  for leg in $LEGS; do echo -n " $(label "$leg") ${RSS[$leg]};"; done
  echo
  for leg in $LEGS; do
    [ "${leg%%-*}" = mg ] || continue
    echo
    echo "$(label "$leg") log, WARN and ERROR lines (count, level, message without the timestamp):"
    echo
    echo '```'
    log_problems "$OUT/$leg.log"
    echo '```'
  done
  report_warnings "failed column; BENCH_FIRST_FAILURE lines there"
} >"$OUT/report.md"
cat "$OUT/report.md"
for k in "${!RES[@]}"; do echo "$k ${RES[$k]}"; done | sort >"$OUT/bench-lines.txt"
echo "run_gateway.sh: raw output in $OUT" >&2
exit "$ANY_FAIL"
