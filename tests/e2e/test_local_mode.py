"""mcpgate in `auth.mode = "local"`: mcpgate is the OAuth authorization server and logs its own
users in. Real OAuth clients run the whole flow against it: the Python SDK (mcp 2.3.0), the
TypeScript SDK (1.32.2), mcp-remote (0.15.1) and the Inspector CLI (2.12.0). The user's browser is
local_browser.py (local_browser.sh as `$BROWSER`), which fills in mcpgate's login and consent
pages and checks their contract on every step.

Each test gets a fresh mcpgate (local_fixtures.py) whose users were created with
`mcpgate users add NAME --password-stdin` before it started. The refresh tests use
`access_token_ttl_secs = 5` and wait for the access token to expire for real.

The MCP conformance suite 0.1.16 has no authorization-server scenarios (its `auth/*` scenarios
test clients against its own mock AS), and its server scenarios cannot send a bearer token; see
the README ("Local mode").
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.parse
import uuid
from pathlib import Path

import anyio
import pytest
from mcp import Client

import local_browser
from conftest import E2E_DIR, EXPECTED_TOOLS, free_port
from local_fixtures import LocalGate, assert_as_discovery, verified_claims
from oauth_clients import (INSPECTOR_CALLBACK, AgentBrowser, MemoryStorage, Wire, inspector_env, inspector_result,
                           inspector_tokens, query, read_jsonl, run_inspector, run_mcp_remote, run_ts_oauth_client,
                           sdk_provider, sdk_refresh_flow, tool_text)
from rs_fixtures import ALL_SCOPES, McpHttp, challenge

TIMEOUT = 60
SHORT_TTL = 5  # access_token_ttl_secs of the refresh tests
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: the browser stops there
COOKIE_NAMES = {"mcpgate_auth", "mcpgate_session"}


# ====================================================================== helpers
def cookie_attrs(set_cookies: list[str]) -> dict[str, str]:
    """name -> the whole Set-Cookie header of each cookie mcpgate set."""
    return {h.split("=", 1)[0].strip(): h for h in set_cookies}


def note_of(result_text: str) -> dict:
    return json.loads(result_text)


# ====================================================================== discovery
def test_discovery_metadata_and_challenge(local_gate: LocalGate):
    assert_as_discovery(local_gate)


# ====================================================================== raw OAuth
def test_raw_code_flow_session_refresh_and_revocation(local_gate: LocalGate):
    """DCR -> login + consent -> code + PKCE -> token -> /mcp; the login session cookie skips the
    login page the second time; a wrong PKCE verifier fails; refresh rotates; revocation ends it."""
    g = local_gate
    client = g.register(redirect_uris=[REDIRECT_URI], client_name="e2e-raw")
    cid = client["client_id"]
    assert cid and client["redirect_uris"] == [REDIRECT_URI], client

    jar = http.cookiejar.CookieJar()
    res = g.authorize(cid, REDIRECT_URI, user="alice", cookie_jar=jar)
    trace = g.browser_traces[-1]
    assert trace.pages == ["login", "consent"], trace.steps
    assert res.params.get("state") == res.state and res.params.get("iss") == g.issuer, res.redirect_url
    assert res.code and "error" not in res.params, res.redirect_url
    cookies = cookie_attrs(trace.set_cookies)
    assert COOKIE_NAMES <= set(cookies), f"cookies set: {trace.set_cookies}"
    for name in COOKIE_NAMES:
        attrs = cookies[name].lower()
        assert "httponly" in attrs and "secure" not in attrs, f"{name} on http loopback: {cookies[name]}"

    status, tok = g.exchange_code(res, cid)
    assert status == 200, (status, tok)
    assert tok["token_type"].lower() == "bearer" and tok["refresh_token"] and tok["expires_in"] > 0, tok
    assert set(tok["scope"].split()) == set(ALL_SCOPES.split()), tok
    claims = verified_claims(g, tok["access_token"])
    assert claims["sub"] and claims.get("client_id", cid) == cid, claims
    assert set(str(claims.get("scope", "")).split()) == set(ALL_SCOPES.split()), claims

    raw = McpHttp(g, tok["access_token"])
    assert raw.initialize().status_code == 200
    assert raw.tool_result("add", {"a": 2, "b": 3})["content"][0]["text"] == "5"

    # Logged in already: the second authorization shows only the consent page.
    res2 = g.authorize(cid, REDIRECT_URI, user="alice", cookie_jar=jar)
    assert g.browser_traces[-1].pages == ["consent"], g.browser_traces[-1].steps
    status, bad = g.exchange_code(res2, cid, code_verifier="x" * 64)
    assert status == 400 and bad.get("error") == "invalid_grant", ("wrong PKCE verifier", status, bad)

    # Refresh: a new access token and a new (rotated) refresh token, both working.
    status, tok2 = g.refresh(tok["refresh_token"], cid)
    assert status == 200, (status, tok2)
    assert tok2["access_token"] != tok["access_token"] and tok2["refresh_token"] != tok["refresh_token"], tok2
    assert verified_claims(g, tok2["access_token"])["sub"] == claims["sub"]
    assert McpHttp(g, tok2["access_token"]).initialize().status_code == 200

    # RFC 7009: revoking the refresh token ends it.
    status, body = g.revoke(tok2["refresh_token"], cid, hint="refresh_token")
    assert status == 200, ("revoke", status, body)
    status, dead = g.refresh(tok2["refresh_token"], cid)
    assert status == 400 and dead.get("error") == "invalid_grant", ("refresh after revocation", status, dead)


def test_wrong_password_and_unknown_user_are_refused(local_gate: LocalGate):
    g = local_gate
    cid = g.register(redirect_uris=[REDIRECT_URI])["client_id"]
    for user, password in (("alice", "not-" + g.users["alice"]), ("mallory", "whatever-1234")):
        url, _, _ = g.authorization_url(cid, REDIRECT_URI)
        trace = local_browser.Trace()
        with pytest.raises(local_browser.LoginFailed) as err:
            local_browser.authorize(url, user, password, trace=trace)
        assert err.value.status in (200, 401), (user, err.value.status)
        assert re.search(r"""<form[^>]*action=["']?[^"'>]*/login""", err.value.page), (
            f"no login form again after a failed login for {user!r}: {err.value.page[:800]}")
        assert trace.final_url is None and trace.consent_posts == 0
        assert password not in g.log_text(), "a submitted password appears in mcpgate's log"


