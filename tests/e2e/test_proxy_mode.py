"""mcpgate in `auth.mode = "proxy"`: mcpgate is the OAuth authorization server toward MCP clients,
and users sign in at a real OpenID provider upstream (npm oidc-provider, idp/server.mjs).

The flow: the client registers at mcpgate (DCR) and sends the browser to mcpgate's /authorize,
which shows mcpgate's consent page (no redirect before consent); "Allow" sends the browser to the
IdP with mcpgate's own state, nonce and PKCE (redirect_uri = public_url + "/callback"); the user
logs in and consents at the IdP; the IdP returns to mcpgate's /callback, mcpgate redeems the code
(client_secret_basic), verifies the ID token and sends the browser on to the client's redirect_uri
with mcpgate's own code. The client then gets mcpgate's tokens at mcpgate's /token.

Real clients run the whole flow: the Python SDK (mcp 2.3.0), the TypeScript SDK (1.32.2),
mcp-remote (0.15.1) and the Inspector CLI (2.12.0). The user's browser is the generic agent
(idp_agent.py, idp/browser as `$BROWSER`), which presses "Allow" on mcpgate's page and fills in
the IdP's login and consent pages. mcpgate's access tokens last 5 s and the IdP's 2 s, so each
client's refresh at mcpgate also makes mcpgate refresh the (expired) upstream grant: the IdP counts
the `refresh_token` grants of client `mcpgate-proxy` (GET /__admin/counts).

Each test gets a fresh IdP and a fresh mcpgate (proxy_fixtures.py).
"""

from __future__ import annotations

import concurrent.futures
import http.cookiejar
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import anyio
import pytest
from mcp import Client

import idp_agent
import local_browser
from conftest import E2E_DIR, EXPECTED_TOOLS
from idp_fixtures import PROXY_CLIENT, http_json, start_idp
from local_fixtures import assert_as_discovery, verified_claims
from oauth_clients import (INSPECTOR_CALLBACK, AgentBrowser, MemoryStorage, Wire, inspector_env, inspector_result,
                           inspector_tokens, query, read_jsonl, run_inspector, run_mcp_remote, run_ts_oauth_client,
                           sdk_provider, sdk_refresh_flow, tool_text)
from proxy_fixtures import ProxyGate
from rs_fixtures import ALL_SCOPES, McpHttp

SHORT_TTL = 5  # mcpgate's access_token_ttl_secs in the refresh tests
UPSTREAM_TTL = {"ACCESS_TOKEN_TTL": "2"}  # the IdP's access tokens: expired by the time a client refreshes
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: the browser stops there
PROXY_ID = PROXY_CLIENT[0]
UPSTREAM_SCOPES = {"openid", "profile", "email", "offline_access"}  # the oidc preset's default


# ====================================================================== helpers
class Browser:
    """A cookie jar and an opener that does not follow redirects, for the raw steps."""

    def __init__(self) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), idp_agent._NoRedirect())

    def get(self, url: str) -> tuple[int, str | None, str]:
        """(status, Location, body) of one GET."""
        try:
            with self.opener.open(url, timeout=15) as resp:
                return resp.status, resp.headers.get("Location"), resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Location"), e.read().decode("utf-8", "replace")


def upstream_request(g: ProxyGate, jar: http.cookiejar.CookieJar, url: str) -> tuple[str, local_browser.Trace]:
    """mcpgate's consent page, answered "Allow" by local_browser.py (which checks the page's contract:
    hidden `request` and `csrf`, decision=approve|deny): returns the IdP authorization URL that
    POST /consent redirected to, without fetching it."""
    trace = local_browser.Trace()
    location = local_browser.authorize(url, redirect_uri=g.idp.authorization_endpoint, cookie_jar=jar, trace=trace)
    return location, trace


