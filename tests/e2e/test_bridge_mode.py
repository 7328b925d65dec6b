"""mcpgate in `auth.mode = "bridge"` with `registrar = "passthrough"` in front of a real OpenID
provider (npm oidc-provider, with its own DCR): the IdP stays the authorization server and issues
the tokens; mcpgate serves RFC 8414 metadata on its own origin, relays /register and /token to the
IdP and redirects /authorize there. With no `[auth.bridge] audience`, mcpgate forwards `resource`
(its own /mcp) on /authorize and /token: the IdP here has no default resource (`DEFAULT_RESOURCE=`,
oidc-provider as shipped), so without it the IdP would issue an opaque token that /mcp refuses
(issue 16 item 4). /mcp checks the IdP's JWTs as in resource mode.

Each test gets a fresh IdP and a fresh mcpgate (`rs_factory(bridge=True)`).
"""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

import idp_agent
from conftest import EXPECTED_TOOLS, free_port
from idp_fixtures import http_json, jwt_parts
from oauth_clients import TIMEOUT, AgentBrowser, MemoryStorage, Wire, query, sdk_provider, tool_text
from rs_fixtures import Rs


def bridge(rs_factory) -> tuple[Rs, str]:
    """A bridge-mode mcpgate and its IdP; also mcpgate's origin (its public_url, the advertised issuer)."""
    rs = rs_factory(bridge=True)
    return rs, rs.gate.base_url


def test_discovery_names_mcpgate_as_the_issuer_and_the_idp_keys(rs_factory):
    rs, origin = bridge(rs_factory)
    status, prm = http_json("GET", rs.gate.prm_url)
    assert status == 200, (status, prm)
    assert prm["resource"] == rs.gate.resource, prm
    assert prm["authorization_servers"] == [origin], prm

    for suffix in ("", "/mcp"):
        status, meta = http_json("GET", f"{origin}/.well-known/oauth-authorization-server{suffix}")
        assert status == 200, (suffix, status, meta)
        assert meta["issuer"] == origin, meta
        for name, path in (("authorization_endpoint", "/authorize"), ("token_endpoint", "/token"),
                           ("registration_endpoint", "/register")):
            assert meta[name] == origin + path, (name, meta)
        assert meta["jwks_uri"] == rs.idp.jwks_uri == rs.idp.metadata()["jwks_uri"], meta
        assert meta["code_challenge_methods_supported"] == ["S256"], meta


def test_python_sdk_completes_the_bridge_flow(rs_factory):
    """401 -> PRM -> mcpgate's metadata -> DCR relayed to the IdP -> /authorize redirected to the IdP
    (the agent logs in there) -> /token relayed -> tools with the IdP's JWT on /mcp."""
    rs, origin = bridge(rs_factory)
    storage, browser, wire = MemoryStorage(), AgentBrowser("alice"), Wire()
    provider = sdk_provider(rs.gate.mcp_url, browser, storage)

    async def flow() -> dict[str, Any]:
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20), event_hooks=wire.hooks) as http:
            with anyio.fail_after(TIMEOUT):
                async with Client(streamable_http_client(rs.gate.mcp_url, http_client=http), cache=None) as client:
                    return {"tools": {t.name for t in (await client.list_tools()).tools},
                            "add": tool_text(await client.call_tool("add", {"a": 2, "b": 3}))}

    out = anyio.run(flow)
    assert out["tools"] == EXPECTED_TOOLS, out["tools"]
    assert out["add"] == "5"

    # The SDK spoke to mcpgate only: 401 with the PRM, mcpgate's metadata, /register and /token.
    first = wire.log[0]
    assert first["url"] == rs.gate.mcp_url and first["status"] == 401, first
    status_of = {e["url"]: e.get("status") for e in wire.log}
    assert status_of.get(f"{origin}/.well-known/oauth-authorization-server") == 200, wire.urls()
    assert status_of.get(f"{origin}/register") == 201, wire.urls()
    assert wire.token_grants(f"{origin}/token") == [("authorization_code", 200)], wire.urls()
    assert not [u for u in wire.urls() if u.startswith(rs.idp.issuer)], "the SDK went to the IdP directly"

    # The browser started at mcpgate's /authorize; the IdP knows the client mcpgate registered there.
    assert len(browser.urls) == 1 and browser.urls[0].startswith(f"{origin}/authorize?"), browser.urls
    client_id = storage.client_info.client_id
    assert query(browser.urls[0])["client_id"] == client_id
    counts = rs.idp.counts()
    assert counts["authorize"].get(client_id) == 1, counts
    assert rs.idp.grants(client_id) == {"authorization_code": 1}, counts

    # The access token is the IdP's JWT for mcpgate's /mcp.
    _, claims = jwt_parts(storage.tokens.access_token)
    assert claims["iss"] == rs.idp.issuer and claims["aud"] == rs.gate.resource, claims
    assert claims["client_id"] == client_id and claims["sub"] == "alice", claims


