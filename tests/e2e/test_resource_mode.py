"""mcpgate in `auth.mode = "resource"` behind a real OpenID provider (npm oidc-provider), driven by
real OAuth clients: the Python SDK (mcp 2.3.0), the TypeScript SDK (1.32.2), mcp-remote (0.15.1)
and the Inspector CLI (2.12.0). The user's browser is the scripted agent (idp_agent.py,
idp/browser). Then the negative cases with real IdP tokens (and tokens forged from them), key
rotation, the IdP going away, and opaque tokens through RFC 7662 introspection.

Each test gets a fresh IdP and a fresh mcpgate (rs_fixtures.py): the IdP's MCP_RESOURCE is
mcpgate's public_url + "/mcp". The expired-token case needs mcpgate's 60 s leeway to pass, so its
IdP and token are made when this module starts and the test that checks them runs last.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import json
import secrets
import socket
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import E2E_DIR, EXPECTED_TOOLS, free_port
from idp_fixtures import http_json, jwt_parts, start_idp
from oauth_clients import (INSPECTOR_CALLBACK, AgentBrowser, MemoryStorage, Wire, inspector_env, inspector_result,
                           read_jsonl, run_inspector, run_mcp_remote, run_ts_oauth_client, sdk_provider, tool_text)
from rs_fixtures import ACCEPT, ALL_SCOPES, REFETCH_SECS, TOOL_SCOPES, McpHttp, Rs, challenge, sse_json, start_rs_gate

TIMEOUT = 60
LEEWAY = 60  # mcpgate's exp/nbf leeway (src/auth/README.md)
CALC_TOOLS = {t for t, s in TOOL_SCOPES.items() if s == "calc"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_header(token: str, header: dict, signature: str | None = None) -> str:
    """The token's payload under another JWS header (and, by default, the original signature)."""
    h, p, s = token.split(".")
    return f"{b64url(json.dumps(header, separators=(',', ':')).encode())}.{p}.{s if signature is None else signature}"


def gate_audit(rs: Rs, needle: str) -> list[str]:
    return [line for line in rs.gate.log_tail(200_000).splitlines() if "audit:" in line and needle in line]


# ====================================================================== the expired token (runs last)
@pytest.fixture(scope="module", autouse=True)
def expiring(tmp_path_factory):
    """An IdP issuing 1 s access tokens and its mcpgate, started with the module so that the
    token is past exp + leeway by the time test_zz_expired_token runs."""
    tmp = tmp_path_factory.mktemp("expiring")
    port = free_port()
    with start_idp(tmp / "idp", mcp_resource=f"http://127.0.0.1:{port}/mcp", env={"ACCESS_TOKEN_TTL": "1"}) as idp:
        with start_rs_gate(tmp / "gate", port, idp.issuer) as gate:
            tok = idp.login_token(user="eve", scope="calc")
            _, claims = jwt_parts(tok["access_token"])
            assert claims["exp"] - claims["iat"] == 1, claims
            # Inside the leeway it is still accepted (first use; nothing cached before).
            raw = McpHttp(gate, tok["access_token"])
            first = raw.initialize()
            yield {"idp": idp, "gate": gate, "token": tok["access_token"], "exp": claims["exp"],
                   "first_status": first.status_code}


