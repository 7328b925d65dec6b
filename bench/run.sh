#!/usr/bin/env bash
# Load benchmark (a benchmark, never a test): tools/call of `add` {"a":1,"b":2} against mcpgate
# and FastMCP side by side in one run, both in stateless JSON mode, at 1/8/64 connections; plus
# mcpgate idle RSS and start-up-to-ready time. Prints a markdown report on stdout; raw wrk output
# and server logs go to bench/out/<timestamp>/.
#
#   bench/install.sh && bench/run.sh
#
# Env knobs (defaults in brackets):
#   MCPGATE_BIN [target/release/mcpgate]   DURATION [10] seconds per point   WARMUP [3] seconds
#   CONNS ["1 8 64"]   WRK_THREADS [1 for 1 connection, else 2]
#   MCPGATE_ERA / FASTMCP_ERA [2026]: request shape, see bench/tools_call.lua ("2026" | "legacy")
#   MCPGATE_TOOL [add]   MCPGATE_SERVE_ARGS ['serve --config {config}']   RUST_LOG [warn]
#   MCPGATE_LOG__LEVEL [warn]
#   STARTUP_RUNS [5]   SKIP_STARTUP [0]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # ROOT, PY and the shared knobs: MCPGATE_BIN, DURATION, MCPGATE_SERVE_ARGS, ...
WARMUP="${WARMUP:-3}"
CONNS="${CONNS:-1 8 64}"
MCPGATE_ERA="${MCPGATE_ERA:-2026}"
FASTMCP_ERA="${FASTMCP_ERA:-2026}"
MCPGATE_TOOL="${MCPGATE_TOOL:-add}"
STARTUP_RUNS="${STARTUP_RUNS:-5}"
SKIP_STARTUP="${SKIP_STARTUP:-0}"
LUA="$HERE/tools_call.lua"
# Anything else busy on 2 cores (a cargo build, say) skews every number: bench_init says so loudly.
bench_init ""

# ---------------------------------------------------------------- start-up to ready
STARTUP_FRESH="n/a"; STARTUP_WARM="n/a"
if [ "$SKIP_STARTUP" != "1" ]; then
  echo "run.sh: start-up time, $STARTUP_RUNS runs fresh + $STARTUP_RUNS runs warm" >&2
  STARTUP_FRESH="$("$PY" "$HERE/startup_time.py" "$MCPGATE_BIN" "$OUT/startup-fresh" --fresh \
    --runs "$STARTUP_RUNS" --args "$MCPGATE_SERVE_ARGS")" || die "start-up measurement failed (logs in $OUT)"
  STARTUP_WARM="$("$PY" "$HERE/startup_time.py" "$MCPGATE_BIN" "$OUT/startup-warm" \
    --runs "$STARTUP_RUNS" --args "$MCPGATE_SERVE_ARGS")" || die "start-up measurement failed (logs in $OUT)"
  echo "$STARTUP_FRESH" >"$OUT/startup.txt"; echo "$STARTUP_WARM" >>"$OUT/startup.txt"
fi

# ---------------------------------------------------------------- servers
FM_PORT="$(free_port)"
"$PY" "$HERE/fastmcp_server.py" "$FM_PORT" >"$OUT/fastmcp.log" 2>&1 &
FM_PID=$!; PIDS+=("$FM_PID")

MG_PORT="$(free_port)"
MG_DATA="$TMP/mcpgate-data"; mkdir -p "$MG_DATA"
MG_CFG="$TMP/mcpgate.toml"
mcpgate_config "$MG_CFG" "$MG_PORT" "$MG_DATA"
start_mcpgate mcpgate "$MG_CFG"
MG_PID="$STARTED_PID"

# bounded readiness waits (20 s each)
wait_healthz mcpgate "$MG_PORT" "$MG_PID"
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null -X POST "http://127.0.0.1:$FM_PORT/mcp" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}' 2>/dev/null && break
  kill -0 "$FM_PID" 2>/dev/null || die "FastMCP exited; see $OUT/fastmcp.log"
  sleep 0.1
done
sleep 2
MG_RSS_IDLE="$(rss_kb "$MG_PID")"
FM_RSS_IDLE="$(rss_kb "$FM_PID")"

# ---------------------------------------------------------------- load
verify_and_warm fastmcp "$FM_PORT" "$FASTMCP_ERA" add "$FM_PID"
verify_and_warm mcpgate "$MG_PORT" "$MCPGATE_ERA" "$MCPGATE_TOOL" "$MG_PID"

