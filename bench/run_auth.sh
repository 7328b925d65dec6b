#!/usr/bin/env bash
# Authenticated load benchmark (a benchmark, never a test): tools/call of `add` {"a":1,"b":2},
# in one run, point by point at 1/8/64 connections, against
#   mg-none   mcpgate, auth.mode = "none"
#   mg-auth   mcpgate, auth.mode = "resource", bearer RS256 JWT checked against a JWKS
#   fm-none   FastMCP, no auth
#   fm-auth   FastMCP with JWTVerifier (jwks_uri, issuer, audience, required_scopes=["calc"])
# all stateless JSON. The RSA key is generated at run time (openssl genpkey), its JWKS served by
# python http.server on loopback, one token per server minted by bench/jwt_tool.py (PyJWT) and
# reused for every request, as a real client does. Before measuring, curl checks that each
# authenticated server answers 401 without a token, 401 to a token minted for the other
# server's audience and 200 + a result with its own token; the run aborts otherwise.
# Prints a markdown report on stdout; raw wrk output and logs go to bench/out/auth-<timestamp>/.
#
#   bench/install.sh && bench/run_auth.sh
#
# Env knobs (defaults in brackets): MCPGATE_BIN [target/release/mcpgate]  DURATION [10]
#   ROUNDS [3] (every point is run ROUNDS times, round-robin; the report shows medians)
#   WARMUP [3]  CONNS ["1 8 64"]  WRK_THREADS [1 for 1 connection, else 2]
#   MCPGATE_SERVE_ARGS ['serve --config {config}']  RUST_LOG [warn]  MCPGATE_LOG__LEVEL [warn]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # ROOT, PY and the shared knobs: MCPGATE_BIN, DURATION, MCPGATE_SERVE_ARGS, ...
WARMUP="${WARMUP:-3}"
CONNS="${CONNS:-1 8 64}"
ROUNDS="${ROUNDS:-3}"
ERA=2026   # request shape, both servers (see bench/tools_call.lua)
LUA="$HERE/tools_call.lua"
command -v openssl >/dev/null || die "openssl missing: run bench/install.sh"
bench_init auth-
"$PY" -c 'import jwt, cryptography' 2>/dev/null || die "PyJWT/cryptography missing in bench/.venv: run bench/install.sh"

# ---------------------------------------------------------------- key, JWKS, issuer
KID="bench-$(date +%s)"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/key.pem" 2>/dev/null \
  || die "openssl genpkey failed"
mkdir -p "$TMP/jwks"
"$PY" "$HERE/jwt_tool.py" jwks "$TMP/key.pem" "$KID" >"$TMP/jwks/jwks.json"
cp "$TMP/jwks/jwks.json" "$OUT/jwks.json"
JWKS_PORT="$(free_port)"
"$PY" -m http.server "$JWKS_PORT" --bind 127.0.0.1 --directory "$TMP/jwks" >"$OUT/jwks-server.log" 2>&1 &
JWKS_PID=$!; PIDS+=("$JWKS_PID")
wait_listen jwks-server "$JWKS_PORT" "$JWKS_PID"
ISSUER="http://127.0.0.1:$JWKS_PORT"
JWKS_URI="$ISSUER/jwks.json"
curl -fsS "$JWKS_URI" | grep -q "\"kid\": \"$KID\"" || die "JWKS not served at $JWKS_URI"

# ---------------------------------------------------------------- servers
MGN_PORT="$(free_port)"
mcpgate_config "$TMP/mg-none.toml" "$MGN_PORT" "$TMP/mg-none-data"
start_mcpgate mg-none "$TMP/mg-none.toml"; MGN_PID="$STARTED_PID"

MGA_PORT="$(free_port)"
mcpgate_config "$TMP/mg-auth.toml" "$MGA_PORT" "$TMP/mg-auth-data" resource "[auth.resource]
issuer = \"$ISSUER\"
jwks_uri = \"$JWKS_URI\""
start_mcpgate mg-auth "$TMP/mg-auth.toml"; MGA_PID="$STARTED_PID"

FMN_PORT="$(free_port)"
"$PY" "$HERE/fastmcp_server.py" "$FMN_PORT" >"$OUT/fm-none.log" 2>&1 &
FMN_PID=$!; PIDS+=("$FMN_PID")
FMA_PORT="$(free_port)"
"$PY" "$HERE/fastmcp_server.py" "$FMA_PORT" --jwks-uri "$JWKS_URI" --issuer "$ISSUER" >"$OUT/fm-auth.log" 2>&1 &
FMA_PID=$!; PIDS+=("$FMA_PID")

