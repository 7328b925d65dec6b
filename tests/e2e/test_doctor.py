"""`mcpgate doctor` (issue 18 item 1) against real peers: mcpgate in front of the oidc-provider IdP
(resource mode, with real tokens, good and wrong-audience; the IdP's client-credentials grant; the
configuration lint of a proxy-mode mcpgate, whose redirect URI the real IdP accepts or refuses), and
FastMCP as a third-party MCP server with its own in-process authorization server (bench/fastmcp_server.py,
run with the benchmark's virtualenv, bench/.venv, which bench/install.sh makes).

Every run goes through the binary, so its exit code and --json output are what is checked."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO_ROOT, free_port
from idp_fixtures import MACHINE_CLIENT, jwt_parts
from mcpgate_process import require_mcpgate_bin

FASTMCP_PYTHON = Path(os.environ.get("FASTMCP_PYTHON", REPO_ROOT / "bench" / ".venv" / "bin" / "python"))


def doctor(*args: str, stdin: str | None = None) -> tuple[int, dict]:
    """`mcpgate doctor ARGS --json`: exit code and the parsed report."""
    proc = subprocess.run([str(require_mcpgate_bin()), "doctor", *args, "--json", "--timeout-secs", "5"],
                          input=stdin, capture_output=True, text=True, timeout=60)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["checks"]}


def test_doctor_on_mcpgate_in_front_of_the_idp(rs_factory):
    other = "http://127.0.0.1:9/other-mcp"
    rs = rs_factory({"EXTRA_JWT_RESOURCES": other})
    url = rs.gate.mcp_url

    # A real token for this resource: every check passes, the server accepts it.
    good = rs.idp.login_token(scope="calc")["access_token"]
    code, report = doctor(url, "--token", "-", stdin=good + "\n")
    checks = by_id(report)
    assert code == 0 and report["ok"], json.dumps(report, indent=1)
    for id_ in ("challenge", "prm.resource", "as.fetch", "as.issuer", "as.pkce", "token.iss", "token.aud",
                "token.exp", "token.accepted", "discover"):
        assert checks[id_]["outcome"] == "pass", (id_, checks[id_])
    assert good not in json.dumps(report), "the token must never be printed"

    # A token for another resource: named as the wrong audience, with the fix; exit code 1.
    wrong = rs.idp.login_token(scope="calc", resource=other)["access_token"]
    assert jwt_parts(wrong)[1]["aud"] == other
    code, report = doctor(url, "--token", "-", stdin=wrong)
    checks = by_id(report)
    assert code == 1 and not report["ok"]
    assert checks["token.aud"]["outcome"] == "fail"
    assert other in checks["token.aud"]["cause"] and f"aud = {url}" in checks["token.aud"]["fix"]
    assert checks["token.accepted"]["outcome"] == "fail"
    assert "invalid_token" in checks["token.accepted"]["cause"]

    # The client-credentials grant at the real IdP, asked for this resource.
    creds = json.dumps({"client_id": MACHINE_CLIENT[0], "client_secret": MACHINE_CLIENT[1]})
    code, report = doctor(url, "--client-credentials", "-", "--no-register", stdin=creds)
    checks = by_id(report)
    assert checks["token.fetch"]["outcome"] == "pass", checks["token.fetch"]
    assert checks["token.aud"]["outcome"] == "pass", checks["token.aud"]
    assert checks["dcr"]["outcome"] == "skip"
    assert MACHINE_CLIENT[1] not in json.dumps(report)

    # The configuration lint of the same gate: discovery at the real IdP.
    code, report = doctor("--config", str(rs.gate.tmp / "mcpgate.toml"))
    checks = by_id(report)
    assert checks["idp.discovery"]["outcome"] == "pass", checks
    assert checks["idp.audience"]["outcome"] == "skip" and url in checks["idp.audience"]["summary"]


def test_config_lint_probes_the_real_idp_for_the_redirect_uri(proxy_factory):
    gate = proxy_factory()
    code, report = doctor("--config", str(gate.cfg))
    checks = by_id(report)
    assert checks["idp.redirect_uri"]["outcome"] == "pass", json.dumps(report, indent=1)
    assert code == 0

    # The same configuration with another public_url: its /callback is not registered at the IdP.
    text = gate.cfg.read_text().replace(f'public_url = "{gate.base_url}"', 'public_url = "https://mcp.example.com"')
    moved = gate.tmp / "moved.toml"
    moved.write_text(text)
    code, report = doctor("--config", str(moved))
    check = by_id(report)["idp.redirect_uri"]
    assert code == 1 and check["outcome"] == "fail", json.dumps(report, indent=1)
    assert "https://mcp.example.com/callback" in check["summary"]
    assert "allowed redirect URIs: add https://mcp.example.com/callback" in check["fix"]
    assert "redirect_uri did not match any of the client's registered redirect_uris" in check["cause"], check


@contextlib.contextmanager
def fastmcp(tmp: Path) -> Iterator[str]:
    if not FASTMCP_PYTHON.exists():
        assert not os.environ.get("CI"), f"FastMCP missing at {FASTMCP_PYTHON}: scripts/e2e-install.sh installs it"
        pytest.skip(f"FastMCP not installed at {FASTMCP_PYTHON} (bench/install.sh, or set FASTMCP_PYTHON)")
    port = free_port()
    log = open(tmp / "fastmcp.log", "wb")
    proc = subprocess.Popen([str(FASTMCP_PYTHON), str(REPO_ROOT / "bench" / "fastmcp_server.py"), str(port), "--oauth"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                urllib.request.urlopen(f"{url}/.well-known/oauth-authorization-server", timeout=1)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, (tmp / "fastmcp.log").read_text()
                time.sleep(0.2)
        yield f"{url}/mcp"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_doctor_on_fastmcp(tmp_path: Path):
    with fastmcp(tmp_path) as url:
        code, report = doctor(url)
    checks = by_id(report)
    # FastMCP 4.1.2's own authorization server: a working setup with three findings.
    assert code == 0 and report["ok"], json.dumps(report, indent=1)
    for id_ in ("challenge", "prm.resource", "as.issuer", "as.pkce", "as.registration", "dcr"):
        assert checks[id_]["outcome"] == "pass", (id_, checks[id_])
    assert checks["path.redirect"]["outcome"] == "warn"  # /mcp/ answers 307 to /mcp
    assert "redirects (307)" in checks["path.redirect"]["summary"]
    assert checks["as.iss_param"]["outcome"] == "warn"
    assert checks["cors"]["outcome"] == "warn"

    # And a wrong URL for it: no MCP endpoint there.
    with fastmcp(tmp_path) as url:
        root = url.removesuffix("/mcp") + "/nothing"
        code, report = doctor(root)
    assert code == 1
    assert by_id(report)["path.redirect"]["outcome"] == "fail", json.dumps(report, indent=1)
