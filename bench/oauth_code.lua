-- wrk script: authorization-code redemption throughput at POST /token (bench/run_oauth.sh).
--
-- Codes come from the file named by CODES (bench/oauth_load.py codes), one
-- "client_id code code_verifier" line each; minting them (flows up to the redirect) is not
-- measured. The lines are dealt out to the wrk threads (run with -tN -cN: one connection per
-- thread), each redeeming its own share in order, every code once.
--
-- A response counts as OK only if: status 200, Content-Type application/json, and both an
-- access_token and a refresh_token in the body. A thread that has used up its codes counts the
-- requests it still has to send as "exhausted" (resending its last code, which a server may
-- answer with the first response again within its replay window or refuse): the rate is then a
-- lower bound and the run reports the point as failed, so mint more codes (CODES_PER_POINT).
-- Counting and the BENCH line: bench/wrk_check.lua (rps there counts only the OK responses).

local path = os.getenv("TOKEN_PATH") or "/token"
local resource = os.getenv("RESOURCE") or ""
local redirect_uri = "http://127.0.0.1:9/cb"
local lines = {}
do
  local f = assert(io.open(assert(os.getenv("CODES"), "CODES unset"), "r"))
  for line in f:lines() do
    local c, k, v = line:match("^(%S+)%s+(%S+)%s+(%S+)%s*$")
    if c then table.insert(lines, { c, k, v }) end
  end
  f:close()
end

local function enc(s)
  return (string.gsub(s, "[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local check = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_check.lua")
check.install({ "no_tokens", "exhausted" }, function(body)
  if sent > #mine then return "exhausted" end
  if not string.find(body, '"access_token"%s*:%s*"') or not string.find(body, '"refresh_token"%s*:%s*"') then
    return "no_tokens"
  end
end, { status = 200, rps = "ok" })

local nthreads = tonumber(os.getenv("WRK_THREADS") or "0")
local n = 0
function setup(thread)
  n = n + 1
  assert(nthreads > 0, "WRK_THREADS unset")
  -- thread n gets lines n, n + T, n + 2T, ...
  local share = {}
  for i = n, #lines, nthreads do
    local l = lines[i]
    table.insert(share, "grant_type=authorization_code&code=" .. enc(l[2]) .. "&code_verifier=" .. enc(l[3]) ..
      "&redirect_uri=" .. enc(redirect_uri) .. "&client_id=" .. enc(l[1]) ..
      (resource ~= "" and ("&resource=" .. enc(resource)) or ""))
  end
  if #share == 0 then error("no codes for wrk thread " .. n .. " in CODES (" .. #lines .. " lines)") end
  thread:set("mine", share)
  check.setup(thread)
end

local hdrs = { ["Content-Type"] = "application/x-www-form-urlencoded", ["Accept"] = "application/json" }
sent = 0
function request()
  sent = sent + 1
  return wrk.format("POST", path, hdrs, mine[math.min(sent, #mine)])
end
