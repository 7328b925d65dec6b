"""mcpgate in `auth.mode = "resource"` in front of a fresh oidc-provider IdP (for test_resource_mode.py).

`rs_factory(...)` picks a free port for mcpgate, starts an IdP whose `MCP_RESOURCE` is that
mcpgate's `public_url + "/mcp"`, then starts mcpgate pointing at the IdP (mcpgate discovers the
issuer at start, so the IdP must be up first). Both are stopped when the test ends. `rs` is
`rs_factory()` with the defaults. Also raw-HTTP helpers for the negative tests.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx2
import pytest

from idp_fixtures import Idp
from mcpgate_process import config_text, free_port, running_mcpgate

# What mcpgate advertises (PRM scopes_supported, 401 challenge) and which scope each tool needs.
ALL_SCOPES = "calc docs:read notes:read notes:write"
TOOL_SCOPES = {
    "add": "calc", "subtract": "calc", "multiply": "calc", "divide": "calc",
    "search": "docs:read", "fetch": "docs:read",
    "read_note": "notes:read", "list_notes": "notes:read",
    "create_note": "notes:write", "update_note": "notes:write", "delete_note": "notes:write",
}
REFETCH_SECS = 2  # jwks_refetch_interval_secs of the gates started here

ACCEPT = "application/json, text/event-stream"

LEGACY_VERSION = "2025-06-18"

# start_rs_gate's arguments for `auth.mode = "bridge"` over an IdP with its own DCR.
BRIDGE_KW: dict[str, Any] = {"mode": "bridge", "auth_extra": ["[auth.bridge]", 'registrar = "passthrough"']}


@dataclass
class RsGate:
    port: int
    base_url: str
    mcp_url: str
    resource: str
    prm_url: str
    tmp: Path
    log_path: Path
    proc: subprocess.Popen

    def log_tail(self, max_chars: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError as e:
            return f"<no log: {e}>"


@contextlib.contextmanager
def start_rs_gate(tmp: Path, port: int, issuer: str, *, introspection: bool = False,
                  refetch_secs: int = REFETCH_SECS, mode: str = "resource",
                  auth_extra: list[str] | None = None) -> Iterator[RsGate]:
    """Start mcpgate in resource mode on `port`, trusting `issuer`; stop it at the end.
    `mode` and `auth_extra` (more `[auth.*]` lines) serve bridge mode, which checks tokens the same way."""
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    auth = [
        "[auth]",
        f'mode = "{mode}"',
        "[auth.resource]",
        f"issuer = {json.dumps(issuer)}",
        f"jwks_refetch_interval_secs = {refetch_secs}",
    ]
    if introspection:
        auth += ["[auth.resource.introspection]", 'client_id = "mcpgate-rs"', 'client_secret = "mcpgate-rs-secret"']
    auth += auth_extra or []
    cfg = tmp / "mcpgate.toml"
    cfg.write_text(config_text(port, data, auth))
    log_path = tmp / "mcpgate.log"
    with running_mcpgate(cfg, port=port, log_path=log_path, cwd=tmp, what=f"mcpgate ({mode} mode)",
                         last_log_name=f"mcpgate-{mode}-last-run.log") as proc:
        yield RsGate(port, base, f"{base}/mcp", f"{base}/mcp", f"{base}/.well-known/oauth-protected-resource/mcp",
                     tmp, log_path, proc)


@dataclass
class Rs:
    idp: Idp
    gate: RsGate

    def log_tails(self) -> str:
        return f"--- mcpgate ---\n{self.gate.log_tail(8000)}\n--- IdP ---\n{self.idp.log_tail(5000)}"


@pytest.fixture
def rs_factory(idp_factory, tmp_path: Path):
    """`rs_factory(idp_env={...}, introspection=False, opaque=False, bridge=False)` -> Rs (IdP + resource-mode
    mcpgate). `opaque=True` makes the IdP issue opaque tokens for mcpgate's resource (and turns introspection
    on). `bridge=True` starts mcpgate in `auth.mode = "bridge"` with `registrar = "passthrough"` instead (its
    AS metadata, /register, /authorize and /token front the IdP). A bridge's IdP has no default resource
    (`DEFAULT_RESOURCE=`, oidc-provider as shipped): a request that reaches it without `resource` gets an
    opaque token that /mcp refuses, so the bridge must forward the client's `resource` (issue 16 item 4)."""
    made: list[Rs] = []
    with contextlib.ExitStack() as stack:
        def make(idp_env: dict[str, str] | None = None, *, introspection: bool = False, opaque: bool = False,
                 refetch_secs: int = REFETCH_SECS, bridge: bool = False) -> Rs:
            port = free_port()
            resource = f"http://127.0.0.1:{port}/mcp"
            env = dict(idp_env or {})
            if opaque:
                env["OPAQUE_RESOURCES"] = ",".join(filter(None, [env.get("OPAQUE_RESOURCES"), resource]))
                introspection = True
            if bridge:
                env.setdefault("DEFAULT_RESOURCE", "")
            idp = idp_factory(mcp_resource=resource, env=env)
            gate = stack.enter_context(start_rs_gate(tmp_path / f"gate-{len(made)}", port, idp.issuer,
                                                     introspection=introspection, refetch_secs=refetch_secs,
                                                     **(BRIDGE_KW if bridge else {})))
            made.append(Rs(idp, gate))
            return made[-1]

        make.made = made  # for the failure report hook
        yield make


