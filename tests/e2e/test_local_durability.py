"""Durability of mcpgate's own authorization server (`auth.mode = "local"`).

What is checked, with the real binary and raw HTTP (the OAuth client and the user's browser are
scripted here; the login/consent pages are filled in like a browser would):

- SQLite, `kill -9`: an authorization code issued before the crash redeems after a restart on the
  same data dir; access and refresh tokens issued before a crash keep working after one (the
  signing key and the sealing key survive, nothing is regenerated); the idempotent retries (the
  same code, the same refresh token within the grace window) give the same response across a
  crash, because the first response is stored, not held in memory.
- PostgreSQL, two processes: A and B share one database, one encryption key file and one
  `public_url` (A's; they listen on different ports, as two replicas behind one name would).
  Registration on A, login + consent on B, the code redeemed on A, A's tokens used on B. Then two
  refreshes of the same refresh token raced against A and B: no 5xx, and either both get the
  identical response (the in-grace retry) or one gets invalid_grant, and in every case exactly one
  new refresh token exists and it works. Finally a replay after the grace window revokes the whole
  family on both processes.

The PostgreSQL test needs `MCPGATE_TEST_POSTGRES_URL` (scripts/test.sh exports it; locally:
`export MCPGATE_TEST_POSTGRES_URL=$(scripts/pg-throwaway.sh start)`). It skips without it, but
fails in CI (`CI` set). It creates a fresh database per test with `psql` and drops it afterwards.

The login/consent driver below (`_Browser`) is private to this file on purpose (a tiny stdlib
form filler that is strict about the page contract); a shared one may replace it later.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import httpx2
import pytest

from conftest import REPO_ROOT, WORK_DIR, free_port, mcpgate_bin

PASSWORD = "correct horse battery staple"
REDIRECT_URI = "http://127.0.0.1:9/cb"  # never fetched: the browser stops at the redirect
SCOPE = "calc notes:read"
ACCEPT = "application/json, text/event-stream"
LEGACY_VERSION = "2025-06-18"
READY_TIMEOUT = 30
HTTP_TIMEOUT = 20


# ====================================================================== mcpgate processes
@dataclass
class LocalGate:
    """One mcpgate process in local mode. `start()`/`kill9()`/`stop()` may be called repeatedly;
    the log file accumulates every run (each start is marked)."""

    name: str
    tmp: Path
    port: int
    public_url: str
    store_url: str = ""  # default: SQLite inside the data dir
    local_extra: list[str] = field(default_factory=list)
    http_extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.data = self.tmp / "data"
        self.data.mkdir(exist_ok=True)
        if not self.store_url:
            self.store_url = f"sqlite://{self.data / 'mcpgate.db'}"
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = self.tmp / "mcpgate.log"
        self.cfg = self.tmp / "mcpgate.toml"
        lines = [
            f"public_url = {json.dumps(self.public_url)}",
            f'listen = "127.0.0.1:{self.port}"',
            f"data_dir = {json.dumps(str(self.data))}",
            "[store]",
            f"url = {json.dumps(self.store_url)}",
            "[auth]",
            'mode = "local"',
            "[auth.local]",
            *self.local_extra,
        ]
        if self.http_extra:
            lines += ["[http]", *self.http_extra]
        lines += ["[toolsets.notes]", "[toolsets.calc]", ""]
        self.cfg.write_text("\n".join(lines))

    # --------------------------------------------------------------- lifecycle
    def add_user(self, user: str, password: str = PASSWORD) -> None:
        r = subprocess.run(
            [str(mcpgate_bin()), "users", "add", user, "--password-stdin", "--config", str(self.cfg)],
            input=password + "\n", capture_output=True, text=True, timeout=60, cwd=self.tmp,
            env=dict(os.environ, NO_COLOR="1"),
        )
        assert r.returncode == 0, (
            f"`mcpgate users add {user} --password-stdin --config {self.cfg}` exited {r.returncode}\n"
            f"--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
        )

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        binary = mcpgate_bin()
        if not binary.exists():
            pytest.fail(f"mcpgate binary not found at {binary} (build it, or set MCPGATE_BIN)")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== test: start #{self.starts} of {self.name} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            env = dict(os.environ, NO_COLOR="1")
            env.setdefault("RUST_BACKTRACE", "1")
            self.proc = subprocess.Popen(
                [str(binary), "serve", "--config", str(self.cfg)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.tmp, env=env, start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} before ready (start #{self.starts}):\n"
                            f"{self.log_tail()}")
            try:
                if httpx2.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not ready within {READY_TIMEOUT} s (start #{self.starts}):\n{self.log_tail()}")
            time.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL the whole process group: no shutdown hook, no flush, no graceful drain."""
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== test: kill -9 of {self.name} at {time.strftime('%H:%M:%S')} =====\n".encode())

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def log_tail(self, max_chars: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError as e:
            return f"<no log: {e}>"


class Gates:
    """The gates of one test: stopped at the end, logs copied to .work/, tails printed on failure."""

    def __init__(self, tmp: Path, test_name: str) -> None:
        self.tmp = tmp
        self.test_name = test_name
        self.all: list[LocalGate] = []

    def make(self, name: str, **kw: Any) -> LocalGate:
        kw.setdefault("port", free_port())
        port = kw["port"]
        kw.setdefault("public_url", f"http://127.0.0.1:{port}")
        g = LocalGate(name=name, tmp=self.tmp / name, **kw)
        self.all.append(g)
        return g

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            for g in self.all:
                print(f"\n----- {g.name} log (tail; full log {g.log_path}) -----\n{g.log_tail()}")
            raise

    def close(self) -> None:
        for g in self.all:
            g.stop()
            try:
                WORK_DIR.mkdir(exist_ok=True)
                shutil.copyfile(g.log_path, WORK_DIR / f"mcpgate-local-{self.test_name}-{g.name}.log")
            except OSError:
                pass


@pytest.fixture
def gates(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Gates]:
    gs = Gates(tmp_path, re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name))
    try:
        yield gs
    finally:
        gs.close()


