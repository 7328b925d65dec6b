"""The official MCP conformance suite (npm @modelcontextprotocol/conformance 0.1.16, Node 22).

`conformance server --url URL --spec-version V --expected-failures conformance-baseline.yml`
passes only when every failing scenario is in the baseline and no baseline entry passes. The
tally (`Total:` line and per-scenario lines) is saved to tests/e2e/.work/conformance-V.txt.

conformance 0.1.16 knows the spec versions 2025-06-18 and 2025-11-25 for server scenarios (it
has no 2026-07-28 scenarios and no `--requirements` flag); 2025-11-25 is the whole active suite.
"""

from __future__ import annotations

import json
import re
import shutil

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


@pytest.mark.parametrize("spec_version", ["2025-11-25", "2025-06-18"])
def test_conformance_server_suite(gate, tmp_path, spec_version):
    require_node_tools("@modelcontextprotocol/conformance/dist/index.js")
    results = WORK_DIR / f"conformance-results-{spec_version}"  # checks.json per scenario
    shutil.rmtree(results, ignore_errors=True)
    cmd = [
        NODE22,
        CONFORMANCE,
        "server",
        "--url",
        gate.mcp_url,
        "--spec-version",
        spec_version,
        "--expected-failures",
        BASELINE,
        "-o",
        results,
    ]
    proc = run(cmd, timeout=180, env=node_env(), cwd=tmp_path)
    out = ANSI.sub("", proc.stdout)
    WORK_DIR.mkdir(exist_ok=True)
    (WORK_DIR / f"conformance-{spec_version}-full.txt").write_text(out + "\n--- stderr ---\n" + proc.stderr)
    summary = out[out.find("=== SUMMARY ===") :] if "=== SUMMARY ===" in out else out[-6000:]
    (WORK_DIR / f"conformance-{spec_version}.txt").write_text(summary)

    per_scenario = dict(re.findall(r"^[✓✗] ([a-z0-9-]+): (\d+ passed, \d+ failed)$", out, flags=re.M))
    assert re.search(r"^Total: \d+ passed, \d+ failed$", out, flags=re.M), f"no Total line:\n{out[-4000:]}"
    for name in MUST_PASS:
        if spec_version == "2025-06-18" and name == "dns-rebinding-protection":
            continue  # a 2025-11-25 scenario
        assert name in per_scenario, f"scenario {name} did not run:\n{summary}"
        assert per_scenario[name].endswith(" 0 failed"), f"{name}: {per_scenario[name]}\n{summary}"
    assert proc.returncode == 0, (
        f"conformance {spec_version} against the baseline failed (exit {proc.returncode}); "
        f"output in {WORK_DIR / f'conformance-{spec_version}-full.txt'}, checks in {results}\n"
        + "\n".join(_failed_checks(results))
        + f"\n{summary}"
    )
