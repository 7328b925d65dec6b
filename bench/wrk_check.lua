-- Shared by the wrk scripts of bench/ (tools_call.lua, oauth_register.lua, oauth_refresh.lua):
-- per-thread response counters, the first failure seen, and the one machine-readable BENCH line
-- that bench/lib.sh and bench/run_oauth.sh parse. Loaded with dofile() from the script's own
-- directory (wrk loads scripts with luaL_dofile, so the chunk name is "@PATH"):
--
--   local check = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_check.lua")
--   check.install({ "rpc_error", ... }, classify, { status = 201, rps = "ok" })
--
-- Every response must first have the expected status (opts.status, default any 2xx) and a
-- Content-Type of application/json (or, with opts.sse = true, text/event-stream too: an MCP
-- server's SSE answer to one POST, whose data: line carries the JSON-RPC message; classify then
-- gets the whole SSE body), or it is counted as bad_status or not_json. Then
-- classify(body, status) returns nil for an OK response, or the name of the failure counter to
-- increment (one of the names given to install). It may have side effects (oauth_refresh.lua
-- keeps the rotated token). install() defines the globals wrk looks for:
-- setup, response and done. A script that needs its own setup() calls check.setup(thread) in it.
--
-- BENCH line fields (latencies in microseconds): requests duration_us rps p50_us p90_us p99_us
-- max_us ok failed <each failure counter> bad_statuses (STATUS:COUNT,... of the bad_status
-- responses, "-" if none) sock_connect sock_read sock_write sock_timeout.
-- rps is all responses per second, or only the OK ones with opts.rps = "ok".

local M = {}
local threads = {}

function M.setup(thread)
  table.insert(threads, thread)
end

function M.install(body_kinds, classify, opts)
  opts = opts or {}
  local kinds = { "bad_status", "not_json" }
  for _, k in ipairs(body_kinds) do table.insert(kinds, k) end
  -- per-thread counters: globals, so that done() can read them with thread:get()
  ok = 0
  for _, k in ipairs(kinds) do _G[k] = 0 end
  first_bad = nil
  bad_codes = {}   -- status -> count, for the bad_status responses

  setup = M.setup

  function response(status, headers, body)
    local ct = headers["Content-Type"] or headers["content-type"] or ""
    local bad
    if (opts.status and status ~= opts.status) or (not opts.status and (status < 200 or status > 299)) then
      bad = "bad_status"
      bad_codes[status] = (bad_codes[status] or 0) + 1
    elseif not string.find(ct, "application/json", 1, true)
        and not (opts.sse and string.find(ct, "text/event-stream", 1, true)) then
      bad = "not_json"
    else
      bad = classify(body, status)
    end
    if bad then
      _G[bad] = _G[bad] + 1
      if not first_bad then
        first_bad = bad .. " " .. status .. " [" .. ct .. "] " .. string.sub(body or "", 1, 300)
      end
    else
      ok = ok + 1
    end
  end

  function done(summary, latency, requests)
    local t = { ok = 0 }
    for _, k in ipairs(kinds) do t[k] = 0 end
    local sample, codes = nil, {}
    for _, th in ipairs(threads) do
      for k, _ in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
      sample = sample or th:get("first_bad")
      for code, n in pairs(th:get("bad_codes") or {}) do codes[code] = (codes[code] or 0) + n end
    end
    local statuses = {}
    for code, n in pairs(codes) do table.insert(statuses, code .. ":" .. n) end
    table.sort(statuses)
    local failed, counts = 0, {}
    for _, k in ipairs(kinds) do
      failed = failed + t[k]
      table.insert(counts, string.format("%s=%d", k, t[k]))
    end
    local e = summary.errors
    local secs = summary.duration / 1e6
    local rps = (opts.rps == "ok" and t.ok or summary.requests) / secs
    io.write(string.format(
      "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
      "ok=%d failed=%d %s bad_statuses=%s sock_connect=%d sock_read=%d sock_write=%d sock_timeout=%d\n",
      summary.requests, summary.duration, rps,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      t.ok, failed, table.concat(counts, " "), #statuses > 0 and table.concat(statuses, ",") or "-", e.connect, e.read, e.write, e.timeout))
    if sample then io.write("BENCH_FIRST_FAILURE " .. sample .. "\n") end
  end
end

return M
