"""Issue 17, "How it is shown": three mcpgate replicas (local mode) on one PostgreSQL behind nginx
round robin without stickiness (replica_fixtures.py), driven by the real clients.

1. Through the balancer, each client completes OAuth (DCR, mcpgate's login and consent pages,
   code + PKCE), calls tools and refreshes a real expired 5 s token: the Python SDK on the
   2026-07-28 stateless path and in its sessionful (legacy) mode, the TypeScript SDK, mcp-remote
   and the Inspector CLI. nginx's access log shows each client's requests (and each session's)
   landing on more than one replica, and every replica serving.
2. One replica is killed with `kill -9`: a sessionful session opened before the kill carries on,
   nginx fails over the connection errors, mcp-remote and the Inspector come back later and
   refresh their tokens without a browser.
3. A rolling restart under a wrk load (replicas_load.lua: authenticated stateless `tools/call`):
   each replica in turn gets SIGTERM, exits, starts again and answers /readyz 200. Not one request
   may fail. Requests, failures and p99 are printed and go to `.work/replicas-rolling-restart.json`;
   on a failure the test prints what nginx and the replicas logged about it.

The tests run in file order and share one cluster (a module fixture); the later phases use what
the earlier ones left (mcp-remote's and the Inspector's stored tokens).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import E2E_DIR, EXPECTED_TOOLS, NODE22, free_port, node_env, require_node_tools, run
from local_fixtures import verified_claims
from mcpgate_process import WORK_DIR, config_text, require_fixture_bin, upstream_toml
from oauth_clients import (AgentBrowser, MemoryStorage, Wire, inspector_env, inspector_result, inspector_tokens,
                           read_jsonl, run_inspector, run_mcp_remote, run_ts_oauth_client, sdk_provider,
                           sdk_refresh_flow, tool_text)
from replica_fixtures import (DRAIN_DELAY_SECS, DRAIN_ENV, REPLICAS, SUMMARY_LINES, AccessLine, Replica,
                              ReplicaCluster, fresh_database, postgres_admin_url, start_cluster)

SHORT_TTL = 5  # access_token_ttl_secs: every client refreshes a really expired token
MODERN = "2026-07-28"
ADD = ("--transport", "http", "--method", "tools/call", "--tool-name", "add", "--tool-arg", "a=1", "--tool-arg", "b=2")


@pytest.fixture(scope="module")
def replica_cluster(tmp_path_factory: pytest.TempPathFactory):
    with start_cluster(tmp_path_factory.mktemp("replicas"), access_token_ttl_secs=SHORT_TTL) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What mcp-remote and the Inspector keep between their runs (before and after the kill)."""
    base = tmp_path_factory.mktemp("replica-clients")
    return {"base": base, "remote_port": free_port(), "title": f"remote-{uuid.uuid4().hex[:8]}"}


def mcp_lines(lines: list[AccessLine]) -> list[AccessLine]:
    return [line for line in lines if line.uri in ("/mcp", "/mcp/") and line.method in ("POST", "GET", "DELETE")]


def served_by(lines: list[AccessLine]) -> set[str]:
    return {line.served_by for line in lines if line.served_by}


def window(c: ReplicaCluster, mark: int) -> list[AccessLine]:
    return c.nginx.lines()[mark:]


def assert_sessions_crossed_replicas(c: ReplicaCluster, lines: list[AccessLine]) -> set[str]:
    """Every session the client used got requests on more than one replica (so the test really
    exercised cross-replica sessions), and none of them was refused."""
    sessions: dict[str, list[AccessLine]] = {}
    for line in mcp_lines(lines):
        if line.session_id:
            sessions.setdefault(line.session_id, []).append(line)
    assert sessions, "the client sent no Mcp-Session-Id: it did not run in a sessionful mode"
    crossed = {sid for sid, ls in sessions.items() if len(served_by(ls)) > 1}
    assert crossed, f"no session reached a second replica: {[(s, sorted(served_by(ls))) for s, ls in sessions.items()]}"
    refused = [(line.method, line.status, line.served_by) for ls in sessions.values() for line in ls
               if line.status in (400, 404)]
    assert not refused, f"requests of a session refused by a replica (sessions are per process?): {refused}"
    return set(sessions)