# ====================================================================== OAuth client side
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce() -> tuple[str, str]:
    verifier = b64url(secrets.token_bytes(48))
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def jwt_header(token: str) -> dict:
    h = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))


def show(r: httpx2.Response) -> str:
    """A response as the bug report needs it: request line, status, headers of interest, body."""
    req = r.request
    body = req.content.decode("utf-8", "replace") if req.content else ""
    body = re.sub(r"(password=)[^&]*", r"\1***", body)
    hdrs = {k: v for k, v in r.headers.items() if k.lower() in ("location", "www-authenticate", "content-type", "set-cookie", "cache-control")}
    return f"{req.method} {req.url} [{body[:600]}] -> {r.status_code} {hdrs} {r.text[:800]}"


def register(base: str, name: str) -> str:
    r = httpx2.post(f"{base}/register", timeout=HTTP_TIMEOUT, json={
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "client_name": name,
    })
    assert r.status_code == 201, f"DCR failed: {show(r)}"
    body = r.json()
    assert body.get("client_id"), f"DCR response without client_id: {body}"
    return body["client_id"]


def token_request(base: str, form: dict[str, str], client: httpx2.Client | None = None) -> httpx2.Response:
    if client is not None:
        return client.post(f"{base}/token", data=form)
    return httpx2.post(f"{base}/token", data=form, timeout=HTTP_TIMEOUT)


def redeem(base: str, client_id: str, code: str, verifier: str, resource: str) -> httpx2.Response:
    return token_request(base, {
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": REDIRECT_URI, "client_id": client_id, "resource": resource,
    })


def refresh(base: str, client_id: str, refresh_token: str, client: httpx2.Client | None = None) -> httpx2.Response:
    return token_request(base, {"grant_type": "refresh_token", "refresh_token": refresh_token,
                                "client_id": client_id}, client)


