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
ROOT="$(dirname "$HERE")"
MCPGATE_BIN="${MCPGATE_BIN:-$ROOT/target/release/mcpgate}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
CONNS="${CONNS:-1 8 64}"
MCPGATE_ERA="${MCPGATE_ERA:-2026}"
FASTMCP_ERA="${FASTMCP_ERA:-2026}"
MCPGATE_TOOL="${MCPGATE_TOOL:-add}"
MCPGATE_SERVE_ARGS="${MCPGATE_SERVE_ARGS:-serve --config {config}}"
STARTUP_RUNS="${STARTUP_RUNS:-5}"
SKIP_STARTUP="${SKIP_STARTUP:-0}"
export RUST_LOG="${RUST_LOG:-warn}"
# mcpgate's own log level (config `log.level`, default info) via its env override; warn keeps
# per-request logging out of the measurement, like FastMCP's access log being off.
export MCPGATE_LOG__LEVEL="${MCPGATE_LOG__LEVEL:-warn}"
PY="$HERE/.venv/bin/python"
LUA="$HERE/tools_call.lua"

die() { echo "run.sh: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk missing: run bench/install.sh"
[ -x "$PY" ] || die "bench/.venv missing: run bench/install.sh"
[ -x "$MCPGATE_BIN" ] || die "mcpgate binary not found at $MCPGATE_BIN (cargo build --release, or set MCPGATE_BIN)"
case "$MCPGATE_BIN" in *debug*) echo "run.sh: WARNING: $MCPGATE_BIN looks like a debug build; numbers are not representative" >&2 ;; esac

OUT="$HERE/out/$(date +%Y%m%d-%H%M%S)"
TMP="$(mktemp -d /tmp/mcpgate-bench.XXXXXX)"
mkdir -p "$OUT"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime+stime, all threads
CLK_TCK="$(getconf CLK_TCK)"
field() { grep -o "$1=[^ ]*" <<<"$2" | head -1 | cut -d= -f2; }   # field KEY BENCHLINE
wrk_threads() {
  local c="$1" t
  if [ -n "${WRK_THREADS:-}" ]; then t="$WRK_THREADS"; elif [ "$c" -eq 1 ]; then t=1; else t=2; fi
  [ "$t" -gt "$c" ] && t="$c"
  echo "$t"
}

