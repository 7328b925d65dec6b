# shellcheck shell=bash
# Shared helpers of bench/run.sh, bench/run_auth.sh and bench/run_oauth.sh (sourced, not run).
# The caller sets HERE (the bench/ directory) before sourcing, and LUA (its wrk script) before
# run_point/verify_and_warm; bench_init sets OUT, TMP and the PIDS array.

# Knobs every script shares (defaults in brackets): MCPGATE_BIN [target/release/mcpgate]
# DURATION [10] seconds per point  MCPGATE_SERVE_ARGS ['serve --config {config}']  RUST_LOG [warn]
# WRK_TIMEOUT [unset: wrk's 2 s]: wrk's --timeout (a response slower than that counts as a
# sock_timeout and its latency is not recorded)
# MCPGATE_LOG__LEVEL [warn]: mcpgate's own log level (config `log.level`, default info) via its
# env override; warn keeps per-request logging out of the measurement, like FastMCP's access log
# being off.
ROOT="$(dirname "$HERE")"
MCPGATE_BIN="${MCPGATE_BIN:-$ROOT/target/release/mcpgate}"
DURATION="${DURATION:-10}"
MCPGATE_SERVE_ARGS="${MCPGATE_SERVE_ARGS:-serve --config {config}}"
export RUST_LOG="${RUST_LOG:-warn}"
export MCPGATE_LOG__LEVEL="${MCPGATE_LOG__LEVEL:-warn}"
PY="$HERE/.venv/bin/python"

die() { echo "${0##*/}: $*" >&2; exit 1; }

# stop_pids PID...: TERM, up to 5 s grace each, then KILL
stop_pids() {
  local p
  for p in "$@"; do [ -z "$p" ] || kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    [ -n "$p" ] || continue
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}

# EXIT trap: stop every started process, then run the caller's after_servers_stopped (if it
# defines one: run_oauth.sh drops its PostgreSQL there), then delete TMP.
cleanup() {
  stop_pids "${PIDS[@]:-}"
  if declare -F after_servers_stopped >/dev/null; then after_servers_stopped || true; fi
  rm -rf "$TMP"
}

# bench_init OUT_PREFIX: the checks every script needs, OUT=bench/out/<prefix><timestamp>,
# TMP, PIDS=(), the EXIT trap, and check_idle.
bench_init() {
  local prefix="$1"
  command -v wrk >/dev/null || die "wrk missing: run bench/install.sh"
  [ -x "$PY" ] || die "bench/.venv missing: run bench/install.sh"
  [ -x "$MCPGATE_BIN" ] || die "mcpgate binary not found at $MCPGATE_BIN (cargo build --release, or set MCPGATE_BIN)"
  case "$MCPGATE_BIN" in *debug*) echo "${0##*/}: WARNING: $MCPGATE_BIN looks like a debug build; numbers are not representative" >&2 ;; esac
  OUT="$HERE/out/$prefix$(date +%Y%m%d-%H%M%S)"
  TMP="$(mktemp -d "/tmp/mcpgate-bench${prefix:+-${prefix%-}}.XXXXXX")"
  mkdir -p "$OUT"
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  check_idle
}

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

compiling() { if pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; then echo 1; else echo 0; fi; }
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }   # host steal ticks, all cpus
# steal_pct TICKS0 EPOCH0: host CPU steal since then, in % of all cores
steal_pct() {
  awk -v a="$1" -v b="$(steal_ticks)" -v hz="$CLK_TCK" -v t="$(( $(date +%s) - $2 ))" -v n="$(nproc)" \
    'BEGIN{ if (t < 1) t = 1; printf "%.1f", (b-a)/hz/(t*n)*100 }'
}

# Anything else busy on 2 cores (a cargo build, say) skews every number: sets BUSY and warns.
check_idle() {
  BUSY=""
  if [ "$(compiling)" = 1 ]; then BUSY="cargo/rustc running"; fi
  local load1
  load1="$(cut -d' ' -f1 /proc/loadavg)"
  if awk -v l="$load1" 'BEGIN{exit !(l > 0.5)}'; then BUSY="${BUSY:+$BUSY, }load average $load1 at start"; fi
  [ -z "$BUSY" ] || echo "${0##*/}: WARNING: machine not idle ($BUSY); numbers will be skewed" >&2
}