def token_ok(r: httpx2.Response, what: str) -> dict:
    assert r.status_code == 200, f"{what}: {show(r)}"
    assert r.headers.get("content-type", "").startswith("application/json"), f"{what}: {show(r)}"
    tok = r.json()
    for k in ("access_token", "token_type", "expires_in", "refresh_token"):
        assert k in tok, f"{what}: no {k} in {tok}"
    assert tok["token_type"].lower() == "bearer", tok
    assert isinstance(tok["expires_in"], int) and 0 < tok["expires_in"] <= 3600, tok
    assert "calc" in tok.get("scope", "calc").split(), f"{what}: scope {tok.get('scope')!r} lacks calc"
    return tok


def invalid_grant(r: httpx2.Response, what: str) -> None:
    assert r.status_code == 400, f"{what}: expected 400 invalid_grant: {show(r)}"
    assert r.json().get("error") == "invalid_grant", f"{what}: {show(r)}"


# ---------------------------------------------------------------------- the user's browser
@dataclass
class _Form:
    action: str
    method: str
    inputs: list[dict[str, str]] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self._cur: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "form":
            self._cur = _Form(a.get("action", ""), (a.get("method") or "get").lower())
            self.forms.append(self._cur)
        elif tag in ("input", "button") and self._cur is not None:
            a.setdefault("type", "text" if tag == "input" else "submit")
            a["_tag"] = tag
            self._cur.inputs.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._cur = None


def _form(html: str, action_path: str, where: str) -> _Form:
    p = _Forms()
    p.feed(html)
    for f in p.forms:
        if urllib.parse.urlsplit(f.action).path == action_path:
            assert f.method == "post", f"{where}: form to {action_path} is not method=post: {f}"
            return f
    raise AssertionError(f"{where}: no <form action={action_path!r}> in the page; forms: {p.forms}\n{html[:1500]}")


def _hidden(form: _Form, where: str, *required: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in form.inputs:
        name = i.get("name")
        if not name:
            continue
        if i["type"].lower() == "hidden":
            out[name] = i.get("value", "")
        elif i["type"].lower() in ("checkbox", "radio") and "checked" in i:
            out[name] = i.get("value", "on")
    for r in required:
        assert out.get(r), f"{where}: hidden input {r!r} missing or empty in {form.inputs}"
    return out


def _on(base: str, location: str) -> str:
    """Resolve a Location against the instance being driven. An absolute URL on another origin
    (e.g. the shared public_url) is sent to this instance, as a load balancer would."""
    u = urllib.parse.urlsplit(urllib.parse.urljoin(base + "/", location))
    b = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit((b.scheme, b.netloc, u.path, u.query, ""))


class _Browser:
    """A user agent with its own cookie jar, driving mcpgate's /authorize -> login -> consent."""

    def __init__(self) -> None:
        self.http = httpx2.Client(timeout=HTTP_TIMEOUT, follow_redirects=False,
                                  headers={"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"})

    def close(self) -> None:
        self.http.close()

    def authorize(self, base: str, params: dict[str, str], user: str, password: str = PASSWORD) -> dict[str, str]:
        """Log in and approve; return the query of the redirect to the client's redirect_uri."""
        r = self.http.get(f"{base}/authorize", params=params)
        assert r.status_code == 200 and "text/html" in r.headers.get("content-type", ""), f"authorize: {show(r)}"
        login = _form(r.text, "/login", "login page")
        fields = _hidden(login, "login page", "request", "csrf")
        names = {i.get("name") for i in login.inputs}
        assert {"username", "password"} <= names, f"login form lacks username/password inputs: {login.inputs}"
        fields.update(username=user, password=password)
        r = self.http.post(_on(base, login.action), data=fields)
        assert r.status_code == 303, f"login: {show(r)}"
        loc = urllib.parse.urlsplit(r.headers["location"])
        assert loc.path == "/consent" and "request" in urllib.parse.parse_qs(loc.query), f"login: {show(r)}"
        r = self.http.get(_on(base, r.headers["location"]))
        assert r.status_code == 200 and "text/html" in r.headers.get("content-type", ""), f"consent page: {show(r)}"
        consent = _form(r.text, "/consent", "consent page")
        fields = _hidden(consent, "consent page", "request", "csrf")
        fields["decision"] = "approve"
        r = self.http.post(_on(base, consent.action), data=fields)
        assert r.status_code == 303, f"consent: {show(r)}"
        final = r.headers["location"]
        assert final.split("?", 1)[0] == REDIRECT_URI, f"consent: not redirected to the client: {show(r)}"
        q = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(final).query).items()}
        assert "code" in q, f"no code in the redirect {final}"
        return q