def callback_url(g: ProxyGate, browser: Browser, client_id: str, user: str = "alice") -> tuple[str, str]:
    """The whole front channel up to the IdP's redirect to mcpgate's /callback, which is returned
    unfetched (with the state the client sent)."""
    url, state, _ = g.authorization_url(client_id, REDIRECT_URI)
    cb = g.front_channel(url, user, redirect_uri=g.callback_url, cookie_jar=browser.jar)
    assert query(cb).get("code") and query(cb).get("state"), cb
    return cb, state


def assert_proxy_walk(g: ProxyGate, steps: list[str]) -> None:
    """The agent's steps of one sign-in: mcpgate's consent page (200, not a redirect), POST /consent
    -> 303 to the IdP, the IdP's pages, the IdP's redirect to mcpgate's /callback -> 303 onward."""
    flat = "\n".join(steps)
    assert re.match(rf"GET {re.escape(g.authorization_endpoint)}\?\S+ -> 200\n", flat), flat
    assert f"POST {g.base_url}/consent -> 303" in flat, flat
    assert re.search(rf"GET {re.escape(g.idp.authorization_endpoint)}\?\S+ -> 303", flat), flat
    assert re.search(rf"GET {re.escape(g.callback_url)}\?\S*code=\S+ -> 303\nstop at redirect_uri ", flat), flat
    assert f"{g.base_url}/login" not in flat, f"a password login at mcpgate in proxy mode:\n{flat}"


def assert_upstream_refreshed(g: ProxyGate) -> dict[str, int]:
    """The IdP saw one code exchange and at least one refresh of mcpgate's upstream grant."""
    grants = g.idp.grants(PROXY_ID)
    assert grants.get("authorization_code") == 1, grants
    assert grants.get("refresh_token", 0) >= 1, (
        f"mcpgate did not refresh the expired upstream grant when the client refreshed: IdP grants {grants}")
    return grants


def assert_registered(g: ProxyGate, token: str) -> str:
    """The client of mcpgate's `token` registered itself at mcpgate (DCR, not a metadata-document URL):
    `mcpgate clients list` names it. Returns its client_id."""
    cid = verified_claims(g, token)["client_id"]
    listed = g.cli("clients", "list")
    assert listed.returncode == 0, (listed.stdout, listed.stderr)
    assert not cid.startswith("http") and re.search(rf"^{re.escape(cid)}\t", listed.stdout, re.M), (cid, listed.stdout)
    return cid


def idp_logged(g: ProxyGate, pattern: str, wait: float = 3.0) -> int:
    """How many lines of the IdP's request log match `pattern`, waiting up to `wait` s for one (the
    IdP logs a request after its answer went out, so the line may trail the answer)."""
    deadline = time.monotonic() + wait
    while True:
        n = len(re.findall(pattern, g.idp.log_tail(500_000)))
        if n or time.monotonic() >= deadline:
            return n
        time.sleep(0.05)


def upstream_authorizations(g: ProxyGate) -> int:
    """How many authorization requests the IdP got for mcpgate's upstream client."""
    return g.idp.counts()["authorize"].get(PROXY_ID, 0)


# ====================================================================== 1. discovery
def test_discovery_points_at_mcpgate_and_no_admin_is_made(proxy_factory):
    g = proxy_factory(separate_stdout=True)
    assert_as_discovery(g)  # the PRM names public_url; RFC 8414 metadata and JWKS from mcpgate
    assert g.metadata()["issuer"] != g.idp.issuer
    assert idp_logged(g, r"GET /\.well-known/(openid-configuration|oauth-authorization-server) -> 200"), (
        "mcpgate did not read the IdP's discovery at start")
    # Local mode prints the one-time password before it serves, so it would be there by now.
    assert "one-time password" not in g.stdout_text() + g.log_text(), g.stdout_text()
    listed = g.cli("users", "list")
    assert listed.returncode == 0 and "admin" not in listed.stdout, (listed.stdout, listed.stderr)
    assert upstream_authorizations(g) == 0