# mcpgate_config FILE PORT DATA_DIR [MODE [EXTRA_TOML [STORE_URL]]]: the benchmark config;
# auth.mode MODE (default "none"), EXTRA_TOML (e.g. an [auth.resource] table) goes right after it;
# the store is STORE_URL (default SQLite in DATA_DIR), with max_connections = $STORE_MAX_CONNECTIONS
# when that is set (else mcpgate's default pool size). The built-in toolsets are $TOOLSETS_TOML
# (default `[toolsets.calc]`; set it empty for none, as bench/run_gateway.sh does so that its one
# upstream's tool names pass through unprefixed).
mcpgate_config() {
  local file="$1" port="$2" data="$3" mode="${4:-none}" extra="${5:-}" url="${6:-sqlite://$3/mcpgate.db}"
  mkdir -p "$data"
  cat >"$file" <<EOF
public_url = "http://127.0.0.1:$port"
listen = "127.0.0.1:$port"
data_dir = "$data"
[store]
url = "$url"
${STORE_MAX_CONNECTIONS:+max_connections = $STORE_MAX_CONNECTIONS}
[auth]
mode = "$mode"
$extra
${TOOLSETS_TOML-[toolsets.calc]}
EOF
}

# start_mcpgate NAME CONFIG -> sets STARTED_PID; log in $OUT/NAME.log
start_mcpgate() {
  local name="$1" cfg="$2"
  cp "$cfg" "$OUT/$name.toml"
  # shellcheck disable=SC2086
  MCPGATE_CONFIG="$cfg" "$MCPGATE_BIN" ${MCPGATE_SERVE_ARGS//\{config\}/$cfg} >"$OUT/$name.log" 2>&1 &
  STARTED_PID=$!; PIDS+=("$STARTED_PID")
}

# wait_healthz NAME PORT PID: bounded (20 s) wait for mcpgate's /healthz
wait_healthz() {
  local name="$1" port="$2" pid="$3"
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited; see $OUT/$name.log"
    sleep 0.1
  done
  die "$name not ready in 20 s; see $OUT/$name.log"
}

# wait_listen NAME PORT PID: bounded (20 s) wait until something answers HTTP on PORT
wait_listen() {
  local name="$1" port="$2" pid="$3"
  for _ in $(seq 1 200); do
    curl -sS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || die "$name exited; see $OUT/$name.log"
    sleep 0.1
  done
  die "$name not listening in 20 s; see $OUT/$name.log"
}

# run_point NAME PORT ERA TOOL CONNS DURATION PID [TOKEN]
#   -> prints the BENCH line (+ threads=, server_cpu_pct=) and keeps raw output in $OUT.
#   TOKEN, when given, is sent as `Authorization: Bearer TOKEN` on every request.
run_point() {
  local name="$1" port="$2" era="$3" tool="$4" c="$5" d="$6" pid="$7" token="${8:-}" t out c0 c1 line
  t="$(wrk_threads "$c")"
  out="$OUT/wrk-$name-c$c-d$d.txt"
  c0="$(cpu_ticks "$pid")"
  MCP_ERA="$era" TOOL_NAME="$tool" BEARER_TOKEN="$token" timeout $((d + 30)) \
    wrk -t"$t" -c"$c" -d"${d}s" ${WRK_TIMEOUT:+--timeout "$WRK_TIMEOUT"} --latency -s "$LUA" "http://127.0.0.1:$port/mcp" >"$out" 2>&1 || true
  c1="$(cpu_ticks "$pid")"
  line="$(grep '^BENCH ' "$out" | head -1)"
  [ -n "$line" ] || { cat "$out" >&2; die "wrk produced no result for $name c=$c"; }
  # server CPU use during the point, in % of one core
  echo "$line threads=$t server_cpu_pct=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v d="$d" 'BEGIN{printf "%.0f", (b-a)/hz/d*100}')"
}

# verify_and_warm NAME PORT ERA TOOL PID [TOKEN]: every response of the warm-up must be a good result
verify_and_warm() {
  local name="$1" port="$2" era="$3" tool="$4" pid="$5" token="${6:-}" line
  echo "${0##*/}: $name: verify request shape (era=$era, tool=$tool) + ${WARMUP}s warm-up" >&2
  line="$(run_point "$name-warmup" "$port" "$era" "$tool" 8 "$WARMUP" "$pid" "$token")"
  if [ "$(field ok "$line")" -eq 0 ] || [ "$(field failed "$line")" -ne 0 ]; then
    grep -h '^BENCH_FIRST_FAILURE' "$OUT/wrk-$name-warmup-c8-d$WARMUP.txt" >&2 || true
    die "$name: warm-up had failures ($line) -- wrong request shape? raw output in $OUT"
  fi
}

# log_problems LOG: mcpgate's WARN and ERROR lines of LOG, counted (count, level, message without
# the timestamp, 10 most frequent, cut at 300 characters), or "(none)"
log_problems() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -E '^[0-9TZ:.-]+ +(WARN|ERROR) ' | sed -E 's/^[0-9TZ:.-]+ +//' \
    | sort | uniq -c | sort -rn | head -10 | cut -c1-300 | grep . || echo "(none)"
}