def authorize_code(base: str, issuer: str, client_id: str, user: str) -> tuple[str, str]:
    """Run the front channel on `base` as `user`; return (code, verifier). Checks state and iss."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(16)
    browser = _Browser()
    try:
        q = browser.authorize(base, {
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
            "scope": SCOPE, "resource": f"{issuer}/mcp",
        }, user)
    finally:
        browser.close()
    assert q.get("state") == state, f"state not echoed: {q}"
    assert q.get("iss") == issuer, f"iss {q.get('iss')!r} != issuer {issuer!r} (RFC 9207)"
    return q["code"], verifier


# ---------------------------------------------------------------------- /mcp with the token
def _rpc_json(r: httpx2.Response) -> dict:
    if r.headers.get("content-type", "").startswith("application/json"):
        return r.json()
    data = [ln[5:].strip() for ln in r.text.splitlines() if ln.startswith("data:") and ln[5:].strip()]
    assert data, f"no JSON-RPC message in {show(r)}"
    return json.loads(data[-1])


def mcp_add(base: str, access_token: str, a: int = 2, b: int = 3) -> None:
    """initialize + notifications/initialized + tools/call add on `base`/mcp with the token."""
    h = {"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": f"Bearer {access_token}"}
    with httpx2.Client(timeout=HTTP_TIMEOUT) as c:
        r = c.post(f"{base}/mcp", headers=h, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": LEGACY_VERSION, "capabilities": {},
            "clientInfo": {"name": "mcpgate-e2e-local-durability", "version": "1"}}})
        assert r.status_code == 200, f"initialize with the access token: {show(r)}"
        assert "result" in _rpc_json(r), show(r)
        sid = r.headers.get("mcp-session-id")
        assert sid, f"initialize gave no Mcp-Session-Id: {dict(r.headers)}"
        h = {**h, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY_VERSION}
        n = c.post(f"{base}/mcp", headers=h, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert n.status_code == 202, f"notifications/initialized: {show(n)}"
        r = c.post(f"{base}/mcp", headers=h, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                   "params": {"name": "add", "arguments": {"a": a, "b": b}}})
        assert r.status_code == 200, f"tools/call add: {show(r)}"
        msg = _rpc_json(r)
        assert "result" in msg and not msg["result"].get("isError"), f"tools/call add: {msg}"
        assert msg["result"]["content"][0]["text"] == str(a + b), msg
        c.delete(f"{base}/mcp", headers=h)


def jwks_kids(base: str) -> set[str] | None:
    """The kids of the AS's JWKS (via its RFC 8414 metadata), or None when it publishes none."""
    r = httpx2.get(f"{base}/.well-known/oauth-authorization-server", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"AS metadata: {show(r)}"
    uri = r.json().get("jwks_uri")
    if not uri:
        return None
    j = httpx2.get(_on(base, uri), timeout=HTTP_TIMEOUT)
    assert j.status_code == 200, f"JWKS: {show(j)}"
    return {k["kid"] for k in j.json()["keys"]}


# ====================================================================== SQLite: kill -9
def test_sqlite_kill9_keeps_codes_tokens_and_keys(gates: Gates) -> None:
    gate = gates.make("sqlite", local_extra=["access_token_ttl_secs = 3600", "refresh_reuse_grace_secs = 30"])
    with gates.logs_on_failure():
        gate.add_user("alice")
        gate.start()
        issuer = gate.public_url
        kids0 = jwks_kids(gate.base)

        # 1. A code issued before the crash redeems after it.
        client_id = register(gate.base, "durability-sqlite")
        code, verifier = authorize_code(gate.base, issuer, client_id, "alice")
        gate.kill9()
        gate.start()
        t_first = time.monotonic()
        tok = token_ok(redeem(gate.base, client_id, code, verifier, f"{issuer}/mcp"),
                       "code issued before kill -9, redeemed after the restart")
        mcp_add(gate.base, tok["access_token"])
        key_file = gate.data / "mcpgate.key"
        assert key_file.is_file() and key_file.stat().st_size > 0, f"no generated encryption key at {key_file}"

        # 2. The same-client retry of that code gives the same response, also across a crash
        #    (the first response is stored sealed in the database, not held in memory).
        gate.kill9()
        gate.start()
        if time.monotonic() - t_first < 8:
            r = redeem(gate.base, client_id, code, verifier, f"{issuer}/mcp")
            assert r.status_code == 200 and r.json() == tok, (
                f"retry of the same code within the window after kill -9 must return the first response: {show(r)}")

        # 3. Tokens issued before a crash work after it: the access token on /mcp (the signing
        #    key was loaded, not regenerated), the refresh token at /token.
        gate.kill9()
        gate.start()
        kids1 = jwks_kids(gate.base)
        if kids0 is not None:
            assert kids1 == kids0, f"signing keys changed across kill -9 + restart: {kids0} -> {kids1}"
            assert jwt_header(tok["access_token"]).get("kid") in kids1, (jwt_header(tok["access_token"]), kids1)
        mcp_add(gate.base, tok["access_token"], 20, 22)
        new = token_ok(refresh(gate.base, client_id, tok["refresh_token"]), "refresh after kill -9 + restart")
        assert new["refresh_token"] != tok["refresh_token"], "refresh token not rotated"
        mcp_add(gate.base, new["access_token"], 1, 1)

        # 4. The in-grace retry of the rotated refresh token gives the same response, also after
        #    a crash (grace 30 s here); the new refresh token then keeps rotating.
        gate.kill9()
        gate.start()
        r = refresh(gate.base, client_id, tok["refresh_token"])
        assert r.status_code == 200 and r.json() == new, (
            f"in-grace retry of a rotated refresh token after kill -9 must return the first response: {show(r)}")
        newer = token_ok(refresh(gate.base, client_id, new["refresh_token"]), "refresh of the rotated token")
        mcp_add(gate.base, newer["access_token"], 4, 5)


def test_sqlite_kill9_during_refresh_load_breaks_no_chain(gates: Gates) -> None:
    """kill -9 while several clients rotate their refresh tokens back to back. Whatever was in
    flight (committed or not), every client's retry of the last token it sent succeeds after the
    restart (the stored response within the grace window, or a fresh rotation), and the chain
    then goes on: no family is revoked by a crash."""
    gate = gates.make("sqlite-load", local_extra=["access_token_ttl_secs = 3600", "refresh_reuse_grace_secs = 30"])
    with gates.logs_on_failure():
        gate.add_user("alice")
        gate.start()
        chains: list[dict[str, Any]] = []
        for i in range(4):
            cid = register(gate.base, f"durability-load-{i}")
            code, verifier = authorize_code(gate.base, gate.public_url, cid, "alice")
            tok = token_ok(redeem(gate.base, cid, code, verifier, f"{gate.public_url}/mcp"), f"chain {i}: code")
            chains.append({"i": i, "cid": cid, "rt": tok["refresh_token"], "n": 0})
        stop = threading.Event()

        def rotate(ch: dict[str, Any]) -> None:
            with httpx2.Client(timeout=5) as c:
                while not stop.is_set():
                    try:
                        r = refresh(gate.base, ch["cid"], ch["rt"], c)
                    except httpx2.HTTPError as e:  # the process died under this request
                        ch["lost"] = repr(e)
                        return
                    if r.status_code != 200:
                        ch["bad"] = show(r)
                        return
                    ch["rt"] = r.json()["refresh_token"]
                    ch["n"] += 1

        threads = [threading.Thread(target=rotate, args=(ch,)) for ch in chains]
        for t in threads:
            t.start()
        time.sleep(1.5)
        gate.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        for ch in chains:
            assert "bad" not in ch, f"chain {ch['i']}: a refresh failed before the crash: {ch['bad']}"
            assert ch["n"] > 0, f"chain {ch['i']}: no refresh succeeded in 1.5 s ({ch})"
        print("rotations before the crash:", [ch["n"] for ch in chains],
              "requests cut by it:", sum("lost" in ch for ch in chains))

        gate.start()
        for ch in chains:
            again = token_ok(refresh(gate.base, ch["cid"], ch["rt"]),
                             f"chain {ch['i']}: retry of the last refresh token sent before kill -9")
            nxt = token_ok(refresh(gate.base, ch["cid"], again["refresh_token"]),
                           f"chain {ch['i']}: the next rotation after the crash")
            mcp_add(gate.base, nxt["access_token"], ch["i"], 10)


# ====================================================================== PostgreSQL: two processes
def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _psql() -> str | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: -int(p.parent.name) if p.parent.name.isdigit() else 0):
        if (d / "psql").exists():
            return str(d / "psql")
    return shutil.which("psql")


