"""mcpgate as a gateway: two real upstream MCP servers behind mcpgate in `auth.mode = "local"`,
driven by real OAuth clients (the full flow: 401 -> PRM -> DCR -> login + consent -> code + PKCE).

- `everything`: npm `@modelcontextprotocol/server-everything` over stdio, started by mcpgate
  from node_modules with Node 22 (never npx). Its `env` allowlist passes one variable of
  mcpgate's environment and `set_env` sets another; a third must not reach it.
- `fixture`: the repo's `fixture-upstream` example over Streamable HTTP (`--http`, one process for
  the module; `$MCPGATE_FIXTURE_BIN`).
- The built-in toolsets stay on, so names are prefixed (`gateway.prefix = "auto"`):
  `everything__echo`, `fixture__echo`, prompts `everything__args-prompt`, ...; resource URIs are
  not renamed.
- One `[[policy]]` rule: the tool `everything__get-env` (and a prompt and a resource of
  server-everything) needs the scope `everything:admin`. The scope is advertised (PRM, AS
  metadata, the 401 challenge), so a client that asks for everything gets it; a client that asks
  for fewer scopes (or whose user consents to fewer) gets a token without it, does not see the
  tool, and its call is refused at the edge with 403 `insufficient_scope`. The
  Python SDK then steps up by itself (a second authorization with the challenge's scope). The TS
  SDK 1.32.2, which holds a refresh token, refreshes instead (a refresh cannot add a scope), gets
  the same 403 and throws `StreamableHTTPError` 403 "Server returned 403 after trying upscoping".
- Every proxied tool call leaves one `audit` line `tool call` with `upstream=NAME` and
  `tool="NAME"` (the upstream's own tool name) and the caller's client id; every proxied
  `prompts/get` and `resources/read` one `read` line with `kind="prompt"|"resource"` and
  `item="NAME"` (the prompt name or URI the client asked for).
- The Python SDK runs in its default mode (`auto`: `server/discover`, then 2026-07-28,
  stateless), so every proxied result must carry `resultType` (the upstreams speak 2025-11-25,
  whose results have none; mcpgate adds it); `test_modern_protocol_results_carry_result_type`
  checks each kind of result on its own.
- `test_resource_read_before_any_list`: with two upstreams, `resources/read` of a URI is routed
  even when no client listed resources (or templates) before.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import E2E_DIR, EXPECTED_TOOLS, http_get
from idp_fixtures import http_json
from local_fixtures import LocalGate
from mcpgate_process import everything_command, policy_toml, running_fixture_http, upstream_toml
from oauth_clients import AgentBrowser, MemoryStorage, Wire, run_ts_oauth_client, sdk_provider, tool_text
from rs_fixtures import ALL_SCOPES, McpHttp, challenge, sse_json

TIMEOUT = 60
ADMIN_SCOPE = "everything:admin"
# The [[policy]] rule below: these need ADMIN_SCOPE.
GUARDED = "everything__get-env"
GUARDED_PROMPT = "everything__completable-prompt"
GUARDED_URI = "demo://resource/static/document/structure.md"
FEATURES_URI = "demo://resource/static/document/features.md"
TEMPLATE_URI = "demo://resource/dynamic/text/7"  # from the template demo://resource/dynamic/text/{resourceId}
ENV_PASSED, ENV_FIXED, ENV_HIDDEN = "MCPGATE_E2E_PASSED", "MCPGATE_E2E_FIXED", "MCPGATE_E2E_HIDDEN"


# ====================================================================== fixtures
@pytest.fixture(scope="module")
def fixture_url(tmp_path_factory: pytest.TempPathFactory):
    """fixture-upstream over Streamable HTTP on a free loopback port, for the whole module."""
    tmp = tmp_path_factory.mktemp("fixture-http")
    with running_fixture_http(tmp / "fixture-upstream.log") as url:
        yield url


def gateway_toml(fixture_url: str) -> list[str]:
    return [
        *upstream_toml("everything", command=everything_command(), env=[ENV_PASSED],
                       set_env={ENV_FIXED: "fixed-by-set_env"}),
        *upstream_toml("fixture", url=fixture_url),
        *policy_toml(tools=[GUARDED], prompts=[GUARDED_PROMPT], resources=[GUARDED_URI], scopes=[ADMIN_SCOPE]),
    ]


def wait_upstreams_up(g: LocalGate, names: set[str], timeout: float = 20) -> dict:
    """/readyz until every named upstream is `up` (server-everything needs ~0.5 s to start)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = http_get(f"{g.base_url}/readyz")
        try:
            ups = {u["name"]: u for u in json.loads(body).get("upstreams", [])}
        except ValueError:
            ups = {}
        if all(ups.get(n, {}).get("state") == "up" for n in names):
            return ups
        if time.monotonic() > deadline:
            raise AssertionError(f"upstreams {names} not up within {timeout} s: /readyz {status} {body}")
        time.sleep(0.1)


