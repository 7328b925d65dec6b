-- wrk load for test_replicas.py: every request is an authenticated stateless (2026-07-28)
-- `tools/call add` POSTed through the balancer. A request counts as failed unless it got a 2xx
-- whose body is a JSON-RPC result without isError (a 502 page from nginx, a JSON-RPC error, a
-- 503 from a draining replica: all failures). Socket errors are wrk's own counters.
--
--   wrk -t2 -c8 -d60s --latency -s replicas_load.lua http://127.0.0.1:PORT/mcp -- TOKEN
--
-- done() prints one line `WRK_RESULT {json}` for the test to parse.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  failed = 0
  statuses = ""
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
  wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = "add"
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":20,"b":22},'
    .. '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    .. '"io.modelcontextprotocol/clientCapabilities":{},'
    .. '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"4"}}}}'
end

function response(status, headers, body)
  if status >= 200 and status < 300 and body:find('"result"', 1, true)
      and body:find('"text":"42"', 1, true) and not body:find('"isError":true', 1, true) then
    ok = ok + 1
  else
    failed = failed + 1
    -- the first few failures, for the report
    if failed <= 5 then
      statuses = statuses .. status .. " " .. body:sub(1, 160):gsub("[\r\n\"\\]", " ") .. " | "
    end
  end
end

function done(summary, latency, requests)
  local ok_total, failed_total, samples = 0, 0, ""
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    failed_total = failed_total + t:get("failed")
    samples = samples .. t:get("statuses")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"ok":%d,"failed_responses":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"timeouts":%d,"non_2xx_3xx":%d,"duration_s":%.3f,"p50_ms":%.3f,"p90_ms":%.3f,'
      .. '"p99_ms":%.3f,"max_ms":%.3f,"failure_samples":"%s"}\n',
    summary.requests, ok_total, failed_total, e.connect, e.read, e.write, e.timeout, e.status,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, samples))
end
