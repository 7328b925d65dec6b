"""The IdP harness on its own (no mcpgate): a real oidc-provider driven by the scripted user agent.

Proves what the gateway tests rely on: discovery (OIDC + RFC 8414), open DCR, authorization code
+ PKCE S256 with a resource indicator giving RFC 9068 JWT access tokens (`typ: at+jwt`, exact
`aud`), refresh-token rotation with replay detection, client credentials, signing-key rotation
and the JWKS fetch counter, opaque tokens with introspection and revocation, and the agent's CLI
and `$BROWSER` mode.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.parse

import jwt as pyjwt
import pytest

from idp_fixtures import (
    DEFAULT_OPAQUE_RESOURCE,
    E2E_DIR,
    MACHINE_CLIENT,
    PROXY_CLIENT,
    RS_CLIENT,
    RS_SCOPES,
    Idp,
    http_json,
    jwt_parts,
)

REDIRECT = "http://127.0.0.1:33333/callback"


def verify_jwt(idp: Idp, token: str, audience: str | None = None) -> dict:
    """Verify signature, iss, aud and exp of an access token against the IdP's JWKS."""
    header, _ = jwt_parts(token)
    keys = {k["kid"]: k for k in idp.jwks()["keys"]}
    assert header["kid"] in keys, f"kid {header['kid']} not in JWKS {list(keys)}"
    key = pyjwt.PyJWK(keys[header["kid"]])
    return pyjwt.decode(
        token,
        key=key.key,
        algorithms=[header["alg"]],
        audience=audience or idp.mcp_resource,
        issuer=idp.issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )


# ------------------------------------------------------------------------------------ discovery
def test_starts_fast_and_serves_both_metadata_documents(idp: Idp):
    assert idp.startup_seconds < 2.0, f"IdP took {idp.startup_seconds:.2f}s to start"
    oidc = idp.metadata("openid-configuration")
    oauth = idp.metadata("oauth-authorization-server")
    assert oidc == oauth
    assert oidc["issuer"] == idp.issuer
    # Endpoints are pinned to the issuer's host, whatever Host header the client used.
    for k in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri",
              "introspection_endpoint", "revocation_endpoint"):
        assert oidc[k].startswith(idp.issuer + "/"), (k, oidc[k])
    assert oidc["code_challenge_methods_supported"] == ["S256"]
    assert oidc["authorization_response_iss_parameter_supported"] is True
    assert set(RS_SCOPES.split()) | {"openid", "offline_access"} <= set(oidc["scopes_supported"])
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(oidc["grant_types_supported"])
    assert oidc["response_types_supported"] == ["code"]
    assert "none" in oidc["token_endpoint_auth_methods_supported"]
    jwks = idp.jwks()["keys"]
    assert {k["kty"] for k in jwks} == {"RSA", "EC"}
    assert all("d" not in k for k in jwks), "private key material in JWKS"