@pytest.fixture
def gw(local_factory, fixture_url: str, monkeypatch: pytest.MonkeyPatch) -> LocalGate:
    """mcpgate (local mode, user alice, built-in toolsets) with both upstreams up."""
    monkeypatch.setenv(ENV_PASSED, "passed-by-allowlist")
    monkeypatch.setenv(ENV_HIDDEN, "must-not-reach-the-upstream")
    g = local_factory(extra_toml=gateway_toml(fixture_url))
    ups = wait_upstreams_up(g, {"everything", "fixture"})
    assert ups["everything"]["transport"] == "stdio" and ups["fixture"]["transport"] == "http", ups
    return g


# ====================================================================== helpers
def scope_of(url: str) -> set[str]:
    return set(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)).get("scope", "").split())


def _of_client(lines: list[str], client_id: str | None) -> list[str]:
    if client_id is None:
        return lines
    return [ln for ln in lines if re.search(rf'\bclient="{re.escape(client_id)}"(\s|$)', ln)]


def audit_calls(g: LocalGate, upstream: str, tool: str, client_id: str | None = None) -> list[str]:
    """The `audit` lines of proxied tool calls to `upstream`'s `tool` (its own, unprefixed name):
    `audit: tool call ... upstream=NAME tool="NAME" ...`."""
    lines = [ln for ln in g.audit("audit: tool call ")
             if re.search(rf"\bupstream={re.escape(upstream)}\s", ln) and f' tool="{tool}" ' in ln]
    return _of_client(lines, client_id)


def audit_reads(g: LocalGate, kind: str, item: str, client_id: str | None = None) -> list[str]:
    """The `audit` lines of proxied prompts/get (`kind` "prompt") and resources/read ("resource")
    of `item` (the name or URI as the client sent it): `audit: read ... kind="K" item="I" ...`."""
    lines = [ln for ln in g.audit("audit: read ") if f' kind="{kind}" ' in ln and f' item="{item}" ' in ln]
    return _of_client(lines, client_id)


def assert_env_allowlist(env_text: str) -> None:
    """server-everything's get-env output: the child saw the allowlisted and set_env variables
    (and PATH), nothing else of mcpgate's environment."""
    env = json.loads(env_text)
    assert env.get(ENV_PASSED) == "passed-by-allowlist", env
    assert env.get(ENV_FIXED) == "fixed-by-set_env", env
    assert ENV_HIDDEN not in env and "PATH" in env, env
    assert set(env) <= {"PATH", "HOME", ENV_PASSED, ENV_FIXED}, f"more than the allowlist: {sorted(env)}"


def assert_gateway_surface(tools: set[str], prompts: set[str], resources: set[str]) -> None:
    assert {"everything__echo", "everything__get-sum", "fixture__echo", "fixture__test_simple_text"} <= tools, tools
    assert EXPECTED_TOOLS <= tools, f"built-in toolsets missing: {EXPECTED_TOOLS - tools}"
    assert "echo" not in tools and "get-sum" not in tools, "an upstream tool without its prefix"
    assert {"everything__simple-prompt", "everything__args-prompt", "fixture__test_simple_prompt"} <= prompts, prompts
    assert {FEATURES_URI, "test://static-text"} <= resources, resources


# ====================================================================== Python SDK
def python_sdk_flow(gw: LocalGate, browser: AgentBrowser, steps):
    """The Python SDK (mcp 2.3.0, its default mode `auto`) with OAuth against `gw`:
    `await steps(client, storage)` -> its result, plus the storage and the HTTP wire."""
    storage, wire = MemoryStorage(), Wire()
    provider = sdk_provider(gw.mcp_url, browser, storage)

    async def flow():
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20), event_hooks=wire.hooks) as http:
            with anyio.fail_after(TIMEOUT):
                async with Client(streamable_http_client(gw.mcp_url, http_client=http), cache=None) as client:
                    return await steps(client, storage)

    return anyio.run(flow), storage, wire