# ====================================================================== 1. Python SDK
def test_python_sdk_oauth_flow_and_refresh(rs: Rs):
    """Python SDK: 401 -> PRM -> AS metadata -> DCR -> code + PKCE (agent) -> token -> tools; then the
    access token expires (IdP TTL 4 s) and the SDK refreshes it before the next call."""
    rs.idp.set_ttl(access_token=4)
    storage, browser, wire = MemoryStorage(), AgentBrowser("alice"), Wire()
    provider = sdk_provider(rs.gate.mcp_url, browser, storage)
    title = f"py-oauth-{uuid.uuid4().hex[:8]}"

    async def flow() -> dict:
        out: dict[str, Any] = {}
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20),
                                      event_hooks={"request": [wire.on_request], "response": [wire.on_response]}) as http:
            with anyio.fail_after(TIMEOUT):
                async with Client(streamable_http_client(rs.gate.mcp_url, http_client=http), cache=None) as client:
                    out["protocol"] = client.protocol_version
                    out["tools"] = {t.name for t in (await client.list_tools()).tools}
                    out["add"] = tool_text(await client.call_tool("add", {"a": 2, "b": 3}))
                    created = json.loads(tool_text(await client.call_tool("create_note", {"title": title, "body": "py"})))
                    listed = json.loads(tool_text(await client.call_tool("list_notes", {})))
                    out["note_id"], out["listed"] = created["id"], listed["notes"]
                    out["token1"] = storage.tokens.access_token
                    out["grants_before"] = len(wire.token_grants(rs.idp.token_endpoint))
                    # Let the access token expire for real (the SDK computed its expiry from expires_in).
                    await anyio.sleep(max(0.0, provider.context.token_expiry_time - time.time()) + 0.3)
                    out["sub_after"] = tool_text(await client.call_tool("subtract", {"a": 10, "b": 4}))
                    out["token2"] = storage.tokens.access_token
                    out["last_mcp_auth"] = [e["auth"] for e in wire.log if e["url"] == rs.gate.mcp_url][-1]
        return out

    out = anyio.run(flow)

    # Discovery went through mcpgate's 401 challenge and PRM, then the IdP.
    first = wire.log[0]
    assert first["url"] == rs.gate.mcp_url and first["status"] == 401 and first["auth"] == "", first
    assert f'resource_metadata="{rs.gate.prm_url}"' in first["www"], first["www"]
    urls = [e["url"] for e in wire.log]
    assert rs.gate.prm_url in urls, urls
    assert rs.idp.registration_endpoint in urls, "the SDK did not register (DCR)"
    assert len(browser.urls) == 1, browser.urls
    auth_q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(browser.urls[0]).query))
    assert auth_q["resource"] == rs.gate.resource and auth_q["code_challenge_method"] == "S256", auth_q
    assert set(ALL_SCOPES.split()) <= set(auth_q["scope"].split()), auth_q["scope"]

    # Real results, under alice's identity and token.
    assert out["tools"] == EXPECTED_TOOLS, out["tools"]
    assert out["add"] == "5"
    assert [n["title"] for n in out["listed"]] == [title], out["listed"]
    hdr, claims = jwt_parts(out["token1"])
    assert hdr["typ"] == "at+jwt" and claims["sub"] == "alice" and claims["aud"] == rs.gate.resource
    assert claims["iss"] == rs.idp.issuer and set(ALL_SCOPES.split()) <= set(claims["scope"].split())

    # The refresh: a refresh_token grant at the IdP after the wait, a new access token, and the
    # call after the expiry went out with it and succeeded.
    grants = wire.token_grants(rs.idp.token_endpoint)
    assert grants[0] == ("authorization_code", 200), grants
    assert ("refresh_token", 200) in grants[out["grants_before"]:], grants
    assert out["sub_after"] == "6"
    assert out["token2"] != out["token1"], "the SDK did not refresh the expired token"
    assert jwt_parts(out["token2"])[1]["jti"] != claims["jti"]
    assert out["last_mcp_auth"] == f"Bearer {out['token2']}"
    assert "POST /token -> 200" in rs.idp.log_tail(), "IdP saw no token request"
    assert gate_audit(rs, 'subject=alice') and gate_audit(rs, 'tool="subtract" outcome=ok')