# ====================================================================== 2. raw HTTP walk
def test_raw_walk_consent_then_idp_then_token(proxy_factory):
    """DCR at mcpgate; /authorize -> 200 consent page and nothing sent to the IdP yet; Allow -> 303 to
    the IdP (redirect_uri = /callback, nonce, S256, no resource); the IdP's pages; /callback -> the
    client's redirect_uri; code -> mcpgate's JWT (iss, aud, sub stable per IdP user, email) -> /mcp;
    refresh (and the upstream refresh); revocation (and the upstream revocation)."""
    g = proxy_factory(UPSTREAM_TTL)
    client = g.register(redirect_uris=[REDIRECT_URI], client_name="e2e-proxy-raw")
    cid = client["client_id"]
    url, state, verifier = g.authorization_url(cid, REDIRECT_URI)

    b = Browser()
    status, location, page = b.get(url)
    assert status == 200 and location is None, (status, location, page[:500])
    assert "sign in with <strong>oidc</strong> next" in page, page
    assert 'type="password"' not in page and 'action="/login"' not in page, page
    status, body = http_json("POST", f"{g.base_url}/login", form={"username": "alice", "password": "x"})
    assert status == 404, ("POST /login in proxy mode", status, body)
    assert upstream_authorizations(g) == 0, "mcpgate sent the browser to the IdP before the user consented"

    idp_url, trace = upstream_request(g, b.jar, url)
    assert trace.pages == ["consent"], trace.steps
    assert upstream_authorizations(g) == 0
    q = query(idp_url)
    assert idp_url.startswith(g.idp.authorization_endpoint + "?"), idp_url
    assert q["client_id"] == PROXY_ID and q["response_type"] == "code", q
    assert q["redirect_uri"] == g.callback_url, q
    assert set(q["scope"].split()) == UPSTREAM_SCOPES, q
    assert q["code_challenge_method"] == "S256" and re.fullmatch(r"[A-Za-z0-9_-]{43}", q["code_challenge"]), q
    assert len(q.get("nonce", "")) >= 16 and len(q["state"]) >= 16 and q["state"] != state, q
    assert "resource" not in q and q["code_challenge"] not in url, q

    steps: list[str] = []
    final = idp_agent.authorize(idp_url, "alice", redirect_uri=REDIRECT_URI, cookie_jar=b.jar, steps=steps)
    assert upstream_authorizations(g) == 1
    cb = [s for s in steps if s.startswith(f"GET {g.callback_url}?")]
    assert len(cb) == 1 and cb[0].endswith(" -> 303"), steps
    assert query(cb[0].split()[1])["state"] == q["state"], cb
    res = query(final)
    assert res.get("state") == state and res.get("iss") == g.issuer and res.get("code"), final
    assert g.idp.grants(PROXY_ID) == {"authorization_code": 1}, "mcpgate did not redeem the IdP's code once"

    status, tok = g.token({"grant_type": "authorization_code", "code": res["code"], "redirect_uri": REDIRECT_URI,
                           "code_verifier": verifier, "client_id": cid})
    assert status == 200, (status, tok)
    assert set(tok["scope"].split()) == set(ALL_SCOPES.split()) and tok["refresh_token"], tok
    claims = verified_claims(g, tok["access_token"])  # iss = mcpgate, aud = mcpgate's /mcp
    assert claims["sub"].startswith("idp_") and "alice" not in claims["sub"], claims
    assert claims.get("email") == "alice@example.test" and claims.get("name") == "alice", claims
    assert claims["client_id"] == cid, claims
    raw = McpHttp(g, tok["access_token"])
    assert raw.initialize().status_code == 200
    assert raw.tool_result("add", {"a": 2, "b": 3})["content"][0]["text"] == "5"
    assert g.audit('tool="add" outcome=ok'), "no audit line for the call"
    assert PROXY_CLIENT[1] not in g.log_text() and cb[0].split("code=")[1][:20] not in g.log_text()

    # The same IdP user in another browser (a new IdP login) is the same mcpgate user; bob is not.
    again = verified_claims(g, g.login_token(user="alice", scope="calc", redirect_uri=REDIRECT_URI)["access_token"])
    bob = verified_claims(g, g.login_token(user="bob", scope="calc", redirect_uri=REDIRECT_URI)["access_token"])
    assert again["sub"] == claims["sub"] and bob["sub"] != claims["sub"], (claims["sub"], again["sub"], bob["sub"])
    assert bob.get("email") == "bob@example.test", bob

    # Refresh: the IdP's 2 s access token has expired, so mcpgate refreshes upstream first.
    time.sleep(2.5)
    status, tok2 = g.refresh(tok["refresh_token"], cid)
    assert status == 200, (status, tok2)
    assert verified_claims(g, tok2["access_token"])["sub"] == claims["sub"]
    assert g.idp.grants(PROXY_ID).get("refresh_token") == 1, g.idp.grants(PROXY_ID)
    # A retry of the same refresh (a lost answer) gets the same answer, without a second upstream refresh.
    status, retry = g.refresh(tok["refresh_token"], cid)
    assert status == 200 and retry["refresh_token"] == tok2["refresh_token"], (status, retry)
    assert g.idp.grants(PROXY_ID).get("refresh_token") == 1, g.idp.grants(PROXY_ID)

    # Revocation at mcpgate ends the upstream grant too (RFC 7009 at the IdP).
    assert idp_logged(g, r"POST /token/revocation -> 200", wait=0) == 0
    status, body = g.revoke(tok2["refresh_token"], cid, hint="refresh_token")
    assert status == 200, (status, body)
    assert idp_logged(g, r"POST /token/revocation -> 200") == 1, f"no revocation at the IdP:\n{g.idp.log_tail(3000)}"
    status, dead = g.refresh(tok2["refresh_token"], cid)
    assert status == 400 and dead.get("error") == "invalid_grant", (status, dead)


