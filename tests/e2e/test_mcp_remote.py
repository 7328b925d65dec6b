"""mcp-remote (npm 0.15.1), the stdio bridge Claude Desktop and others use, in front of mcpgate.

A Python SDK stdio client spawns `node mcp-remote/dist/proxy.js URL ...` (Node 22) and talks to
mcpgate through it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from conftest import EXPECTED_TOOLS, NODE22, NODE_MODULES, free_port, node_env, require_node_tools

PROXY = NODE_MODULES / "mcp-remote" / "dist" / "proxy.js"
TIMEOUT = 60


def _params(url: str, config_dir: Path, *flags: str) -> StdioServerParameters:
    env = node_env(MCP_REMOTE_CONFIG_DIR=str(config_dir), HOME=str(config_dir), BROWSER="/bin/false")
    return StdioServerParameters(
        command=str(NODE22),
        # positional callback port: a free one, so parallel runs never collide on 3334
        args=[str(PROXY), url, str(free_port()), "--allow-http", "--host", "127.0.0.1", *flags],
        env=env,
    )


async def _through_mcp_remote(url: str, tmp: Path, *flags: str) -> str:
    log_path = tmp / "mcp-remote.stderr.log"
    with open(log_path, "w") as errlog, anyio.fail_after(TIMEOUT):
        async with Client(stdio_client(_params(url, tmp / "cfg", *flags), errlog=errlog), mode="legacy") as client:
            listing = await client.list_tools()
            assert {t.name for t in listing.tools} == EXPECTED_TOOLS
            added = await client.call_tool("add", {"a": 2, "b": 3})
            assert not added.is_error, added
            assert added.content[0].text == "5"
            assert added.structured_content == {"result": 5}
            by_zero = await client.call_tool("divide", {"a": 1, "b": 0})
            assert by_zero.is_error is True, by_zero
            title = f"remote-{uuid.uuid4().hex[:8]}"
            created = await client.call_tool("create_note", {"title": title, "body": "via mcp-remote"})
            assert not created.is_error, created
            assert title in created.content[0].text
    return log_path.read_text(errors="replace")


def _run(url: str, tmp: Path, *flags: str) -> str:
    require_node_tools("mcp-remote/dist/proxy.js")
    (tmp / "cfg").mkdir(exist_ok=True)
    try:
        return anyio.run(_through_mcp_remote, url, tmp, *flags)
    except BaseException:
        log = tmp / "mcp-remote.stderr.log"
        if log.exists():
            print("--- mcp-remote stderr ---\n" + log.read_text(errors="replace")[-8000:])
        raise


def test_mcp_remote_streamable_http(gate, tmp_path):
    log = _run(gate.mcp_url, tmp_path, "--transport", "http-only")
    assert "StreamableHTTPClientTransport" in log, log[-3000:]


def test_mcp_remote_auto_protocol_uses_modern_era(gate, tmp_path):
    log = _run(gate.mcp_url, tmp_path, "--transport", "http-only", "--protocol", "auto")
    assert "Remote server speaks MCP 2026-07-28" in log, (
        "mcp-remote --protocol auto did not adopt the 2026-07-28 era:\n" + log[-3000:]
    )


def test_mcp_remote_legacy_sse(gate, tmp_path):
    log = _run(gate.sse_url, tmp_path, "--transport", "sse-only")
    assert "SSEClientTransport" in log, log[-3000:]