declare -A RES
for c in $CONNS; do
  echo "run.sh: c=$c: FastMCP ${DURATION}s" >&2
  RES[fm,$c]="$(run_point fastmcp "$FM_PORT" "$FASTMCP_ERA" add "$c" "$DURATION" "$FM_PID")"
  echo "run.sh: c=$c: mcpgate ${DURATION}s" >&2
  RES[mg,$c]="$(run_point mcpgate "$MG_PORT" "$MCPGATE_ERA" "$MCPGATE_TOOL" "$c" "$DURATION" "$MG_PID")"
done
kill -0 "$MG_PID" 2>/dev/null || die "mcpgate died during the run; see $OUT/mcpgate.log"
MG_RSS_LOAD="$(rss_kb "$MG_PID")"
FM_RSS_LOAD="$(rss_kb "$FM_PID")"
MG_RSS_PEAK="$(awk '/^VmHWM:/ {print $2}' "/proc/$MG_PID/status")"

# ---------------------------------------------------------------- report
ANY_FAIL=0
for c in $CONNS; do
  [ "$(errs "${RES[mg,$c]}")" -eq 0 ] && [ "$(errs "${RES[fm,$c]}")" -eq 0 ] || ANY_FAIL=1
done
{
  echo "### Run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  machine_line
  echo "- load generator: wrk $(wrk_version) on the same 2 cores as the servers (it competes with them for CPU); ${DURATION}s per point, ${WARMUP}s warm-up at 8 connections per server"
  echo "- mcpgate: \`$MCPGATE_BIN\` ($(mcpgate_version)), MCPGATE_LOG__LEVEL=$MCPGATE_LOG__LEVEL RUST_LOG=$RUST_LOG, request era $MCPGATE_ERA, tool \`$MCPGATE_TOOL\`"
  echo "- FastMCP: $(fastmcp_versions), Python $("$PY" -c 'import platform; print(platform.python_version())'), 1 uvicorn worker, stateless_http + json_response, access log off, request era $FASTMCP_ERA"
  echo
  echo "| conns | mcpgate req/s | p50 ms | p99 ms | errors | CPU % | FastMCP req/s | p50 ms | p99 ms | errors | CPU % | mcpgate/FastMCP |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for c in $CONNS; do
    m="${RES[mg,$c]}"; f="${RES[fm,$c]}"
    me="$(errs "$m")"; fe="$(errs "$f")"
    ratio="$(ratio "$(field rps "$m")" "$(field rps "$f")")"
    printf "| %s | %.0f | %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s |\n" "$c" \
      "$(field rps "$m")" "$(ms "$(field p50_us "$m")")" "$(ms "$(field p99_us "$m")")" "$me" "$(field server_cpu_pct "$m")" \
      "$(field rps "$f")" "$(ms "$(field p50_us "$f")")" "$(ms "$(field p99_us "$f")")" "$fe" "$(field server_cpu_pct "$f")" "$ratio"
  done
  echo
  echo "CPU % = server process CPU time during the point / wall time (100 = one full core of the 2)."
  echo "wrk threads: $(for c in $CONNS; do printf '%s conns -> -t%s; ' "$c" "$(wrk_threads "$c")"; done)"
  echo
  echo "| mcpgate resource | value |"
  echo "|---|---:|"
  echo "| idle RSS (ready + 2 s idle) | $(mb "$MG_RSS_IDLE") MB |"
  echo "| RSS after the load points | $(mb "$MG_RSS_LOAD") MB (peak VmHWM $(mb "$MG_RSS_PEAK") MB) |"
  echo "| start-up to first 200 on /healthz, fresh data dir (median of $STARTUP_RUNS) | $(sed -n 's/.*median_ms=\([^ ]*\).*/\1/p' <<<"$STARTUP_FRESH") ms |"
  echo "| start-up to first 200 on /healthz, existing data dir (median of $STARTUP_RUNS) | $(sed -n 's/.*median_ms=\([^ ]*\).*/\1/p' <<<"$STARTUP_WARM") ms |"
  echo
  echo "FastMCP RSS for reference: idle $(mb "$FM_RSS_IDLE") MB, after load $(mb "$FM_RSS_LOAD") MB."
  echo "Start-up runs (ms): fresh $(sed -n 's/.*runs_ms=\(.*\)/\1/p' <<<"$STARTUP_FRESH"), existing $(sed -n 's/.*runs_ms=\(.*\)/\1/p' <<<"$STARTUP_WARM")."
  report_warnings "errors columns"
} >"$OUT/report.md"
cat "$OUT/report.md"
for c in $CONNS; do echo "mg c=$c ${RES[mg,$c]}"; echo "fm c=$c ${RES[fm,$c]}"; done >"$OUT/bench-lines.txt"
echo "run.sh: raw output in $OUT" >&2
exit "$ANY_FAIL"
