"""Enterprise-managed authorization (ext-auth, SEP-990) against the real mcpgate binary in local mode.

A configured confidential client (`[[auth.local.clients]]`, grant
`urn:ietf:params:oauth:grant-type:jwt-bearer`) and a trusted enterprise IdP
(`[[auth.local.enterprise_idps]]`) whose JWKS this test serves on loopback. The real Python SDK 2.3's
`IdentityAssertionOAuthProvider` obtains a token with an ID-JAG minted by the test's enterprise key
(leg 1, the IdP's token exchange, is out of the SDK's scope: its `assertion_provider` callback stands in
for it), then lists tools and calls them on /mcp. Over real HTTP: an untrusted issuer and a replayed
assertion are refused.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import Client
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from idp_fixtures import http_json
from local_fixtures import LocalGate, verified_claims
from mcpgate_process import free_port
from oauth_clients import MemoryStorage, Wire, tool_text
from rs_fixtures import ALL_SCOPES

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
CLIENT_ID = "claude-enterprise"
TIMEOUT = 30


class EnterpriseIdp:
    """The enterprise IdP's signing side: an ES256 key, its JWKS served on loopback (fetches counted)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "acme-" + secrets.token_hex(4)
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [dict(jwk, kid=self.kid, use="sig", alg="ES256")]}
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.jwks_fetches = 0

    def id_jag(self, audience: str, resource: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "U019488227",
            "email": "ada@acme.example",
            "name": "Ada Lovelace",
            "aud": audience,
            "resource": resource,
            "client_id": CLIENT_ID,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 300,
            "scope": ALL_SCOPES,
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid, "typ": "oauth-id-jag+jwt"})

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != "/jwks":
                    self.send_error(404)
                    return
                idp.jwks_fetches += 1
                body = json.dumps(idp.jwks).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture
def enterprise(local_factory) -> Iterator[tuple[LocalGate, EnterpriseIdp, str]]:
    idp = EnterpriseIdp()
    secret = secrets.token_urlsafe(32)
    local_extra = [
        "[[auth.local.clients]]",
        f'client_id = "{CLIENT_ID}"',
        'client_name = "Claude (enterprise)"',
        f'client_secret = "{secret}"',
        f'grant_types = ["{JWT_BEARER}"]',
        "access_token_ttl_secs = 900",
        "[[auth.local.enterprise_idps]]",
        f'issuer = "{idp.issuer}"',
        f'jwks_uri = "{idp.issuer}/jwks"',
        f'allowed_clients = ["{CLIENT_ID}"]',
        "max_assertion_lifetime_secs = 300",
    ]
    with idp.serving():
        gate = local_factory(local_extra=local_extra)
        yield gate, idp, secret


def exchange(gate: LocalGate, secret: str, assertion: str) -> tuple[int, Any]:
    return http_json("POST", gate.token_endpoint, form={
        "grant_type": JWT_BEARER, "assertion": assertion, "resource": gate.mcp_resource,
        "client_id": CLIENT_ID, "client_secret": secret,
    })


def test_python_sdk_identity_assertion_provider_gets_a_token_and_calls_tools(enterprise) -> None:
    gate, idp, secret = enterprise
    meta = gate.metadata()
    assert JWT_BEARER in meta["grant_types_supported"], meta
    assert meta["authorization_grant_profiles_supported"] == [ID_JAG_PROFILE], meta

    asked: list[tuple[str, str]] = []

    async def assertion_provider(audience: str, resource: str) -> str:
        # Leg 1 (the IdP's RFC 8693 exchange) stands here: the enterprise key signs the ID-JAG
        # for exactly the audience and resource the SDK asks for.
        asked.append((audience, resource))
        return idp.id_jag(audience, resource)

    storage = MemoryStorage()
    provider = IdentityAssertionOAuthProvider(
        server_url=gate.mcp_url,
        storage=storage,
        client_id=CLIENT_ID,
        client_secret=secret,
        issuer=gate.issuer,
        assertion_provider=assertion_provider,
    )
    wire = Wire()

    async def flow() -> dict:
        out: dict[str, Any] = {}
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20), event_hooks=wire.hooks) as http:
            with anyio.fail_after(TIMEOUT):
                async with Client(streamable_http_client(gate.mcp_url, http_client=http), cache=None) as client:
                    out["tools"] = {t.name for t in (await client.list_tools()).tools}
                    out["add"] = tool_text(await client.call_tool("add", {"a": 2, "b": 3}))
                    title = f"e2e-enterprise-{uuid.uuid4().hex[:8]}"
                    created = json.loads(tool_text(await client.call_tool("create_note", {"title": title, "body": "ema"})))
                    out["read"] = json.loads(tool_text(await client.call_tool("read_note", {"id": created["id"]})))
                    out["title"] = title
        return out

    out = anyio.run(flow)
    assert {"add", "create_note", "read_note", "search"} <= out["tools"], out["tools"]
    assert out["add"] == "5"
    assert out["read"]["title"] == out["title"]
    assert asked == [(gate.issuer, gate.mcp_resource)], asked
    assert wire.token_grants(gate.token_endpoint) == [(JWT_BEARER, 200)], wire.token_grants(gate.token_endpoint)
    assert idp.jwks_fetches == 1, "the IdP's keys are fetched once and cached"

    token = storage.tokens
    assert token is not None and token.refresh_token is None, token
    assert token.expires_in == 900, token
    claims = verified_claims(gate, token.access_token)
    assert claims["client_id"] == CLIENT_ID, claims
    assert claims["sub"].startswith("ent_"), claims
    assert claims["email"] == "ada@acme.example" and claims["name"] == "Ada Lovelace", claims
    assert set(claims["scope"].split()) == set(ALL_SCOPES.split()), claims

    # The same enterprise user through a second exchange: the same subject.
    status, body = exchange(gate, secret, idp.id_jag(gate.issuer, gate.mcp_resource))
    assert status == 200, body
    assert verified_claims(gate, body["access_token"])["sub"] == claims["sub"]


def test_an_untrusted_issuer_and_a_replayed_assertion_are_refused(enterprise) -> None:
    gate, idp, secret = enterprise
    # The same key, but an issuer mcpgate does not trust.
    forged = idp.id_jag(gate.issuer, gate.mcp_resource, iss="https://evil.example")
    status, body = exchange(gate, secret, forged)
    assert status == 400 and body["error"] == "invalid_grant", (status, body)
    assert "not a trusted enterprise identity provider" in body["error_description"], body

    assertion = idp.id_jag(gate.issuer, gate.mcp_resource)
    status, body = exchange(gate, secret, assertion)
    assert status == 200, body
    status, body = exchange(gate, secret, assertion)
    assert status == 400 and body["error"] == "invalid_grant", (status, body)
    assert "already used" in body["error_description"], body
    # The token was never echoed into the log.
    assert assertion not in gate.log_text()