# ====================================================================== 3. real clients
def test_python_sdk_proxy_flow_and_refresh(proxy_factory):
    """Python SDK: 401 -> PRM -> mcpgate's metadata -> DCR -> consent -> IdP login -> code + PKCE ->
    tools; the 5 s token expires and the SDK refreshes at mcpgate, which refreshes upstream."""
    g = proxy_factory(UPSTREAM_TTL, access_token_ttl_secs=SHORT_TTL)
    storage, wire, steps = MemoryStorage(), Wire(), []
    browser = AgentBrowser("alice", authorize=g.browser("alice", steps=steps))
    provider = sdk_provider(g.mcp_url, browser, storage)
    title = f"py-proxy-{uuid.uuid4().hex[:8]}"
    out = sdk_refresh_flow(g, provider, storage, wire, title)

    urls = wire.urls()
    assert g.prm_url in urls and any(u.startswith(g.as_metadata_url) for u in urls), urls
    assert [e.get("status") for e in wire.log if e["url"] == g.registration_endpoint] == [201], "DCR at mcpgate"
    assert not any(u.startswith(g.idp.issuer) for u in urls), "the SDK talked to the IdP itself"
    assert len(browser.urls) == 1 and browser.urls[0].startswith(g.authorization_endpoint + "?"), browser.urls
    assert_proxy_walk(g, steps)
    assert query(browser.finals[0]).get("iss") == g.issuer, browser.finals[0]

    assert out["tools"] == EXPECTED_TOOLS and out["add"] == "5" and out["read"]["title"] == title, out
    claims = verified_claims(g, out["token1"])
    assert claims["exp"] - claims["iat"] == SHORT_TTL and claims.get("email") == "alice@example.test", claims
    grants = wire.token_grants(g.token_endpoint)
    assert grants[0] == ("authorization_code", 200), grants
    assert ("refresh_token", 200) in grants[out["grants_before"]:], f"no refresh after the expiry: {grants}"
    assert out["token2"] != out["token1"] and verified_claims(g, out["token2"])["sub"] == claims["sub"]
    assert out["last_mcp_auth"] == f"Bearer {out['token2']}"
    assert assert_registered(g, out["token2"]) == storage.client_info.client_id
    assert out["sub_after"] == "6" and [n["title"] for n in out["listed"]] == [title], out
    assert_upstream_refreshed(g)


