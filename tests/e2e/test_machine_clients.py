"""Machine clients against the real mcpgate binary in local mode, configured in
`[[auth.local.clients]]`: the Python SDK 2.3's `ClientCredentialsOAuthProvider` (client_secret_basic
and client_secret_post) and `PrivateKeyJWTOAuthProvider` (an RS256 key made here, its JWKS inline in
the config) obtain `client_credentials` tokens and call tools; raw-HTTP refusals over the same binary.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.streamable_http import streamable_http_client

from idp_fixtures import basic_auth, http_json
from local_fixtures import LocalGate, verified_claims
from oauth_clients import MemoryStorage, Wire, tool_text

SECRET = "e2e-machine-" + secrets.token_urlsafe(32)
READER_SECRET = "e2e-reader-" + secrets.token_urlsafe(32)
MACHINE_TTL = 900


def _client_toml(**fields: Any) -> list[str]:
    """One `[[auth.local.clients]]` table; values in JSON spelling (TOML's for str, int, lists)."""
    return ["[[auth.local.clients]]", *(f"{k} = {json.dumps(v)}" for k, v in fields.items())]


@pytest.fixture
def rsa_key() -> tuple[str, str]:
    """(private key PEM, JWKS JSON text with its public half)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": "e2e-signer-1", "alg": "RS256", "use": "sig"})
    return pem, json.dumps({"keys": [public]})


@pytest.fixture
def machine_gate(local_factory, rsa_key) -> LocalGate:
    _, jwks = rsa_key
    return local_factory(local_extra=[
        *_client_toml(client_id="nightly-report", client_secret=SECRET, subject="svc:nightly",
                      access_token_ttl_secs=MACHINE_TTL),
        *_client_toml(client_id="reader", client_secret=READER_SECRET, scopes=["calc", "notes:read"]),
        *_client_toml(client_id="signer", jwks=jwks, subject="svc:signer"),
    ])


def _run_sdk(gate: LocalGate, provider: Any, wire: Wire, title: str) -> dict:
    """The SDK through `provider`: the tool list, add, a note created and listed."""

    async def flow() -> dict:
        out: dict[str, Any] = {}
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20), event_hooks=wire.hooks) as http:
            with anyio.fail_after(60):
                async with Client(streamable_http_client(gate.mcp_url, http_client=http), cache=None) as client:
                    out["tools"] = {t.name for t in (await client.list_tools()).tools}
                    out["add"] = tool_text(await client.call_tool("add", {"a": 20, "b": 22}))
                    created = json.loads(tool_text(await client.call_tool("create_note", {"title": title})))
                    out["created"] = created
                    out["listed"] = json.loads(tool_text(await client.call_tool("list_notes", {})))["notes"]
        return out

    return anyio.run(flow)


def _token_posts(wire: Wire, gate: LocalGate) -> list[dict]:
    return [dict(urllib.parse.parse_qsl(e["body"])) | {"_auth": e["auth"], "_status": e.get("status")}
            for e in wire.log if e["url"] == gate.token_endpoint and e["method"] == "POST"]


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_provider_calls_tools(machine_gate: LocalGate, method: str):
    g = machine_gate
    meta = g.metadata()
    assert "client_credentials" in meta["grant_types_supported"], meta
    storage, wire = MemoryStorage(), Wire()
    provider = ClientCredentialsOAuthProvider(server_url=g.mcp_url, storage=storage, client_id="nightly-report",
                                              client_secret=SECRET, token_endpoint_auth_method=method,
                                              issuer=g.issuer)
    out = _run_sdk(g, provider, wire, f"cc-{method}")
    assert "add" in out["tools"] and "create_note" in out["tools"], out["tools"]
    assert out["add"] == "42", out
    assert [n["id"] for n in out["listed"]].count(out["created"]["id"]) == 1, out

    posts = _token_posts(wire, g)
    assert len(posts) == 1 and posts[0]["grant_type"] == "client_credentials" and posts[0]["_status"] == 200, posts
    if method == "client_secret_basic":
        assert posts[0]["_auth"].startswith("Basic ") and "client_secret" not in posts[0], posts
    else:
        assert posts[0]["client_secret"] == SECRET and not posts[0]["_auth"], posts
    tokens = storage.tokens
    assert tokens is not None and tokens.refresh_token is None, tokens
    assert tokens.expires_in == MACHINE_TTL, tokens
    claims = verified_claims(g, tokens.access_token)
    assert claims["sub"] == "svc:nightly" and claims["client_id"] == "nightly-report", claims
    assert claims["aud"] == g.mcp_resource, claims


def test_private_key_jwt_provider_calls_tools(machine_gate: LocalGate, rsa_key):
    g = machine_gate
    pem, _ = rsa_key
    storage, wire = MemoryStorage(), Wire()
    assertion = SignedJWTParameters(issuer="signer", subject="signer", signing_key=pem,
                                    signing_algorithm="RS256", lifetime_seconds=60)
    provider = PrivateKeyJWTOAuthProvider(server_url=g.mcp_url, storage=storage, client_id="signer",
                                          assertion_provider=assertion.create_assertion_provider(),
                                          issuer=g.issuer)
    out = _run_sdk(g, provider, wire, "pkjwt")
    assert out["add"] == "42", out
    posts = _token_posts(wire, g)
    assert posts and posts[-1]["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert posts[-1]["_status"] == 200, posts
    claims = verified_claims(g, storage.tokens.access_token)
    assert claims["sub"] == "svc:signer" and claims["client_id"] == "signer", claims


def test_raw_http_refusals(machine_gate: LocalGate):
    g = machine_gate
    # A wrong secret: 401 invalid_client (with a Basic challenge).
    status, body = http_json("POST", g.token_endpoint, form={"grant_type": "client_credentials"},
                             headers=basic_auth("nightly-report", "not-" + SECRET))
    assert (status, body["error"]) == (401, "invalid_client"), (status, body)
    # Scope escalation: the reader may have calc and notes:read, not notes:write.
    status, body = http_json("POST", g.token_endpoint,
                             form={"grant_type": "client_credentials", "scope": "calc notes:write"},
                             headers=basic_auth("reader", READER_SECRET))
    assert (status, body["error"]) == (400, "invalid_scope"), (status, body)
    assert "notes:write" in body["error_description"], body
    # A resource this client may not have.
    status, body = http_json("POST", g.token_endpoint,
                             form={"grant_type": "client_credentials", "resource": "https://elsewhere.example/mcp"},
                             headers=basic_auth("reader", READER_SECRET))
    assert (status, body["error"]) == (400, "invalid_target"), (status, body)
    # A dynamically registered client: authenticated, but the grant is not for it.
    status, reg = http_json("POST", g.registration_endpoint, json_body={
        "redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code"]})
    assert status == 201, (status, reg)
    status, body = http_json("POST", g.token_endpoint, form={"grant_type": "client_credentials"},
                             headers=basic_auth(reg["client_id"], reg["client_secret"]))
    assert (status, body["error"]) == (400, "unauthorized_client"), (status, body)
    # Within its scopes the reader gets a token, and it is held to them on /mcp.
    status, body = http_json("POST", g.token_endpoint,
                             form={"grant_type": "client_credentials", "scope": "calc"},
                             headers=basic_auth("reader", READER_SECRET))
    assert status == 200 and body["scope"] == "calc" and "refresh_token" not in body, (status, body)