def test_python_sdk_through_gateway(gw: LocalGate):
    """Python SDK (mcp 2.3.0) after the full OAuth flow: lists, calls on both upstreams, a resource
    (static and from a template), prompts; get-env shows the env allowlist; audit lines."""

    async def steps(client: Client, storage: MemoryStorage) -> dict:
        out: dict = {"version": client.protocol_version}
        out["tools"] = {t.name for t in (await client.list_tools()).tools}
        out["prompts"] = {p.name for p in (await client.list_prompts()).prompts}
        out["resources"] = {str(r.uri) for r in (await client.list_resources()).resources}
        out["templates"] = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        out["everything_echo"] = tool_text(await client.call_tool("everything__echo", {"message": "hi from py"}))
        out["fixture_echo"] = tool_text(await client.call_tool("fixture__echo", {"text": "py via gateway"}))
        out["sum"] = tool_text(await client.call_tool("everything__get-sum", {"a": 2, "b": 40}))
        out["features"] = (await client.read_resource(FEATURES_URI)).contents
        out["templated"] = (await client.read_resource(TEMPLATE_URI)).contents
        out["fixture_text"] = (await client.read_resource("test://static-text")).contents
        out["simple"] = (await client.get_prompt("everything__simple-prompt")).messages
        out["args"] = (await client.get_prompt("everything__args-prompt", {"city": "Paris"})).messages
        out["env"] = tool_text(await client.call_tool(GUARDED, {}))
        return out

    browser = AgentBrowser("alice", authorize=gw.browser("alice"))
    out, storage, _ = python_sdk_flow(gw, browser, steps)
    assert out["version"] == "2026-07-28", out["version"]
    assert browser.urls and ADMIN_SCOPE in scope_of(browser.urls[0]), browser.urls
    assert ADMIN_SCOPE in storage.tokens.scope.split(), storage.tokens.scope
    assert_gateway_surface(out["tools"], out["prompts"], out["resources"])
    assert GUARDED in out["tools"], "the scope-holder does not see the guarded tool"
    assert "demo://resource/dynamic/text/{resourceId}" in out["templates"], out["templates"]
    assert out["everything_echo"] == "Echo: hi from py"
    assert out["fixture_echo"] == "py via gateway"
    assert "42" in out["sum"], out["sum"]
    assert out["features"][0].text.startswith("# Everything Server - Features"), out["features"]
    assert "Resource 7" in out["templated"][0].text, out["templated"]
    assert out["fixture_text"][0].text == "This is the content of the static text resource.", out["fixture_text"]
    assert out["simple"][0].content.text == "This is a simple prompt without arguments.", out["simple"]
    assert out["args"][0].content.text == "What's weather in Paris?", out["args"]
    assert_env_allowlist(out["env"])

    cid = storage.client_info.client_id
    for upstream, tool in (("everything", "echo"), ("fixture", "echo"), ("everything", "get-sum"),
                           ("everything", "get-env")):
        lines = audit_calls(gw, upstream, tool, cid)
        assert len(lines) == 1 and " outcome=ok " in lines[0], (upstream, tool, lines, gw.audit("upstream="))
    for kind, item in (("prompt", "everything__simple-prompt"), ("resource", "test://static-text")):
        lines = audit_reads(gw, kind, item, cid)
        assert len(lines) == 1 and ' outcome="ok" ' in lines[0], (kind, item, lines, gw.audit("audit: read "))


