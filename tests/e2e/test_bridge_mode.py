"""mcpgate in `auth.mode = "bridge"` with `registrar = "passthrough"` in front of a real OpenID
provider (npm oidc-provider, with its own DCR): the IdP stays the authorization server and issues
the tokens; mcpgate serves RFC 8414 metadata on its own origin, relays /register and /token to the
IdP and redirects /authorize there (without `resource`, so the IdP binds its default resource,
which rs_fixtures.py sets to mcpgate's /mcp). /mcp checks the IdP's JWTs as in resource mode.

Each test gets a fresh IdP and a fresh mcpgate (`rs_factory(bridge=True)`).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

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


def test_raw_authorize_requires_pkce_and_drops_resource(rs_factory):
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

        r = http.get(f"{origin}/authorize", params=params)
        assert r.status_code == 302, (r.status_code, r.text[:300])
        location = r.headers["location"]
    assert location.startswith(rs.idp.authorization_endpoint + "?"), location
    forwarded = query(location)
    assert "resource" not in forwarded, forwarded
    # The IdP only ever redirects to mcpgate's callback, with a state of mcpgate's; the rest
    # passes through unchanged.
    assert forwarded["redirect_uri"] == f"{origin}/callback", forwarded
    assert forwarded["state"] != params["state"], forwarded
    untouched = {k: v for k, v in params.items() if k not in ("resource", "redirect_uri", "state")}
    assert {k: forwarded[k] for k in untouched} == untouched, (forwarded, params)
    assert urllib.parse.urlsplit(location).netloc == urllib.parse.urlsplit(rs.idp.issuer).netloc
