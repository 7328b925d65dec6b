#!/usr/bin/env bash
# CPU time per proxied call (a benchmark, never a test): what the gateway's hop costs, in a form
# that survives a loaded machine. Throughput and latency move with whatever else runs on the
# cores; the CPU seconds a process spends per call move much less. For each point, wrk drives
# `tools/call echo` for DURATION seconds at CONNS connections, and the report gives the CPU time
# (utime + stime from /proc/<pid>/stat, all threads) per completed call of:
#   direct   the fixture alone (wrk -> fixture-upstream --http)
#   mg-http  mcpgate and, separately, the fixture behind it (wrk -> mcpgate -> the same fixture)
#   mg-stdio mcpgate and its own fixture child over stdio
#   mg-http-other  as mg-http, with the mcpgate binary OTHER_BIN (to compare two builds in one
#            run, point by point, on a machine whose load changes)
# With PERF=1 (and `perf` installed), mcpgate's mg-http points are also recorded with
# `perf record` (PERF_ARGS, default `-F 999`; e.g. `--call-graph dwarf -F 299`) into $OUT/perf-mg-http-c<N>.data, and the top of `perf report` is printed.
#
#   bench/cpu_per_call.sh            # markdown on stdout, raw output in bench/out/cpu-<ts>/
#
# Env knobs (defaults in brackets): MCPGATE_BIN [target/release/mcpgate]
#   FIXTURE_BIN [target/release/examples/fixture-upstream]  DURATION [10]  ROUNDS [2]
#   CONNS ["1 64"]  LEGS ["direct mg-http mg-stdio"]  PERF [0]  ECHO_TEXT [gateway-bench]
#   OTHER_BIN [unset]: the mcpgate binary of the mg-http-other leg
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"
FIXTURE_BIN="${FIXTURE_BIN:-$ROOT/target/release/examples/fixture-upstream}"
CONNS="${CONNS:-1 64}"
ROUNDS="${ROUNDS:-2}"
LEGS="${LEGS:-direct mg-http mg-stdio}"
PERF="${PERF:-0}"
ECHO_TEXT="${ECHO_TEXT:-gateway-bench}"
WARMUP="${WARMUP:-2}"
LUA="$HERE/tools_call.lua"
TOOLSETS_TOML=""
[ -x "$FIXTURE_BIN" ] || die "fixture-upstream not found at $FIXTURE_BIN"
bench_init cpu-
export TOOL_ARGS="{\"text\":\"$ECHO_TEXT\"}" EXPECT_TEXT="$ECHO_TEXT"

"$FIXTURE_BIN" --http 127.0.0.1:0 >"$OUT/fixture.out" 2>"$OUT/fixture.log" &
FX_PID=$!; PIDS+=("$FX_PID")
FX_URL=""
for _ in $(seq 1 200); do
  FX_URL="$(sed -n 's/^listening on //p' "$OUT/fixture.out")"
  [ -z "$FX_URL" ] || break
  sleep 0.1
done
[ -n "$FX_URL" ] || die "fixture-upstream not listening"
FX_PORT="${FX_URL##*:}"; FX_PORT="${FX_PORT%%/*}"

declare -A PORT PID UPID
PORT[direct]="$FX_PORT"; PID[direct]="$FX_PID"; UPID[direct]=""
start_gateway() {
  local leg="$1" port
  port="$(free_port)"
  mcpgate_config "$TMP/$leg.toml" "$port" "$TMP/$leg-data" none "[[upstreams]]
name = \"fixture\"
$2
max_concurrent_calls = 128
call_timeout_secs = 30"
  local bin="$MCPGATE_BIN"
  [ "$leg" != mg-http-other ] || bin="${OTHER_BIN:?OTHER_BIN is needed for the mg-http-other leg}"
  MCPGATE_BIN="$bin" start_mcpgate "$leg" "$TMP/$leg.toml"
  PORT[$leg]="$port"; PID[$leg]="$STARTED_PID"
  wait_healthz "$leg" "$port" "$STARTED_PID"
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null | grep -q '"status":"ready"' && return 0
    sleep 0.1
  done
  die "$leg: upstream not up"
}
for leg in $LEGS; do
  case "$leg" in
    direct) ;;
    mg-http | mg-http-other) start_gateway "$leg" "url = \"$FX_URL\""; UPID[$leg]="$FX_PID" ;;
    mg-stdio)
      start_gateway mg-stdio "command = [\"$FIXTURE_BIN\", \"--stdio\"]"
      UPID[mg-stdio]="$(pgrep -P "${PID[mg-stdio]}" -f -- '--stdio' | head -1 || true)"
      [ -n "${UPID[mg-stdio]}" ] || die "mg-stdio: no fixture child found"
      PIDS+=("${UPID[mg-stdio]}") ;;
    *) die "unknown leg $leg" ;;
  esac