def test_ts_sdk_proxy_flow_and_refresh(proxy_factory, tmp_path: Path):
    """TS SDK: UnauthorizedError -> (consent + IdP login) -> finishAuth -> tools; the token expires,
    mcpgate answers 401, the SDK refreshes (and mcpgate refreshes upstream) and retries."""
    g = proxy_factory(UPSTREAM_TTL, access_token_ttl_secs=SHORT_TTL)
    log = tmp_path / "agent.jsonl"
    out = run_ts_oauth_client(g.mcp_url, agent=E2E_DIR / "idp_agent.py", user="alice",
                              expire_wait_ms=(SHORT_TTL + 1) * 1000, env={"IDP_AGENT_LOG": str(log)})
    assert out["unauthorizedErrors"] == 1 and out["stateChecks"][0]["ok"] is True, out["stateChecks"]
    assert out["authorizationUrls"][0].startswith(g.authorization_endpoint + "?"), out["authorizationUrls"]
    assert out["callbackIss"] == g.issuer
    records = read_jsonl(log)
    assert len(records) == 1, records
    assert_proxy_walk(g, records[0]["steps"])
    assert set(out["tools"]) == EXPECTED_TOOLS and out["add"]["content"] == [{"type": "text", "text": "42"}], out
    assert out["expiresIn"] == SHORT_TTL, out
    assert out["mcpStatuses"][0] == 401 and out["mcpStatuses"].count(401) == 2, out["mcpStatuses"]
    assert [(t["grant_type"], t["status"]) for t in out["tokenRequests"]] == [
        ("authorization_code", 200), ("refresh_token", 200)], out["tokenRequests"]
    assert out["refreshedTokenChanged"] is True and out["addAfterRefresh"]["content"] == [{"type": "text", "text": "42"}]
    first, last = (verified_claims(g, t["access_token"]) for t in (out["savedTokens"][0], out["savedTokens"][-1]))
    assert first["sub"] == last["sub"] and last.get("email") == "alice@example.test", (first, last)
    assert assert_registered(g, out["savedTokens"][-1]["access_token"]) == out["clientId"]
    assert_upstream_refreshed(g)


def test_mcp_remote_proxy_flow_and_refresh(proxy_factory, tmp_path: Path):
    """mcp-remote: DCR, its callback server, $BROWSER = idp/browser (consent at mcpgate, login at the
    IdP); with 5 s tokens it refreshes before each request once they are near expiry."""
    g = proxy_factory(UPSTREAM_TTL, access_token_ttl_secs=SHORT_TTL)
    cfg, log, errlog = tmp_path / "mcp-remote", tmp_path / "agent.jsonl", tmp_path / "mcp-remote.stderr.log"

    async def flow(client: Client) -> dict:
        tools = {t.name for t in (await client.list_tools()).tools}
        added = tool_text(await client.call_tool("add", {"a": 40, "b": 2}))
        await anyio.sleep(SHORT_TTL + 1)
        mul = tool_text(await client.call_tool("multiply", {"a": 6, "b": 7}))
        return {"tools": tools, "add": added, "mul": mul}

    out = run_mcp_remote(g.mcp_url, cfg, errlog, g.browser_env("dana", log), flow)
    assert out == {"tools": EXPECTED_TOOLS, "add": "42", "mul": "42"}, out
    records = read_jsonl(log)
    assert len(records) == 1 and records[0].get("deliver_status") == 200, records
    assert_proxy_walk(g, records[0]["steps"])
    assert query(records[0]["final_url"]).get("iss") == g.issuer, records[0]["final_url"]
    stderr = errlog.read_text(errors="replace")
    assert "Refreshed the access token before it expired" in stderr, stderr[-4000:]
    saved = list(cfg.rglob("*tokens.json"))
    assert saved, f"mcp-remote stored no tokens in {cfg}"
    token = json.loads(saved[0].read_text())["access_token"]
    assert verified_claims(g, token).get("email") == "dana@example.test"
    assert_registered(g, token)
    assert_upstream_refreshed(g)
    assert g.audit('tool="multiply" outcome=ok')