def test_deny_gives_access_denied(local_gate: LocalGate):
    g = local_gate
    cid = g.register(redirect_uris=[REDIRECT_URI])["client_id"]
    res = g.authorize(cid, REDIRECT_URI, user="alice", deny=True)
    assert g.browser_traces[-1].pages == ["login", "consent"], g.browser_traces[-1].steps
    assert res.params.get("error") == "access_denied", res.redirect_url
    assert "code" not in res.params, res.redirect_url
    assert res.params.get("state") == res.state and res.params.get("iss") == g.issuer, res.redirect_url


def test_remembered_consent_skips_the_consent_page(local_gate: LocalGate):
    g = local_gate
    cid = g.register(redirect_uris=[REDIRECT_URI])["client_id"]
    url, _, _ = g.authorization_url(cid, REDIRECT_URI)
    jar = http.cookiejar.CookieJar()
    first = local_browser.Trace()
    try:
        local_browser.authorize(url, "alice", g.users["alice"], cookie_jar=jar, remember=True, trace=first)
    except local_browser.AgentError as e:
        if "no `remember` checkbox" in str(e):
            pytest.skip("the consent page has no `remember` checkbox (it is optional)")
        raise
    assert first.pages == ["login", "consent"] and "code" in first.final_params, first.steps
    res = g.authorize(cid, REDIRECT_URI, user="alice", cookie_jar=jar)
    assert g.browser_traces[-1].pages == [], f"consent was asked again: {g.browser_traces[-1].steps}"
    status, tok = g.exchange_code(res, cid)
    assert status == 200 and tok["access_token"], (status, tok)