done
for leg in $LEGS; do
  sse=0; [ "$leg" = direct ] && sse=1
  ACCEPT_SSE="$sse" verify_and_warm "$leg" "${PORT[$leg]}" 2026 echo "${PID[$leg]}"
done

# us_per_call TICKS0 TICKS1 CALLS: CPU microseconds per call
us_per_call() { awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" 'BEGIN{ if (n < 1) print "-"; else printf "%.0f", (b-a)/hz*1e6/n }'; }
declare -A RES
for r in $(seq 1 "$ROUNDS"); do
  for c in $CONNS; do for leg in $LEGS; do
    echo "cpu_per_call.sh: round $r/$ROUNDS c=$c $leg" >&2
    sse=0; [ "$leg" = direct ] && sse=1
    f0="$(cpu_ticks "$FX_PID")"; u0=0; [ -z "${UPID[$leg]}" ] || u0="$(cpu_ticks "${UPID[$leg]}")"
    perf_pid=""
    if [ "$PERF" = 1 ] && [ "$leg" = mg-http ] && [ "$r" = 1 ]; then
      perf record ${PERF_ARGS:--F 999} -p "${PID[$leg]}" -o "$OUT/perf-$leg-c$c.data" -- sleep "$DURATION" >/dev/null 2>&1 &
      perf_pid=$!
    fi
    g0="$(cpu_ticks "${PID[$leg]}")"
    line="$(ACCEPT_SSE="$sse" run_point "$leg-r$r" "${PORT[$leg]}" 2026 echo "$c" "$DURATION" "${PID[$leg]}")"
    g1="$(cpu_ticks "${PID[$leg]}")"
    u1=0; [ -z "${UPID[$leg]}" ] || u1="$(cpu_ticks "${UPID[$leg]}")"
    [ -z "$perf_pid" ] || wait "$perf_pid" || true
    n="$(field ok "$line")"
    front="$(us_per_call "$g0" "$g1" "$n")"
    up="-"; [ -z "${UPID[$leg]}" ] || up="$(us_per_call "$u0" "$u1" "$n")"
    RES[$leg,$c,$r]="$line front_us=$front upstream_us=$up"
  done; done
done

{
  echo "### CPU per call $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- mcpgate: \`$MCPGATE_BIN\`${OTHER_BIN:+ (mg-http-other: \`$OTHER_BIN\`)}; fixture: \`$FIXTURE_BIN\`; ${DURATION}s per point, $ROUNDS round(s), medians; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo
  echo "| conns | leg | calls/s | p50 ms | front CPU us/call | fixture CPU us/call | failed |"
  echo "|---:|---|---:|---:|---:|---:|---:|"
  for c in $CONNS; do for leg in $LEGS; do
    printf '| %s | %s | %.0f | %s | %s | %s | %s |\n' "$c" "$leg" "$(med rps "$leg" "$c")" \
      "$(ms "$(med p50_us "$leg" "$c")")" "$(med front_us "$leg" "$c")" "$(med upstream_us "$leg" "$c")" "$(errsum "$leg" "$c")"
  done; done
  echo
  echo "front = the process wrk talks to (the fixture itself on the direct leg, else mcpgate)."
} >"$OUT/report.md"
cat "$OUT/report.md"
if [ "$PERF" = 1 ]; then
  for f in "$OUT"/perf-*.data; do
    [ -e "$f" ] || continue
    echo; echo "#### $(basename "$f"): top symbols (self)"; echo; echo '```'
    perf report -i "$f" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | grep '%' | head -40
    echo '```'
  done
fi
echo "cpu_per_call.sh: raw output in $OUT" >&2