def test_inspector_proxy_flow_and_refresh(proxy_factory, tmp_path: Path):
    """The Inspector CLI: the flow headless ($BROWSER = idp/browser, its callback on 127.0.0.1:6276),
    tokens in its file store; a later run after the expiry gets a 401 and refreshes without a
    browser, and mcpgate refreshes the expired upstream grant."""
    g = proxy_factory(UPSTREAM_TTL, access_token_ttl_secs=SHORT_TTL)
    home, log = tmp_path / "home", tmp_path / "agent.jsonl"
    call = ("--transport", "http", "--method", "tools/call", "--tool-name", "add", "--tool-arg", "a=1",
            "--tool-arg", "b=2")
    result = inspector_result(run_inspector(g.mcp_url, inspector_env(home, g.browser_env("erin", log), persistent=True),
                                            tmp_path, *call))
    assert result["content"] == [{"type": "text", "text": "3"}] and not result.get("isError"), result
    records = read_jsonl(log)
    assert len(records) == 1 and records[0].get("deliver_status") == 200, records
    assert_proxy_walk(g, records[0]["steps"])
    assert records[0]["final_url"].startswith(INSPECTOR_CALLBACK + "?code="), records[0]["final_url"]
    first = inspector_tokens(home)
    assert first["expires_in"] == SHORT_TTL and first.get("refresh_token"), first
    assert g.idp.grants(PROXY_ID) == {"authorization_code": 1}

    time.sleep(SHORT_TTL + 1)
    listing = inspector_result(run_inspector(g.mcp_url, inspector_env(home, None, persistent=True), tmp_path,
                                             "--transport", "http", "--method", "tools/list"))
    assert {t["name"] for t in listing["tools"]} == EXPECTED_TOOLS, listing
    second = inspector_tokens(home)
    assert second["access_token"] != first["access_token"], "the Inspector did not refresh the expired token"
    assert len(read_jsonl(log)) == 1, "the Inspector opened the browser again"
    assert verified_claims(g, second["access_token"])["sub"] == verified_claims(g, first["access_token"])["sub"]
    assert_registered(g, second["access_token"])
    assert_upstream_refreshed(g)


# ====================================================================== 4. negative cases
def test_deny_at_mcpgate_consent_never_reaches_the_idp(proxy_gate: ProxyGate):
    g = proxy_gate
    cid = g.register(redirect_uris=[REDIRECT_URI])["client_id"]
    res = g.authorize(cid, REDIRECT_URI, deny=g.base_url + "/")
    assert res.params.get("error") == "access_denied" and "code" not in res.params, res.redirect_url
    assert res.params.get("state") == res.state and res.params.get("iss") == g.issuer, res.redirect_url
    assert res.steps[-2].startswith(f"POST {g.base_url}/consent -> 303"), res.steps
    assert upstream_authorizations(g) == 0, "the IdP got an authorization request after the user denied"


def test_deny_at_the_idp_consent_gives_access_denied(proxy_gate: ProxyGate):
    g = proxy_gate
    cid = g.register(redirect_uris=[REDIRECT_URI])["client_id"]
    res = g.authorize(cid, REDIRECT_URI, deny=g.idp.issuer + "/")
    assert res.params.get("error") == "access_denied" and "code" not in res.params, res.redirect_url
    assert res.params.get("state") == res.state and res.params.get("iss") == g.issuer, res.redirect_url
    cb = [s for s in res.steps if s.startswith(f"GET {g.callback_url}?")]
    assert len(cb) == 1 and "error=access_denied" in cb[0] and cb[0].endswith(" -> 303"), res.steps
    assert g.idp.grants(PROXY_ID) == {}, "mcpgate redeemed something after the IdP said access_denied"


