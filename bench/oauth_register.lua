-- wrk script: RFC 7591 dynamic client registration throughput at POST /register
-- (bench/run_oauth.sh). Every request registers a new public client (PKCE, no secret), the
-- shape MCP clients send. A response counts as OK only if: status 201, Content-Type
-- application/json and a client_id in the body. Counting and the BENCH line: bench/wrk_check.lua
-- (rps there counts only the OK responses).

wrk.method = "POST"
wrk.path = os.getenv("REGISTER_PATH") or "/register"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = '{"redirect_uris":["http://127.0.0.1:9/cb"],"token_endpoint_auth_method":"none",' ..
  '"grant_types":["authorization_code","refresh_token"],"response_types":["code"],' ..
  '"client_name":"wrk-dcr-bench","scope":"calc"}'

local check = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_check.lua")
check.install({ "no_client_id" }, function(body)
  if not string.find(body, '"client_id"%s*:%s*"') then return "no_client_id" end
end, { status = 201, rps = "ok" })