def test_modern_protocol_results_carry_result_type(gw: LocalGate):
    """The Python SDK in its default `auto` mode (server/discover -> 2026-07-28, stateless): each
    kind of proxied result, from both upstreams (2025-11-25 servers, whose results have no
    `resultType`), passes the SDK's validation, which requires `resultType`."""

    async def steps(client: Client, storage: MemoryStorage) -> dict:
        out: dict = {"version": client.protocol_version}
        calls = {
            "builtin add": lambda: client.call_tool("add", {"a": 1, "b": 2}),  # mcpgate's own: has resultType
            "everything__echo": lambda: client.call_tool("everything__echo", {"message": "modern"}),
            "fixture__echo": lambda: client.call_tool("fixture__echo", {"text": "modern"}),
            "everything__simple-prompt": lambda: client.get_prompt("everything__simple-prompt"),
            "fixture__test_simple_prompt": lambda: client.get_prompt("fixture__test_simple_prompt"),
            "read test://static-text": lambda: client.read_resource("test://static-text"),
            f"read {FEATURES_URI}": lambda: client.read_resource(FEATURES_URI),
        }
        for name, call in calls.items():
            try:
                out[name] = await call()
            except Exception as e:  # noqa: BLE001 (the SDK's validation error is the finding)
                out[name] = f"{type(e).__name__}: {str(e).splitlines()[0:2]}"
        return out

    out, _, _ = python_sdk_flow(gw, AgentBrowser("alice", authorize=gw.browser("alice")), steps)
    assert out.pop("version") == "2026-07-28"
    failed = {k: v for k, v in out.items() if isinstance(v, str)}
    assert not failed, failed
    assert tool_text(out["everything__echo"]) == "Echo: modern" and tool_text(out["fixture__echo"]) == "modern", out
    assert out["everything__simple-prompt"].messages and out["fixture__test_simple_prompt"].messages, out
    assert out["read test://static-text"].contents[0].text == "This is the content of the static text resource."
    assert out[f"read {FEATURES_URI}"].contents[0].text.startswith("# Everything Server - Features"), out


def test_resource_read_before_any_list(gw: LocalGate):
    """A client that knows a URI (from a resource link, its cache, a previous session) reads it
    on a gateway with two upstreams where nobody has listed resources (or templates) yet: a
    static URI of each upstream and a templated one."""
    tok = gw.login_token(user="alice", scope=ALL_SCOPES)
    raw = McpHttp(gw, tok["access_token"])
    assert raw.initialize().status_code == 200
    read = {uri: sse_json(raw.request("resources/read", {"uri": uri}))
            for uri in ("test://static-text", FEATURES_URI, TEMPLATE_URI)}
    failures = {uri: msg.get("error") for uri, msg in read.items() if "result" not in msg}
    assert not failures, failures
    texts = {uri: msg["result"]["contents"][0].get("text", "") for uri, msg in read.items()}
    assert texts["test://static-text"] == "This is the content of the static text resource.", texts
    assert texts[FEATURES_URI].startswith("# Everything Server - Features"), texts
    assert "Resource 7" in texts[TEMPLATE_URI], texts
    for uri in read:
        assert len(audit_reads(gw, "resource", uri, tok["client_id"])) == 1, gw.audit("audit: read ")


# ====================================================================== TypeScript SDK
def test_ts_sdk_through_gateway(gw: LocalGate):
    """TS SDK (1.32.2) after the full OAuth flow, with ts_oauth_client.mjs's generic operations."""
    ops = [
        {"op": "listTools"},
        {"op": "listPrompts"},
        {"op": "listResources"},
        {"op": "callTool", "name": "everything__echo", "arguments": {"message": "hi from ts"}},
        {"op": "callTool", "name": "fixture__echo", "arguments": {"text": "ts via gateway"}},
        {"op": "readResource", "uri": FEATURES_URI},
        {"op": "readResource", "uri": "test://static-binary"},
        {"op": "getPrompt", "name": "everything__args-prompt", "arguments": {"city": "Oslo"}},
        {"op": "getPrompt", "name": "fixture__test_simple_prompt"},
    ]
    out = run_ts_oauth_client(gw.mcp_url, agent=E2E_DIR / "local_browser.py", user="alice",
                              password=gw.users["alice"], ops=ops)
    res = out["ops"]
    assert [r["op"] for r in res] == [o["op"] for o in ops], res
    errors = [r for r in res if "error" in r]
    assert not errors, errors
    assert out["unauthorizedErrors"] == 1 and len(out["authorizationUrls"]) == 1, out
    assert all(s["ok"] for s in out["stateChecks"]), out["stateChecks"]
    tools, prompts, resources = (set(res[i]["result"]) for i in range(3))
    assert_gateway_surface(tools, prompts, resources)
    assert GUARDED in tools and ADMIN_SCOPE in out["grantedScopes"].split(), out["grantedScopes"]
    assert res[3]["result"]["content"] == [{"type": "text", "text": "Echo: hi from ts"}], res[3]
    assert res[4]["result"]["content"][0]["text"] == "ts via gateway", res[4]
    assert res[5]["result"]["contents"][0]["text"].startswith("# Everything Server - Features"), res[5]
    blob = res[6]["result"]["contents"][0]
    assert blob["mimeType"] == "image/png" and blob["blob"].startswith("iVBOR"), blob
    assert res[7]["result"]["messages"][0]["content"]["text"] == "What's weather in Oslo?", res[7]
    assert res[8]["result"]["messages"], res[8]
    assert audit_calls(gw, "everything", "echo", out["clientId"]), gw.audit("upstream=")
    assert audit_calls(gw, "fixture", "echo", out["clientId"]), gw.audit("upstream=")


