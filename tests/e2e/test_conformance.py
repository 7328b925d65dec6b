"""The official MCP conformance suite (npm @modelcontextprotocol/conformance 0.1.16, Node 22).

`conformance server --url URL --spec-version V --expected-failures conformance-baseline.yml`
passes only when every failing scenario is in the baseline and no baseline entry passes. The
tally (`Total:` line and per-scenario lines) is saved to tests/e2e/.work/conformance-V.txt.

conformance 0.1.16 knows the spec versions 2025-06-18 and 2025-11-25 for server scenarios (it
has no 2026-07-28 scenarios and no `--requirements` flag); 2025-11-25 is the whole active suite.

It has no authorization-server scenarios (its `auth/*` scenarios are CLIENT scenarios: they run a
mock AS and resource server and test the client under test), and its server scenarios send no
Authorization header. So for mcpgate in `auth.mode = "local"` the suite runs with a real access
token that the full OAuth flow (DCR, login, consent, code + PKCE) produced, added to every request
to mcpgate by `bearer_preload.mjs` (an undici global dispatcher, loaded with NODE_OPTIONS); the
Host and Origin headers the scenarios send are left alone, so `dns-rebinding-protection` still
checks mcpgate's Host validation, now on authenticated requests.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import E2E_DIR, NODE22, NODE_MODULES, WORK_DIR, node_env, require_node_tools, run

CONFORMANCE = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
BASELINE = E2E_DIR / "conformance-baseline.yml"
# Scenarios that need nothing but a correct MCP server: they must pass, never be baselined.
MUST_PASS = {
    "server-initialize",
    "ping",
    "tools-list",
    "dns-rebinding-protection",
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_baseline_lists_only_fixture_scenarios():
    listed = _baselined()
    assert listed, "empty baseline?"
    assert not (listed & MUST_PASS), f"protocol scenarios must not be baselined: {listed & MUST_PASS}"
    for name in listed:
        assert name.startswith(("tools-call-", "elicitation-", "resources-", "prompts-", "completion-")), name
        assert name not in ("resources-list", "prompts-list"), name


def _baselined() -> set[str]:
    return set(re.findall(r"^\s*-\s*([a-z0-9-]+)", BASELINE.read_text(), flags=re.M))


def _failed_checks(results) -> list[str]:
    """One line per failed check outside the baseline: scenario dir, check id, error message."""
    lines = []
    baselined = _baselined()
    for checks in sorted(results.glob("*/checks.json")):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        if scenario in baselined:
            continue
        for c in json.loads(checks.read_text()):
            if c.get("status") in ("FAILURE", "WARNING"):
                lines.append(f"  {scenario}: {c.get('id')} {c['status']}: {c.get('errorMessage')}")
    return lines


def _run_suite(mcp_url: str, spec_version: str, tmp_path: Path, tag: str = "", env: dict[str, str] | None = None) -> None:
    """Run the active server suite against `mcp_url` with the baseline; assert MUST_PASS and exit 0.
    Output goes to .work/conformance-<tag><version>[-full].txt and .work/conformance-results-<tag><version>/."""
    require_node_tools("@modelcontextprotocol/conformance/dist/index.js")
    name = f"{tag}{spec_version}"
    results = WORK_DIR / f"conformance-results-{name}"  # checks.json per scenario
    shutil.rmtree(results, ignore_errors=True)
    cmd = [
        NODE22,
        CONFORMANCE,
        "server",
        "--url",
        mcp_url,
        "--spec-version",
        spec_version,
        "--expected-failures",
        BASELINE,
        "-o",
        results,
    ]
    proc = run(cmd, timeout=180, env=node_env(**(env or {})), cwd=tmp_path)
    out = ANSI.sub("", proc.stdout)
    WORK_DIR.mkdir(exist_ok=True)
    (WORK_DIR / f"conformance-{name}-full.txt").write_text(out + "\n--- stderr ---\n" + proc.stderr)
    summary = out[out.find("=== SUMMARY ===") :] if "=== SUMMARY ===" in out else out[-6000:]
    (WORK_DIR / f"conformance-{name}.txt").write_text(summary)

    per_scenario = dict(re.findall(r"^[✓✗] ([a-z0-9-]+): (\d+ passed, \d+ failed)$", out, flags=re.M))
    assert re.search(r"^Total: \d+ passed, \d+ failed$", out, flags=re.M), f"no Total line:\n{out[-4000:]}"
    for scenario in MUST_PASS:
        if spec_version == "2025-06-18" and scenario == "dns-rebinding-protection":
            continue  # a 2025-11-25 scenario
        assert scenario in per_scenario, f"scenario {scenario} did not run:\n{summary}"
        assert per_scenario[scenario].endswith(" 0 failed"), f"{scenario}: {per_scenario[scenario]}\n{summary}"
    assert proc.returncode == 0, (
        f"conformance {name} against the baseline failed (exit {proc.returncode}); "
        f"output in {WORK_DIR / f'conformance-{name}-full.txt'}, checks in {results}\n"
        + "\n".join(_failed_checks(results))
        + f"\n{summary}"
    )


@pytest.mark.parametrize("spec_version", ["2025-11-25", "2025-06-18"])
def test_conformance_server_suite(gate, tmp_path, spec_version):
    _run_suite(gate.mcp_url, spec_version, tmp_path)


def test_conformance_server_suite_local_mode_with_token(local_gate, tmp_path):
    """The whole active suite (2025-11-25) against mcpgate in local mode, authenticated with a
    token from mcpgate's own OAuth flow (alice logs in and consents to every scope)."""
    tok = local_gate.login_token(user="alice", redirect_uri="http://127.0.0.1:9/callback")
    env = {"NODE_OPTIONS": f"--import={E2E_DIR / 'bearer_preload.mjs'}",
           "MCPGATE_E2E_BEARER": tok["access_token"], "MCPGATE_E2E_BEARER_ORIGIN": local_gate.base_url}
    _run_suite(local_gate.mcp_url, "2025-11-25", tmp_path, tag="local-mode-", env=env)
    assert 'outcome="missing_token"' not in local_gate.log_text(), "a suite request went out without the token"
    # The control: without the token the same server refuses the suite (401), so it was the token
    # that let the suite in.
    proc = run([NODE22, CONFORMANCE, "server", "--url", local_gate.mcp_url, "--scenario", "server-initialize"],
               timeout=60, env=node_env(), cwd=tmp_path)
    assert proc.returncode != 0 and "FAILURE" in ANSI.sub("", proc.stdout), proc.stdout[-2000:]
    assert 'outcome="missing_token"' in local_gate.log_text()
