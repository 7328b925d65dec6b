"""The official Python SDK (PyPI `mcp` 2.3.0) against mcpgate.

Streamable HTTP in each of the client's connect modes (`auto` probes the 2026-07-28
`server/discover` first, `legacy` forces the initialize handshake with a session, and a pinned
`2026-07-28` adopts the stateless era directly), plus the legacy HTTP+SSE transport at /sse.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from conftest import EXPECTED_TOOLS

MODERN = "2026-07-28"
TIMEOUT = 30
# The SDK's SSE transport logs a failed POST and never answers the request: fail fast instead.
SSE_TIMEOUT = 15


def text_of(result: Any) -> str:
    assert result.content, f"tool result has no content: {result!r}"
    assert len(result.content) == 1, f"expected one content item, got {result.content!r}"
    item = result.content[0]
    assert item.type == "text", f"expected a text item, got {item!r}"
    return item.text


def json_of(result: Any) -> Any:
    assert not result.is_error, f"unexpected isError result: {result!r}"
    return json.loads(text_of(result))


class Traffic:
    """Records what the SDK put on the wire, so the era a mode negotiated can be asserted."""

    def __init__(self) -> None:
        # (method, request headers, body) in send order
        self.requests: list[tuple[str, dict[str, str], str]] = []
        # (request method, status, response headers), paired through response.request
        self.responses: list[tuple[str, int, dict[str, str]]] = []

    async def on_request(self, request: httpx2.Request) -> None:
        body = request.content.decode("utf-8", "replace") if request.method == "POST" else ""
        self.requests.append((request.method, {k.lower(): v for k, v in request.headers.items()}, body))

    async def on_response(self, response: httpx2.Response) -> None:
        headers = {k.lower(): v for k, v in response.headers.items()}
        self.responses.append((response.request.method, response.status_code, headers))

    def methods(self) -> list[str]:
        out = []
        for _, _, body in self.requests:
            try:
                msg = json.loads(body)
            except ValueError:
                continue
            if isinstance(msg, dict) and "method" in msg:
                out.append(msg["method"])
        return out

    def session_ids(self) -> set[str]:
        return {h["mcp-session-id"] for _, _, h in self.responses if "mcp-session-id" in h}


async def exercise_all_toolsets(client: Client) -> None:
    """Every built-in toolset through one connected client, asserting real results."""
    # tools/list: exactly the configured toolsets' tools, each with a usable schema.
    listing = await client.list_tools()
    names = [t.name for t in listing.tools]
    assert set(names) == EXPECTED_TOOLS, f"tools/list names: {sorted(names)}"
    assert len(names) == len(set(names)), f"duplicate tool names: {names}"
    for tool in listing.tools:
        assert tool.description, f"{tool.name} has no description"
        assert tool.input_schema.get("type") == "object", f"{tool.name} inputSchema: {tool.input_schema}"

    # calc
    added = await client.call_tool("add", {"a": 2, "b": 3})
    assert not added.is_error, added
    assert text_of(added) == "5"
    assert added.structured_content == {"result": 5}
    multiplied = await client.call_tool("multiply", {"a": 6, "b": 7})
    assert text_of(multiplied) == "42"
    subtracted = await client.call_tool("subtract", {"a": 2.5, "b": 4})
    assert float(text_of(subtracted)) == -1.5
    divided = await client.call_tool("divide", {"a": 1, "b": 4})
    assert float(text_of(divided)) == 0.25
    by_zero = await client.call_tool("divide", {"a": 1, "b": 0})
    assert by_zero.is_error is True, f"divide by zero should be an isError result: {by_zero!r}"
    assert "zero" in text_of(by_zero).lower()

    # notes: full round trip on a note of this test's own.
    title = f"e2e-{uuid.uuid4().hex[:8]}"
    created = json_of(await client.call_tool("create_note", {"title": title, "body": "first body"}))
    assert created["title"] == title and created["body"] == "first body"
    for key in ("id", "created_at", "updated_at"):
        assert created.get(key) not in (None, ""), f"create_note result lacks {key}: {created}"
    note_id = created["id"]
    read = json_of(await client.call_tool("read_note", {"id": note_id}))
    assert (read["id"], read["title"], read["body"]) == (note_id, title, "first body")
    listed = json_of(await client.call_tool("list_notes", {}))
    assert note_id in [n["id"] for n in listed["notes"]], listed
    updated = json_of(await client.call_tool("update_note", {"id": note_id, "body": "second body"}))
    assert (updated["id"], updated["title"], updated["body"]) == (note_id, title, "second body")
    assert json_of(await client.call_tool("read_note", {"id": note_id}))["body"] == "second body"
    deleted = json_of(await client.call_tool("delete_note", {"id": note_id}))
    assert deleted == {"deleted": note_id}
    gone = await client.call_tool("read_note", {"id": note_id})
    assert gone.is_error is True, f"read of a deleted note should be isError: {gone!r}"
    listed = json_of(await client.call_tool("list_notes", {}))
    assert note_id not in [n["id"] for n in listed["notes"]]

    # docs: search finds the one document about quokkas; fetch returns its text.
    found = json_of(await client.call_tool("search", {"query": "quokka"}))
    results = found["results"]
    assert results, f"search for a word in the corpus returned nothing: {found}"
    for r in results:
        assert set(r) >= {"id", "title", "url"}, r
    assert results[0]["title"] == "Marsupials of Rottnest Island", results
    doc = json_of(await client.call_tool("fetch", {"id": results[0]["id"]}))
    assert doc["id"] == results[0]["id"]
    assert "quokka" in doc["text"].lower()
    assert set(doc) >= {"id", "title", "text", "url", "metadata"}, doc.keys()
    missing = await client.call_tool("fetch", {"id": "no-such-document-" + uuid.uuid4().hex})
    assert missing.is_error is True, f"fetch of an unknown id should be isError: {missing!r}"


async def _run_streamable(url: str, mode: str) -> Traffic:
    traffic = Traffic()
    http = httpx2.AsyncClient(
        timeout=httpx2.Timeout(TIMEOUT),
        event_hooks={"request": [traffic.on_request], "response": [traffic.on_response]},
    )
    async with http:
        with anyio.fail_after(TIMEOUT * 2):
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                if mode == "legacy":
                    assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS, client.protocol_version
                    assert client.server_info is not None and client.server_info.name
                else:
                    assert client.protocol_version == MODERN, (
                        f"mode={mode!r} negotiated {client.protocol_version!r}; mcpgate serves {MODERN}"
                    )
                if mode != MODERN:  # a pinned version adopts a synthesized discover result
                    assert client.server_capabilities.tools is not None, "server does not advertise tools"
                await exercise_all_toolsets(client)
    return traffic


def test_streamable_http_auto_mode_uses_modern_era(gate):
    traffic = anyio.run(_run_streamable, gate.mcp_url, "auto")
    methods = traffic.methods()
    assert methods[0] == "server/discover", methods[:3]
    assert "initialize" not in methods, "auto mode fell back to the initialize handshake"
    assert not traffic.session_ids(), "the 2026-07-28 era is stateless: no Mcp-Session-Id expected"


def test_streamable_http_pinned_2026_07_28(gate):
    traffic = anyio.run(_run_streamable, gate.mcp_url, MODERN)
    methods = traffic.methods()
    assert "initialize" not in methods and "server/discover" not in methods, methods[:3]
    assert all(h.get("mcp-protocol-version") == MODERN for m, h, _ in traffic.requests if m == "POST")


def test_streamable_http_legacy_sessionful(gate):
    traffic = anyio.run(_run_streamable, gate.mcp_url, "legacy")
    methods = traffic.methods()
    assert methods[:2] == ["initialize", "notifications/initialized"], methods[:3]
    ids = traffic.session_ids()
    assert len(ids) == 1, f"expected one Mcp-Session-Id for the session, got {ids}"
    (sid,) = ids
    later = [h for m, h, b in traffic.requests[1:] if m == "POST"]
    assert later and all(h.get("mcp-session-id") == sid for h in later), "SDK did not reuse the session id"
    # terminate_on_close: the SDK ends the session with DELETE; mcpgate must accept it.
    deletes = [status for m, status, _ in traffic.responses if m == "DELETE"]
    assert deletes, "SDK sent no DELETE to end the session (or got no response)"
    assert deletes[-1] in (200, 202, 204), f"DELETE /mcp with the session id answered {deletes[-1]}"
    assert all(status < 400 for m, status, _ in traffic.responses if m == "POST"), traffic.responses


def test_streamable_http_trailing_slash_endpoint(gate):
    """/mcp/ must behave exactly like /mcp (no redirect)."""

    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            async with Client(gate.mcp_url + "/", mode="legacy") as client:
                assert text_of(await client.call_tool("add", {"a": 40, "b": 2})) == "42"

    anyio.run(main)


def test_legacy_sse_transport(gate):
    async def main() -> None:
        with anyio.fail_after(SSE_TIMEOUT):
            async with Client(sse_client(gate.sse_url, timeout=10), mode="legacy") as client:
                assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
                listing = await client.list_tools()
                assert {t.name for t in listing.tools} == EXPECTED_TOOLS
                added = await client.call_tool("add", {"a": 2, "b": 3})
                assert not added.is_error
                assert text_of(added) == "5"
                assert added.structured_content == {"result": 5}
                by_zero = await client.call_tool("divide", {"a": 1, "b": 0})
                assert by_zero.is_error is True

    anyio.run(main)


def test_notes_are_shared_across_transports_for_the_same_user(gate):
    """With auth disabled every caller is the same anonymous user: a note written over the
    modern era is visible over a legacy session and over SSE."""

    async def main() -> None:
        title = f"cross-{uuid.uuid4().hex[:8]}"
        with anyio.fail_after(TIMEOUT):
            async with Client(gate.mcp_url, mode=MODERN) as modern:
                note = json_of(await modern.call_tool("create_note", {"title": title, "body": "x"}))
            async with Client(gate.mcp_url, mode="legacy") as legacy:
                read = json_of(await legacy.call_tool("read_note", {"id": note["id"]}))
                assert read["title"] == title
        with anyio.fail_after(SSE_TIMEOUT):
            async with Client(sse_client(gate.sse_url, timeout=10), mode="legacy") as sse:
                deleted = json_of(await sse.call_tool("delete_note", {"id": note["id"]}))
                assert deleted == {"deleted": note["id"]}

    anyio.run(main)


@pytest.mark.parametrize("mode", ["legacy", MODERN])
def test_unknown_tool_is_an_error(gate, mode):
    async def main() -> None:
        with anyio.fail_after(TIMEOUT):
            async with Client(gate.mcp_url, mode=mode) as client:
                try:
                    result = await client.call_tool("no_such_tool", {})
                except Exception as e:  # a JSON-RPC error is the spec's answer for an unknown tool
                    assert "no_such_tool" in str(e) or "unknown" in str(e).lower() or "not found" in str(e).lower(), e
                else:
                    assert result.is_error is True, f"unknown tool returned a success: {result!r}"

    anyio.run(main)
