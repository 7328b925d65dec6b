"""The conformance suite's authorization-server scenarios against mcpgate in `auth.mode = "local"`.

`conformance authorization` (npm alias `conformance-requirements`, 0.2.0-alpha.12) has two:
`authorization-server-metadata-endpoint` (RFC 8414 document at the issuer's well-known path) and
`authorization-code-grant` (code + PKCE S256 with `--client-id`, redirect URI
`http://127.0.0.1:<port>/callback`, `resource`; checks the callback's `state`, `code`, `iss` and
the token response's JSON, `Cache-Control: no-store`, `access_token`, `token_type`). The second
prints the authorization URL and waits for the browser to come back to its callback server; the
test signs in at mcpgate's own pages the way test_local_mode.py does (local_browser.py) and then
delivers the final redirect to the suite's callback. The client is a public DCR client registered
beforehand with that redirect URI. Results: tests/e2e/.work/conformance-as/ (checks.json).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import NODE22, NODE_MODULES, WORK_DIR, free_port, node_env, require_node_tools
from idp_fixtures import http_json

CLI = "conformance-requirements/dist/index.js"
SCENARIOS = ("authorization-server-metadata-endpoint", "authorization-code-grant")


def test_conformance_authorization_server_scenarios_pass(local_gate):
    require_node_tools(CLI)
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/callback"
    status, client = http_json("POST", local_gate.registration_endpoint, json_body={
        "redirect_uris": [redirect], "token_endpoint_auth_method": "none", "client_name": "conformance",
        "grant_types": ["authorization_code"], "response_types": ["code"]})
    assert status == 201, (status, client)
    out_dir = WORK_DIR / "conformance-as"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    cmd = [str(NODE22), str(NODE_MODULES / CLI), "authorization", "--url", local_gate.issuer,
           "--client-id", client["client_id"], "--resource", local_gate.mcp_resource, "-p", str(port),
           "-o", str(out_dir), "--verbose"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=node_env(),
                            start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        authorize_prefix = local_gate.authorization_endpoint + "?"
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(authorize_prefix):
                final = local_gate.front_channel(line.strip(), "alice", redirect_uri=redirect)
                # The suite's callback server is the browser's last stop.
                with urllib.request.urlopen(final, timeout=10) as r:
                    assert r.status == 200, r.status
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    (out_dir / "output.txt").write_text(output)
    checks = collect_checks(out_dir, output)
    assert set(checks) == set(SCENARIOS), (checks, output[-3000:])
    for scenario, statuses in checks.items():
        assert statuses and set(statuses.values()) == {"SUCCESS"}, (scenario, statuses, output[-3000:])


def collect_checks(out_dir: Path, output: str) -> dict[str, dict[str, str]]:
    """scenario -> {check id: status}, from each scenario's `-o` directory (`checks.json`)."""
    found: dict[str, dict[str, str]] = {}
    for path in sorted(out_dir.glob("authorization-server-*/checks.json")):
        scenario = next((s for s in SCENARIOS if path.parent.name.startswith(f"authorization-server-{s}-")), None)
        if scenario is None:
            continue
        data = json.loads(path.read_text())
        for check in data if isinstance(data, list) else data.get("checks", []):
            found.setdefault(scenario, {})[check.get("id", "?")] = check.get("status", "?")
    if not found:
        pytest.fail(f"no checks.json under {out_dir}\n{output[-3000:]}")
    return found
