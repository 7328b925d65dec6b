"""Real MCP clients as OAuth clients, shared by test_resource_mode.py (the IdP logs the user in),
test_local_mode.py (mcpgate logs the user in) and test_proxy_mode.py (mcpgate's consent, then the
IdP logs the user in):

- Python SDK (mcp 2.3.0): `MemoryStorage`, `AgentBrowser` (redirect/callback handlers backed by a
  scripted browser), `Wire` (every HTTP exchange), `sdk_provider(...)`, `sdk_refresh_flow(...)` (tools,
  notes, then a call after the access token expired).
- TypeScript SDK: `run_ts_oauth_client(...)` runs ts_oauth_client.mjs.
- mcp-remote 0.15.1: `run_mcp_remote(...)` runs a Python SDK stdio client through it.
- Inspector CLI 2.12.0: `run_inspector(...)`, `inspector_tokens(home)`.

The browser of mcp-remote and the Inspector is `$BROWSER`: `idp/browser` (the generic agent on an
IdP) or `local_browser.sh` (mcpgate's own login and consent pages).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

import idp_agent
from conftest import E2E_DIR, NODE22, NODE_MODULES, free_port, node_env, require_node_tools, run

TIMEOUT = 60
MCP_REMOTE = NODE_MODULES / "mcp-remote" / "dist" / "proxy.js"
INSPECTOR = NODE_MODULES / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
INSPECTOR_CALLBACK = "http://127.0.0.1:6276/oauth/callback"  # fixed: run one Inspector at a time


def tool_text(result: Any) -> str:
    """The single text content of a successful Python SDK tool result."""
    assert not result.is_error, f"tool error: {result!r}"
    assert len(result.content) == 1 and result.content[0].type == "text", result
    return result.content[0].text


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ====================================================================== Python SDK
class MemoryStorage:
    """TokenStorage in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class AgentBrowser:
    """redirect_handler / callback_handler for OAuthClientProvider, backed by a scripted browser.

    `authorize(url) -> final redirect URL` is the browser; the default is the generic IdP agent
    (idp_agent.py) logging in as `user`. `grant_only`: for the first authorization only, the user
    consents to just these scopes (the agent narrows the `scope` of the authorization request, as a
    consent screen with checkboxes would). Every authorization URL the SDK produced is kept in
    `urls`, unmodified, and every final redirect in `finals`."""

    def __init__(self, user: str, grant_only: str | None = None,
                 authorize: Callable[[str], str] | None = None) -> None:
        self.user = user
        self.grant_only = grant_only
        self.authorize = authorize or (lambda url: idp_agent.authorize(url, self.user, timeout=15))
        self.urls: list[str] = []
        self.finals: list[str] = []

    async def redirect_handler(self, url: str) -> None:
        self.urls.append(url)
        if self.grant_only is not None and len(self.urls) == 1:
            parts = urllib.parse.urlsplit(url)
            q = dict(urllib.parse.parse_qsl(parts.query))
            q["scope"] = self.grant_only
            url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q)))
        final = await anyio.to_thread.run_sync(lambda: self.authorize(url))
        self.finals.append(final)

    async def callback_handler(self) -> AuthorizationCodeResult:
        q = query(self.finals[-1])
        assert "code" in q, f"no code in the redirect: {self.finals[-1]}"
        return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))


class Wire:
    """Every HTTP exchange the SDK's httpx2 client made (MCP requests and the OAuth flow's own)."""

    def __init__(self) -> None:
        self.log: list[dict] = []

    async def on_request(self, request: httpx2.Request) -> None:
        body = request.content.decode("utf-8", "replace") if request.method == "POST" else ""
        self.log.append({"method": request.method, "url": str(request.url), "req": request,
                         "auth": request.headers.get("authorization", ""), "body": body})

    async def on_response(self, response: httpx2.Response) -> None:
        for entry in reversed(self.log):
            if entry["req"] is response.request:
                entry["status"] = response.status_code
                entry["www"] = response.headers.get("www-authenticate")
                break

    @property
    def hooks(self) -> dict:
        return {"request": [self.on_request], "response": [self.on_response]}

    def urls(self) -> list[str]:
        return [e["url"] for e in self.log]

    def token_grants(self, token_endpoint: str) -> list[tuple[str, int]]:
        out = []
        for e in self.log:
            if e["url"] == token_endpoint and e["method"] == "POST":
                out.append((dict(urllib.parse.parse_qsl(e["body"])).get("grant_type", "?"), e.get("status", 0)))
        return out