ms() { awk -v u="$1" 'BEGIN{ if (u < 10000) printf "%.2f", u/1000; else printf "%.1f", u/1000 }'; }
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
errs() { # failed responses + socket errors
  local l="$1"
  echo $(( $(field failed "$l") + $(field sock_connect "$l") + $(field sock_read "$l") + $(field sock_write "$l") + $(field sock_timeout "$l") ))
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b <= 0) print "n/a"; else if (a/b < 0.01) printf "%.3fx", a/b; else if (a/b < 10) printf "%.2fx", a/b; else printf "%.1fx", a/b }'; }
machine_line() {
  echo "- machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
}
fastmcp_versions() {
  "$PY" -c 'import importlib.metadata as m; print(m.version("fastmcp"), "(mcp", m.version("mcp") + ", uvicorn", m.version("uvicorn") + ")")'
}
wrk_version() { wrk -v 2>&1 | head -1 | awk '{print $2}'; }
mcpgate_version() { "$MCPGATE_BIN" --version 2>/dev/null | head -1 || echo "version n/a"; }
# report_warnings WHERE: the report's closing warnings (BUSY from check_idle; ANY_FAIL set by the
# caller), WHERE naming the report's columns that show the failures
report_warnings() {
  if [ -n "$BUSY" ]; then
    echo
    echo "**WARNING: machine was not idle at the start ($BUSY); numbers are skewed.**"
  fi
  if [ "$ANY_FAIL" -ne 0 ]; then
    echo
    echo "**WARNING: some points had failed responses or socket errors (see the $1 and $OUT).**"
  fi
}

# Rounds: a script that runs every point ROUNDS times keeps the BENCH line of round R of point
# (K1, K2, ...) in RES[K1,K2,...,R] (an associative array it declares).
# med FIELD K1 K2...: median over the rounds of one field (mean of the middle two if even; "-"
# if the field is "-", i.e. not applicable)
med() {
  local f="$1" k r; shift; k="$(IFS=,; echo "$*")"
  for r in $(seq 1 "$ROUNDS"); do field "$f" "${RES[$k,$r]}"; done | sort -g \
    | awk '$1 == "-" {dash = 1} {v[NR] = $1}
      END{ if (dash) print "-"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2 }'
}
# range FIELD K1 K2...: "min-max" of one field over the rounds (at most one decimal)
range() {
  local f="$1" k r; shift; k="$(IFS=,; echo "$*")"
  for r in $(seq 1 "$ROUNDS"); do field "$f" "${RES[$k,$r]}"; done | sort -g \
    | awk 'NR==1{lo=$1} {hi=$1} END{ if (hi < 100) printf "%.1f-%.1f", lo, hi; else printf "%.0f-%.0f", lo, hi }'
}
# compiled K1 K2...: " (cN)" when cargo/rustc ran during N of the rounds of the point (the point's
# BENCH line carries compiling=0|1)
compiled() {
  local k r n=0; k="$(IFS=,; echo "$*")"
  for r in $(seq 1 "$ROUNDS"); do [ "$(field compiling "${RES[$k,$r]}")" = 0 ] || n=$((n + 1)); done
  [ "$n" = 0 ] || echo " (c$n)"
}
# errsum K1 K2...: failed responses + socket errors of a wrk point, summed over the rounds
errsum() {
  local k r n=0; k="$(IFS=,; echo "$*")"
  for r in $(seq 1 "$ROUNDS"); do n=$(( n + $(errs "${RES[$k,$r]}") )); done
  echo "$n"
}
