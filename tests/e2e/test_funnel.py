"""The auth funnel with a real client: the Python SDK (mcp 2.3.0) signs in through mcpgate's own
login and consent pages (local_browser.py, as in test_local_mode.py) twice, once denying the
consent and once approving it. `mcpgate funnel --json` (a separate process reading the store) then
shows each attempt's step series and the reason the first one stopped; /metrics counts the same
steps by client, step and reason; the audit file (`[telemetry] audit`) has the steps as JSON lines
and none of the flow's secrets. A machine client (the SDK's `ClientCredentialsOAuthProvider`) with a
wrong and then the right secret: each request is a `client_credentials` attempt, the first stopped
with `invalid_client`, the second joined by its token's first MCP call.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from local_fixtures import LocalGate
from oauth_clients import AgentBrowser, MemoryStorage, sdk_provider, tool_text

TIMEOUT = 60


def run_sdk(g: LocalGate, browser: AgentBrowser, storage: MemoryStorage) -> str:
    """The SDK's whole flow and one tool call; returns the call's text."""
    provider = sdk_provider(g.mcp_url, browser, storage, client_name="e2e-funnel")

    async def flow() -> str:
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20)) as http:
            with anyio.fail_after(TIMEOUT):
                async with Client(streamable_http_client(g.mcp_url, http_client=http), cache=None) as client:
                    return tool_text(await client.call_tool("add", {"a": 2, "b": 3}))

    return anyio.run(flow)


def funnel_json(g: LocalGate, want, deadline_s: float = 15) -> dict:
    """`mcpgate funnel --json` until `want(attempts)` holds (the server writes rows in the background)."""
    end = time.monotonic() + deadline_s
    while True:
        r = g.cli("funnel", "--since", "1h", "--json")
        assert r.returncode == 0, f"mcpgate funnel exited {r.returncode}\n{r.stdout}\n{r.stderr}"
        shown = json.loads(r.stdout)
        if want(shown["attempts"]) or time.monotonic() > end:
            return shown
        time.sleep(0.2)


def series(attempt: dict) -> list[str]:
    return [f"{s['step']}:{s['reason']}" if s.get("reason") else s["step"] for s in attempt["steps"]]


def test_a_denied_and_a_successful_sdk_flow_show_their_step_series(local_factory, tmp_path: Path):
    audit_path = tmp_path / "audit.jsonl"
    g = local_factory(extra_toml=["[telemetry]", f'audit = "{audit_path}"'])

    # 1. The user denies on the consent page: the SDK's sign-in fails.
    denied = AgentBrowser("alice", authorize=g.browser("alice", deny=True))
    with pytest.raises(BaseException):
        run_sdk(g, denied, MemoryStorage())
    assert "error=access_denied" in denied.finals[0], denied.finals

    # 2. The same user approves (a new registration: a fresh SDK storage).
    storage = MemoryStorage()
    ok = AgentBrowser("alice", authorize=g.browser("alice"))
    assert run_sdk(g, ok, storage) == "5"
    access = storage.tokens.access_token

    def done(attempts: list[dict]) -> bool:
        return any("mcp_call" in series(a) for a in attempts) and any(
            a.get("stopped") == "consent_denied" for a in attempts)

    shown = funnel_json(g, done)
    attempts = shown["attempts"]
    by_series = {tuple(series(a)): a for a in attempts}
    failed = ("authorize", "sign_in", "consent:consent_denied")
    succeeded = ("authorize", "sign_in", "consent", "code_redeemed", "mcp_call")
    assert failed in by_series, json.dumps(attempts, indent=1)
    assert succeeded in by_series, json.dumps(attempts, indent=1)
    assert by_series[failed]["stopped"] == "consent_denied"
    assert "stopped" not in by_series[succeeded]
    good_client = by_series[succeeded]["client_id"]
    bad_client = by_series[failed]["client_id"]
    assert good_client != bad_client  # each SDK run registered itself
    # Each registration is a step of its client too.
    assert sum(1 for a in attempts if series(a) == ["registered"]) == 2, attempts

    # The text view: per client, the series and where it stopped.
    r = g.cli("funnel", "--client", bad_client)
    assert r.returncode == 0, r.stderr
    assert f"client {bad_client}" in r.stdout, r.stdout
    assert "authorize > sign_in > consent(consent_denied)  stopped: consent_denied" in r.stdout, r.stdout

    # The counters on /metrics, by client, step and reason.
    metrics = urllib.request.urlopen(f"{g.base_url}/metrics", timeout=10).read().decode()
    for line in (
        f'mcpgate_auth_funnel_total{{client="{bad_client}",step="consent",reason="consent_denied"}} 1',
        f'mcpgate_auth_funnel_total{{client="{good_client}",step="code_redeemed",reason="ok"}} 1',
        f'mcpgate_auth_funnel_total{{client="{good_client}",step="mcp_call",reason="ok"}} 1',
    ):
        assert line in metrics, f"{line} not in /metrics:\n" + "\n".join(
            m for m in metrics.splitlines() if "auth_funnel" in m)

    # The audit file: the same steps as JSON lines, no token and no password.
    lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert any(l.get("event") == "auth step" and l.get("reason") == "consent_denied" for l in lines), lines
    assert any(l.get("event") == "tool call" and l.get("tool") == "add" and l.get("client") == good_client
               for l in lines), lines
    text = audit_path.read_text()
    assert access not in text and g.users["alice"] not in text
    assert storage.tokens.refresh_token is None or storage.tokens.refresh_token not in text


def test_a_machine_clients_sdk_requests_are_client_credentials_attempts(local_factory):
    secret = secrets.token_urlsafe(32)
    g = local_factory(local_extra=["[[auth.local.clients]]", 'client_id = "e2e-bot"', f'client_secret = "{secret}"'])

    def run_machine(client_secret: str) -> str:
        provider = ClientCredentialsOAuthProvider(server_url=g.mcp_url, storage=MemoryStorage(),
                                                  client_id="e2e-bot", client_secret=client_secret,
                                                  issuer=g.issuer)

        async def flow() -> str:
            async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20)) as http:
                with anyio.fail_after(TIMEOUT):
                    async with Client(streamable_http_client(g.mcp_url, http_client=http), cache=None) as client:
                        return tool_text(await client.call_tool("add", {"a": 2, "b": 3}))

        return anyio.run(flow)

    with pytest.raises(BaseException):
        run_machine("not-" + secret)
    assert run_machine(secret) == "5"

    def done(attempts: list[dict]) -> bool:
        return any(series(a) == ["client_credentials", "mcp_call"] for a in attempts)

    attempts = funnel_json(g, done)["attempts"]
    shown = sorted(series(a) for a in attempts if a["client_id"] == "e2e-bot")
    assert shown == [["client_credentials", "mcp_call"], ["client_credentials:invalid_client"]], \
        json.dumps(attempts, indent=1)
    metrics = urllib.request.urlopen(f"{g.base_url}/metrics", timeout=10).read().decode()
    for line in (
        'mcpgate_auth_funnel_total{client="e2e-bot",step="client_credentials",reason="invalid_client"} 1',
        'mcpgate_auth_funnel_total{client="e2e-bot",step="client_credentials",reason="ok"} 1',
        'mcpgate_auth_funnel_total{client="e2e-bot",step="mcp_call",reason="ok"} 1',
    ):
        assert line in metrics, f"{line} not in /metrics:\n" + "\n".join(
            m for m in metrics.splitlines() if "auth_funnel" in m)