def sdk_provider(mcp_url: str, browser: AgentBrowser, storage: MemoryStorage,
                 client_name: str = "mcpgate-e2e-python-sdk") -> OAuthClientProvider:
    """A public client (DCR, auth method none) whose redirect_uri is never fetched: the browser
    stops there."""
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    return OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name=client_name,
            redirect_uris=[redirect],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )


def sdk_refresh_flow(gate: Any, provider: OAuthClientProvider, storage: MemoryStorage, wire: Wire, title: str,
                     timeout: float = TIMEOUT, mode: str = "auto") -> dict:
    """The Python SDK through `provider` against an AS gate (`mcp_url`, `token_endpoint`): the tool
    list, add, a notes round trip; then it waits for the access token to expire and calls again (the
    SDK refreshes first). Returns what it saw: tools, add, created, read, token1, expires_in,
    grants_before (token requests before the expiry), sub_after, listed, token2, last_mcp_auth,
    version. `mode` is the SDK's connect mode (`auto`: 2026-07-28 stateless; `legacy`: a session)."""

    async def flow() -> dict:
        out: dict[str, Any] = {}
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20), event_hooks=wire.hooks) as http:
            with anyio.fail_after(timeout):
                async with Client(streamable_http_client(gate.mcp_url, http_client=http), cache=None,
                                  mode=mode) as client:
                    out["version"] = client.protocol_version
                    out["tools"] = {t.name for t in (await client.list_tools()).tools}
                    out["add"] = tool_text(await client.call_tool("add", {"a": 2, "b": 3}))
                    created = json.loads(tool_text(await client.call_tool("create_note", {"title": title, "body": "py"})))
                    out["created"] = created
                    out["read"] = json.loads(tool_text(await client.call_tool("read_note", {"id": created["id"]})))
                    out["token1"] = storage.tokens.access_token
                    out["expires_in"] = storage.tokens.expires_in
                    out["grants_before"] = len(wire.token_grants(gate.token_endpoint))
                    await anyio.sleep(max(0.0, provider.context.token_expiry_time - time.time()) + 0.5)
                    out["sub_after"] = tool_text(await client.call_tool("subtract", {"a": 10, "b": 4}))
                    out["listed"] = json.loads(tool_text(await client.call_tool("list_notes", {})))["notes"]
                    out["token2"] = storage.tokens.access_token
                    out["last_mcp_auth"] = [e["auth"] for e in wire.log if e["url"] == gate.mcp_url][-1]
        return out

    return anyio.run(flow)


# ====================================================================== TypeScript SDK
def run_ts_oauth_client(mcp_url: str, *, agent: Path, user: str, password: str | None = None,
                        expire_wait_ms: int | None = None, env: dict[str, str] | None = None,
                        grant_only: str | None = None, ops: list[dict] | None = None) -> dict:
    """ts_oauth_client.mjs with `agent` (idp_agent.py or local_browser.py) as the browser; returns
    its JSON report. `expire_wait_ms`: wait for the access token to expire for real before the
    refresh step (instead of corrupting it). `grant_only`: the user consents to just these scopes
    the first time. `ops`: run these generic operations (listTools, callTool, readResource,
    getPrompt, ...; see the script) instead of the built-in toolsets' flow; the report's `ops` has
    one entry per operation, with `result` or `error` + `errorClass` + `code`."""
    require_node_tools("@modelcontextprotocol/sdk/package.json")
    cmd: list[Any] = [NODE22, E2E_DIR / "ts_oauth_client.mjs", mcp_url, "--python", sys.executable,
                      "--agent", agent, "--user", user]
    if password is not None:
        cmd += ["--password", password]
    if expire_wait_ms is not None:
        cmd += ["--expire-wait-ms", str(expire_wait_ms)]
    if grant_only is not None:
        cmd += ["--grant-only", grant_only]
    if ops is not None:
        cmd += ["--ops", json.dumps(ops)]
    timeout = 60 + (expire_wait_ms or 0) / 1000
    proc = run(cmd, timeout=timeout, env=node_env(**(env or {})), cwd=E2E_DIR)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"ts_oauth_client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1])