# ====================================================================== 1. every client through nginx
def test_python_sdk_stateless_through_the_balancer(replica_cluster: ReplicaCluster):
    """Python SDK, `auto` mode: 2026-07-28 and no session; OAuth, tools, notes, a refresh."""
    c = replica_cluster
    mark = c.nginx.mark()
    storage, wire = MemoryStorage(), Wire()
    browser = AgentBrowser("alice", authorize=c.browser("alice"))
    title = f"py-stateless-{uuid.uuid4().hex[:8]}"
    out = sdk_refresh_flow(c, sdk_provider(c.mcp_url, browser, storage), storage, wire, title)

    assert out["version"] == MODERN, out["version"]
    assert out["tools"] == EXPECTED_TOOLS and out["add"] == "5", out
    assert out["created"]["title"] == title and out["read"]["body"] == "py", out
    grants = wire.token_grants(c.token_endpoint)
    assert grants[0] == ("authorization_code", 200), grants
    assert ("refresh_token", 200) in grants[out["grants_before"]:], f"no refresh after the expiry: {grants}"
    assert out["token2"] != out["token1"] and out["sub_after"] == "6", out
    assert title in [n["title"] for n in out["listed"]], out["listed"]
    assert verified_claims(c, out["token2"])["sub"] == verified_claims(c, out["token1"])["sub"]
    sent_sessions = {e["req"].headers.get("mcp-session-id") for e in wire.log} - {None}
    assert not sent_sessions, f"the 2026-07-28 era is stateless, yet the SDK sent {sent_sessions}"
    mcp = [line for line in mcp_lines(window(c, mark)) if line.status == 200]
    assert len(served_by(mcp)) == REPLICAS, f"the client's MCP requests reached only {served_by(mcp)}"


def test_python_sdk_sessionful_through_the_balancer(replica_cluster: ReplicaCluster):
    """Python SDK, `legacy` mode: initialize, one Mcp-Session-Id for every request, whichever
    replica nginx picks; OAuth, tools, notes, a refresh inside the session."""
    c = replica_cluster
    mark = c.nginx.mark()
    storage, wire = MemoryStorage(), Wire()
    browser = AgentBrowser("alice", authorize=c.browser("alice"))
    title = f"py-session-{uuid.uuid4().hex[:8]}"
    out = sdk_refresh_flow(c, sdk_provider(c.mcp_url, browser, storage), storage, wire, title, mode="legacy")

    assert out["version"] != MODERN, out["version"]
    assert out["tools"] == EXPECTED_TOOLS and out["add"] == "5", out
    assert out["created"]["title"] == title and out["read"]["body"] == "py", out
    assert out["token2"] != out["token1"] and out["sub_after"] == "6", out
    sent = {e["req"].headers.get("mcp-session-id") for e in wire.log if e["url"] == c.mcp_url} - {None}
    assert len(sent) == 1, f"want one session for the whole run, the SDK sent {sent}"
    assert assert_sessions_crossed_replicas(c, window(c, mark)) == sent


def test_ts_sdk_through_the_balancer(replica_cluster: ReplicaCluster, tmp_path: Path):
    """TypeScript SDK (sessionful Streamable HTTP): UnauthorizedError -> login + consent ->
    finishAuth -> tools and notes; the token expires, a 401, a refresh, the call again."""
    c = replica_cluster
    mark = c.nginx.mark()
    log = tmp_path / "browser.jsonl"
    out = run_ts_oauth_client(c.mcp_url, agent=E2E_DIR / "local_browser.py", user="alice",
                              password=c.users["alice"], expire_wait_ms=(SHORT_TTL + 1) * 1000,
                              env={"LOCAL_BROWSER_LOG": str(log)})

    assert out["unauthorizedErrors"] == 1 and out["callbackIss"] == c.issuer, out
    assert [r["pages"] for r in read_jsonl(log)] == [["login", "consent"]]
    assert set(out["tools"]) == EXPECTED_TOOLS
    assert out["add"]["content"] == [{"type": "text", "text": "42"}], out["add"]
    assert json.loads(out["readNote"]["content"][0]["text"])["title"] == out["noteTitle"], out["readNote"]
    assert [t["grant_type"] for t in out["tokenRequests"]] == ["authorization_code", "refresh_token"], out["tokenRequests"]
    assert all(t["status"] == 200 for t in out["tokenRequests"]), out["tokenRequests"]
    assert out["refreshedTokenChanged"] is True
    assert out["addAfterRefresh"]["content"] == [{"type": "text", "text": "42"}]
    assert_sessions_crossed_replicas(c, window(c, mark))


