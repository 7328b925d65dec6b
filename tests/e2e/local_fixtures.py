"""mcpgate in `auth.mode = "local"`: its own OAuth authorization server with its own users (for
test_local_mode.py).

`local_factory(...)` starts mcpgate on a free port with a fresh temp dir, after creating the users
(`mcpgate users add NAME --password-stdin`, random passwords) so that no first-start admin is made.
`local_gate` is `local_factory()` with the defaults (user alice). Every gate is stopped when the
test ends; its log is copied to `.work/mcpgate-local-last-run.log` and the tails are attached to
failed tests.

A `LocalGate` is also an OAuth client of its own AS (`OAuthClientHelpers`: register,
authorization_url, authorize, exchange_code, refresh, login_token); its browser is
local_browser.py, which logs in with the password the fixture gave the user.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import secrets
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import jwt
import pytest

import local_browser
from idp_fixtures import OAuthClientHelpers, basic_auth, http_json
from mcpgate_process import config_text, free_port, require_mcpgate_bin, running_mcpgate
from rs_fixtures import ALL_SCOPES, McpHttp, challenge

# What the issuer serves (the HTTP contract of local mode).
AS_PATHS = {
    "authorization_endpoint": "/authorize",
    "token_endpoint": "/token",
    "registration_endpoint": "/register",
    "revocation_endpoint": "/revoke",
    "introspection_endpoint": "/introspect",
    "jwks_uri": "/jwks.json",
}


@dataclass
class LocalGate(OAuthClientHelpers):
    port: int
    tmp: Path
    cfg: Path
    data_dir: Path
    log_path: Path
    stdout_path: Path | None  # when stdout is kept apart from the log (first-start admin)
    users: dict[str, str]  # name -> password
    access_token_ttl_secs: int | None
    proc: subprocess.Popen | None = None
    starts: int = 0
    browser_traces: list[local_browser.Trace] = field(default_factory=list)

    # ---------------------------------------------------------------- URLs
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def mcp_resource(self) -> str:
        return self.mcp_url

    @property
    def prm_url(self) -> str:
        return f"{self.base_url}/.well-known/oauth-protected-resource/mcp"

    @property
    def as_metadata_url(self) -> str:
        return f"{self.base_url}/.well-known/oauth-authorization-server"

    @property
    def authorization_endpoint(self) -> str:
        return self.issuer + AS_PATHS["authorization_endpoint"]

    @property
    def token_endpoint(self) -> str:
        return self.issuer + AS_PATHS["token_endpoint"]

    @property
    def registration_endpoint(self) -> str:
        return self.issuer + AS_PATHS["registration_endpoint"]

    @property
    def revocation_endpoint(self) -> str:
        return self.issuer + AS_PATHS["revocation_endpoint"]

    @property
    def introspection_endpoint(self) -> str:
        return self.issuer + AS_PATHS["introspection_endpoint"]

    @property
    def jwks_uri(self) -> str:
        return self.issuer + AS_PATHS["jwks_uri"]

    # ---------------------------------------------------------------- logs
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"<no log: {e}>"

    def log_tail(self, max_chars: int = 20000) -> str:
        text = self.log_text()[-max_chars:]
        if self.stdout_path is not None:
            try:
                text = f"--- stdout ---\n{self.stdout_path.read_text(errors='replace')[-4000:]}\n--- log ---\n{text}"
            except OSError:
                pass
        return text

    def stdout_text(self) -> str:
        assert self.stdout_path is not None, "this gate's stdout goes to its log"
        return self.stdout_path.read_text(errors="replace")

    def audit(self, needle: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if "audit:" in line and needle in line]

    # ---------------------------------------------------------------- CLI
    def cli(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """`mcpgate ARGS... --config CFG` (users add/list/remove/passwd, check-config)."""
        cmd = [str(require_mcpgate_bin()), *args, "--config", str(self.cfg)]
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=self.tmp,
                              env=dict(os.environ, NO_COLOR="1"))

    def add_user(self, name: str, password: str | None = None) -> str:
        password = password or secrets.token_urlsafe(12)
        r = self.cli("users", "add", name, "--password-stdin", stdin=password + "\n")
        assert r.returncode == 0, (f"`mcpgate users add {name} --password-stdin --config {self.cfg}` exited "
                                   f"{r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}")
        self.users[name] = password
        return password

    # ---------------------------------------------------------------- the browser
    def front_channel(self, url: str, user: str, *, redirect_uri: str, deny: bool | str = False,
                      cookie_jar: Any = None, steps: list[str] | None = None, remember: bool = False) -> str:
        """mcpgate's own login + consent pages through local_browser.py, as `user` (known password)."""
        trace = local_browser.Trace(steps=steps if steps is not None else [])
        self.browser_traces.append(trace)
        return local_browser.authorize(url, user, self.users[user], redirect_uri=redirect_uri, deny=deny,
                                       remember=remember, cookie_jar=cookie_jar, trace=trace)

    def browser(self, user: str = "alice", **kw: Any):
        """`authorize(url) -> final URL` for a client's redirect handler (AgentBrowser)."""
        jar = kw.pop("cookie_jar", None) or http.cookiejar.CookieJar()

        def authorize(url: str) -> str:
            redirect_uri = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["redirect_uri"]
            return self.front_channel(url, user, redirect_uri=redirect_uri, cookie_jar=jar, **kw)

        return authorize

    def browser_env(self, user: str, log: Path, **extra: str) -> dict[str, str]:
        """`$BROWSER` = local_browser.sh for mcp-remote and the Inspector, logging in as `user`."""
        return dict(BROWSER=str(Path(__file__).resolve().parent / "local_browser.sh"), LOCAL_BROWSER_USER=user,
                    LOCAL_BROWSER_PASSWORD=self.users[user], LOCAL_BROWSER_LOG=str(log),
                    LOCAL_BROWSER_PYTHON=sys.executable, **extra)

    # ---------------------------------------------------------------- AS helpers
    def metadata(self, suffix: str = "") -> dict:
        status, data = http_json("GET", self.as_metadata_url + suffix)
        assert status == 200, (self.as_metadata_url + suffix, status, data)
        return data

    def revoke(self, token: str, client_id: str, auth: tuple[str, str] | None = None,
               hint: str | None = None) -> tuple[int, Any]:
        form = {"token": token}
        if hint:
            form["token_type_hint"] = hint
        if auth is None:
            form["client_id"] = client_id
        return http_json("POST", self.revocation_endpoint, form=form, headers=basic_auth(*auth) if auth else None)

    def introspect(self, token: str, auth: tuple[str, str]) -> tuple[int, Any]:
        return http_json("POST", self.introspection_endpoint, form={"token": token}, headers=basic_auth(*auth))


