"""mcpgate in `auth.mode = "proxy"` in front of a fresh oidc-provider IdP (for test_proxy_mode.py).

mcpgate is the authorization server toward MCP clients (as in local mode: PRM, RFC 8414 metadata,
/register, /authorize, /token, /revoke), but users sign in at the upstream IdP: /authorize shows
mcpgate's consent page, approving sends the browser to the IdP (mcpgate's own state, nonce and
PKCE; redirect_uri = public_url + "/callback"), and /callback ends at the client's redirect_uri.

`proxy_factory(...)` picks a free port for mcpgate, starts an IdP whose static client
`mcpgate-proxy` may redirect to that mcpgate's `/callback` (`PROXY_REDIRECT_URIS`), then starts
mcpgate with the IdP as `[auth.upstream]` (mcpgate reads the IdP's discovery at start, so the IdP
must be up first). Both are stopped when the test ends. `proxy_gate` is `proxy_factory()`.

A `ProxyGate` is a `LocalGate` (the same AS helpers and logs) whose browser is the generic agent
(idp_agent.py): it presses "Allow" (or "Deny") on mcpgate's consent page, then logs in and consents
at the IdP, and follows the redirects through mcpgate's /callback to the client's redirect_uri.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idp_fixtures import PROXY_CLIENT, Idp
from local_fixtures import LocalGate, gate_factory, start_local_gate
from mcpgate_process import free_port


@dataclass
class ProxyGate(LocalGate):
    idp: Idp | None = None

    @property
    def callback_url(self) -> str:
        """Where the IdP sends the browser back (the `redirect_uri` of the upstream client)."""
        return f"{self.base_url}/callback"

    def front_channel(self, url: str, user: str, *, redirect_uri: str, deny: bool | str = False,
                      cookie_jar: Any = None, steps: list[str] | None = None) -> str:
        """mcpgate's consent page, then the IdP's login and consent pages, through idp_agent.py."""
        return self.idp.front_channel(url, user, redirect_uri=redirect_uri, deny=deny, cookie_jar=cookie_jar,
                                      steps=steps)

    def browser_env(self, user: str, log: Path, **extra: str) -> dict[str, str]:
        """`$BROWSER` = idp/browser for mcp-remote and the Inspector, signing in at the IdP as `user`."""
        return self.idp.browser_env(user, log, **extra)

    def log_tail(self, max_chars: int = 20000) -> str:
        return f"{super().log_tail(max_chars)}\n--- upstream IdP ---\n{self.idp.log_tail(6000)}"


def upstream_lines(issuer: str, extra: list[str] | None = None) -> list[str]:
    """The `[auth.upstream]` table: generic OIDC at `issuer` with the IdP's static proxy client."""
    client_id, secret = PROXY_CLIENT
    return ["[auth.upstream]", 'preset = "oidc"', f"issuer = {json.dumps(issuer)}",
            f"client_id = {json.dumps(client_id)}", f"client_secret = {json.dumps(secret)}", *(extra or [])]


@pytest.fixture
def proxy_factory(idp_factory, tmp_path: Path):
    """`proxy_factory(idp_env={...}, access_token_ttl_secs=N, upstream_extra=[...], local_extra=[...],
    separate_stdout=False)` -> a running ProxyGate (`.idp` is its IdP); all are stopped at test end."""
    def start(n: int, idp_env: dict[str, str] | None = None, *, upstream_extra: list[str] | None = None,
              **kw: Any):
        port = free_port()
        idp = idp_factory(env={"PROXY_REDIRECT_URIS": f"http://127.0.0.1:{port}/callback", **(idp_env or {})})
        return start_local_gate(tmp_path / f"proxy-{n}", port=port, users={}, mode="proxy",
                                auth_extra=upstream_lines(idp.issuer, upstream_extra), gate_cls=ProxyGate,
                                gate_kw={"idp": idp}, **kw)

    with gate_factory(start) as make:
        yield make


@pytest.fixture
def proxy_gate(proxy_factory) -> ProxyGate:
    return proxy_factory()