def test_mcp_remote_through_the_balancer(replica_cluster: ReplicaCluster, homes: dict[str, Any]):
    """mcp-remote (http-only, a session): its own OAuth flow with $BROWSER = local_browser.sh, tools
    and a note; with 5 s tokens it refreshes before every request."""
    c = replica_cluster
    mark = c.nginx.mark()
    cfg, log, errlog = homes["base"] / "mcp-remote", homes["base"] / "remote-browser.jsonl", homes["base"] / "mcp-remote.log"
    title = homes["title"]

    async def flow(client: Client) -> dict:
        tools = {t.name for t in (await client.list_tools()).tools}
        added = tool_text(await client.call_tool("add", {"a": 40, "b": 2}))
        note = json.loads(tool_text(await client.call_tool("create_note", {"title": title, "body": "x"})))
        await anyio.sleep(SHORT_TTL + 1)
        read = json.loads(tool_text(await client.call_tool("read_note", {"id": note["id"]})))
        return {"tools": tools, "add": added, "note": note, "read": read}

    out = run_mcp_remote(c.mcp_url, cfg, errlog, c.browser_env("bob", log), flow, callback_port=homes["remote_port"])
    assert out["tools"] == EXPECTED_TOOLS and out["add"] == "42", out
    assert out["note"]["title"] == title and out["read"]["title"] == title, out
    records = read_jsonl(log)
    assert len(records) == 1 and records[0].get("deliver_status") == 200, records
    assert "Refreshed the access token before it expired" in errlog.read_text(errors="replace")
    homes["remote_token"] = json.loads(next(cfg.rglob("*tokens.json")).read_text())["access_token"]
    assert_sessions_crossed_replicas(c, window(c, mark))


def test_inspector_through_the_balancer(replica_cluster: ReplicaCluster, homes: dict[str, Any]):
    """Inspector CLI: headless OAuth ($BROWSER, callback on 127.0.0.1:6276), `tools/call add`,
    tokens kept in its file store for the run after the kill."""
    c = replica_cluster
    home, log = homes["base"] / "inspector", homes["base"] / "inspector-browser.jsonl"
    proc = run_inspector(c.mcp_url, inspector_env(home, c.browser_env("alice", log), persistent=True),
                         homes["base"], *ADD)
    result = inspector_result(proc)
    assert result["content"] == [{"type": "text", "text": "3"}] and not result.get("isError"), result
    records = read_jsonl(log)
    assert len(records) == 1 and records[0]["pages"] == ["login", "consent"], records
    tokens = inspector_tokens(home)
    assert tokens["expires_in"] == SHORT_TTL and tokens.get("refresh_token"), tokens
    homes["inspector_tokens"] = tokens


def test_every_replica_served_and_nothing_failed(replica_cluster: ReplicaCluster):
    """nginx's log of everything so far: all three replicas served MCP and OAuth requests, nginx
    never had to fail over (all were up) and never answered a 5xx itself."""
    c = replica_cluster
    lines = c.nginx.lines()
    mcp = mcp_lines(lines)
    per = {r.addr: sum(1 for line in mcp if line.served_by == r.addr) for r in c.replicas}
    assert all(n >= 5 for n in per.values()), f"MCP requests per replica: {per}"
    oauth = [line for line in lines if line.uri in ("/register", "/authorize", "/login", "/consent", "/token")]
    assert served_by(oauth) == {r.addr for r in c.replicas}, f"OAuth requests served by {served_by(oauth)}"
    assert not [line for line in lines if len(line.upstreams) > 1], "nginx failed over while every replica was up"
    assert not [line for line in lines if line.status >= 500], [line for line in lines if line.status >= 500]