def _with_db(url: str, db: str) -> str:
    u = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, f"/{db}", u.query, u.fragment))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on MCPGATE_TEST_POSTGRES_URL's server, dropped afterwards."""
    url = os.environ.get("MCPGATE_TEST_POSTGRES_URL", "").strip()
    if not url:
        msg = ("MCPGATE_TEST_POSTGRES_URL is not set: the PostgreSQL durability test needs a PostgreSQL "
               "server (scripts/test.sh starts a throwaway one; by hand: "
               "export MCPGATE_TEST_POSTGRES_URL=$(scripts/pg-throwaway.sh start))")
        if _ci():
            pytest.fail(msg + " -- and CI is set, where this test must run")
        pytest.skip(msg)
    psql = _psql()
    if psql is None:
        pytest.fail("psql not found (needed to create a fresh database); install postgresql-client")
    db = f"mcpgate_e2e_{os.getpid()}_{secrets.token_hex(4)}"
    env = dict(os.environ, PGCONNECT_TIMEOUT="10")

    def sql(statement: str) -> None:
        r = subprocess.run([psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", statement],
                           capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT)
        assert r.returncode == 0, f"psql {statement!r} failed ({r.returncode}): {r.stderr}"

    sql(f"CREATE DATABASE {db}")
    try:
        yield _with_db(url, db)
    finally:
        sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


GRACE = 5  # refresh_reuse_grace_secs of the PostgreSQL test (the races take milliseconds)
RACES = 6


def _race(a: LocalGate, b: LocalGate, client_id: str, rt: str) -> list[httpx2.Response]:
    """POST the same refresh to A and B at the same moment (warm connections, one barrier)."""
    clients = [httpx2.Client(timeout=HTTP_TIMEOUT) for _ in range(2)]
    for c, g in zip(clients, (a, b)):
        assert c.get(f"{g.base}/healthz").status_code == 200  # open the connection beforehand
    barrier = threading.Barrier(2)
    out: list[Any] = [None, None]

    def go(i: int, g: LocalGate) -> None:
        try:
            barrier.wait(timeout=10)
            out[i] = refresh(g.base, client_id, rt, clients[i])
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            out[i] = e

    threads = [threading.Thread(target=go, args=(i, g)) for i, g in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for c in clients:
        c.close()
    for i, r in enumerate(out):
        assert isinstance(r, httpx2.Response), f"racing refresh on {(a, b)[i].name} failed: {r!r}"
    return out


def test_postgres_two_processes_share_state_and_race_refresh(gates: Gates, pg_url: str) -> None:
    port_a, port_b = free_port(), free_port()
    public = f"http://127.0.0.1:{port_a}"
    local = ["access_token_ttl_secs = 3600", f"refresh_reuse_grace_secs = {GRACE}"]
    a = gates.make("pg-a", port=port_a, public_url=public, store_url=pg_url, local_extra=local)
    with gates.logs_on_failure():
        a.add_user("alice")
        a.start()
        key = a.data / "mcpgate.key"
        assert key.is_file(), f"A generated no encryption key at {key}"
        b = gates.make("pg-b", port=port_b, public_url=public, store_url=pg_url,
                       local_extra=[f"encryption_key_file = {json.dumps(str(key))}", *local],
                       http_extra=[f'allowed_hosts = ["127.0.0.1:{port_b}"]'])
        b.start()
        if (ka := jwks_kids(a.base)) is not None:
            assert jwks_kids(b.base) == ka, "A and B publish different signing keys from one database"

        # Register on A, log in and consent on B, redeem on A; A's token works on B and A.
        client_id = register(a.base, "durability-pg")
        code, verifier = authorize_code(b.base, public, client_id, "alice")
        tok = token_ok(redeem(a.base, client_id, code, verifier, f"{public}/mcp"), "code from B redeemed on A")
        mcp_add(b.base, tok["access_token"])
        mcp_add(a.base, tok["access_token"], 5, 5)

        # Refresh on B with A's refresh token; the result works on A.
        cur = token_ok(refresh(b.base, client_id, tok["refresh_token"]), "A's refresh token rotated on B")
        mcp_add(a.base, cur["access_token"], 7, 8)
        first_rotated = tok["refresh_token"]

        # Concurrent refreshes of one refresh token on A and B.
        outcomes = []
        for i in range(RACES):
            ra, rb = _race(a, b, client_id, cur["refresh_token"])
            for who, r in (("A", ra), ("B", rb)):
                assert r.status_code < 500, f"race {i}: {who} answered 5xx: {show(r)}"
            ok = [r for r in (ra, rb) if r.status_code == 200]
            if len(ok) == 2:
                assert ra.json() == rb.json(), (
                    f"race {i}: both refreshes succeeded with different responses (two live refresh tokens "
                    f"from one): A {show(ra)}\nB {show(rb)}")
                outcomes.append("both-identical")
            elif len(ok) == 1:
                loser = rb if ok[0] is ra else ra
                invalid_grant(loser, f"race {i}: the losing refresh")
                outcomes.append("one-invalid_grant")
            else:
                raise AssertionError(f"race {i}: neither refresh succeeded (family revoked by a race?):\n"
                                     f"A {show(ra)}\nB {show(rb)}")
            live = token_ok(ok[0], f"race {i}")
            assert live["refresh_token"] != cur["refresh_token"], f"race {i}: not rotated"
            # Exactly one live refresh token: the one handed out works (on the other instance
            # each time), and its access token works on /mcp.
            g = (a, b)[i % 2]
            cur = token_ok(refresh(g.base, client_id, live["refresh_token"]),
                           f"race {i}: the single refresh token that came out of the race, on {g.name}")
            mcp_add((b, a)[i % 2].base, live["access_token"], i, 1)
        print(f"race outcomes: {outcomes}")

        # After the grace window a replay of a rotated token revokes the whole family, seen by both.
        time.sleep(GRACE + 2)
        invalid_grant(refresh(b.base, client_id, first_rotated), "replay of a rotated refresh token after the grace")
        invalid_grant(refresh(a.base, client_id, cur["refresh_token"]),
                      "the family's live refresh token after the replay (family must be revoked)")