def test_python_sdk_step_up(rs: Rs):
    """Python SDK step-up: the user first consents to `calc` only; create_note -> 403
    insufficient_scope -> the SDK re-authorizes with the union of scopes, and the call succeeds."""
    storage, browser, wire = MemoryStorage(), AgentBrowser("bob", grant_only="calc offline_access"), Wire()
    provider = sdk_provider(rs.gate.mcp_url, browser, storage)
    title = f"step-up-{uuid.uuid4().hex[:8]}"

    async def flow() -> dict:
        out: dict[str, Any] = {}
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20),
                                      event_hooks={"request": [wire.on_request], "response": [wire.on_response]}) as http:
            with anyio.fail_after(TIMEOUT):
                async with Client(streamable_http_client(rs.gate.mcp_url, http_client=http), mode="legacy",
                                  cache=None) as client:
                    out["tools_calc_only"] = {t.name for t in (await client.list_tools()).tools}
                    out["token1"] = storage.tokens.access_token
                    out["add"] = tool_text(await client.call_tool("add", {"a": 1, "b": 1}))
                    created = json.loads(tool_text(await client.call_tool("create_note", {"title": title, "body": "b"})))
                    out["created"] = created
                    out["token2"] = storage.tokens.access_token
                    out["tools_after"] = {t.name for t in (await client.list_tools()).tools}
        return out

    out = anyio.run(flow)
    assert jwt_parts(out["token1"])[1]["scope"] == "calc", jwt_parts(out["token1"])[1]
    assert out["tools_calc_only"] == CALC_TOOLS, out["tools_calc_only"]
    assert out["add"] == "2"

    # mcpgate's 403 challenge, exactly once, for the tools/call create_note.
    denied = [e for e in wire.log if e.get("status") == 403]
    assert len(denied) == 1 and '"create_note"' in denied[0]["body"], denied
    ch = challenge(httpx2.Response(403, headers={"www-authenticate": denied[0]["www"]}))
    assert ch["error"] == "insufficient_scope" and ch["resource_metadata"] == rs.gate.prm_url, ch
    assert set(ch["scope"].split()) == {"calc", "notes:write"}, ch

    # SDK 2.3 took its first scope from mcpgate's 401 challenge (all four scopes); the user granted
    # only calc. On the 403 it re-authorized by itself, asking for (at least) the held and the
    # challenged scopes.
    assert len(browser.urls) == 2, browser.urls
    first = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(browser.urls[0]).query))
    assert set(ALL_SCOPES.split()) <= set(first["scope"].split()), first["scope"]
    second = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(browser.urls[1]).query))
    assert {"calc", "notes:write"} <= set(second["scope"].split()), second["scope"]
    assert second["resource"] == rs.gate.resource
    assert out["token2"] != out["token1"]
    assert "notes:write" in jwt_parts(out["token2"])[1]["scope"].split()
    assert out["created"]["title"] == title
    assert out["tools_after"] == EXPECTED_TOOLS  # full consent the second time
    retried = [e for e in wire.log if e["url"] == rs.gate.mcp_url and '"create_note"' in e["body"]]
    assert [e.get("status") for e in retried] == [403, 200], retried


# ====================================================================== 3. TypeScript SDK
def test_ts_sdk_oauth_flow(rs: Rs):
    """TS SDK: connect -> UnauthorizedError -> finishAuth(code) -> new transport -> tools; state
    checked by our provider; then a token mcpgate rejects (401) makes the SDK refresh and retry."""
    out = run_ts_oauth_client(rs.gate.mcp_url, agent=E2E_DIR / "idp_agent.py", user="carol")

    assert out["unauthorizedErrors"] == 1
    assert len(out["authorizationUrls"]) == 1 and out["stateChecks"] == [
        {"sent": out["stateChecks"][0]["sent"], "got": out["stateChecks"][0]["sent"], "ok": True}]
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(out["authorizationUrls"][0]).query))
    assert q["resource"] == rs.gate.resource and set(q["scope"].split()) == set(ALL_SCOPES.split()), q
    assert out["callbackIss"] == rs.idp.issuer
    assert out["sessionId"], "no Mcp-Session-Id"
    assert set(out["tools"]) == EXPECTED_TOOLS
    assert out["add"]["content"] == [{"type": "text", "text": "42"}], out["add"]
    assert json.loads(out["createNote"]["content"][0]["text"])["title"] == out["noteTitle"]
    assert [n["title"] for n in json.loads(out["listNotes"]["content"][0]["text"])["notes"]] == [out["noteTitle"]]
    claims = jwt_parts(out["savedTokens"][0]["access_token"])[1]
    assert claims["sub"] == "carol" and claims["aud"] == rs.gate.resource

    # The refresh after mcpgate's 401 invalid_token (never 403: the TS SDK refreshes only on 401).
    assert [t["grant_type"] for t in out["tokenRequests"]] == ["authorization_code", "refresh_token"], out["tokenRequests"]
    assert all(t["status"] == 200 and t["resource"] == rs.gate.resource for t in out["tokenRequests"])
    assert out["refreshedTokenChanged"] is True
    assert out["addAfterRefresh"]["content"] == [{"type": "text", "text": "42"}]
    assert out["mcpStatuses"][0] == 401 and out["mcpStatuses"].count(401) == 2, out["mcpStatuses"]
    assert gate_audit(rs, 'subject=carol') and gate_audit(rs, 'tool="multiply" outcome=ok')


