-- wrk script: refresh-token rotation throughput at POST /token (bench/run_oauth.sh).
--
-- Run with as many threads as connections (wrk -tN -cN): each wrk thread then owns exactly one
-- connection and one refresh-token chain (its own client), and rotates it: every request sends
-- the refresh token of the previous response, as a real client does. Chains come from the file
-- named by REFRESH_CHAINS, one "client_id refresh_token" line per thread
-- (bench/oauth_load.py mint).
--
-- A response counts as OK only if: status 200, Content-Type application/json, and a
-- refresh_token different from the one sent (a rotation). Anything else is counted as a
-- failure; the chain then retries its current token (within the reuse grace window a server
-- that implements the idempotent retry answers it again). Counting and the BENCH line:
-- bench/wrk_check.lua (rps there counts only the OK responses).

local path = os.getenv("TOKEN_PATH") or "/token"
local chains = {}
do
  local f = assert(io.open(assert(os.getenv("REFRESH_CHAINS"), "REFRESH_CHAINS unset"), "r"))
  for line in f:lines() do
    local c, r = line:match("^(%S+)%s+(%S+)%s*$")
    if c then table.insert(chains, { c, r }) end
  end
  f:close()
end

local function enc(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local check = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_check.lua")
check.install({ "no_rotation" }, function(body)
  local new = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
  if not new or new == rt then return "no_rotation" end
  rt = new
end, { status = 200, rps = "ok" })

local n = 0
function setup(thread)
  n = n + 1
  local ch = chains[n]
  if not ch then error("more wrk threads than chains in REFRESH_CHAINS (" .. #chains .. ")") end
  thread:set("client_id", ch[1])
  thread:set("rt", ch[2])
  check.setup(thread)
end

local hdrs = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Accept"] = "application/json" }
function request()
  return wrk.format("POST", path, hdrs,
    "grant_type=refresh_token&refresh_token=" .. enc(rt) .. "&client_id=" .. enc(client_id))
end