# ====================================================================== policy
def test_policy_scope_is_advertised_and_enforced_raw(gw: LocalGate):
    """The rule's scope is advertised; a token without it (the client asked for fewer scopes) hides
    the tool and gets 403 insufficient_scope at the edge; a token with it sees and calls it."""
    status, prm = http_json("GET", gw.prm_url)
    assert status == 200 and ADMIN_SCOPE in prm["scopes_supported"], prm
    assert set(ALL_SCOPES.split()) <= set(prm["scopes_supported"]), prm
    assert ADMIN_SCOPE in gw.metadata()["scopes_supported"]
    unauth = McpHttp(gw, None).initialize()
    assert unauth.status_code == 401 and ADMIN_SCOPE in challenge(unauth).get("scope", "").split(), unauth.headers

    # Fewer scopes requested -> a token without everything:admin.
    tok = gw.login_token(user="alice", scope=ALL_SCOPES)
    assert ADMIN_SCOPE not in tok["scope"].split(), tok
    raw = McpHttp(gw, tok["access_token"])
    assert raw.initialize().status_code == 200
    tools = {t["name"] for t in sse_json(raw.request("tools/list", {}))["result"]["tools"]}
    assert GUARDED not in tools and "everything__echo" in tools and "fixture__echo" in tools, tools
    r = raw.call(GUARDED, {})
    assert r.status_code == 403, (r.status_code, r.text[:400])
    ch = challenge(r)
    assert ch.get("error") == "insufficient_scope", ch
    assert ADMIN_SCOPE in ch["scope"].split() and set(ALL_SCOPES.split()) <= set(ch["scope"].split()), ch
    assert ch["resource_metadata"] == gw.prm_url, ch
    assert r.json().get("error") == "insufficient_scope", r.text
    denied = [ln for ln in gw.audit("insufficient_scope") if GUARDED in ln]
    assert len(denied) == 1, gw.audit("")
    assert not audit_calls(gw, "everything", "get-env"), "a refused call reached the upstream"
    # The same token still calls the unguarded tools of both upstreams.
    assert raw.tool_result("everything__echo", {"message": "x"})["content"][0]["text"] == "Echo: x"
    assert raw.tool_result("fixture__echo", {"text": "y"})["content"][0]["text"] == "y"
    # The rule's prompt and resource: hidden from the lists, 403 at the edge.
    prompts = {p["name"] for p in sse_json(raw.request("prompts/list", {}))["result"]["prompts"]}
    assert GUARDED_PROMPT not in prompts and "everything__simple-prompt" in prompts, prompts
    resources = {r["uri"] for r in sse_json(raw.request("resources/list", {}))["result"]["resources"]}
    assert GUARDED_URI not in resources and FEATURES_URI in resources, resources
    for method, params in (("prompts/get", {"name": GUARDED_PROMPT, "arguments": {"department": "Sales", "name": "Eve"}}),
                           ("resources/read", {"uri": GUARDED_URI})):
        r = raw.request(method, params)
        assert r.status_code == 403, (method, r.status_code, r.text[:400])
        ch = challenge(r)
        assert ch.get("error") == "insufficient_scope" and ADMIN_SCOPE in ch["scope"].split(), (method, ch)

    # Asking for the scope too -> the tool is listed and callable.
    tok2 = gw.login_token(user="alice", scope=f"{ALL_SCOPES} {ADMIN_SCOPE}")
    assert ADMIN_SCOPE in tok2["scope"].split(), tok2
    raw2 = McpHttp(gw, tok2["access_token"])
    assert raw2.initialize().status_code == 200
    tools2 = {t["name"] for t in sse_json(raw2.request("tools/list", {}))["result"]["tools"]}
    assert GUARDED in tools2, tools2
    assert_env_allowlist(raw2.tool_result(GUARDED, {})["content"][0]["text"])
    resources2 = {r["uri"] for r in sse_json(raw2.request("resources/list", {}))["result"]["resources"]}
    assert GUARDED_URI in resources2, resources2
    read = sse_json(raw2.request("resources/read", {"uri": GUARDED_URI}))
    assert read["result"]["contents"][0]["text"].startswith("# Everything Server"), read
    prompt = sse_json(raw2.request("prompts/get", {"name": GUARDED_PROMPT, "arguments": {"department": "Sales", "name": "Eve"}}))
    assert prompt["result"]["messages"], prompt
    assert len(audit_calls(gw, "everything", "get-env", tok2["client_id"])) == 1


