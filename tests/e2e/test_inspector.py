"""The MCP Inspector CLI (npm @modelcontextprotocol/inspector 2.12.0, Node 22) against mcpgate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import EXPECTED_TOOLS, NODE22, NODE_MODULES, node_env, require_node_tools, run

INSPECTOR = NODE_MODULES / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"


def inspector(tmp: Path, url: str, *args: str, expect_exit: int = 0) -> dict:
    """Run the Inspector CLI with `--format json`; return the `result` of its JSON envelope."""
    require_node_tools("@modelcontextprotocol/inspector/clients/launcher/build/index.js")
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env = node_env(
        HOME=str(home),
        MCP_INSPECTOR_SECRET_STORE="memory",
        MCP_AUTO_OPEN_ENABLED="false",
        BROWSER="/bin/false",
    )
    cmd = [NODE22, INSPECTOR, "--cli", url, *args, "--format", "json", "--quiet", "--connect-timeout", "20000"]
    proc = run(cmd, timeout=60, env=env, cwd=tmp)
    assert proc.returncode == expect_exit, (
        f"inspector exited {proc.returncode}: {' '.join(map(str, cmd))}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    try:
        envelope = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"inspector printed no JSON:\n{proc.stdout}\n--- stderr ---\n{proc.stderr}") from None
    assert "result" in envelope, envelope
    return envelope["result"]


def _tool_text(result: dict) -> str:
    content = result["content"]
    assert len(content) == 1 and content[0]["type"] == "text", content
    return content[0]["text"]


@pytest.mark.parametrize("era", ["legacy", "auto", "modern"])
def test_inspector_tools_list(gate, tmp_path, era):
    out = inspector(tmp_path, gate.mcp_url, "--transport", "http", "--protocol-era", era, "--method", "tools/list")
    names = {t["name"] for t in out["tools"]}
    assert names == EXPECTED_TOOLS, sorted(names)


@pytest.mark.parametrize("era", ["legacy", "auto", "modern"])
def test_inspector_tools_call_add(gate, tmp_path, era):
    out = inspector(
        tmp_path,
        gate.mcp_url,
        "--transport",
        "http",
        "--protocol-era",
        era,
        "--method",
        "tools/call",
        "--tool-name",
        "add",
        "--tool-arg",
        "a=1",
        "--tool-arg",
        "b=2",
    )
    assert not out.get("isError"), out
    assert _tool_text(out) == "3"
    assert out.get("structuredContent") == {"result": 3}, out


def test_inspector_divide_by_zero_is_error(gate, tmp_path):
    out = inspector(
        tmp_path,
        gate.mcp_url,
        "--transport",
        "http",
        "--method",
        "tools/call",
        "--tool-name",
        "divide",
        "--tool-args-json",
        '{"a": 1, "b": 0}',
        expect_exit=5,  # the CLI's exit code for a tool result with isError: true
    )
    assert out.get("isError") is True, out
    assert "zero" in _tool_text(out).lower()


def test_inspector_legacy_sse(gate, tmp_path):
    out = inspector(
        tmp_path,
        gate.sse_url,
        "--transport",
        "sse",
        "--method",
        "tools/call",
        "--tool-name",
        "multiply",
        "--tool-arg",
        "a=6",
        "--tool-arg",
        "b=7",
    )
    assert _tool_text(out) == "42", out