def _config(gate_tmp: Path, port: int, data: Path, ttl: int | None, local_extra: list[str], *,
            mode: str = "local", auth_extra: list[str] | None = None, extra_toml: list[str] | None = None,
            toolsets: bool = True) -> Path:
    auth = ["[auth]", f'mode = "{mode}"', "[auth.local]"]
    if ttl is not None:
        auth.append(f"access_token_ttl_secs = {ttl}")
    auth += local_extra
    auth += auth_extra or []
    cfg = gate_tmp / "mcpgate.toml"
    cfg.write_text(config_text(port, data, auth, toolsets=toolsets, extra=extra_toml))
    return cfg


@contextlib.contextmanager
def start_local_gate(tmp: Path, *, users: dict[str, str | None] | None = None, access_token_ttl_secs: int | None = None,
                     local_extra: list[str] | None = None, separate_stdout: bool = False,
                     port: int | None = None, mode: str = "local", auth_extra: list[str] | None = None,
                     extra_toml: list[str] | None = None, toolsets: bool = True,
                     gate_cls: type[LocalGate] = LocalGate, gate_kw: dict[str, Any] | None = None) -> Iterator[LocalGate]:
    """Create `users` (name -> password, None = random; default {"alice": None}) with the CLI, then
    start mcpgate in local mode; stop it at the end. `users={}` starts with no user at all (mcpgate
    then makes the first-start admin; `separate_stdout` keeps its stdout in its own file).
    `mode` and `auth_extra` (more `[auth.*]` lines, e.g. `[auth.upstream]`) serve the other modes
    with an embedded AS (proxy_fixtures.py), with `gate_cls(**gate_kw)` as the gate's class.
    `extra_toml`: top-level tables after the rest (`[[upstreams]]`, `[[policy]]`, `[gateway]`;
    test_gateway.py); `toolsets=False` drops the built-in toolsets."""
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    port = port or free_port()
    cfg = _config(tmp, port, data, access_token_ttl_secs, local_extra or [], mode=mode, auth_extra=auth_extra,
                  extra_toml=extra_toml, toolsets=toolsets)
    gate = gate_cls(port=port, tmp=tmp, cfg=cfg, data_dir=data, log_path=tmp / "mcpgate.log",
                    stdout_path=(tmp / "mcpgate.stdout") if separate_stdout else None, users={},
                    access_token_ttl_secs=access_token_ttl_secs, **(gate_kw or {}))
    for name, password in ({"alice": None} if users is None else users).items():
        gate.add_user(name, password)
    with running_mcpgate(cfg, port=port, log_path=gate.log_path, cwd=tmp, what=f"mcpgate ({mode} mode)",
                         last_log_name=f"mcpgate-{mode}-last-run.log", stdout_path=gate.stdout_path) as proc:
        gate.proc = proc
        gate.starts += 1
        yield gate