wait_healthz mg-none "$MGN_PORT" "$MGN_PID"
wait_healthz mg-auth "$MGA_PORT" "$MGA_PID"
wait_listen fm-none "$FMN_PORT" "$FMN_PID"
wait_listen fm-auth "$FMA_PORT" "$FMA_PID"

# One token per authenticated server: same key, issuer and scope; aud = that server's /mcp URL.
mint() { "$PY" "$HERE/jwt_tool.py" token "$TMP/key.pem" "$KID" "$ISSUER" "$1" calc; }
MG_TOKEN="$(mint "http://127.0.0.1:$MGA_PORT/mcp")"
FM_TOKEN="$(mint "http://127.0.0.1:$FMA_PORT/mcp")"
"$PY" -c 'import jwt,sys,json; t=sys.argv[1]; print(json.dumps({"header": jwt.get_unverified_header(t), "claims": jwt.decode(t, options={"verify_signature": False})}))' \
  "$MG_TOKEN" >"$OUT/mg-token-decoded.json"

# ---------------------------------------------------------------- curl checks (abort on surprise)
BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"curl-check","version":"1"}}}}'
# call PORT [TOKEN] -> "STATUS BODY"
call() {
  local port="$1" token="${2:-}" args=()
  [ -z "$token" ] || args=(-H "Authorization: Bearer $token")
  curl -sS -o "$TMP/body" -w '%{http_code}' -X POST "http://127.0.0.1:$port/mcp" \
    -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
    -H 'MCP-Protocol-Version: 2026-07-28' -H 'Mcp-Method: tools/call' -H 'Mcp-Name: add' \
    "${args[@]}" -d "$BODY" || true
  echo " $(head -c 400 "$TMP/body" 2>/dev/null)"
}
# expect NAME PORT WANT_STATUS [TOKEN]; a 200 must also carry a result (3, the sum)
expect() {
  local name="$1" port="$2" want="$3" token="${4:-}" got
  got="$(call "$port" "$token")"
  echo "$name: $got" >>"$OUT/curl-checks.txt"
  [ "${got%% *}" = "$want" ] || die "$name: expected HTTP $want, got: $got"
  if [ "$want" = 200 ]; then
    if ! grep -q '"result"' <<<"$got" || grep -q '"isError": *true' <<<"$got" \
      || ! grep -Eq '"structuredContent": *\{"result": *3(\.0)?\}' <<<"$got"; then
      die "$name: HTTP 200 but not a tool result: $got"
    fi
  fi
  echo "run_auth.sh: check ok: $name -> $want" >&2
}
: >"$OUT/curl-checks.txt"
expect "mg-none, no token" "$MGN_PORT" 200
expect "fm-none, no token" "$FMN_PORT" 200
expect "mg-auth, no token" "$MGA_PORT" 401
expect "mg-auth, token for fm-auth's audience" "$MGA_PORT" 401 "$FM_TOKEN"
expect "mg-auth, its token" "$MGA_PORT" 200 "$MG_TOKEN"
expect "fm-auth, no token" "$FMA_PORT" 401
expect "fm-auth, token for mg-auth's audience" "$FMA_PORT" 401 "$MG_TOKEN"
expect "fm-auth, its token" "$FMA_PORT" 200 "$FM_TOKEN"

# The wrk script must count the 401s of a token-less run as failures (and nothing as OK).
for s in "mg-auth $MGA_PORT $MGA_PID" "fm-auth $FMA_PORT $FMA_PID"; do
  read -r name port pid <<<"$s"
  line="$(run_point "$name-notoken-check" "$port" "$ERA" add 1 1 "$pid")"
  if [ "$(field ok "$line")" -ne 0 ] || [ "$(field bad_status "$line")" -eq 0 ]; then
    die "$name: a token-less wrk run was not all failures ($line)"
  fi
  echo "run_auth.sh: check ok: $name, wrk without token -> $(field bad_status "$line") failures, 0 ok" >&2
done

sleep 2
MGA_RSS_IDLE="$(rss_kb "$MGA_PID")"

# ---------------------------------------------------------------- load
# name port pid token, in the order run within each connection count
SERVERS=(
  "mg-none $MGN_PORT $MGN_PID -"
  "mg-auth $MGA_PORT $MGA_PID $MG_TOKEN"
  "fm-none $FMN_PORT $FMN_PID -"
  "fm-auth $FMA_PORT $FMA_PID $FM_TOKEN"
)
for s in "${SERVERS[@]}"; do
  read -r name port pid token <<<"$s"; [ "$token" != "-" ] || token=""
  verify_and_warm "$name" "$port" "$ERA" add "$pid" "$token"
