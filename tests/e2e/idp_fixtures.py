"""A real OpenID provider (npm `oidc-provider`) for the end-to-end suite: process control,
pytest fixtures and small OAuth helpers.

- `start_idp(...)` (context manager): starts `idp/server.mjs` on Node 22 on a free loopback port
  and yields an `Idp`; the process group is killed on exit.
- fixtures `idp` (one per session, default configuration) and `idp_factory` (fresh IdPs with
  their own env, for tests that rotate keys or change TTLs; all stopped at test end).

See tests/e2e/README.md ("The IdP harness") for the env vars and the /__admin endpoints.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

import idp_agent

E2E_DIR = Path(__file__).resolve().parent
NODE22 = E2E_DIR / "node_modules" / "node" / "bin" / "node"
IDP_SERVER = E2E_DIR / "idp" / "server.mjs"
WORK_DIR = E2E_DIR / ".work"

DEFAULT_MCP_RESOURCE = "http://127.0.0.1:18000/mcp"
DEFAULT_OPAQUE_RESOURCE = "http://127.0.0.1:18001/opaque"
RS_SCOPES = "notes:read notes:write calc docs:read"

PROXY_CLIENT = ("mcpgate-proxy", "mcpgate-proxy-secret")
MACHINE_CLIENT = ("mcpgate-machine", "mcpgate-machine-secret")
RS_CLIENT = ("mcpgate-rs", "mcpgate-rs-secret")


def b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWS compact token, without verifying it."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"not a JWS compact token: {token[:40]}...")
    return b64url_json(parts[0]), b64url_json(parts[1])


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}"
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def http_json(method: str, url: str, *, form: dict | None = None, json_body: Any = None,
              headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON or text). Never raises on 4xx/5xx."""
    data = None
    hdrs = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif json_body is not None:
        data = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


@dataclass
class AuthResult:
    """Outcome of the front channel of an authorization-code request."""

    redirect_url: str
    params: dict[str, str]
    code_verifier: str
    state: str
    redirect_uri: str
    steps: list[str] = field(default_factory=list)

    @property
    def code(self) -> str:
        if "code" not in self.params:
            raise AssertionError(f"no code in the redirect: {self.redirect_url}")
        return self.params["code"]


class OAuthClientHelpers:
    """A client's side of an authorization server: DCR, authorization code + PKCE, token requests.

    Shared by the IdP harness (`Idp`) and mcpgate's own AS (`local_fixtures.LocalGate`). A subclass
    provides `token_endpoint`, `authorization_endpoint`, `registration_endpoint`, `mcp_resource`
    and `front_channel(url, user, *, redirect_uri, deny, cookie_jar, steps) -> final redirect URL`
    (the scripted browser that logs the user in and consents)."""

    token_endpoint: str
    authorization_endpoint: str
    registration_endpoint: str
    mcp_resource: str

    def front_channel(self, url: str, user: str, *, redirect_uri: str, deny: bool | str,
                      cookie_jar: Any, steps: list[str]) -> str:
        raise NotImplementedError

    def register(self, **metadata: Any) -> dict:
        """Open DCR. Defaults: a public client (auth method none) with auth code + refresh."""
        body = {
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            **metadata,
        }
        status, data = http_json("POST", self.registration_endpoint, json_body=body)
        if status != 201:
            raise AssertionError(f"DCR failed: {status} {data}")
        return data

    def authorization_url(self, client_id: str, redirect_uri: str, *, scope: str | None = RS_SCOPES,
                          resource: str | None = "default", state: str | None = None,
                          code_challenge: str | None = None, extra: dict | None = None) -> tuple[str, str, str]:
        """(url, state, code_verifier) for an authorization-code + PKCE S256 request.
        resource="default" means `self.mcp_resource`; None omits the parameter."""
        verifier, challenge = pkce_pair()
        state = state or secrets.token_urlsafe(12)
        q: dict[str, str] = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": code_challenge or challenge,
            "code_challenge_method": "S256",
        }
        if scope is not None:
            q["scope"] = scope
        if resource == "default":
            resource = self.mcp_resource
        if resource is not None:
            q["resource"] = resource
        q.update(extra or {})
        return f"{self.authorization_endpoint}?{urllib.parse.urlencode(q)}", state, verifier

    def authorize(self, client_id: str, redirect_uri: str, *, user: str = "alice", deny: bool = False,
                  cookie_jar=None, **kw: Any) -> AuthResult:
        """Front channel through the AS's scripted browser (`front_channel`: login + consent), stopping at redirect_uri."""
        url, state, verifier = self.authorization_url(client_id, redirect_uri, **kw)
        steps: list[str] = []
        final = self.front_channel(url, user, redirect_uri=redirect_uri, deny=deny, cookie_jar=cookie_jar, steps=steps)
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(final).query))
        return AuthResult(final, params, verifier, state, redirect_uri, steps)

    def token(self, form: dict[str, str], auth: tuple[str, str] | None = None) -> tuple[int, dict]:
        return http_json("POST", self.token_endpoint, form=form, headers=basic_auth(*auth) if auth else None)

    def exchange_code(self, result: AuthResult, client_id: str, auth: tuple[str, str] | None = None,
                      **extra: str) -> tuple[int, dict]:
        form = {
            "grant_type": "authorization_code",
            "code": result.code,
            "redirect_uri": result.redirect_uri,
            "code_verifier": result.code_verifier,
            **extra,
        }
        if auth is None:
            form["client_id"] = client_id
        return self.token(form, auth)

    def refresh(self, refresh_token: str, client_id: str, auth: tuple[str, str] | None = None,
                **extra: str) -> tuple[int, dict]:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
        if auth is None:
            form["client_id"] = client_id
        return self.token(form, auth)

    def login_token(self, user: str = "alice", scope: str = RS_SCOPES,
                    redirect_uri: str = "http://127.0.0.1:9/callback", resource: str | None = "default") -> dict:
        """DCR + authorization code + PKCE in one call; returns the token response."""
        client = self.register(redirect_uris=[redirect_uri], client_name=f"e2e-{user}")
        res = self.authorize(client["client_id"], redirect_uri, user=user, scope=scope, resource=resource)
        status, tok = self.exchange_code(res, client["client_id"])
        assert status == 200, (status, tok, res.steps)
        tok["client_id"] = client["client_id"]
        return tok