def test_expired_access_token_is_rejected(local_factory):
    """A token mcpgate issued itself with expires_in = 5 must stop working once it expired."""
    g = local_factory(access_token_ttl_secs=SHORT_TTL)
    tok = g.login_token(user="alice", scope="calc", redirect_uri=REDIRECT_URI)
    assert tok["expires_in"] == SHORT_TTL, tok
    claims = verified_claims(g, tok["access_token"])
    assert claims["exp"] - claims["iat"] == SHORT_TTL, claims
    assert McpHttp(g, tok["access_token"]).initialize().status_code == 200
    time.sleep(max(0.0, claims["exp"] - time.time()) + 1.5)
    resp = McpHttp(g, tok["access_token"]).initialize()
    assert resp.status_code == 401, (
        f"mcpgate accepted its own access token {time.time() - claims['exp']:.1f} s after exp: {resp.status_code}")
    assert challenge(resp)["error"] == "invalid_token", resp.headers


# ====================================================================== users
def test_users_cli_passwd_and_remove(local_factory):
    g = local_factory(users={"alice": None, "bob": None})
    listed = g.cli("users", "list")
    assert listed.returncode == 0 and {"alice", "bob"} <= set(re.findall(r"\b(alice|bob)\b", listed.stdout)), listed
    assert g.users["alice"] not in listed.stdout + listed.stderr

    new_pw = "new-" + g.users["bob"]
    r = g.cli("users", "passwd", "bob", "--password-stdin", stdin=new_pw + "\n")
    assert r.returncode == 0, (r.stdout, r.stderr)
    cid = g.register(redirect_uris=[REDIRECT_URI])["client_id"]
    url, _, _ = g.authorization_url(cid, REDIRECT_URI)
    with pytest.raises(local_browser.LoginFailed):
        local_browser.authorize(url, "bob", g.users["bob"])  # the old password
    g.users["bob"] = new_pw
    assert "code" in g.authorize(cid, REDIRECT_URI, user="bob").params

    r = g.cli("users", "remove", "bob")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "bob" not in re.findall(r"\b(alice|bob)\b", g.cli("users", "list").stdout)
    url, _, _ = g.authorization_url(cid, REDIRECT_URI)
    with pytest.raises(local_browser.LoginFailed):
        local_browser.authorize(url, "bob", new_pw)


