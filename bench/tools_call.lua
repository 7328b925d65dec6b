-- wrk script: POST a JSON-RPC tools/call of `add` {"a":1,"b":2} to /mcp and check every response.
--
-- Env:
--   MCP_ERA   = "2026" (default): stateless 2026-07-28 request: MCP-Protocol-Version,
--               Mcp-Method, Mcp-Name headers + params._meta protocolVersion/clientCapabilities
--               (rmcp 3.11 routes a request statelessly only when _meta carries both keys).
--             = "legacy": plain tools/call with no protocol headers and no session
--               (accepted by servers running a stateless legacy-era transport).
--   TOOL_NAME = tool to call (default "add").
--   BEARER_TOKEN = when set and non-empty, sent as `Authorization: Bearer <token>` on every
--               request (the same token reused, as a real client does; bench/run_auth.sh).
--
-- A response counts as OK only if: status 2xx, Content-Type application/json, body is a
-- JSON-RPC result (has "result", no top-level "error") and the tool did not report
-- isError:true. Everything else is counted as a failure and reported in the CHECK line,
-- so a run that only measured error responses cannot pass for a success.

local era = os.getenv("MCP_ERA") or "2026"
local tool = os.getenv("TOOL_NAME") or "add"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local token = os.getenv("BEARER_TOKEN") or ""
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

if era == "legacy" then
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool ..
    '","arguments":{"a":1,"b":2}}}'
else
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = tool
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool ..
    '","arguments":{"a":1,"b":2},"_meta":{' ..
    '"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
    '"io.modelcontextprotocol/clientCapabilities":{},' ..
    '"io.modelcontextprotocol/clientInfo":{"name":"wrk-bench","version":"1"}}}}'
end

-- per-thread counters (each wrk thread has its own Lua state)
ok, bad_status, not_json, rpc_error, tool_error = 0, 0, 0, 0, 0
first_bad = nil

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  local ct = headers["Content-Type"] or headers["content-type"] or ""
  local bad = nil
  if status < 200 or status > 299 then
    bad_status = bad_status + 1; bad = "status"
  elseif not string.find(ct, "application/json", 1, true) then
    not_json = not_json + 1; bad = "content-type"
  elseif string.find(body, '"error"%s*:%s*{') or not string.find(body, '"result"%s*:') then
    rpc_error = rpc_error + 1; bad = "jsonrpc"
  elseif string.find(body, '"isError"%s*:%s*true') then
    tool_error = tool_error + 1; bad = "isError"
  else
    ok = ok + 1
  end
  if bad and not first_bad then
    first_bad = bad .. " " .. status .. " [" .. ct .. "] " .. string.sub(body or "", 1, 300)
  end
end

function done(summary, latency, requests)
  local t = { ok = 0, bad_status = 0, not_json = 0, rpc_error = 0, tool_error = 0 }
  local sample = nil
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
    sample = sample or th:get("first_bad")
  end
  local e = summary.errors
  local failed = t.bad_status + t.not_json + t.rpc_error + t.tool_error
  -- One machine-readable line for bench/run.sh (latency values are microseconds).
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "ok=%d failed=%d bad_status=%d not_json=%d rpc_error=%d tool_error=%d " ..
    "sock_connect=%d sock_read=%d sock_write=%d sock_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    t.ok, failed, t.bad_status, t.not_json, t.rpc_error, t.tool_error,
    e.connect, e.read, e.write, e.timeout))
  if sample then io.write("BENCH_FIRST_FAILURE " .. sample .. "\n") end
end