# ====================================================================== 4. mcp-remote
def test_mcp_remote_oauth_flow(rs: Rs, tmp_path: Path):
    """mcp-remote runs its own OAuth flow (DCR, its callback server, $BROWSER = the agent); a Python
    SDK stdio client then calls tools through it."""
    cfg = tmp_path / "mcp-remote"
    agent_log = tmp_path / "agent.jsonl"
    browser = rs.idp.browser_env("dora", agent_log)

    async def flow(client: Client) -> dict:
        tools = {t.name for t in (await client.list_tools()).tools}
        added = tool_text(await client.call_tool("add", {"a": 40, "b": 2}))
        note = json.loads(tool_text(await client.call_tool("create_note", {"title": "remote", "body": "x"})))
        return {"tools": tools, "add": added, "note": note}

    out = run_mcp_remote(rs.gate.mcp_url, cfg, tmp_path / "mcp-remote.stderr.log", browser, flow)
    assert out["tools"] == EXPECTED_TOOLS and out["add"] == "42" and out["note"]["title"] == "remote"
    records = read_jsonl(agent_log)
    assert len(records) == 1 and records[0]["deliver_status"] == 200, records
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(records[0]["url"]).query))
    assert q["resource"] == rs.gate.resource and "notes:write" in q["scope"].split(), q
    saved = list(cfg.rglob("*_tokens.json"))
    assert saved, f"mcp-remote stored no tokens in {cfg}"
    assert jwt_parts(json.loads(saved[0].read_text())["access_token"])[1]["sub"] == "dora"
    assert gate_audit(rs, 'subject=dora') and gate_audit(rs, 'tool="add" outcome=ok')


# ====================================================================== 5. Inspector CLI
def test_inspector_cli_oauth_flow(rs: Rs, tmp_path: Path):
    """The Inspector CLI (Node 22) runs the OAuth flow headless: it opens the authorization URL with
    $BROWSER (the agent), its callback server on 127.0.0.1:6276 receives the code."""
    agent_log = tmp_path / "agent.jsonl"
    env = inspector_env(tmp_path / "home", rs.idp.browser_env("frank", agent_log))
    proc = run_inspector(rs.gate.mcp_url, env, tmp_path, "--transport", "http", "--method", "tools/call",
                         "--tool-name", "add", "--tool-arg", "a=1", "--tool-arg", "b=2")
    result = inspector_result(proc)
    assert result["content"] == [{"type": "text", "text": "3"}] and not result.get("isError"), result
    records = read_jsonl(agent_log)
    assert len(records) == 1 and records[0]["deliver_status"] == 200, records
    assert records[0]["final_url"].startswith(INSPECTOR_CALLBACK + "?code=")
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(records[0]["url"]).query))
    assert q["resource"] == rs.gate.resource, q
    assert gate_audit(rs, 'subject=frank') and gate_audit(rs, 'tool="add" outcome=ok')