# Anything else busy on 2 cores (a cargo build, say) skews every number: say so loudly.
BUSY=""
if pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; then BUSY="cargo/rustc running"; fi
LOAD1="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$LOAD1" 'BEGIN{exit !(l > 0.5)}'; then BUSY="${BUSY:+$BUSY, }load average $LOAD1 at start"; fi
[ -z "$BUSY" ] || echo "run.sh: WARNING: machine not idle ($BUSY); numbers will be skewed" >&2

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
cat >"$MG_CFG" <<EOF
public_url = "http://127.0.0.1:$MG_PORT"
listen = "127.0.0.1:$MG_PORT"
data_dir = "$MG_DATA"
[store]
url = "sqlite://$MG_DATA/mcpgate.db"
[auth]
mode = "none"
[toolsets.calc]
EOF
cp "$MG_CFG" "$OUT/mcpgate.toml"
# shellcheck disable=SC2086
MCPGATE_CONFIG="$MG_CFG" "$MCPGATE_BIN" ${MCPGATE_SERVE_ARGS//\{config\}/$MG_CFG} >"$OUT/mcpgate.log" 2>&1 &
MG_PID=$!; PIDS+=("$MG_PID")

# bounded readiness waits (20 s each)
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null "http://127.0.0.1:$MG_PORT/healthz" 2>/dev/null && break
  kill -0 "$MG_PID" 2>/dev/null || die "mcpgate exited; see $OUT/mcpgate.log"
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$MG_PORT/healthz" || die "mcpgate not ready in 20 s; see $OUT/mcpgate.log"
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
# run_point NAME PORT ERA TOOL CONNS DURATION -> prints the BENCH line (+ cpu=) and keeps raw output
run_point() {
  local name="$1" port="$2" era="$3" tool="$4" c="$5" d="$6" pid="$7" t out c0 c1 line
  t="$(wrk_threads "$c")"
  out="$OUT/wrk-$name-c$c-d$d.txt"
  c0="$(cpu_ticks "$pid")"
  MCP_ERA="$era" TOOL_NAME="$tool" timeout $((d + 30)) \
    wrk -t"$t" -c"$c" -d"${d}s" --latency -s "$LUA" "http://127.0.0.1:$port/mcp" >"$out" 2>&1 || true
  c1="$(cpu_ticks "$pid")"
  line="$(grep '^BENCH ' "$out" | head -1)"
  [ -n "$line" ] || { cat "$out" >&2; die "wrk produced no result for $name c=$c"; }
  # server CPU use during the point, in % of one core
  echo "$line threads=$t server_cpu_pct=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v d="$d" 'BEGIN{printf "%.0f", (b-a)/hz/d*100}')"
}

# verify the request shape and warm up: every response of the warm-up must be a good result
verify_and_warm() {
  local name="$1" port="$2" era="$3" tool="$4" pid="$5" line
  echo "run.sh: $name: verify request shape (era=$era, tool=$tool) + ${WARMUP}s warm-up" >&2
  line="$(run_point "$name-warmup" "$port" "$era" "$tool" 8 "$WARMUP" "$pid")"
  if [ "$(field ok "$line")" -eq 0 ] || [ "$(field failed "$line")" -ne 0 ]; then
    grep -h '^BENCH_FIRST_FAILURE' "$OUT/wrk-$name-warmup-c8-d$WARMUP.txt" >&2 || true
    die "$name: warm-up had failures ($line) -- wrong request shape? raw output in $OUT"
  fi
}
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
ms() { awk -v u="$1" 'BEGIN{ if (u < 10000) printf "%.2f", u/1000; else printf "%.1f", u/1000 }'; }
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
errs() { # failed responses + socket errors
  local l="$1"
  echo $(( $(field failed "$l") + $(field sock_connect "$l") + $(field sock_read "$l") + $(field sock_write "$l") + $(field sock_timeout "$l") ))
}
ANY_FAIL=0
for c in $CONNS; do
  [ "$(errs "${RES[mg,$c]}")" -eq 0 ] && [ "$(errs "${RES[fm,$c]}")" -eq 0 ] || ANY_FAIL=1
done
{
  echo "### Run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
  echo "- load generator: wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}') on the same 2 cores as the servers (it competes with them for CPU); ${DURATION}s per point, ${WARMUP}s warm-up at 8 connections per server"
  echo "- mcpgate: \`$MCPGATE_BIN\` ($("$MCPGATE_BIN" --version 2>/dev/null | head -1 || echo "version n/a")), MCPGATE_LOG__LEVEL=$MCPGATE_LOG__LEVEL RUST_LOG=$RUST_LOG, request era $MCPGATE_ERA, tool \`$MCPGATE_TOOL\`"
  echo "- FastMCP: $("$PY" -c 'import importlib.metadata as m; print(m.version("fastmcp"), "(mcp", m.version("mcp") + ", uvicorn", m.version("uvicorn") + ")")'), Python $("$PY" -c 'import platform; print(platform.python_version())'), 1 uvicorn worker, stateless_http + json_response, access log off, request era $FASTMCP_ERA"
  echo
  echo "| conns | mcpgate req/s | p50 ms | p99 ms | errors | CPU % | FastMCP req/s | p50 ms | p99 ms | errors | CPU % | mcpgate/FastMCP |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for c in $CONNS; do
    m="${RES[mg,$c]}"; f="${RES[fm,$c]}"
    me="$(errs "$m")"; fe="$(errs "$f")"
    ratio="$(awk -v a="$(field rps "$m")" -v b="$(field rps "$f")" 'BEGIN{ if (b <= 0) print "n/a"; else if (a/b < 10) printf "%.2fx", a/b; else printf "%.1fx", a/b }')"
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
  if [ -n "$BUSY" ]; then
    echo
    echo "**WARNING: machine was not idle at the start ($BUSY); numbers are skewed.**"
  fi
  if [ "$ANY_FAIL" -ne 0 ]; then
    echo
    echo "**WARNING: some points had failed responses or socket errors (see errors columns and $OUT).**"
  fi
} >"$OUT/report.md"
cat "$OUT/report.md"
for c in $CONNS; do echo "mg c=$c ${RES[mg,$c]}"; echo "fm c=$c ${RES[fm,$c]}"; done >"$OUT/bench-lines.txt"
echo "run.sh: raw output in $OUT" >&2
exit "$ANY_FAIL"