def test_callback_replay_and_another_browser_are_refused(proxy_gate: ProxyGate):
    g = proxy_gate
    cid = g.register(redirect_uris=[REDIRECT_URI])["client_id"]
    b = Browser()
    cb, state = callback_url(g, b, cid)
    status, location, _ = b.get(cb)
    assert status == 303 and location and query(location).get("code") and query(location)["state"] == state, location
    status, location, page = b.get(cb)  # the same browser replays the IdP's redirect
    assert (status, location) == (400, None), (status, location, page[:500])
    assert "expired or was already used" in page, page
    assert g.idp.grants(PROXY_ID) == {"authorization_code": 1}, "the replay reached the IdP"

    # The IdP's redirect delivered to another browser (no mcpgate_auth cookie of this sign-in).
    cb2, _ = callback_url(g, Browser(), cid)
    status, location, page = Browser().get(cb2)
    assert (status, location) == (403, None), (status, location, page[:500])
    assert "another browser" in page, page
    assert g.idp.grants(PROXY_ID) == {"authorization_code": 1}


def test_idp_down_at_the_callback_and_on_refresh(proxy_factory, tmp_path: Path):
    """The IdP dies between the user's consent there and the callback: 502 page, no code. A refresh
    at mcpgate while the IdP is down still works (its tokens do not depend on the IdP); once the IdP
    is back without the grant (a fresh process), the refresh ends the grant: invalid_grant."""
    g = proxy_factory(UPSTREAM_TTL)
    cid = g.register(redirect_uris=[REDIRECT_URI])["client_id"]
    tok = g.login_token(user="alice", scope="calc", redirect_uri=REDIRECT_URI)
    b = Browser()
    cb, _ = callback_url(g, b, cid)
    g.idp.stop()

    status, location, page = b.get(cb)
    assert (status, location) == (502, None), (status, location, page[:500])
    assert "could not be reached" in page, page
    assert "upstream sign-in failed" in g.log_text(), g.log_tail(3000)

    time.sleep(2.5)  # the upstream access token has expired: mcpgate tries to refresh it
    status, tok2 = g.refresh(tok["refresh_token"], tok["client_id"])
    assert status == 200 and tok2["access_token"], (status, tok2)
    assert "upstream refresh failed; the grant stays" in g.log_text(), g.log_tail(3000)
    assert McpHttp(g, tok2["access_token"]).initialize().status_code == 200

    with start_idp(tmp_path / "idp-again", port=g.idp.port, env={**UPSTREAM_TTL,
                                                                 "PROXY_REDIRECT_URIS": g.callback_url}):
        status, dead = g.refresh(tok2["refresh_token"], tok["client_id"])
    assert status == 400 and dead.get("error") == "invalid_grant", (status, dead)
    assert "ended this sign-in" in dead.get("error_description", ""), dead


def test_concurrent_refreshes_keep_the_grant(proxy_factory):
    """Clients refresh concurrently (parallel requests that all saw a 401); in local mode every
    request of the race gets 200 and the same tokens (the reuse grace). The same must hold when
    mcpgate has to refresh upstream first: one upstream refresh, no ended grant."""
    g = proxy_factory(UPSTREAM_TTL)
    tok = g.login_token(user="alice", scope="calc", redirect_uri=REDIRECT_URI)
    time.sleep(2.5)  # the upstream access token has expired: the next refresh goes upstream
    start = threading.Barrier(3)

    def refresh(_: int) -> tuple[int, dict]:
        start.wait(timeout=10)
        return g.refresh(tok["refresh_token"], tok["client_id"])

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(refresh, range(3)))
    assert [s for s, _ in results] == [200, 200, 200], (
        f"{[(s, b.get('error_description')) for s, b in results]}; IdP grants {g.idp.grants(PROXY_ID)}")
    assert len({b["refresh_token"] for _, b in results}) == 1, results
    time.sleep(2.5)
    status, body = g.refresh(results[0][1]["refresh_token"], tok["client_id"])
    assert status == 200, (status, body)