# ====================================================================== mcp-remote
def mcp_remote_params(mcp_url: str, config_dir: Path, browser_env: dict[str, str], *flags: str,
                      callback_port: int | None = None) -> StdioServerParameters:
    env = node_env(MCP_REMOTE_CONFIG_DIR=str(config_dir), HOME=str(config_dir), **browser_env)
    return StdioServerParameters(
        command=str(NODE22),
        args=[str(MCP_REMOTE), mcp_url, str(callback_port or free_port()), "--allow-http", "--host", "127.0.0.1",
              *(flags or ("--transport", "http-only"))],
        env=env,
    )


def run_mcp_remote(mcp_url: str, config_dir: Path, errlog_path: Path, browser_env: dict[str, str],
                   flow: Callable[[Client], Awaitable[dict]], *flags: str, timeout: float = TIMEOUT,
                   callback_port: int | None = None) -> dict:
    """A Python SDK stdio client (legacy mode) spawns mcp-remote (which does its own OAuth, with
    `$BROWSER` from `browser_env`) and runs `flow(client)`. mcp-remote's stderr goes to
    `errlog_path` (appended) and is printed when the flow fails. Pass the same `callback_port` to
    runs that share `config_dir`: mcp-remote drops its stored registration (and so cannot refresh)
    when the redirect URI's port changed."""
    require_node_tools("mcp-remote/dist/proxy.js")
    config_dir.mkdir(parents=True, exist_ok=True)
    params = mcp_remote_params(mcp_url, config_dir, browser_env, *flags, callback_port=callback_port)

    async def go() -> dict:
        with open(errlog_path, "a") as errlog, anyio.fail_after(timeout):
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                return await flow(client)

    try:
        return anyio.run(go)
    except BaseException:
        print("--- mcp-remote stderr ---\n" + errlog_path.read_text(errors="replace")[-8000:])
        raise


# ====================================================================== Inspector CLI
def inspector_env(home: Path, browser_env: dict[str, str] | None, *, persistent: bool = False) -> dict[str, str]:
    """The Inspector's environment. `browser_env` None: no browser may be opened (auto-open off,
    `$BROWSER=/bin/false`). `persistent`: OAuth state and secrets in files under `home`, so a
    later run finds the tokens (else in memory, gone with the process)."""
    home.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {"HOME": str(home)}
    if persistent:
        env.update(MCP_INSPECTOR_SECRET_STORE="file", MCP_INSPECTOR_SECRET_FILE=str(home / "secrets.json"),
                   MCP_STORAGE_DIR=str(home / "storage"))
    else:
        env["MCP_INSPECTOR_SECRET_STORE"] = "memory"
    if browser_env is None:
        env.update(MCP_AUTO_OPEN_ENABLED="false", BROWSER="/bin/false")
    else:
        env.update(MCP_AUTO_OPEN_ENABLED="true", **browser_env)
    return node_env(**env)


def run_inspector(target: str, env: dict[str, str], cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`inspector --cli TARGET ARGS... --format json --connect-timeout 30000`."""
    require_node_tools("@modelcontextprotocol/inspector/clients/launcher/build/index.js")
    cmd = [NODE22, INSPECTOR, "--cli", target, *args, "--format", "json", "--connect-timeout", "30000"]
    return run(cmd, timeout=timeout, env=env, cwd=cwd)


def inspector_result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"inspector exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    try:
        return json.loads(proc.stdout)["result"]
    except (ValueError, KeyError):
        raise AssertionError(f"inspector printed no JSON result:\n{proc.stdout}\n--- stderr ---\n{proc.stderr}") from None


def inspector_tokens(home: Path) -> dict:
    """The Inspector's stored token response for mcpgate (its file secret store)."""
    secrets = json.loads((home / "secrets.json").read_text())["secrets"]
    toks = [json.loads(v) for k, v in secrets.items() if ":tokens:" in k]
    assert len(toks) == 1, f"want one stored token set, got {list(secrets)}"
    return toks[0]