def test_raw_authorize_requires_pkce_and_forwards_resource(rs_factory):
    rs, origin = bridge(rs_factory)
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    status, client = http_json("POST", f"{origin}/register", json_body={
        "redirect_uris": [redirect], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code"], "response_types": ["code"]})
    assert status == 201, (status, client)
    # The IdP's authorization query (resource = mcpgate's /mcp), sent to mcpgate's /authorize.
    idp_url, _, _ = rs.idp.authorization_url(client["client_id"], redirect)
    params = query(idp_url)
    assert params["resource"] == rs.gate.resource

    with httpx2.Client(timeout=10, follow_redirects=False) as http:
        no_pkce = {k: v for k, v in params.items() if not k.startswith("code_challenge")}
        r = http.get(f"{origin}/authorize", params=no_pkce)
        assert r.status_code == 400 and "location" not in r.headers, (r.status_code, dict(r.headers), r.text[:300])
        # A resource mcpgate does not serve is refused here (a page), never sent on to the IdP.
        r = http.get(f"{origin}/authorize", params={**params, "resource": "https://elsewhere.example/mcp"})
        assert r.status_code == 400 and "location" not in r.headers, (r.status_code, r.text[:300])
        assert "resource is not served here" in r.text, r.text[:500]

        # mcpgate's own consent page comes first; the IdP only after "Allow".
        location = approve_at_mcpgate(http, origin, params)
    assert location.startswith(rs.idp.authorization_endpoint + "?"), location
    forwarded = query(location)
    assert forwarded["resource"] == rs.gate.resource, forwarded
    # The IdP only ever redirects to mcpgate, at this client's own callback, with a state of
    # mcpgate's; the rest passes through unchanged.
    assert forwarded["redirect_uri"].startswith(f"{origin}/callback/"), forwarded
    assert forwarded["state"] != params["state"], forwarded
    untouched = {k: v for k, v in params.items() if k not in ("redirect_uri", "state")}
    assert {k: forwarded[k] for k in untouched} == untouched, (forwarded, params)
    assert urllib.parse.urlsplit(location).netloc == urllib.parse.urlsplit(rs.idp.issuer).netloc


def approve_at_mcpgate(http: httpx2.Client, origin: str, params: dict[str, str]) -> str:
    """mcpgate's consent page for `params`, approved in `http`'s browser (its cookie jar): the IdP URL."""
    r = http.get(f"{origin}/authorize", params=params)
    assert r.status_code == 200 and "location" not in r.headers, (r.status_code, r.text[:300])
    assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]
    fields = dict(re.findall(r'name="(request|csrf)" value="([^"]*)"', r.text))
    assert set(fields) == {"request", "csrf"}, r.text
    r = http.post(f"{origin}/consent", data={**fields, "decision": "approve"})
    assert r.status_code == 303, (r.status_code, r.text[:300])
    return r.headers["location"]


def with_params(url: str, **changes: str) -> str:
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    q.update(changes)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))