def test_policy_python_sdk_steps_up(gw: LocalGate):
    """Python SDK whose user consents to the built-in scopes only: the guarded tool is not listed;
    calling it gets 403 insufficient_scope, and the SDK re-authorizes by itself with the
    challenge's scope (everything:admin added), then the call succeeds."""

    async def steps(client: Client, storage: MemoryStorage) -> dict:
        out: dict = {}
        out["tools_before"] = {t.name for t in (await client.list_tools()).tools}
        out["scope_before"] = storage.tokens.scope
        out["echo"] = tool_text(await client.call_tool("everything__echo", {"message": "narrow"}))
        out["env"] = tool_text(await client.call_tool(GUARDED, {}))
        out["scope_after"] = storage.tokens.scope
        out["tools_after"] = {t.name for t in (await client.list_tools()).tools}
        return out

    browser = AgentBrowser("alice", grant_only=ALL_SCOPES, authorize=gw.browser("alice"))
    out, storage, wire = python_sdk_flow(gw, browser, steps)
    assert ADMIN_SCOPE not in out["scope_before"].split(), out["scope_before"]
    assert GUARDED not in out["tools_before"] and "everything__echo" in out["tools_before"], out["tools_before"]
    assert out["echo"] == "Echo: narrow"
    refused = [e for e in wire.log if e["url"] == gw.mcp_url and e.get("status") == 403]
    assert len(refused) == 1 and 'error="insufficient_scope"' in (refused[0]["www"] or ""), refused
    assert len(browser.urls) == 2 and ADMIN_SCOPE in scope_of(browser.urls[1]), browser.urls
    assert ADMIN_SCOPE in out["scope_after"].split(), out["scope_after"]
    assert_env_allowlist(out["env"])
    assert GUARDED in out["tools_after"]
    assert len(audit_calls(gw, "everything", "get-env", storage.client_info.client_id)) == 1


def test_policy_ts_sdk_refresh_cannot_step_up(gw: LocalGate):
    """TS SDK whose user consents to the built-in scopes only: the guarded tool is not listed;
    calling it gets 403 insufficient_scope. What the SDK (1.32.2) then does: as it holds a refresh
    token, its auth() refreshes (which cannot add a scope) instead of authorizing again, retries
    with the new token, gets the same 403 and throws StreamableHTTPError(403, "Server returned 403
    after trying upscoping"). The session goes on: other tools still work."""
    ops = [
        {"op": "listTools"},
        {"op": "callTool", "name": GUARDED, "arguments": {}},
        {"op": "callTool", "name": "fixture__echo", "arguments": {"text": "still here"}},
        {"op": "listTools"},
    ]
    out = run_ts_oauth_client(gw.mcp_url, agent=E2E_DIR / "local_browser.py", user="alice",
                              password=gw.users["alice"], grant_only=ALL_SCOPES, ops=ops)
    res = out["ops"]
    assert ADMIN_SCOPE not in out["grantedScopes"].split(), out["grantedScopes"]
    assert GUARDED not in res[0]["result"] and "fixture__echo" in res[0]["result"], res[0]
    assert res[1].get("errorClass") == "StreamableHTTPError" and res[1].get("code") == 403, res[1]
    assert "after trying upscoping" in res[1]["error"], res[1]
    assert out["mcpStatuses"].count(403) == 2, out["mcpStatuses"]
    assert len(out["authorizationUrls"]) == 1, out["authorizationUrls"]
    grants = [(t["grant_type"], t["status"]) for t in out["tokenRequests"]]
    assert grants == [("authorization_code", 200), ("refresh_token", 200)], grants
    assert res[2]["result"]["content"][0]["text"] == "still here", res[2]
    assert GUARDED not in res[3]["result"], res[3]
    assert not audit_calls(gw, "everything", "get-env"), "a refused call reached the upstream"
    assert len([ln for ln in gw.audit("insufficient_scope") if GUARDED in ln]) == 2, gw.audit("")