# ====================================================================== 2. kill -9
def test_kill9_one_replica_and_the_clients_carry_on(replica_cluster: ReplicaCluster, homes: dict[str, Any]):
    """A sessionful Python SDK session is open; the replica that served it last is killed with -9;
    the session goes on on the others. Then mcp-remote and the Inspector come back (new processes)
    and refresh their expired tokens without a browser. nginx fails the connection errors over."""
    c = replica_cluster
    c.ensure_all_running()
    storage, wire = MemoryStorage(), Wire()
    browser = AgentBrowser("bob", authorize=c.browser("bob"))
    provider = sdk_provider(c.mcp_url, browser, storage)
    title = f"kill9-{uuid.uuid4().hex[:8]}"
    seen: dict[str, Any] = {}

    async def flow() -> None:
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20), event_hooks=wire.hooks) as http:
            with anyio.fail_after(90):
                async with Client(streamable_http_client(c.mcp_url, http_client=http), mode="legacy") as client:
                    note = json.loads(tool_text(await client.call_tool("create_note", {"title": title, "body": "k"})))
                    assert tool_text(await client.call_tool("add", {"a": 1, "b": 1})) == "2"
                    sid = wire.log[-1]["req"].headers.get("mcp-session-id")
                    assert sid, "legacy mode sent no Mcp-Session-Id"
                    last = [line for line in c.nginx.lines() if line.session_id == sid][-1]
                    victim = c.replica_by_addr(last.served_by)
                    seen["mark"], seen["wire_mark"] = c.nginx.mark(), len(wire.log)
                    victim.kill9()
                    seen["victim"] = victim
                    results = []
                    for i in range(6):  # round robin: the dead replica's turn comes up at least twice
                        results.append(tool_text(await client.call_tool("multiply", {"a": i, "b": 7})))
                    read = json.loads(tool_text(await client.call_tool("read_note", {"id": note["id"]})))
                    seen.update(sid=sid, results=results, read=read)
                # The same tokens on the stateless path, after the kill.
                async with Client(streamable_http_client(c.mcp_url, http_client=http), mode=MODERN) as modern:
                    seen["modern"] = json.loads(tool_text(await modern.call_tool("list_notes", {})))["notes"]

    anyio.run(flow)
    victim = seen["victim"]
    assert seen["results"] == [str(i * 7) for i in range(6)], seen["results"]
    assert seen["read"]["title"] == title, seen["read"]
    assert title in [n["title"] for n in seen["modern"]], seen["modern"]
    legacy_after = [e for e in wire.log[seen["wire_mark"]:] if e["url"] == c.mcp_url and e["method"] == "POST"
                    and e["req"].headers.get("mcp-protocol-version") != MODERN]
    assert len(legacy_after) >= 7 and all(e.get("status") in (200, 202) for e in legacy_after), [
        (e["method"], e.get("status")) for e in legacy_after]
    after_kill = {e["req"].headers.get("mcp-session-id") for e in legacy_after}
    assert after_kill == {seen["sid"]}, f"the session changed after the kill: {after_kill}"

    # mcp-remote again, a new process with the stored (by now expired) tokens: no second login.
    if "remote_token" not in homes or "inspector_tokens" not in homes:
        pytest.fail("mcp-remote's or the Inspector's first run (the tests before this one) failed: "
                    "nothing stored to come back with")
    cfg, log, errlog = homes["base"] / "mcp-remote", homes["base"] / "remote-browser.jsonl", homes["base"] / "mcp-remote.log"
    before = errlog.read_text(errors="replace") if errlog.exists() else ""

    async def remote_flow(client: Client) -> dict:
        listed = json.loads(tool_text(await client.call_tool("list_notes", {})))["notes"]
        return {"listed": listed, "mul": tool_text(await client.call_tool("multiply", {"a": 6, "b": 7}))}

    out = run_mcp_remote(c.mcp_url, cfg, errlog, c.browser_env("bob", log), remote_flow,
                         callback_port=homes["remote_port"])
    assert out["mul"] == "42" and homes["title"] in [n["title"] for n in out["listed"]], out
    assert len(read_jsonl(log)) == 1, "mcp-remote logged in again instead of refreshing"
    stderr = errlog.read_text(errors="replace")[len(before):]
    assert "Refreshed the access token before it expired" in stderr, stderr[-3000:]

    # The Inspector again: its stored token has expired -> 401 -> refresh_token grant, no browser.
    # On a fast run less than the token's 5 s may have passed since the Inspector got it: wait
    # until it really expired (the token's own exp, on the same clock as the server's).
    expires = verified_claims(c, homes["inspector_tokens"]["access_token"])["exp"]
    time.sleep(max(0.0, expires + 1 - time.time()))
    home = homes["base"] / "inspector"
    listing = inspector_result(run_inspector(c.mcp_url, inspector_env(home, None, persistent=True), homes["base"],
                                             "--transport", "http", "--method", "tools/list"))
    assert {t["name"] for t in listing["tools"]} == EXPECTED_TOOLS, listing
    second = inspector_tokens(home)
    assert second["access_token"] != homes["inspector_tokens"]["access_token"], "the Inspector did not refresh"

    after = window(c, seen["mark"])
    failovers = [line for line in after if len(line.upstreams) > 1]
    assert failovers and all(line.upstreams[0] == victim.addr for line in failovers), (
        f"nginx never tried the killed replica {victim.addr} (or failed over from another): {failovers}")
    assert all(line.status < 500 for line in after), [line for line in after if line.status >= 500]
    # (a GET event stream open on it when it died is logged at its end: only POSTs count)
    assert victim.addr not in served_by([line for line in after if line.method == "POST"])

    victim.start()  # back to three for the rolling restart
    assert all(r.readyz() == 200 for r in c.replicas)


