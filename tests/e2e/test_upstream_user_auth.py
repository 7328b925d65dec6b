"""Per-user upstream authorization (`user_auth`, issue 20 item 2), end to end with real components:

- the upstream: FastMCP 4.1.2 (bench/.venv, as test_doctor.py) as an OAuth resource server only
  (`whoami_upstream.py`): it verifies the e2e IdP's RS256 JWTs (`aud` = its own URL, scope
  `whoami`) and serves RFC 9728 metadata naming the IdP; its tool `whoami` returns the token's
  `sub`, `aud`, `client_id`, `azp`;
- the IdP: oidc-provider (idp/server.mjs) with DCR and resource indicators; the upstream's URL is
  added as a JWT resource through its control API;
- mcpgate in local mode (users alice and bob), the upstream with `user_auth = true` and nothing
  else: mcpgate discovers the IdP from the upstream's metadata and registers itself there (DCR);
- the clients: the Python SDK (mcp 2.3.0) in `legacy` mode (2025-11-25, a session) with and
  without an elicitation callback, and in its default mode (2026-07-28, stateless) with one; the
  TypeScript SDK 1.32.2 (`ts_connect_first.mjs`, no elicitation capability);
- the browsers: Debian's Chromium, headless, driven by puppeteer-core (`browser_connect.mjs`),
  one browser context per user: alice and bob sign in to mcpgate on its own pages (typing and
  clicking), and alice's context, holding her mcpgate session, follows the connect link through
  the IdP's sign-in and consent pages back to mcpgate's callback.

What it shows: a call before connecting gets -32042 (no callback; the TS SDK) or a URL
elicitation (2025-11-25 with the callback: the call waits and then returns the result) or an
`input_required` result (2026-07-28: the SDK retries with mcpgate's sealed `requestState`);
bob's browser is refused at alice's link; `whoami` sees alice's own `sub` at the IdP and
`aud` = the upstream's URL (RFC 8707); `mcpgate connections revoke` makes the next call ask again.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitResult

from conftest import E2E_DIR, NODE22, node_env, run
from idp_fixtures import AuthResult, start_idp
from local_fixtures import LocalGate
from mcpgate_process import free_port, stop_process, upstream_toml
from rs_fixtures import ALL_SCOPES

REPO_ROOT = E2E_DIR.parent.parent
FASTMCP_PYTHON = Path(os.environ.get("FASTMCP_PYTHON", REPO_ROOT / "bench" / ".venv" / "bin" / "python"))
TOOL = "who__whoami"
TIMEOUT = 60


# ====================================================================== fixtures
@pytest.fixture
def idp(tmp_path: Path):
    with start_idp(tmp_path / "idp") as i:
        yield i


@pytest.fixture
def whoami_url(tmp_path: Path, idp):
    """The FastMCP resource server on a free port; the IdP knows its URL as a JWT resource."""
    if not FASTMCP_PYTHON.exists():
        assert not os.environ.get("CI"), f"FastMCP missing at {FASTMCP_PYTHON}: scripts/e2e-install.sh installs it"
        pytest.skip(f"FastMCP not installed at {FASTMCP_PYTHON} (bench/install.sh, or set FASTMCP_PYTHON)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    idp.add_resource(url, scope="whoami")
    log = open(tmp_path / "whoami.log", "wb")
    proc = subprocess.Popen([str(FASTMCP_PYTHON), str(E2E_DIR / "whoami_upstream.py"), str(port),
                             "--issuer", idp.issuer, "--jwks-uri", idp.jwks_uri],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        prm = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
        while True:
            try:
                with urllib.request.urlopen(prm, timeout=2) as r:
                    assert idp.issuer in json.loads(r.read())["authorization_servers"][0]
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "whoami.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def gw(local_factory, whoami_url: str) -> LocalGate:
    return local_factory(users={"alice": None, "bob": None}, extra_toml=upstream_toml("who", url=whoami_url, user_auth=True))


# ====================================================================== helpers
CHROMIUM = Path(os.environ.get("MCPGATE_CHROMIUM", "/usr/bin/chromium"))
REDIRECT = "http://127.0.0.1:9/callback"


class Chromium:
    """browser_connect.mjs: Chromium with one context (cookie jar) per user; one JSON line per command."""

    def __init__(self, log: Path) -> None:
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([str(NODE22), str(E2E_DIR / "browser_connect.mjs"), str(CHROMIUM)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=node_env(), cwd=E2E_DIR, start_new_session=True)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 45)
        assert ready, f"the browser did not answer {cmd['op']} within 45 s"
        answer = json.loads(self.proc.stdout.readline() or b'{"error": "the browser ended"}')
        assert "error" not in answer, answer["error"]
        return answer

    def close(self) -> None:
        try:  # closes Chromium and ends; stop_process is the fallback
            self.proc.stdin.write(b'{"op": "quit"}\n')
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        stop_process(self.proc)
        self.log.close()


@pytest.fixture
def chromium(tmp_path: Path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/e2e-install.sh as root (apt-get install chromium)")
    browser = Chromium(tmp_path / "browser_connect.log")
    try:
        yield browser
    finally:
        browser.close()


def sign_in(gw: LocalGate, chromium: Chromium, user: str) -> str:
    """`user` signs in to mcpgate in their Chromium context (which keeps the session); their token."""
    client = gw.register(redirect_uris=[REDIRECT], client_name=f"e2e-{user}")
    url, state, verifier = gw.authorization_url(client["client_id"], REDIRECT, scope=ALL_SCOPES)
    final = chromium.ask(op="sign_in", who=user, url=url, redirect=REDIRECT, username=user,
                         password=gw.users[user])["callback"]
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(final).query))
    assert params.get("state") == state, final
    status, tok = gw.exchange_code(AuthResult(final, params, verifier, state, REDIRECT, []), client["client_id"])
    assert status == 200, (status, tok)
    return tok["access_token"]


def follow_link(gw: LocalGate, chromium: Chromium, who: str, link: str, idp_user: str) -> dict:
    """`who`'s Chromium follows a connect link to the end (IdP sign-in as `idp_user`)."""
    return chromium.ask(op="connect", who=who, url=link, idp_user=idp_user, done=f"{gw.base_url}/connect/callback")