# ====================================================================== 6. negative cases, raw HTTP
def test_protected_resource_metadata_and_missing_token(rs: Rs):
    http = httpx2.Client(timeout=10)
    prm = http.get(rs.gate.prm_url)
    assert prm.status_code == 200, prm.text
    doc = prm.json()
    assert doc["resource"] == rs.gate.resource
    assert doc["authorization_servers"] == [rs.idp.issuer]
    assert set(doc["scopes_supported"]) == set(ALL_SCOPES.split())
    assert doc["bearer_methods_supported"] == ["header"]

    raw = McpHttp(rs.gate, None, http)
    for resp in (raw.initialize(),
                 http.get(rs.gate.base_url + "/sse", headers={"Accept": "text/event-stream"}),
                 http.post(rs.gate.base_url + "/messages?sessionId=x", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})):
        assert resp.status_code == 401, (resp.request.url, resp.status_code, resp.text)
        ch = challenge(resp)
        assert ch["resource_metadata"] == rs.gate.prm_url and ch["scope"] == ALL_SCOPES, ch
        assert "error" not in ch, f"a request without a token must get no error code (RFC 6750 §3.1): {ch}"


def test_garbage_alg_none_and_hs256_tokens_are_rejected(rs: Rs):
    tok = rs.idp.login_token(scope="calc")["access_token"]
    header, claims = jwt_parts(tok)
    jwks = rs.idp.jwks()["keys"]
    rsa = next(k for k in jwks if k["kid"] == header["kid"])

    # HS256 "signed" with the RSA public key (PEM), the classic algorithm-confusion forgery.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    def b64int(v: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)), "big")

    pem = RSAPublicNumbers(b64int(rsa["e"]), b64int(rsa["n"])).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = {"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}
    unsigned = with_header(tok, hs_header).rsplit(".", 1)[0]
    hs256 = unsigned + "." + b64url(hmac.new(pem, unsigned.encode(), hashlib.sha256).digest())

    cases = {
        "garbage": "not-a-token",
        "garbage-jws": "eyJhbGciOiJSUzI1NiJ9.e30.AAAA",
        "alg-none": with_header(tok, {"alg": "none", "typ": "at+jwt", "kid": header["kid"]}, signature=""),
        "alg-none-no-kid": with_header(tok, {"alg": "none", "typ": "at+jwt"}, signature=""),
        "hs256-with-rsa-public-key": hs256,
        "tampered-payload": tok.split(".")[0] + "." + b64url(json.dumps({**claims, "scope": ALL_SCOPES}).encode())
                            + "." + tok.split(".")[2],
    }
    for name, bad in cases.items():
        raw = McpHttp(rs.gate, bad)
        resp = raw.initialize()
        assert resp.status_code == 401, (name, resp.status_code, resp.text)
        ch = challenge(resp)
        assert ch.get("error") == "invalid_token" and ch["resource_metadata"] == rs.gate.prm_url, (name, ch)
    # The real token still works, so the rejections above are about the forgeries.
    good = McpHttp(rs.gate, tok)
    assert good.initialize().status_code == 200
    assert good.tool_result("add", {"a": 1, "b": 2})["content"][0]["text"] == "3"


def test_wrong_audience_is_rejected(rs_factory):
    other = "http://127.0.0.1:9/other-mcp"
    rs = rs_factory({"EXTRA_JWT_RESOURCES": other})
    wrong = rs.idp.login_token(scope="calc", resource=other)["access_token"]
    assert jwt_parts(wrong)[1]["aud"] == other and jwt_parts(wrong)[1]["iss"] == rs.idp.issuer
    resp = McpHttp(rs.gate, wrong).initialize()
    assert resp.status_code == 401 and challenge(resp)["error"] == "invalid_token", (resp.status_code, resp.headers)
    right = rs.idp.login_token(scope="calc")["access_token"]
    assert McpHttp(rs.gate, right).initialize().status_code == 200


def test_wrong_issuer_is_rejected(rs: Rs, idp_factory):
    """A token from a second IdP instance for the same resource (same aud, another iss and key)."""
    rogue = idp_factory(mcp_resource=rs.gate.resource)
    rogue.reset_jwks_hits()
    tok = rogue.login_token(scope=ALL_SCOPES)["access_token"]
    claims = jwt_parts(tok)[1]
    assert claims["aud"] == rs.gate.resource and claims["iss"] == rogue.issuer != rs.idp.issuer
    time.sleep(REFETCH_SECS + 0.5)  # an unknown-kid refetch would be allowed now: it must not help
    resp = McpHttp(rs.gate, tok).initialize()
    assert resp.status_code == 401 and challenge(resp)["error"] == "invalid_token", (resp.status_code, resp.headers)
    assert rogue.jwks_hits() == 0, "mcpgate fetched keys from an issuer it was not configured with"


def test_unknown_kid_burst_costs_one_jwks_fetch(rs: Rs):
    tok = rs.idp.login_token(scope="calc")["access_token"]
    header, _ = jwt_parts(tok)
    assert McpHttp(rs.gate, tok).initialize().status_code == 200  # keys loaded
    time.sleep(REFETCH_SECS + 0.5)  # past jwks_refetch_interval_secs since any earlier fetch

    def burst() -> list[httpx2.Response]:
        forged = [with_header(tok, {**header, "kid": f"unknown-{secrets.token_hex(6)}"}) for _ in range(20)]
        # A new connection for each request: see test_early_401_connection_reuse for why.
        with httpx2.Client(timeout=15) as http, concurrent.futures.ThreadPoolExecutor(20) as pool:
            return list(pool.map(lambda t: McpHttp(rs.gate, t, http).initialize(), forged))

    before = rs.idp.jwks_hits()
    responses = burst()
    assert [r.status_code for r in responses] == [401] * 20, [(r.status_code, r.text[:100]) for r in responses]
    assert all(challenge(r)["error"] == "invalid_token" for r in responses)
    after = rs.idp.jwks_hits()
    assert after - before == 1, f"20 concurrent unknown kids caused {after - before} JWKS fetches (want exactly 1)"

    # A second burst inside the interval: no fetch at all. The real token keeps working.
    responses = burst()
    assert [r.status_code for r in responses] == [401] * 20
    assert rs.idp.jwks_hits() == after, "a second burst within the interval fetched JWKS again"
    assert McpHttp(rs.gate, tok).initialize().status_code == 200


def test_insufficient_scope_and_filtered_tool_list(rs: Rs):
    tok = rs.idp.login_token(user="gina", scope="calc")["access_token"]
    raw = McpHttp(rs.gate, tok)
    assert raw.initialize().status_code == 200
    listing = sse_json(raw.request("tools/list"))["result"]["tools"]
    assert {t["name"] for t in listing} == CALC_TOOLS
    assert raw.tool_result("multiply", {"a": 3, "b": 4})["content"][0]["text"] == "12"
    for tool, args, need in (("create_note", {"title": "t", "body": "b"}, "notes:write"),
                             ("list_notes", {}, "notes:read"),
                             ("search", {"query": "token"}, "docs:read")):
        resp = raw.call(tool, args)
        assert resp.status_code == 403, (tool, resp.status_code, resp.text)
        ch = challenge(resp)
        assert ch["error"] == "insufficient_scope" and ch["resource_metadata"] == rs.gate.prm_url, ch
        assert set(ch["scope"].split()) == {"calc", need}, (tool, ch)


def test_session_of_another_user_is_404(rs: Rs):
    alice = McpHttp(rs.gate, rs.idp.login_token(user="alice", scope=ALL_SCOPES)["access_token"])
    bob_token = rs.idp.login_token(user="bob", scope=ALL_SCOPES)["access_token"]
    assert alice.initialize().status_code == 200
    sid = alice.session_id
    alice.tool_result("create_note", {"title": "alice-secret", "body": "mine"})

    bob = McpHttp(rs.gate, bob_token)
    for method, params in (("tools/list", None), ("tools/call", {"name": "list_notes", "arguments": {}})):
        resp = bob.request(method, params, session_id=sid)
        assert resp.status_code == 404, (method, resp.status_code, resp.text)
        assert "alice-secret" not in resp.text
    resp = bob.http.delete(rs.gate.mcp_url, headers=bob.headers(session_id=sid))
    assert resp.status_code == 404, ("DELETE of another user's session", resp.status_code, resp.text)
    # Alice's session is intact, and bob sees only his own (empty) notes in his own session.
    notes = json.loads(alice.tool_result("list_notes", {})["content"][0]["text"])["notes"]
    assert [n["title"] for n in notes] == ["alice-secret"]
    assert bob.initialize().status_code == 200 and bob.session_id != sid
    assert json.loads(bob.tool_result("list_notes", {})["content"][0]["text"])["notes"] == []


def test_token_in_query_string_is_ignored(rs: Rs):
    tok = rs.idp.login_token(scope="calc")["access_token"]
    raw = McpHttp(rs.gate, None)
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "q", "version": "1"}}}
    resp = raw.post(body, url=f"{rs.gate.mcp_url}?access_token={urllib.parse.quote(tok)}")
    assert resp.status_code == 401, (resp.status_code, resp.text)
    ch = challenge(resp)
    assert ch["resource_metadata"] == rs.gate.prm_url and "error" not in ch, ch  # treated as no token at all
    form = raw.http.post(rs.gate.mcp_url, data={"access_token": tok}, headers={"Accept": "application/json, text/event-stream"})
    assert form.status_code == 401, ("form-encoded access_token", form.status_code, form.text)