@pytest.fixture
def rs(rs_factory) -> Rs:
    return rs_factory()


# ------------------------------------------------------------------------ raw HTTP helpers
def challenge(resp: httpx2.Response) -> dict[str, str]:
    """Parameters of the response's `WWW-Authenticate: Bearer ...` challenge (quoted or bare values)."""
    header = resp.headers.get("www-authenticate", "")
    assert header.startswith("Bearer "), f"not a Bearer challenge: {header!r} (status {resp.status_code})"
    out = {}
    for m in re.finditer(r'([A-Za-z_]+)=(?:"([^"]*)"|([^\s,]+))', header):
        out[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    return out


def sse_json(resp: httpx2.Response) -> Any:
    """The JSON-RPC message of a JSON or SSE response body (the last `data:` event with content)."""
    if resp.headers.get("content-type", "").startswith("application/json"):
        return resp.json()
    msgs = [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    assert msgs, f"no data event in {resp.status_code} response: {resp.text[:500]}"
    return json.loads(msgs[-1])


class McpHttp:
    """Hand-written MCP requests (legacy handshake) with an explicit bearer token."""

    def __init__(self, gate: RsGate, token: str | None, client: httpx2.Client | None = None):
        self.gate = gate
        self.token = token
        self.session_id: str | None = None
        self.http = client or httpx2.Client(timeout=15)
        self._id = 0

    def headers(self, token: str | None = None, session_id: str | None = None) -> dict[str, str]:
        h = {"Accept": ACCEPT, "Content-Type": "application/json"}
        tok = token if token is not None else self.token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        sid = session_id if session_id is not None else self.session_id
        if sid:
            h["Mcp-Session-Id"] = sid
            h["MCP-Protocol-Version"] = LEGACY_VERSION
        return h

    def post(self, body: dict, *, token: str | None = None, session_id: str | None = None,
             url: str | None = None) -> httpx2.Response:
        return self.http.post(url or self.gate.mcp_url, json=body, headers=self.headers(token, session_id))

    def request(self, method: str, params: dict | None = None, **kw) -> httpx2.Response:
        self._id += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self._id, "method": method}
        if params is not None:
            body["params"] = params
        return self.post(body, **kw)

    def initialize(self) -> httpx2.Response:
        r = self.request("initialize", {"protocolVersion": LEGACY_VERSION, "capabilities": {},
                                        "clientInfo": {"name": "mcpgate-e2e-raw", "version": "1"}})
        if r.status_code == 200:
            self.session_id = r.headers.get("mcp-session-id")
            assert self.session_id, f"initialize gave no Mcp-Session-Id: {dict(r.headers)}"
            n = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert n.status_code == 202, (n.status_code, n.text)
        return r

    def call(self, tool: str, args: dict, **kw) -> httpx2.Response:
        return self.request("tools/call", {"name": tool, "arguments": args}, **kw)

    def tool_result(self, tool: str, args: dict, **kw) -> dict:
        r = self.call(tool, args, **kw)
        assert r.status_code == 200, f"tools/call {tool}: {r.status_code} {r.headers.get('www-authenticate')} {r.text[:400]}"
        msg = sse_json(r)
        assert "result" in msg, msg
        return msg["result"]