def test_swapping_client_id_at_the_idp_gets_the_attacker_no_code_and_no_token(rs_factory):
    """The review's finding 1 against the real oidc-provider. The victim uses client V and has
    consented to it at the IdP; the attacker registers A, approves its own request at mcpgate and
    sends the victim the IdP URL with `client_id` swapped to V (and, in a second try, V's callback
    too, so the IdP answers silently). The attacker gets no code and no token, and the IdP issues
    nothing to V but the victim's own grant."""
    rs, origin = bridge(rs_factory)
    victim_cb = f"http://127.0.0.1:{free_port()}/victim-cb"
    attacker_cb = f"http://127.0.0.1:{free_port()}/attacker-cb"

    def reg(cb: str, name: str) -> tuple[int, dict]:
        return http_json("POST", f"{origin}/register", json_body={
            "redirect_uris": [cb], "token_endpoint_auth_method": "none", "client_name": name,
            "grant_types": ["authorization_code"], "response_types": ["code"]})

    status, victim_client = reg(victim_cb, "Victim App")
    assert status == 201, victim_client
    status, attacker_client = reg(attacker_cb, "Attacker")
    assert status == 201, attacker_client
    V, A = victim_client["client_id"], attacker_client["client_id"]

    # The victim's own flow for V: mcpgate's consent, the IdP's login and consent; the code works.
    victim_jar = http.cookiejar.CookieJar()
    scope = "openid calc"
    url_v, _, verifier_v = rs.idp.authorization_url(V, victim_cb, scope=scope)
    url_v = url_v.replace(rs.idp.authorization_endpoint, f"{origin}/authorize")
    final = idp_agent.authorize(url_v, "alice", redirect_uri=victim_cb, cookie_jar=victim_jar)
    code = query(final)["code"]
    status, tokens = http_json("POST", f"{origin}/token", form={
        "grant_type": "authorization_code", "client_id": V, "code": code, "redirect_uri": victim_cb,
        "code_verifier": verifier_v})
    assert status == 200 and "access_token" in tokens, (status, tokens)

    # The attacker's flow for A, approved in its own browser; and one for V, to learn V's callback.
    url_a, _, verifier_a = rs.idp.authorization_url(A, attacker_cb, scope=scope)
    with httpx2.Client(timeout=10, follow_redirects=False) as attacker:
        idp_url = approve_at_mcpgate(attacker, origin, query(url_a))
        url_v2, _, _ = rs.idp.authorization_url(V, victim_cb, scope=scope)
        v_callback = query(approve_at_mcpgate(attacker, origin, query(url_v2)))["redirect_uri"]
    assert query(idp_url)["redirect_uri"] != v_callback

    # 1. client_id swapped: the IdP refuses A's callback for V (no redirect at all).
    steps: list[str] = []
    with pytest.raises(idp_agent.AgentError) as refused:
        idp_agent.authorize(with_params(idp_url, client_id=V), "alice", redirect_uri=attacker_cb,
                            cookie_jar=victim_jar, steps=steps)
    assert "HTTP 400" in str(refused.value) and not any(attacker_cb in s for s in steps), steps

    # 2. The callback swapped too: the IdP answers silently with a code for V, at V's callback;
    # mcpgate refuses A's state there with a page, so nothing reaches the attacker.
    steps = []
    with pytest.raises(idp_agent.AgentError) as refused:
        idp_agent.authorize(with_params(idp_url, client_id=V, redirect_uri=v_callback), "alice",
                            redirect_uri=attacker_cb, cookie_jar=victim_jar, steps=steps)
    assert "HTTP 403" in str(refused.value), refused.value
    assert not any(attacker_cb in s for s in steps), steps
    assert not any("submit form" in s for s in steps), f"the IdP asked the victim: {steps}"
    at_callback = [s for s in steps if s.startswith(f"GET {v_callback}?")]
    assert len(at_callback) == 1 and "code=" in at_callback[0], steps
    stolen = query(at_callback[0].split(" ")[1])["code"]

    # Even with that code in hand, mcpgate relays it for nobody.
    for client_id in (V, A):
        status, body = http_json("POST", f"{origin}/token", form={
            "grant_type": "authorization_code", "client_id": client_id, "code": stolen,
            "redirect_uri": attacker_cb, "code_verifier": verifier_a})
        assert status == 400 and body["error"] == "invalid_grant", (client_id, status, body)

    # 3. A fresh IdP URL for A, unchanged, in the victim's browser (the victim even consents at
    # the IdP): the answer comes back to a browser that did not approve the request at mcpgate.
    with httpx2.Client(timeout=10, follow_redirects=False) as attacker:
        idp_url = approve_at_mcpgate(attacker, origin, query(url_a))
    steps = []
    with pytest.raises(idp_agent.AgentError) as refused:
        idp_agent.authorize(idp_url, "alice", redirect_uri=attacker_cb, cookie_jar=victim_jar, steps=steps)
    assert "HTTP 403" in str(refused.value) and "another browser" in str(refused.value), refused.value
    assert not any(attacker_cb in s for s in steps), steps

    grants = rs.idp.counts()["grants"]
    assert grants.get(V) == {"authorization_code": 1} and A not in grants, grants


def test_denying_at_mcpgate_sends_access_denied_and_never_reaches_the_idp(rs_factory):
    rs, origin = bridge(rs_factory)
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    status, client = http_json("POST", f"{origin}/register", json_body={
        "redirect_uris": [redirect], "token_endpoint_auth_method": "none"})
    assert status == 201, client
    url, state, _ = rs.idp.authorization_url(client["client_id"], redirect)
    url = url.replace(rs.idp.authorization_endpoint, f"{origin}/authorize")
    final = idp_agent.authorize(url, "alice", redirect_uri=redirect, deny=True)
    q = query(final)
    assert q["error"] == "access_denied" and q["state"] == state and q["iss"] == origin, final
    assert not rs.idp.counts()["authorize"].get(client["client_id"]), rs.idp.counts()