@dataclass
class Idp(OAuthClientHelpers):
    issuer: str
    port: int
    mcp_resource: str
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path
    startup_seconds: float

    # ---------------------------------------------------------------- endpoints
    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def registration_endpoint(self) -> str:
        return f"{self.issuer}/reg"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/token/introspection"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/token/revocation"

    def log_tail(self, max_chars: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError as e:
            return f"<no log: {e}>"

    # ---------------------------------------------------------------- admin hooks
    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        status, data = http_json(method, f"{self.issuer}/__admin/{path.lstrip('/')}", json_body=body)
        if status != 200:
            raise AssertionError(f"IdP admin {method} {path} -> {status}: {data}")
        return data

    def info(self) -> dict:
        return self.admin("GET", "info")

    def rotate(self, kty: str | None = None, retire: bool = False) -> dict:
        body: dict[str, Any] = {"retire": retire}
        if kty:
            body["kty"] = kty
        return self.admin("POST", "rotate", body)

    def jwks_hits(self) -> int:
        return self.admin("GET", "jwks-hits")["hits"]

    def reset_jwks_hits(self) -> None:
        self.admin("POST", "jwks-hits/reset")

    def counts(self) -> dict:
        """`{"authorize": {client_id: n}, "grants": {client_id: {grant_type: n}}}`: GET /auth requests
        and successful token grants so far."""
        return self.admin("GET", "counts")

    def grants(self, client_id: str) -> dict[str, int]:
        """grant_type -> how many token requests of `client_id` succeeded."""
        return self.counts()["grants"].get(client_id, {})

    def stop(self) -> None:
        """Kill the IdP now (a test of the IdP going away); start_idp's exit is then a no-op."""
        _kill_group(self.proc)

    def set_ttl(self, access_token: int | None = None, refresh_token: int | None = None) -> dict:
        body = {k: v for k, v in (("access_token", access_token), ("refresh_token", refresh_token)) if v is not None}
        return self.admin("POST", "ttl", body)

    def add_resource(self, resource: str, fmt: str = "jwt", scope: str | None = None,
                     audience: str | None = None) -> dict:
        body = {"resource": resource, "format": fmt}
        if scope:
            body["scope"] = scope
        if audience:
            body["audience"] = audience
        return self.admin("POST", "resources", body)

    def add_client(self, **metadata: Any) -> dict:
        return self.admin("POST", "clients", metadata)

    # ---------------------------------------------------------------- OAuth helpers
    def metadata(self, well_known: str = "openid-configuration") -> dict:
        status, data = http_json("GET", f"{self.issuer}/.well-known/{well_known}")
        assert status == 200, (status, data)
        return data

    def jwks(self) -> dict:
        status, data = http_json("GET", self.jwks_uri)
        assert status == 200, (status, data)
        return data

    def front_channel(self, url: str, user: str, *, redirect_uri: str, deny: bool | str = False,
                      cookie_jar: Any = None, steps: list[str] | None = None) -> str:
        """The generic scripted user agent (idp_agent.py) on the IdP's login and consent pages."""
        return idp_agent.authorize(url, user, redirect_uri=redirect_uri, deny=deny, cookie_jar=cookie_jar, steps=steps)

    @staticmethod
    def browser_env(user: str, log: Path, **extra: str) -> dict[str, str]:
        """`$BROWSER` = idp/browser (the agent with --deliver) for mcp-remote and the Inspector,
        logging in as `user`; one JSON line per run in `log`."""
        return dict(BROWSER=str(E2E_DIR / "idp" / "browser"), IDP_AGENT_USER=user, IDP_AGENT_LOG=str(log),
                    IDP_AGENT_PYTHON=sys.executable, **extra)

    def client_credentials(self, scope: str = "calc", resource: str | None = None,
                           auth: tuple[str, str] = MACHINE_CLIENT) -> tuple[int, dict]:
        form = {"grant_type": "client_credentials", "scope": scope}
        if resource:
            form["resource"] = resource
        return self.token(form, auth)

    def introspect(self, token: str, auth: tuple[str, str] = RS_CLIENT) -> tuple[int, dict]:
        return http_json("POST", self.introspection_endpoint, form={"token": token}, headers=basic_auth(*auth))

    def revoke(self, token: str, auth: tuple[str, str] = MACHINE_CLIENT) -> tuple[int, Any]:
        return http_json("POST", self.revocation_endpoint, form={"token": token}, headers=basic_auth(*auth))


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def start_idp(log_dir: Path, *, mcp_resource: str = DEFAULT_MCP_RESOURCE, port: int = 0,
              env: dict[str, str] | None = None, ready_timeout: float = 15.0) -> Iterator[Idp]:
    """Start idp/server.mjs; yields an Idp once it printed its ready line; always stops it."""
    if not NODE22.exists():
        pytest.fail(f"{NODE22} missing: run scripts/e2e-install.sh")
    if not (E2E_DIR / "node_modules" / "oidc-provider").exists():
        pytest.fail("node_modules/oidc-provider missing: run scripts/e2e-install.sh")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"idp-{time.time_ns()}.log"
    full_env = dict(os.environ)
    full_env.update({"MCP_RESOURCE": mcp_resource, "NO_COLOR": "1"})
    full_env.update(env or {})
    log = open(log_path, "wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(NODE22), str(IDP_SERVER), str(port)],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env=full_env,
        cwd=E2E_DIR,
        start_new_session=True,
    )
    try:
        line = b""
        deadline = started + ready_timeout
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                log.flush()
                pytest.fail(f"IdP not ready in {ready_timeout}s (exit {proc.poll()}):\n{log_path.read_text(errors='replace')[-4000:]}")
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        info = json.loads(line.split(b"\n", 1)[0])
        assert info.get("ready") is True, info
        yield Idp(
            issuer=info["issuer"],
            port=info["port"],
            mcp_resource=info["mcp_resource"],
            env=full_env,
            proc=proc,
            log_path=log_path,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        _kill_group(proc)
        if proc.stdout:
            proc.stdout.close()
        log.close()
        try:
            WORK_DIR.mkdir(exist_ok=True)
            (WORK_DIR / "idp-last-run.log").write_bytes(log_path.read_bytes())
        except OSError:
            pass


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Idp]:
    """One IdP for the session: MCP_RESOURCE=http://127.0.0.1:18000/mcp, one opaque resource
    (DEFAULT_OPAQUE_RESOURCE), default TTLs. Do not mutate it (rotate, TTL): use idp_factory."""
    with start_idp(tmp_path_factory.mktemp("idp"), env={"OPAQUE_RESOURCES": DEFAULT_OPAQUE_RESOURCE}) as i:
        yield i


@pytest.fixture
def idp_factory(tmp_path: Path):
    """`idp_factory(mcp_resource=..., env={...})` starts a fresh IdP; all are stopped at test end."""
    with contextlib.ExitStack() as stack:
        def make(mcp_resource: str = DEFAULT_MCP_RESOURCE, env: dict[str, str] | None = None) -> Idp:
            return stack.enter_context(start_idp(tmp_path / "idp", mcp_resource=mcp_resource, env=env))

        yield make
