"""The official TypeScript SDK (npm @modelcontextprotocol/sdk 1.32.2) against mcpgate."""

from __future__ import annotations

import json

from conftest import E2E_DIR, EXPECTED_TOOLS, NODE22, node_env, require_node_tools, run


def _run_ts_client(url: str, *extra: str) -> dict:
    require_node_tools("@modelcontextprotocol/sdk/package.json")
    proc = run([NODE22, E2E_DIR / "ts_client.mjs", url, *extra], timeout=45, env=node_env(), cwd=E2E_DIR)
    assert proc.returncode == 0, f"ts_client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"ts_client printed no JSON:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1])


def _check_common(out: dict) -> None:
    assert set(out["tools"]) == EXPECTED_TOOLS, out["tools"]
    assert out["serverVersion"]["name"], out["serverVersion"]
    assert "tools" in out["serverCapabilities"], out["serverCapabilities"]
    add = out["add"]
    assert not add.get("isError"), add
    assert add["content"] == [{"type": "text", "text": "5"}], add
    assert add["structuredContent"] == {"result": 5}, add
    dz = out["divideByZero"]
    assert dz.get("isError") is True, dz
    assert "zero" in dz["content"][0]["text"].lower(), dz
    read = json.loads(out["readNote"]["content"][0]["text"])
    assert read["id"] == out["createdNote"]["id"] and read["body"] == "from the TypeScript SDK"
    assert json.loads(out["deleteNote"]["content"][0]["text"]) == {"deleted": out["createdNote"]["id"]}
    assert out["ping"] == {}, out["ping"]


def test_ts_sdk_streamable_http(gate):
    out = _run_ts_client(gate.mcp_url)
    _check_common(out)
    # The 1.x SDK speaks the sessionful handshake era.
    assert out["sessionId"], "no Mcp-Session-Id issued to an initialize-era client"
    assert out["protocolVersion"] in ("2025-03-26", "2025-06-18", "2025-11-25"), out["protocolVersion"]
    assert out["terminated"] is True


def test_ts_sdk_legacy_sse(gate):
    _check_common(_run_ts_client(gate.sse_url, "--sse"))
