-- wrk script: POST a JSON-RPC tools/call of `add` {"a":1,"b":2} (or TOOL_NAME with TOOL_ARGS) to
-- /mcp and check every response.
--
-- Env:
--   MCP_ERA   = "2026" (default): stateless 2026-07-28 request: MCP-Protocol-Version,
--               Mcp-Method, Mcp-Name headers + params._meta protocolVersion/clientCapabilities
--               (rmcp 3.11 routes a request statelessly only when _meta carries both keys).
--             = "legacy": plain tools/call with no protocol headers and no session
--               (accepted by servers running a stateless legacy-era transport).
--   TOOL_NAME = tool to call (default "add").
--   TOOL_ARGS = its arguments, a JSON object sent as is (default {"a":1,"b":2}).
--   EXPECT_TEXT = when set and non-empty, an OK response must also contain this string (e.g. the
--               text echoed back, bench/run_gateway.sh); otherwise it counts as wrong_result.
--   ACCEPT_SSE = "1": also accept a text/event-stream answer (a server with JSON responses off,
--               e.g. rmcp's default, answers a POST with one SSE event; the same checks apply to
--               its body). Default: only application/json.
--   BEARER_TOKEN = when set and non-empty, sent as `Authorization: Bearer <token>` on every
--               request (the same token reused, as a real client does; bench/run_auth.sh).
--
-- A response counts as OK only if: status 2xx, Content-Type application/json (or
-- text/event-stream with ACCEPT_SSE=1), body is a JSON-RPC result (has "result", no top-level
-- "error"), the tool did not report isError:true and, with EXPECT_TEXT, the body contains that
-- text. Everything else is counted as a failure and reported in the CHECK line,
-- so a run that only measured error responses cannot pass for a success. Counting and the BENCH
-- line: bench/wrk_check.lua.

local era = os.getenv("MCP_ERA") or "2026"
local tool = os.getenv("TOOL_NAME") or "add"
local args = os.getenv("TOOL_ARGS") or ""
if args == "" then args = '{"a":1,"b":2}' end
local expect = os.getenv("EXPECT_TEXT") or ""

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local token = os.getenv("BEARER_TOKEN") or ""
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

if era == "legacy" then
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool ..
    '","arguments":' .. args .. '}}'
else
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = tool
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool ..
    '","arguments":' .. args .. ',"_meta":{' ..
    '"io.modelcontextprotocol/protocolVersion":"2026-07-28",' ..
    '"io.modelcontextprotocol/clientCapabilities":{},' ..
    '"io.modelcontextprotocol/clientInfo":{"name":"wrk-bench","version":"1"}}}}'
end

local check = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_check.lua")
local kinds = { "rpc_error", "tool_error" }
if expect ~= "" then table.insert(kinds, "wrong_result") end
check.install(kinds, function(body)
  if string.find(body, '"error"%s*:%s*{') or not string.find(body, '"result"%s*:') then
    return "rpc_error"
  elseif string.find(body, '"isError"%s*:%s*true') then
    return "tool_error"
  elseif expect ~= "" and not string.find(body, expect, 1, true) then
    return "wrong_result"
  end
end, { sse = os.getenv("ACCEPT_SSE") == "1" })