# ====================================================================== 3. rolling restart under load
def parse_wrk(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("WRK_RESULT ")]
    assert lines, f"wrk printed no WRK_RESULT line:\n{stdout}"
    return json.loads(lines[-1][len("WRK_RESULT "):])


def test_rolling_restart_under_wrk_load(replica_cluster: ReplicaCluster):
    """wrk posts authenticated stateless tools/call through nginx for the whole rolling restart;
    each replica in turn: SIGTERM, exit, start, /readyz 200. No request may fail: nginx passes the
    refused connects of a stopped replica to the others, and a draining replica finishes every
    request it was sent (see src/server/README.md, "Shutdown")."""
    c = replica_cluster
    c.ensure_all_running()
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.fail("wrk not found: run scripts/e2e-install.sh (it installs Debian's wrk package)")
    token = c.machine_token()
    mark = c.nginx.mark()
    cmd = [wrk, "-t2", "-c8", "-d300s", "--latency", "--timeout", "5s", "-s", str(E2E_DIR / "replicas_load.lua"),
           c.mcp_url, "--", token]
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    steps = []
    try:
        time.sleep(2)  # steady load first
        assert load.poll() is None, f"wrk exited early: {load.communicate()}"
        for r in c.replicas:
            t0 = time.monotonic()
            code, stop_secs = r.terminate()
            r.start()
            steps.append({"replica": r.index, "exit_code": code, "stop_s": round(stop_secs, 3),
                          "restart_s": round(time.monotonic() - t0, 3)})
        time.sleep(2)  # and after the last one is back
    finally:
        if load.poll() is None:
            load.send_signal(signal.SIGINT)  # wrk stops, prints its summary and runs done()
        try:
            stdout, stderr = load.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            load.kill()
            stdout, stderr = load.communicate()
    result = parse_wrk(stdout)
    after = window(c, mark)
    socket_errors = result["connect_errors"] + result["read_errors"] + result["write_errors"] + result["timeouts"]
    report = {
        "replicas": REPLICAS,
        "drain_delay_secs": DRAIN_DELAY_SECS if c.drain_configured else None,
        "drain_note": None if c.drain_configured else f"{DRAIN_ENV} is unknown to this binary: no drain delay",
        "wrk": " ".join(cmd[:-1] + ["<token>"]),
        "requests": result["requests"],
        "failed": result["failed_responses"] + socket_errors,
        "failed_responses": result["failed_responses"],
        "socket_errors": socket_errors,
        "rps": round(result["requests"] / result["duration_s"], 1) if result["duration_s"] else 0,
        "p50_ms": result["p50_ms"], "p90_ms": result["p90_ms"], "p99_ms": result["p99_ms"], "max_ms": result["max_ms"],
        "duration_s": result["duration_s"],
        "failure_samples": result["failure_samples"],
        "nginx_failovers": sum(1 for line in after if len(line.upstreams) > 1),
        "nginx_5xx": sum(1 for line in after if line.status >= 500),
        "steps": steps,
        "wrk_stdout": stdout,
    }
    WORK_DIR.mkdir(exist_ok=True)
    (WORK_DIR / "replicas-rolling-restart.json").write_text(json.dumps(report, indent=2) + "\n")
    summary = (f"rolling restart of {REPLICAS} replicas under wrk: {report['requests']} requests, "
               f"{report['failed']} failed ({report['failed_responses']} bad responses, {socket_errors} socket errors), "
               f"p99 {report['p99_ms']:.1f} ms, nginx failovers {report['nginx_failovers']}, "
               f"nginx 5xx {report['nginx_5xx']}, drain {report['drain_delay_secs']}")
    print(summary)
    SUMMARY_LINES.append(summary)
    assert result["requests"] > 0 and result["ok"] > 0, report
    assert all(s["exit_code"] == 0 for s in steps), f"a replica did not exit cleanly on SIGTERM: {steps}"
    assert c.drain_configured, f"{DRAIN_ENV} is unknown to this binary: the drain cannot be tested"
    if report["failed"] or report["nginx_5xx"]:
        evidence = c.failure_evidence(mark)
        print(evidence)
        pytest.fail(f"{summary}; first failures: {report['failure_samples']}; steps {steps}\n{evidence}")