@contextlib.contextmanager
def gate_factory(start: Callable[..., contextlib.AbstractContextManager]) -> Iterator[Callable[..., Any]]:
    """`make(**kw)` enters `start(n, **kw)` (n = 0, 1, ...) and returns its gate; every gate is stopped
    at exit. `make.made` lists them, for the failure report hook in conftest.py."""
    made: list[Any] = []
    with contextlib.ExitStack() as stack:
        def make(*args: Any, **kw: Any) -> Any:
            made.append(stack.enter_context(start(len(made), *args, **kw)))
            return made[-1]

        make.made = made
        yield make


@pytest.fixture
def local_factory(tmp_path: Path):
    """`local_factory(users=..., access_token_ttl_secs=..., local_extra=[...], separate_stdout=False,
    extra_toml=[...], toolsets=True)` -> a running LocalGate; all are stopped at test end."""
    with gate_factory(lambda n, **kw: start_local_gate(tmp_path / f"local-{n}", **kw)) as make:
        yield make


@pytest.fixture
def local_gate(local_factory) -> LocalGate:
    return local_factory()


# ------------------------------------------------------------------------ checks shared by the AS modes
def verified_claims(gate: LocalGate, token: str) -> dict:
    """The claims of one of mcpgate's access tokens, verified with a key from its /jwks.json."""
    assert token.count(".") == 2, f"not a JWT access token: {token[:40]}..."
    header = jwt.get_unverified_header(token)
    status, jwks = http_json("GET", gate.jwks_uri)
    assert status == 200, (gate.jwks_uri, status, jwks)
    keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    assert len(keys) == 1, f"kid {header.get('kid')!r} not (once) in {gate.jwks_uri}: {jwks}"
    key = jwt.PyJWK(keys[0])
    return jwt.decode(token, key.key, algorithms=[header["alg"]], audience=gate.mcp_resource, issuer=gate.issuer,
                      options={"verify_exp": False})


def assert_as_discovery(g: LocalGate) -> None:
    """mcpgate as the authorization server (local and proxy mode): the PRM names `public_url` as
    the AS, RFC 8414 metadata at both paths with mcpgate's endpoints, a JWKS without private keys,
    and the 401 challenge of /mcp pointing at the PRM."""
    status, prm = http_json("GET", g.prm_url)
    assert status == 200, (status, prm)
    assert prm["resource"] == g.mcp_resource, prm
    assert prm["authorization_servers"] == [g.issuer], prm
    assert set(prm["scopes_supported"]) == set(ALL_SCOPES.split()), prm

    meta = g.metadata()
    assert g.metadata("/mcp") == meta, "the /mcp-suffixed AS metadata differs from the plain one"
    assert meta["issuer"] == g.issuer and not meta["issuer"].endswith("/"), meta["issuer"]
    for name, path in AS_PATHS.items():
        assert meta[name] == g.issuer + path, (name, meta.get(name))
    assert meta["code_challenge_methods_supported"] == ["S256"], meta
    assert meta["client_id_metadata_document_supported"] is True, meta
    assert meta["authorization_response_iss_parameter_supported"] is True, meta
    assert set(ALL_SCOPES.split()) <= set(meta["scopes_supported"]), meta["scopes_supported"]
    assert "code" in meta.get("response_types_supported", ["code"]), meta
    assert {"authorization_code", "refresh_token"} <= set(meta.get("grant_types_supported", [])), meta

    status, jwks = http_json("GET", g.jwks_uri)
    assert status == 200 and jwks["keys"], (status, jwks)
    for k in jwks["keys"]:
        assert k.get("kid") and not ({"d", "p", "q", "k"} & set(k)), f"a private or symmetric key in JWKS: {k}"

    # /mcp without a token: 401 pointing at the PRM (no error code, RFC 6750 §3.1).
    resp = McpHttp(g, None).initialize()
    assert resp.status_code == 401, (resp.status_code, resp.text)
    ch = challenge(resp)
    assert ch["resource_metadata"] == g.prm_url and "error" not in ch, ch