def connect(gw: LocalGate, chromium: Chromium, link: str, idp_user: str) -> None:
    page = follow_link(gw, chromium, "alice", link, idp_user)
    assert page["status"] == 303 and page["url"].startswith(f"{gw.base_url}/connect/callback"), page
    assert "connected" in page["text"].lower(), page


def call_whoami(gw: LocalGate, token: str, *, mode: str, elicit=None):
    """One `tools/call` of who__whoami with the Python SDK in `mode`; the result or the MCPError."""

    async def flow():
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(TIMEOUT)) as http:
            with anyio.fail_after(TIMEOUT):
                kw = {"elicitation_callback": elicit} if elicit else {}
                async with Client(streamable_http_client(gw.mcp_url, http_client=http), mode=mode, cache=None,
                                  **kw) as client:
                    try:
                        return client.protocol_version, await client.call_tool(TOOL, {})
                    except MCPError as e:
                        return client.protocol_version, e

    return anyio.run(flow)


def url_of_32042(err) -> str:
    assert isinstance(err, MCPError) and err.code == -32042, err
    e = err.data["elicitations"][0]
    assert e["mode"] == "url" and e["elicitationId"], e
    return e["url"]


def whoami(result) -> dict:
    assert not isinstance(result, Exception) and not result.is_error, result
    return result.structured_content.get("result", result.structured_content)


# ====================================================================== the test
def test_connect_first_in_every_client_shape_then_whoami_and_revoke(gw: LocalGate, idp, whoami_url: str,
                                                                     chromium: Chromium):
    alice_token = sign_in(gw, chromium, "alice")
    sign_in(gw, chromium, "bob")

    # (a) The Python SDK, 2025-11-25 without an elicitation callback: -32042 with the link.
    version, err = call_whoami(gw, alice_token, mode="legacy")
    assert version == "2025-11-25", version
    link = url_of_32042(err)
    assert link.startswith(f"{gw.base_url}/connect/who?e="), link

    # (b) The TypeScript SDK (no elicitation capability): -32042 too.
    proc = run([E2E_DIR / "node_modules" / "node" / "bin" / "node", E2E_DIR / "ts_connect_first.mjs",
                gw.mcp_url, alice_token, TOOL], timeout=30, env=node_env(), cwd=E2E_DIR)
    ts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert ts.get("error", {}).get("code") == -32042, (ts, proc.stderr[-2000:])
    assert ts["error"]["data"]["elicitations"][0]["url"].startswith(f"{gw.base_url}/connect/who?e="), ts

    # (d) Bob's browser, signed in to mcpgate as bob, is refused at alice's link.
    page = follow_link(gw, chromium, "bob", link, "bob-at-idp")
    assert page["status"] == 403 and page["url"] == link, page
    assert "another mcpgate user" in page["text"], page
    assert not idp.counts()["authorize"], "nothing reached the IdP"

    # (a, c) 2025-11-25 with a callback: mcpgate sends elicitation/create (mode url); the callback
    # has alice's browser complete the upstream sign-in; the waiting call then returns its result.
    asked: list = []

    async def elicit_connecting(context, params):
        asked.append(params)
        await anyio.to_thread.run_sync(lambda: connect(gw, chromium, params.url, "alice-at-idp"))
        return ElicitResult(action="accept")

    version, result = call_whoami(gw, alice_token, mode="legacy", elicit=elicit_connecting)
    assert version == "2025-11-25"
    assert len(asked) == 1 and asked[0].mode == "url" and asked[0].url.startswith(f"{gw.base_url}/connect/who?e=")
    me = whoami(result)
    assert me["sub"] == "alice-at-idp", me
    assert me["aud"] == whoami_url or me["aud"] == [whoami_url], me  # RFC 8707: the upstream's own URL
    # The token is mcpgate's, as the IdP's client it registered by DCR, for alice's grant there.
    mcpgate_client = me["client_id"] or me["azp"]
    assert idp.grants(mcpgate_client).get("authorization_code") == 1, (me, idp.counts())
    assert "whoami" in (me["scope"] or "").split(), me

    # Connected: the next call (no callback) just runs.
    _, result = call_whoami(gw, alice_token, mode="legacy")
    assert whoami(result)["sub"] == "alice-at-idp"

    # (e) The operator revokes the connection: the next call asks again.
    r = gw.cli("connections", "revoke", "--user", "alice", "--upstream", "who")
    assert r.returncode == 0, (r.stdout, r.stderr)
    _, err = call_whoami(gw, alice_token, mode="legacy")
    url_of_32042(err)

    # (a, c) 2026-07-28 (the SDK's default mode, stateless): an input_required result with a URL
    # elicitation; the SDK runs the callback, retries with mcpgate's requestState and gets the result.
    asked.clear()
    version, result = call_whoami(gw, alice_token, mode="auto", elicit=elicit_connecting)
    assert version == "2026-07-28", version
    assert len(asked) == 1 and asked[0].mode == "url", asked
    me = whoami(result)
    assert me["sub"] == "alice-at-idp" and (me["aud"] == whoami_url or me["aud"] == [whoami_url]), me