# ------------------------------------------------------------------------ authorization code
def test_dcr_public_client_code_pkce_jwt_and_refresh_rotation(idp: Idp):
    client = idp.register(redirect_uris=[REDIRECT], client_name="e2e public client")
    cid = client["client_id"]
    assert client["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in client

    res = idp.authorize(cid, REDIRECT, user="alice", scope="notes:read calc")
    assert res.redirect_url.startswith(REDIRECT + "?"), res.steps
    assert res.params["state"] == res.state
    assert res.params["iss"] == idp.issuer
    # The agent stopped at the redirect: login, then consent, each a form post.
    assert sum("submit form" in s for s in res.steps) == 2, res.steps

    status, tok = idp.exchange_code(res, cid)
    assert status == 200, tok
    assert tok["token_type"] == "Bearer"
    assert tok["scope"] == "notes:read calc"
    assert tok.get("refresh_token"), "a client registered with refresh_token must get one"

    header, claims = jwt_parts(tok["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert header["kid"] == idp.info()["active_kid"]
    claims = verify_jwt(idp, tok["access_token"])
    assert claims["aud"] == idp.mcp_resource  # exactly the resource string, not a list
    assert claims["iss"] == idp.issuer
    assert claims["sub"] == "alice"
    assert claims["client_id"] == cid
    assert set(claims["scope"].split()) == {"notes:read", "calc"}
    assert claims["exp"] - claims["iat"] == tok["expires_in"] == 3600

    # Refresh without `resource`: still a JWT for the granted resource (useGrantedResource).
    status, tok2 = idp.refresh(tok["refresh_token"], cid)
    assert status == 200, tok2
    assert tok2["refresh_token"] != tok["refresh_token"], "refresh token must rotate"
    claims2 = verify_jwt(idp, tok2["access_token"])
    assert claims2["aud"] == idp.mcp_resource and claims2["sub"] == "alice"
    assert claims2["jti"] != claims["jti"]

    # Replaying the rotated refresh token fails and revokes the whole grant.
    status, err = idp.refresh(tok["refresh_token"], cid)
    assert status == 400 and err["error"] == "invalid_grant", err
    status, err = idp.refresh(tok2["refresh_token"], cid)
    assert status == 400 and err["error"] == "invalid_grant", "grant must be revoked after replay"


def test_request_without_resource_binds_the_default_resource(idp: Idp):
    client = idp.register(redirect_uris=[REDIRECT])
    res = idp.authorize(client["client_id"], REDIRECT, user="bob", scope="openid calc", resource=None)
    status, tok = idp.exchange_code(res, client["client_id"])
    assert status == 200, tok
    claims = verify_jwt(idp, tok["access_token"])
    assert claims["aud"] == idp.mcp_resource
    assert claims["scope"] == "calc"
    assert "id_token" in tok  # openid was asked for


def test_pkce_is_required_and_checked(idp: Idp):
    client = idp.register(redirect_uris=[REDIRECT])
    cid = client["client_id"]
    url, state, _ = idp.authorization_url(cid, REDIRECT)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    del q["code_challenge"], q["code_challenge_method"]
    import idp_agent

    final = idp_agent.authorize(f"{idp.authorization_endpoint}?{urllib.parse.urlencode(q)}", "alice")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(final).query))
    assert params["error"] == "invalid_request" and "PKCE" in params["error_description"]

    res = idp.authorize(cid, REDIRECT)
    good_verifier, res.code_verifier = res.code_verifier, "x" * 50
    status, err = idp.exchange_code(res, cid)
    assert status == 400 and err["error"] == "invalid_grant"

    # A code is single-use, and replaying it revokes what it was exchanged for.
    res = idp.authorize(cid, REDIRECT)
    status, tok = idp.exchange_code(res, cid)
    assert status == 200, tok
    status, err = idp.exchange_code(res, cid)
    assert status == 400 and err["error"] == "invalid_grant"
    status, err = idp.refresh(tok["refresh_token"], cid)
    assert status == 400 and err["error"] == "invalid_grant", "code replay must revoke the grant"


def test_unknown_resource_and_denied_consent(idp: Idp):
    client = idp.register(redirect_uris=[REDIRECT])
    res = idp.authorize(client["client_id"], REDIRECT, resource="http://127.0.0.1:1/not-registered")
    assert res.params["error"] == "invalid_target", res.redirect_url
    res = idp.authorize(client["client_id"], REDIRECT, deny=True)
    assert res.params["error"] == "access_denied", res.redirect_url
    assert res.params["state"] == res.state


def test_static_confidential_proxy_client(idp: Idp):
    cid, _ = PROXY_CLIENT
    redirect = idp.info()["static_clients"][0]["redirect_uris"][0]
    res = idp.authorize(cid, redirect, user="carol", scope="openid offline_access notes:write")
    # A confidential client must authenticate (no secret -> invalid_client). Note: oidc-provider
    # treats client_secret_basic and client_secret_post as interchangeable.
    status, err = idp.exchange_code(res, cid)
    assert status == 401 and err["error"] == "invalid_client", err
    status, tok = idp.exchange_code(res, cid, auth=PROXY_CLIENT)
    assert status == 200, tok
    claims = verify_jwt(idp, tok["access_token"])
    assert claims["sub"] == "carol" and claims["scope"] == "notes:write"
    assert tok["refresh_token"] and tok["id_token"]
    status, tok2 = idp.refresh(tok["refresh_token"], cid, client_secret=PROXY_CLIENT[1])  # secret in the body
    assert status == 200 and verify_jwt(idp, tok2["access_token"])["sub"] == "carol"


def test_client_credentials_jwt(idp: Idp):
    status, tok = idp.client_credentials(scope="calc docs:read", resource=idp.mcp_resource)
    assert status == 200, tok
    assert "refresh_token" not in tok
    header, _ = jwt_parts(tok["access_token"])
    assert header["typ"] == "at+jwt"
    claims = verify_jwt(idp, tok["access_token"])
    assert claims["sub"] == MACHINE_CLIENT[0] == claims["client_id"]
    assert claims["scope"] == "calc docs:read"
    # Without `resource` the default resource is bound.
    status, tok = idp.client_credentials(scope="calc")
    assert status == 200 and verify_jwt(idp, tok["access_token"])["aud"] == idp.mcp_resource
    status, err = idp.client_credentials(auth=(MACHINE_CLIENT[0], "wrong"))
    assert status == 401 and err["error"] == "invalid_client"


def test_dcr_with_resource_server_scopes(idp: Idp):
    client = idp.register(redirect_uris=["http://localhost:3334/oauth/callback"], scope="notes:read openid")
    res = idp.authorize(client["client_id"], "http://localhost:3334/oauth/callback", scope="notes:read")
    status, tok = idp.exchange_code(res, client["client_id"])
    assert status == 200 and verify_jwt(idp, tok["access_token"])["scope"] == "notes:read"


def test_second_authorization_reuses_the_session(idp: Idp):
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    client = idp.register(redirect_uris=[REDIRECT])
    first = idp.authorize(client["client_id"], REDIRECT, user="dora", cookie_jar=jar)
    second = idp.authorize(client["client_id"], REDIRECT, user="ignored", cookie_jar=jar)
    assert "code" in first.params and "code" in second.params
    assert not any("submit form" in s for s in second.steps), second.steps
    status, tok = idp.exchange_code(second, client["client_id"])
    assert verify_jwt(idp, tok["access_token"])["sub"] == "dora"


# ------------------------------------------------------------------------ opaque + introspection
def test_opaque_tokens_introspection_and_revocation(idp: Idp):
    status, tok = idp.client_credentials(scope="calc", resource=DEFAULT_OPAQUE_RESOURCE)
    assert status == 200, tok
    opaque = tok["access_token"]
    assert opaque.count(".") == 0, "expected an opaque token"

    status, intro = idp.introspect(opaque)
    assert status == 200 and intro["active"] is True, intro
    assert intro["aud"] == DEFAULT_OPAQUE_RESOURCE
    assert intro["client_id"] == MACHINE_CLIENT[0]
    assert intro["scope"] == "calc" and intro["iss"] == idp.issuer and intro["token_type"] == "Bearer"

    # A user token for the opaque resource: introspection carries `sub`.
    user_tok = idp.login_token(user="erin", scope="notes:read", resource=DEFAULT_OPAQUE_RESOURCE)
    status, intro = idp.introspect(user_tok["access_token"])
    assert intro["active"] is True and intro["sub"] == "erin" and intro["aud"] == DEFAULT_OPAQUE_RESOURCE

    # JWT access tokens cannot be introspected.
    status, err = idp.introspect(idp.client_credentials()[1]["access_token"])
    assert status == 400 and err["error"] == "unsupported_token_type"

    # Unknown and revoked tokens are inactive.
    assert idp.introspect("not-a-token")[1] == {"active": False}
    status, _ = idp.revoke(opaque)
    assert status == 200
    assert idp.introspect(opaque)[1] == {"active": False}
    # Introspection needs client authentication.
    status, err = http_json("POST", idp.introspection_endpoint, form={"token": opaque})
    assert status in (400, 401) and err["error"] in ("invalid_client", "invalid_request"), err
    assert RS_CLIENT[0] == "mcpgate-rs"


# ------------------------------------------------------------------------ key rotation, TTLs
def test_key_rotation_and_jwks_hit_counter(idp_factory):
    idp = idp_factory()
    status, tok = idp.client_credentials()
    old_kid = jwt_parts(tok["access_token"])[0]["kid"]

    idp.reset_jwks_hits()
    assert idp.jwks_hits() == 0
    rot = idp.rotate()
    assert rot["kid"] != old_kid and rot["active_kid"] == rot["kid"] and rot["retired"] == []
    kids = [k["kid"] for k in idp.jwks()["keys"]]
    assert idp.jwks_hits() == 1
    assert rot["kid"] in kids and old_kid in kids

    status, tok2 = idp.client_credentials()
    assert jwt_parts(tok2["access_token"])[0]["kid"] == rot["kid"]
    verify_jwt(idp, tok["access_token"])  # old tokens still verify: the old key is still published
    verify_jwt(idp, tok2["access_token"])
    assert idp.jwks_hits() == 3
    # The RFC 8414 document and other endpoints do not count.
    idp.metadata("oauth-authorization-server")
    assert idp.jwks_hits() == 3

    # State survives the rotation: a client registered before can still log in and refresh.
    client = idp.register(redirect_uris=[REDIRECT])
    res = idp.authorize(client["client_id"], REDIRECT)
    status, ut = idp.exchange_code(res, client["client_id"])
    idp.rotate()
    status, ut2 = idp.refresh(ut["refresh_token"], client["client_id"])
    assert status == 200, ut2

    # Retiring drops the older RSA keys: old tokens now carry an unknown kid.
    rot = idp.rotate(retire=True)
    kids = [k["kid"] for k in idp.jwks()["keys"]]
    assert kids[0] == rot["kid"] and old_kid not in kids and old_kid in rot["retired"]
    assert {k["kty"] for k in idp.jwks()["keys"]} == {"RSA", "EC"}


def test_es256_access_tokens_and_short_ttl(idp_factory):
    idp = idp_factory(env={"ACCESS_TOKEN_ALG": "ES256", "ACCESS_TOKEN_TTL": "2", "REFRESH_TOKEN_TTL": "30"})
    tok = idp.login_token(user="frank", scope="calc")
    header, claims = jwt_parts(tok["access_token"])
    assert header["alg"] == "ES256" and header["kid"].startswith("ec-")
    assert tok["expires_in"] == 2 and claims["exp"] - claims["iat"] == 2
    verify_jwt(idp, tok["access_token"])
    time.sleep(3.1)
    with pytest.raises(pyjwt.ExpiredSignatureError):
        verify_jwt(idp, tok["access_token"])
    status, tok2 = idp.refresh(tok["refresh_token"], tok["client_id"])
    assert status == 200 and verify_jwt(idp, tok2["access_token"])["sub"] == "frank"

    # TTLs can also change at run time.
    assert idp.set_ttl(access_token=120) == {"access_token": 120, "refresh_token": 30}
    status, tok3 = idp.client_credentials()
    assert tok3["expires_in"] == 120


def test_runtime_resources_clients_and_default_scope(idp_factory):
    idp = idp_factory(mcp_resource="http://127.0.0.1:18999/mcp",
                      env={"DEFAULT_SCOPE": "calc", "EXTRA_JWT_RESOURCES": "http://127.0.0.1:18999/other"})
    # A second JWT resource (for wrong-audience tests).
    status, tok = idp.client_credentials(resource="http://127.0.0.1:18999/other")
    assert verify_jwt(idp, tok["access_token"], audience="http://127.0.0.1:18999/other")["aud"] == "http://127.0.0.1:18999/other"
    # Resources added at run time, with their own scopes.
    idp.add_resource("http://127.0.0.1:18998/mcp", "jwt", scope="mcp:tools")
    status, tok = idp.client_credentials(scope="mcp:tools", resource="http://127.0.0.1:18998/mcp")
    assert status == 200 and verify_jwt(idp, tok["access_token"], audience="http://127.0.0.1:18998/mcp")["scope"] == "mcp:tools"
    # A static client added at run time (e.g. once the gateway's callback URL is known).
    idp.add_client(client_id="late-proxy", client_secret="s3cret", redirect_uris=["http://127.0.0.1:18999/cb"],
                   grant_types=["authorization_code", "refresh_token"], token_endpoint_auth_method="client_secret_post")
    res = idp.authorize("late-proxy", "http://127.0.0.1:18999/cb", scope=None)  # DEFAULT_SCOPE applies
    status, tok = idp.exchange_code(res, "late-proxy", client_secret="s3cret")
    assert status == 200, tok
    assert verify_jwt(idp, tok["access_token"])["scope"] == "calc"
    # Invalid client metadata is refused and changes nothing.
    status, err = http_json("POST", f"{idp.issuer}/__admin/clients", json_body={"client_id": "bad", "redirect_uris": ["x"]})
    assert status == 400, err
    assert "bad" not in [c["client_id"] for c in idp.info()["static_clients"]]


# ------------------------------------------------------------------------ the agent as a CLI
class _Callback(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        _Callback.hits.append(self.path)
        body = b"<html>done</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_agent_cli_and_browser_mode(idp: Idp, tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        redirect = f"http://127.0.0.1:{server.server_port}/oauth/callback"
        client = idp.register(redirect_uris=[redirect])

        # Plain CLI: prints the final redirect URL, does not fetch it.
        url, state, verifier = idp.authorization_url(client["client_id"], redirect)
        out = subprocess.run([sys.executable, str(E2E_DIR / "idp_agent.py"), url, "--user", "gus"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        final = out.stdout.strip()
        assert final.startswith(redirect + "?") and f"state={state}" in final
        assert _Callback.hits == []

        # $BROWSER mode (idp/browser = agent --deliver): the callback server receives the code.
        url, state, verifier = idp.authorization_url(client["client_id"], redirect)
        log = tmp_path / "agent.jsonl"
        out = subprocess.run([str(E2E_DIR / "idp" / "browser"), url], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", "IDP_AGENT_USER": "hana", "IDP_AGENT_LOG": str(log),
                                  "IDP_AGENT_PYTHON": sys.executable})
        assert out.returncode == 0, out.stderr
        assert len(_Callback.hits) == 1 and _Callback.hits[0].startswith("/oauth/callback?code=")
        record = json.loads(log.read_text().splitlines()[-1])
        assert record["deliver_status"] == 200 and record["user"] == "hana"
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(_Callback.hits[0]).query))
        status, tok = idp.token({"grant_type": "authorization_code", "code": params["code"], "redirect_uri": redirect,
                                 "code_verifier": verifier, "client_id": client["client_id"]})
        assert status == 200 and verify_jwt(idp, tok["access_token"])["sub"] == "hana"

        # Through the xdg-open that npm `open` bundles (what mcp-remote and the Inspector call),
        # with BROWSER pointing at the shim: exactly one delivery (xdg-open retries on failure).
        xdg_open = E2E_DIR / "node_modules" / "open" / "xdg-open"
        url, state, verifier = idp.authorization_url(client["client_id"], redirect)
        out = subprocess.run(["sh", str(xdg_open), url], capture_output=True, text=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", "BROWSER": str(E2E_DIR / "idp" / "browser"),
                                  "IDP_AGENT_USER": "ivan", "IDP_AGENT_PYTHON": sys.executable})
        assert out.returncode == 0, out.stdout + out.stderr
        assert len(_Callback.hits) == 2 and f"state={state}" in _Callback.hits[1]
    finally:
        server.shutdown()
        server.server_close()