def test_early_401_connection_reuse(rs: Rs):
    """Headers first, then the body 50 ms later (as httpx2 and undici may send them): mcpgate
    answers 401 before reading the body. The connection must then either stay usable for the next
    request or the 401 must say `Connection: close`."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{rs.gate.port}\r\nAccept: {ACCEPT}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: Bearer not-a-token\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", rs.gate.port), timeout=5) as s:
        s.sendall(head)
        time.sleep(0.05)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 401 "), first[:200]
        if b"\r\nconnection: close\r\n" in first.lower():
            return  # announced: a client will not reuse the connection
        s.sendall(body)
        time.sleep(0.05)
        try:
            s.sendall(head + body)
            second = s.recv(65536)
        except OSError as e:
            second = repr(e).encode()
    assert second.startswith(b"HTTP/1.1 401 "), (
        f"the connection was closed after the 401 without `Connection: close`: {second[:200]!r}")


# ====================================================================== 7. key rotation, IdP down
def test_key_rotation_without_restart(rs: Rs):
    old = rs.idp.login_token(user="hank", scope="calc")["access_token"]
    old_kid = jwt_parts(old)[0]["kid"]
    assert McpHttp(rs.gate, old).initialize().status_code == 200
    rot = rs.idp.rotate()
    new = rs.idp.login_token(user="hank", scope="calc")["access_token"]
    assert jwt_parts(new)[0]["kid"] == rot["kid"] != old_kid
    time.sleep(REFETCH_SECS + 0.5)
    hits = rs.idp.jwks_hits()
    raw = McpHttp(rs.gate, new)
    assert raw.initialize().status_code == 200, "a token signed with the rotated-in key was refused"
    assert raw.tool_result("add", {"a": 5, "b": 5})["content"][0]["text"] == "10"
    assert rs.idp.jwks_hits() == hits + 1
    # The old key is still published: its tokens still verify, with no further fetch.
    assert McpHttp(rs.gate, old).initialize().status_code == 200
    assert rs.idp.jwks_hits() == hits + 1


def test_idp_down_cached_keys_keep_working(rs: Rs):
    from idp_fixtures import _kill_group

    used = rs.idp.login_token(user="ivy", scope="calc")["access_token"]
    fresh = rs.idp.login_token(user="ivy", scope="calc notes:read")["access_token"]  # never shown to mcpgate yet
    assert jwt_parts(used)[0]["kid"] == jwt_parts(fresh)[0]["kid"]
    assert McpHttp(rs.gate, used).initialize().status_code == 200
    _kill_group(rs.idp.proc)
    assert rs.idp.proc.poll() is not None
    with pytest.raises(OSError):
        http_json("GET", rs.idp.jwks_uri, timeout=2)

    raw = McpHttp(rs.gate, used)
    assert raw.initialize().status_code == 200
    assert raw.tool_result("add", {"a": 2, "b": 2})["content"][0]["text"] == "4"
    raw = McpHttp(rs.gate, fresh)
    assert raw.initialize().status_code == 200, "a new token from a cached key was refused with the IdP down"
    assert json.loads(raw.tool_result("list_notes", {})["content"][0]["text"]) == {"notes": []}

    # An unknown kid now makes mcpgate try the (dead) JWKS endpoint: still a clean 401, and the
    # keys it holds survive the failed fetch.
    time.sleep(REFETCH_SECS + 0.5)
    resp = McpHttp(rs.gate, with_header(used, {**jwt_parts(used)[0], "kid": "gone-" + secrets.token_hex(4)})).initialize()
    assert resp.status_code == 401 and challenge(resp)["error"] == "invalid_token", (resp.status_code, resp.text)
    assert McpHttp(rs.gate, fresh).initialize().status_code == 200


# ====================================================================== 8. opaque tokens, introspection
def test_opaque_tokens_via_introspection(rs_factory):
    rs = rs_factory(opaque=True)
    user = rs.idp.login_token(user="judy", scope="calc notes:write notes:read")["access_token"]
    assert "." not in user, "expected an opaque token"
    raw = McpHttp(rs.gate, user)
    assert raw.initialize().status_code == 200
    assert raw.tool_result("add", {"a": 7, "b": 8})["content"][0]["text"] == "15"
    note = json.loads(raw.tool_result("create_note", {"title": "opaque", "body": "b"})["content"][0]["text"])
    assert note["title"] == "opaque"
    assert gate_audit(rs, "subject=judy")
    resp = raw.call("search", {"query": "x"})
    assert resp.status_code == 403 and challenge(resp)["error"] == "insufficient_scope"

    # Another user token, revoked at the IdP (by its own client) before its first use: the
    # introspection answer is `active: false` -> 401. (mcpgate caches positive answers for up to
    # 5 min, so a token revoked after use would keep working until then.)
    revoked = rs.idp.login_token(user="kim", scope="calc")
    status, _ = http_json("POST", rs.idp.revocation_endpoint,
                          form={"token": revoked["access_token"], "client_id": revoked["client_id"]})
    assert status == 200
    assert rs.idp.introspect(revoked["access_token"])[1] == {"active": False}
    resp = McpHttp(rs.gate, revoked["access_token"]).initialize()
    assert resp.status_code == 401 and challenge(resp)["error"] == "invalid_token", (resp.status_code, resp.text)
    # The reason code (the funnel's and error_uri's), then the verifier's own words.
    assert gate_audit(rs, "reason=\"token_invalid\" detail=token is not active")

    # An unknown opaque string is inactive too.
    resp = McpHttp(rs.gate, secrets.token_urlsafe(32)).initialize()
    assert resp.status_code == 401 and challenge(resp)["error"] == "invalid_token"
    assert "POST /token/introspection -> 200" in rs.idp.log_tail(100_000)


# ====================================================================== the expired token
def test_zz_expired_token_after_leeway(expiring):
    """A real 1 s token: accepted inside mcpgate's 60 s leeway, 401 invalid_token after it."""
    assert expiring["first_status"] == 200, "a token 0-1 s past exp must be inside the 60 s leeway"
    wait = expiring["exp"] + LEEWAY + 1.5 - time.time()
    if wait > 0:
        time.sleep(wait)
    resp = McpHttp(expiring["gate"], expiring["token"]).initialize()
    assert resp.status_code == 401, (resp.status_code, resp.text)
    ch = challenge(resp)
    assert ch["error"] == "invalid_token" and ch["resource_metadata"] == expiring["gate"].prm_url, ch