done
STEAL0="$(steal_ticks)"; T0="$(date +%s)"
declare -A RES
for r in $(seq 1 "$ROUNDS"); do
  for c in $CONNS; do
    for s in "${SERVERS[@]}"; do
      read -r name port pid token <<<"$s"; [ "$token" != "-" ] || token=""
      echo "run_auth.sh: round $r/$ROUNDS c=$c: $name ${DURATION}s" >&2
      RES[$name,$c,$r]="$(run_point "$name-r$r" "$port" "$ERA" add "$c" "$DURATION" "$pid" "$token")"
    done
  done
done
STEAL_PCT="$(steal_pct "$STEAL0" "$T0")"
for s in "${SERVERS[@]}"; do
  read -r name port pid token <<<"$s"
  kill -0 "$pid" 2>/dev/null || die "$name died during the run; see $OUT/$name.log"
done
MGA_RSS_LOAD="$(rss_kb "$MGA_PID")"

# ---------------------------------------------------------------- report
ANY_FAIL=0
for c in $CONNS; do
  for n in mg-none mg-auth fm-none fm-auth; do [ "$(errsum "$n" "$c")" -eq 0 ] || ANY_FAIL=1; done
done
label() { case "$1" in
  mg-none) echo 'mcpgate, auth none' ;; mg-auth) echo 'mcpgate, auth resource (JWT)' ;;
  fm-none) echo 'FastMCP, no auth' ;; fm-auth) echo 'FastMCP, JWTVerifier' ;; esac; }
{
  echo "### Authenticated run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  machine_line
  echo "- load generator: wrk $(wrk_version) on the same 2 cores as the servers; ${DURATION}s per point, $ROUNDS round(s) of every point (figures are medians over the rounds), ${WARMUP}s warm-up at 8 connections per server; order within each round and connection count: mg-none, mg-auth, fm-none, fm-auth"
  echo "- mcpgate: \`$MCPGATE_BIN\` ($(mcpgate_version)), MCPGATE_LOG__LEVEL=$MCPGATE_LOG__LEVEL RUST_LOG=$RUST_LOG"
  echo "- FastMCP: $(fastmcp_versions), 1 uvicorn worker, stateless_http + json_response, access log off"
  echo "- token: RS256 (2048-bit key from openssl genpkey), typ at+jwt, kid in the JWKS, iss/sub/aud/exp/nbf/iat/scope=calc, $(tr -d '\n' <<<"$MG_TOKEN" | wc -c) bytes, one token per server reused for every request"
  echo "- host CPU steal during the load points: $STEAL_PCT % of the 2 cores"
  echo
  echo "| conns | server | req/s | req/s range | p50 ms | p99 ms | errors | CPU % |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|"
  for c in $CONNS; do
    for n in mg-none mg-auth fm-none fm-auth; do
      printf "| %s | %s | %.0f | %s | %s | %s | %s | %.0f |\n" "$c" "$(label "$n")" "$(med rps "$n" "$c")" "$(range rps "$n" "$c")" \
        "$(ms "$(med p50_us "$n" "$c")")" "$(ms "$(med p99_us "$n" "$c")")" "$(errsum "$n" "$c")" "$(med server_cpu_pct "$n" "$c")"
    done
  done
  echo
  echo "| conns | mcpgate auth/none req/s | FastMCP auth/none req/s | mcpgate-auth / FastMCP-auth req/s | mcpgate-auth p99 ms |"
  echo "|---:|---:|---:|---:|---:|"
  for c in $CONNS; do
    printf "| %s | %s | %s | %s | %s |\n" "$c" \
      "$(ratio "$(med rps mg-auth "$c")" "$(med rps mg-none "$c")")" \
      "$(ratio "$(med rps fm-auth "$c")" "$(med rps fm-none "$c")")" \
      "$(ratio "$(med rps mg-auth "$c")" "$(med rps fm-auth "$c")")" \
      "$(ms "$(med p99_us mg-auth "$c")")"
  done
  echo
  echo "CPU % = server process CPU time during the point / wall time (100 = one core of the 2)."
  echo "wrk threads: $(for c in $CONNS; do printf '%s conns -> -t%s; ' "$c" "$(wrk_threads "$c")"; done)"
  echo "mcpgate (auth resource) RSS: idle $(mb "$MGA_RSS_IDLE") MB, after the load points $(mb "$MGA_RSS_LOAD") MB."
  report_warnings "errors column"
} >"$OUT/report.md"
cat "$OUT/report.md"
for r in $(seq 1 "$ROUNDS"); do for c in $CONNS; do for n in mg-none mg-auth fm-none fm-auth; do
  echo "round=$r $n c=$c ${RES[$n,$c,$r]}"; done; done; done >"$OUT/bench-lines.txt"
echo "run_auth.sh: raw output in $OUT" >&2
exit "$ANY_FAIL"