def test_first_start_admin_one_time_password(local_factory):
    """No users: the first start creates `admin` and prints its one-time password on stdout."""
    g = local_factory(users={}, separate_stdout=True)
    deadline = time.monotonic() + 10
    while not (m := re.search(r"one-time password: (\S+)", g.stdout_text())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert m, f"no `one-time password: ...` line on stdout:\n{g.log_tail()}"
    password = m.group(1)
    assert g.base_url in g.stdout_text(), f"no line with the URL on stdout:\n{g.stdout_text()}"
    assert password not in g.log_text(), "the one-time password also went to the log (stderr)"
    listed = g.cli("users", "list")
    assert listed.returncode == 0 and "admin" in listed.stdout, (listed.stdout, listed.stderr)

    g.users["admin"] = password
    tok = g.login_token(user="admin", scope="calc", redirect_uri=REDIRECT_URI)
    raw = McpHttp(g, tok["access_token"])
    assert raw.initialize().status_code == 200
    assert raw.tool_result("multiply", {"a": 6, "b": 7})["content"][0]["text"] == "42"
    url, _, _ = g.authorization_url(g.register(redirect_uris=[REDIRECT_URI])["client_id"], REDIRECT_URI)
    with pytest.raises(local_browser.LoginFailed):
        local_browser.authorize(url, "admin", "x" + password)


# ====================================================================== Python SDK
def test_python_sdk_local_oauth_flow_and_refresh(local_factory):
    """Python SDK: 401 -> PRM -> mcpgate's AS metadata -> DCR -> login + consent -> code + PKCE ->
    tokens -> tools and a notes round trip; then the 5 s access token expires and the SDK refreshes
    it at mcpgate's /token before the next call."""
    g = local_factory(access_token_ttl_secs=SHORT_TTL)
    storage, wire = MemoryStorage(), Wire()
    browser = AgentBrowser("alice", authorize=g.browser("alice"))
    provider = sdk_provider(g.mcp_url, browser, storage)
    title = f"py-local-{uuid.uuid4().hex[:8]}"
    out = sdk_refresh_flow(g, provider, storage, wire, title)

    first = wire.log[0]
    assert first["url"] == g.mcp_url and first["status"] == 401 and first["auth"] == "", first
    assert f'resource_metadata="{g.prm_url}"' in first["www"], first["www"]
    urls = wire.urls()
    assert g.prm_url in urls, urls
    assert any(u.startswith(g.as_metadata_url) for u in urls), f"no AS metadata fetched from mcpgate: {urls}"
    reg = [e for e in wire.log if e["url"] == g.registration_endpoint]
    assert [e.get("status") for e in reg] == [201], f"DCR at mcpgate: {reg}"
    assert len(browser.urls) == 1, browser.urls
    q = query(browser.urls[0])
    assert urllib.parse.urlsplit(browser.urls[0])._replace(query="").geturl() == g.authorization_endpoint
    assert q["resource"] == g.mcp_resource and q["code_challenge_method"] == "S256", q
    assert set(ALL_SCOPES.split()) <= set(q["scope"].split()), q["scope"]
    assert g.browser_traces[0].pages == ["login", "consent"], g.browser_traces[0].steps
    assert query(browser.finals[0]).get("iss") == g.issuer, browser.finals[0]

    assert out["tools"] == EXPECTED_TOOLS, out["tools"]
    assert out["add"] == "5"
    assert out["created"]["title"] == title and out["read"]["body"] == "py", out
    assert out["expires_in"] == SHORT_TTL, out["expires_in"]
    claims = verified_claims(g, out["token1"])
    assert claims["exp"] - claims["iat"] == SHORT_TTL, claims

    grants = wire.token_grants(g.token_endpoint)
    assert grants[0] == ("authorization_code", 200), grants
    assert ("refresh_token", 200) in grants[out["grants_before"]:], f"no refresh after the expiry: {grants}"
    assert out["token2"] != out["token1"], "the SDK did not refresh the expired token"
    assert verified_claims(g, out["token2"])["sub"] == claims["sub"]
    assert out["last_mcp_auth"] == f"Bearer {out['token2']}"
    assert out["sub_after"] == "6"
    assert [n["title"] for n in out["listed"]] == [title], out["listed"]
    assert g.audit('tool="subtract" outcome=ok'), "no audit line for the call after the refresh"


# ====================================================================== TypeScript SDK
def test_ts_sdk_local_oauth_flow_and_refresh(local_factory, tmp_path: Path):
    """TS SDK: connect -> UnauthorizedError -> (login + consent) -> finishAuth -> tools and notes;
    then the access token expires for real: mcpgate answers 401 and the SDK refreshes and retries."""
    g = local_factory(access_token_ttl_secs=SHORT_TTL)
    log = tmp_path / "browser.jsonl"
    out = run_ts_oauth_client(g.mcp_url, agent=E2E_DIR / "local_browser.py", user="alice",
                              password=g.users["alice"], expire_wait_ms=(SHORT_TTL + 1) * 1000,
                              env={"LOCAL_BROWSER_LOG": str(log)})

    assert out["unauthorizedErrors"] == 1
    assert len(out["authorizationUrls"]) == 1 and out["stateChecks"][0]["ok"] is True, out["stateChecks"]
    q = query(out["authorizationUrls"][0])
    assert q["resource"] == g.mcp_resource and set(q["scope"].split()) == set(ALL_SCOPES.split()), q
    assert out["callbackIss"] == g.issuer
    records = read_jsonl(log)
    assert len(records) == 1 and records[0]["pages"] == ["login", "consent"], records
    assert set(out["tools"]) == EXPECTED_TOOLS
    assert out["add"]["content"] == [{"type": "text", "text": "42"}], out["add"]
    assert json.loads(out["readNote"]["content"][0]["text"])["title"] == out["noteTitle"], out["readNote"]
    assert [n["title"] for n in json.loads(out["listNotes"]["content"][0]["text"])["notes"]] == [out["noteTitle"]]
    assert out["expiresIn"] == SHORT_TTL, out

    # The TS SDK refreshes only after a 401: mcpgate must refuse the expired token.
    assert out["mcpStatuses"].count(401) == 2, (
        f"mcpgate did not answer 401 to the access token 1 s after it expired, so the "
        f"SDK never refreshed (see test_expired_access_token_is_rejected); MCP statuses: {out['mcpStatuses']}")
    assert [t["grant_type"] for t in out["tokenRequests"]] == ["authorization_code", "refresh_token"], out["tokenRequests"]
    assert all(t["status"] == 200 for t in out["tokenRequests"]), out["tokenRequests"]
    assert out["refreshedTokenChanged"] is True
    assert out["addAfterRefresh"]["content"] == [{"type": "text", "text": "42"}]
    assert out["mcpStatuses"][0] == 401 and out["mcpStatuses"].count(401) == 2, out["mcpStatuses"]
    assert out["savedTokens"][-1]["has_refresh"] is True
    assert verified_claims(g, out["savedTokens"][-1]["access_token"])["sub"]


# ====================================================================== mcp-remote
def test_mcp_remote_local_oauth_flow_and_refresh(local_factory, tmp_path: Path):
    """mcp-remote: its own OAuth flow (DCR, its callback server, $BROWSER = local_browser.sh); a
    Python SDK stdio client calls tools through it. With 5 s tokens it refreshes (it refreshes
    whatever expires within 60 s); a second mcp-remote process later reuses the stored refresh
    token: no second login."""
    g = local_factory(access_token_ttl_secs=SHORT_TTL)
    cfg, log, errlog = tmp_path / "mcp-remote", tmp_path / "browser.jsonl", tmp_path / "mcp-remote.stderr.log"
    browser = g.browser_env("alice", log)
    title = f"remote-{uuid.uuid4().hex[:8]}"
    port = free_port()  # both runs: the registration's redirect URI must stay the same

    async def first(client: Client) -> dict:
        tools = {t.name for t in (await client.list_tools()).tools}
        added = tool_text(await client.call_tool("add", {"a": 40, "b": 2}))
        note = note_of(tool_text(await client.call_tool("create_note", {"title": title, "body": "x"})))
        await anyio.sleep(SHORT_TTL + 1)
        read = note_of(tool_text(await client.call_tool("read_note", {"id": note["id"]})))
        return {"tools": tools, "add": added, "note": note, "read": read}

    out = run_mcp_remote(g.mcp_url, cfg, errlog, browser, first, callback_port=port)
    assert out["tools"] == EXPECTED_TOOLS and out["add"] == "42", out
    assert out["note"]["title"] == title and out["read"]["title"] == title, out
    records = read_jsonl(log)
    assert len(records) == 1 and records[0].get("deliver_status") == 200, records
    assert records[0]["pages"] == ["login", "consent"], records
    q = query(records[0]["url"])
    assert q["resource"] == g.mcp_resource and "notes:write" in q["scope"].split(), q
    assert query(records[0]["final_url"]).get("iss") == g.issuer, records[0]["final_url"]
    saved = list(cfg.rglob("*tokens.json"))
    assert saved, f"mcp-remote stored no tokens in {cfg}"
    token_after_first = json.loads(saved[0].read_text())["access_token"]
    stderr1 = errlog.read_text(errors="replace")
    assert "Refreshed the access token before it expired" in stderr1, stderr1[-4000:]

    # A second process, later: the stored refresh token, no browser.
    time.sleep(1)

    async def second(client: Client) -> dict:
        listed = note_of(tool_text(await client.call_tool("list_notes", {})))["notes"]
        return {"listed": listed, "mul": tool_text(await client.call_tool("multiply", {"a": 6, "b": 7}))}

    out2 = run_mcp_remote(g.mcp_url, cfg, errlog, browser, second, callback_port=port)
    assert [n["title"] for n in out2["listed"]] == [title] and out2["mul"] == "42", out2
    assert len(read_jsonl(log)) == 1, "mcp-remote logged in again instead of refreshing"
    token_after_second = json.loads(saved[0].read_text())["access_token"]
    stderr2 = errlog.read_text(errors="replace")[len(stderr1):]
    assert "Proactive token refresh failed" not in stderr2, stderr2[-4000:]
    assert "Refreshed the access token before it expired" in stderr2, stderr2[-4000:]
    assert token_after_second != token_after_first
    assert verified_claims(g, token_after_second)["sub"] == verified_claims(g, token_after_first)["sub"]


# ====================================================================== Inspector CLI
def test_inspector_local_oauth_flow_and_refresh(local_factory, tmp_path: Path):
    """The Inspector CLI runs the OAuth flow headless ($BROWSER = local_browser.sh, its callback on
    127.0.0.1:6276) and keeps the tokens in its file store; a later run after the expiry gets a
    401 and refreshes with the stored refresh token, without a browser."""
    g = local_factory(access_token_ttl_secs=SHORT_TTL)
    home, log = tmp_path / "home", tmp_path / "browser.jsonl"
    call = ("--transport", "http", "--method", "tools/call", "--tool-name", "add", "--tool-arg", "a=1",
            "--tool-arg", "b=2")

    proc = run_inspector(g.mcp_url, inspector_env(home, g.browser_env("alice", log), persistent=True), tmp_path, *call)
    result = inspector_result(proc)
    assert result["content"] == [{"type": "text", "text": "3"}] and not result.get("isError"), result
    records = read_jsonl(log)
    assert len(records) == 1 and records[0].get("deliver_status") == 200, records
    assert records[0]["pages"] == ["login", "consent"], records
    assert records[0]["final_url"].startswith(INSPECTOR_CALLBACK + "?code="), records[0]["final_url"]
    assert query(records[0]["final_url"]).get("iss") == g.issuer
    assert query(records[0]["url"])["resource"] == g.mcp_resource
    first = inspector_tokens(home)
    assert first["expires_in"] == SHORT_TTL and first.get("refresh_token"), first

    # After the expiry, with no browser available: 401 -> refresh_token grant -> the call.
    time.sleep(SHORT_TTL + 1)
    no_browser = inspector_env(home, None, persistent=True)
    listing = inspector_result(run_inspector(g.mcp_url, no_browser, tmp_path, "--transport", "http",
                                             "--method", "tools/list"))
    assert {t["name"] for t in listing["tools"]} == EXPECTED_TOOLS, listing
    second = inspector_tokens(home)
    assert second["access_token"] != first["access_token"], (
        "the Inspector did not refresh the expired token: it refreshes after a 401, and mcpgate accepted the token "
        "after its expiry (see test_expired_access_token_is_rejected)")
    assert second["refresh_token"] != first["refresh_token"], "mcpgate did not rotate the refresh token"
    assert len(read_jsonl(log)) == 1, "the Inspector opened the browser again"
    assert verified_claims(g, second["access_token"])["sub"] == verified_claims(g, first["access_token"])["sub"]


def test_inspector_deny_reaches_the_client_as_access_denied(local_gate: LocalGate, tmp_path: Path):
    """The user presses "deny": the Inspector's callback receives error=access_denied (with state
    and iss) and the CLI fails with an authorization error instead of calling the tool."""
    g = local_gate
    log = tmp_path / "browser.jsonl"
    env = inspector_env(tmp_path / "home", g.browser_env("alice", log, LOCAL_BROWSER_DENY="1"))
    proc = run_inspector(g.mcp_url, env, tmp_path, "--transport", "http", "--method", "tools/call",
                         "--tool-name", "add", "--tool-arg", "a=1", "--tool-arg", "b=2", timeout=90)
    records = read_jsonl(log)
    assert records and records[0]["pages"] == ["login", "consent"], records
    final = query(records[0]["final_url"])
    assert records[0]["final_url"].startswith(INSPECTOR_CALLBACK + "?"), records[0]["final_url"]
    assert final.get("error") == "access_denied" and "code" not in final, final
    assert final.get("state") == query(records[0]["url"])["state"] and final.get("iss") == g.issuer, final
    assert proc.returncode != 0, f"the Inspector succeeded after a denied consent:\n{proc.stdout}\n{proc.stderr}"
    assert '"3"' not in proc.stdout, proc.stdout
    assert not g.audit('tool="add"'), "a tool ran although the user denied consent"
