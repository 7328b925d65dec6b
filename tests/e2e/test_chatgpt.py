"""ChatGPT against the real mcpgate binary in local mode, replayed over raw HTTP: ChatGPT's client
id is the URL of its Client ID Metadata Document, which says `token_endpoint_auth_method`
`private_key_jwt` (RS256) with a `jwks_uri`; it authenticates at /token with a signed assertion
(RFC 7523 §2.2) and posts the code twice. Here a Python http server on loopback serves a document
of that shape and its JWKS (an RS256 key made in the test, `cryptography`; assertions signed with
PyJWT), and mcpgate runs with `[auth.local.cimd] allow_loopback_http = true`. The bearer token it
issues is then used by the Python SDK (mcp 2.3) to call a tool. Refusals over real HTTP: a wrong
key, a replayed jti, a foreign aud.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import anyio
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from idp_fixtures import http_json
from local_fixtures import LocalGate
from oauth_clients import tool_text
from rs_fixtures import McpHttp, challenge

CHATGPT_REDIRECT = "https://chatgpt.com/connector_platform_oauth_redirect"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KID = "cimd-20260428030119"


class ChatGptHost:
    """ChatGPT's metadata document and JWKS on 127.0.0.1 (counting JWKS fetches)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": KID, "alg": "RS256", "use": "sig"})
        self.jwks = {"keys": [public]}
        self.jwks_fetches = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/oauth/cimd.json":
                    body = host.document()
                elif self.path == "/oauth/jwks.json":
                    host.jwks_fetches += 1
                    body = host.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def client_id(self) -> str:
        return f"{self.base}/oauth/cimd.json"

    def document(self) -> dict:
        # The shape ChatGPT publishes (client id = the document's URL).
        return {
            "client_id": self.client_id,
            "client_name": "ChatGPT",
            "client_uri": "https://chatgpt.com",
            "redirect_uris": [CHATGPT_REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_signing_alg": "RS256",
            "jwks_uri": f"{self.base}/oauth/jwks.json",
        }

    def assertion(self, audience: str, *, key: Any = None, jti: str | None = None, lifetime: int = 60) -> str:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": audience, "iat": now,
                  "exp": now + lifetime, "jti": jti or str(uuid.uuid4())}
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": KID})

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def chatgpt() -> Iterator[ChatGptHost]:
    host = ChatGptHost()
    yield host
    host.stop()


@pytest.fixture
def gate(local_factory) -> LocalGate:
    return local_factory(local_extra=["[auth.local.cimd]", "allow_loopback_http = true"])


def _token(gate: LocalGate, form: dict[str, str], assertion: str) -> tuple[int, dict]:
    return http_json("POST", gate.token_endpoint,
                     form={**form, "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})


def _call_add_with_sdk(gate: LocalGate, access_token: str) -> str:
    async def flow() -> str:
        headers = {"Authorization": f"Bearer {access_token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(20)) as http:
            with anyio.fail_after(60):
                async with Client(streamable_http_client(gate.mcp_url, http_client=http), cache=None) as client:
                    return tool_text(await client.call_tool("add", {"a": 20, "b": 22}))

    return anyio.run(flow)


def test_chatgpt_connects_with_private_key_jwt(gate: LocalGate, chatgpt: ChatGptHost):
    # 401 -> PRM -> AS metadata.
    resp = McpHttp(gate, None).initialize()
    assert resp.status_code == 401, (resp.status_code, resp.text)
    assert challenge(resp)["resource_metadata"] == gate.prm_url
    status, prm = http_json("GET", gate.prm_url)
    assert status == 200 and prm["authorization_servers"] == [gate.issuer], prm
    meta = gate.metadata()
    for field in ("token_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported"):
        assert {"none", "private_key_jwt"} <= set(meta[field]), (field, meta[field])
    assert "RS256" in meta["token_endpoint_auth_signing_alg_values_supported"], meta
    assert not {"none", "HS256"} & set(meta["token_endpoint_auth_signing_alg_values_supported"]), meta
    assert meta["client_id_metadata_document_supported"] is True, meta

    # /authorize with the document's URL as client id, PKCE, resource; sign in + consent; the
    # browser stops at ChatGPT's redirect (303 with code, state, iss).
    res = gate.authorize(chatgpt.client_id, CHATGPT_REDIRECT, user="alice")
    assert res.redirect_url.startswith(CHATGPT_REDIRECT + "?"), res.redirect_url
    assert res.params.get("state") == res.state and res.params.get("iss") == gate.issuer, res.redirect_url
    assert res.code and "error" not in res.params, res.redirect_url

    form = {"grant_type": "authorization_code", "code": res.code, "redirect_uri": CHATGPT_REDIRECT,
            "code_verifier": res.code_verifier, "client_id": chatgpt.client_id}
    # No assertion: a private_key_jwt client is not a public client.
    status, body = http_json("POST", gate.token_endpoint, form=form)
    assert (status, body.get("error")) == (401, "invalid_client"), (status, body)
    status, first = _token(gate, form, chatgpt.assertion(gate.token_endpoint))
    assert status == 200, (status, first)
    assert first["token_type"] == "Bearer" and first.get("refresh_token"), first
    # ChatGPT posts the code a second time (a fresh assertion): the same answer.
    status, again = _token(gate, form, chatgpt.assertion(gate.token_endpoint))
    assert status == 200 and again == first, (status, again)

    assert _call_add_with_sdk(gate, first["access_token"]) == "42"

    status, refreshed = _token(gate, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                      "client_id": chatgpt.client_id}, chatgpt.assertion(gate.issuer))
    assert status == 200, (status, refreshed)
    assert refreshed["access_token"] != first["access_token"], refreshed
    assert _call_add_with_sdk(gate, refreshed["access_token"]) == "42"
    assert chatgpt.jwks_fetches == 1, "the key set is cached"


def test_chatgpt_assertion_refusals(gate: LocalGate, chatgpt: ChatGptHost):
    """A made-up refresh token: an authenticated client gets invalid_grant (400), a refused
    assertion invalid_client (401)."""
    form = {"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token", "client_id": chatgpt.client_id}

    def probe(assertion: str) -> tuple[int, str | None]:
        status, body = _token(gate, form, assertion)
        return status, body.get("error")

    once = chatgpt.assertion(gate.token_endpoint)
    assert probe(once) == (400, "invalid_grant"), "a good assertion authenticates"
    assert probe(once) == (401, "invalid_client"), "replayed jti"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert probe(chatgpt.assertion(gate.token_endpoint, key=stranger)) == (401, "invalid_client"), "wrong key"
    assert probe(chatgpt.assertion("https://other-as.example/token")) == (401, "invalid_client"), "foreign aud"
    assert probe(chatgpt.assertion(gate.token_endpoint, lifetime=3600)) == (401, "invalid_client"), "exp too far"
    # Two methods at once: invalid_request.
    status, body = http_json("POST", gate.token_endpoint, form={
        **form, "client_secret": "guess", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": chatgpt.assertion(gate.token_endpoint)})
    assert (status, body.get("error")) == (400, "invalid_request"), (status, body)
    assert urllib.parse.urlsplit(chatgpt.client_id).hostname == "127.0.0.1"