def test_ts_sdk_get_stream_gets_messages_raised_on_another_replica(tmp_path: Path):
    """Two gateway replicas (no auth, the fixture upstream over stdio each) on one fresh database:
    the TypeScript SDK holds its session's GET stream on replica 0 while plain POSTs of the same
    session on replica 1 subscribe to a resource, change it and make replica 1's upstream link
    announce a tool-list change; the SDK's handlers get resources/updated and tools/list_changed
    (stored by replica 1, delivered by replica 0)."""
    require_node_tools("@modelcontextprotocol/sdk/package.json")
    fixture = require_fixture_bin()
    with fresh_database(postgres_admin_url()) as store_url, contextlib.ExitStack() as stack:
        replicas = []
        for i in range(2):
            rtmp = tmp_path / f"gateway-{i}"
            (rtmp / "data").mkdir(parents=True)
            port = free_port()
            cfg = rtmp / "mcpgate.toml"
            cfg.write_text(config_text(port, rtmp / "data", ["[auth]", 'mode = "none"'], toolsets=False,
                                       extra=upstream_toml("fx", command=[fixture, "--stdio"]),
                                       store_url=store_url))
            replica = Replica(index=i, port=port, cfg=cfg, tmp=rtmp, log_path=rtmp / "mcpgate.log", env={})
            stack.callback(replica.stop)
            replica.start()  # one after the other: the first migrates the fresh database
            replicas.append(replica)
        urls = [f"http://{r.addr}/mcp" for r in replicas]
        proc = run([NODE22, E2E_DIR / "ts_notifications.mjs", *urls], timeout=45, env=node_env(), cwd=E2E_DIR)
        logs = "\n".join(r.log_text()[-4000:] for r in replicas)
        assert proc.returncode == 0, f"ts_notifications failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{logs}"
        out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
        assert out["getStatus"] == 200, out
        assert out["seen"]["resourceUpdated"] == ["test://watched-resource"], out
        assert out["seen"]["toolListChanged"] == 1, out


def test_ts_sdk_resumes_a_broken_post_and_answers_sampling_on_another_replica(tmp_path: Path):
    """Two gateway replicas (no auth, the fixture upstream over stdio each) on one fresh database,
    the TypeScript SDK's fetch sending requests to replica 0 and GETs and its answers to replica 1:
    a `sleep` call whose POST stream is cut after its first event is resumed by the SDK itself
    (GET + Last-Event-ID on replica 1) and returns its answer; a sampling request raised by
    replica 0's upstream link is answered by the SDK's handler through replica 1 and the call on
    replica 0 completes with that answer."""
    require_node_tools("@modelcontextprotocol/sdk/package.json")
    fixture = require_fixture_bin()
    with fresh_database(postgres_admin_url()) as store_url, contextlib.ExitStack() as stack:
        replicas = []
        for i in range(2):
            rtmp = tmp_path / f"gateway-{i}"
            (rtmp / "data").mkdir(parents=True)
            port = free_port()
            cfg = rtmp / "mcpgate.toml"
            cfg.write_text(config_text(port, rtmp / "data", ["[auth]", 'mode = "none"'], toolsets=False,
                                       extra=upstream_toml("fx", command=[fixture, "--stdio"]),
                                       store_url=store_url))
            replica = Replica(index=i, port=port, cfg=cfg, tmp=rtmp, log_path=rtmp / "mcpgate.log", env={})
            stack.callback(replica.stop)
            replica.start()  # one after the other: the first migrates the fresh database
            replicas.append(replica)
        urls = [f"http://{r.addr}/mcp" for r in replicas]
        proc = run([NODE22, E2E_DIR / "ts_resume.mjs", *urls], timeout=60, env=node_env(), cwd=E2E_DIR)
        logs = "\n".join(r.log_text()[-4000:] for r in replicas)
        assert proc.returncode == 0, f"ts_resume failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{logs}"
        out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
        assert out["broken"] == 1, out
        assert out["slept"] == "slept", out
        # The SDK resumed with the POST stream's event id, on the other replica.
        resumed = [r for r in out["resumes"] if r["status"] == 200 and "." in r["lastEventId"]]
        assert resumed, out
        assert out["sampled"] == "LLM response: four", out
        # The answer's id names the replica that asked (replica 0), not a bare number.
        assert out["answersPosted"] and all(isinstance(i, str) for i in out["answersPosted"]), out
