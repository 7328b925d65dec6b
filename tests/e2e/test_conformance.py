"""The official MCP conformance suite (npm @modelcontextprotocol/conformance, Node 22).

`conformance server --url URL --spec-version V --expected-failures conformance-baseline.yml`
(0.1.16) passes only when every failing scenario is in the baseline and no baseline entry passes.
The tally (`Total:` line and per-scenario lines, then the failing scenarios) is saved to
tests/e2e/.work/conformance-V.txt.

conformance 0.1.16 knows the spec versions 2025-06-18 and 2025-11-25 for server scenarios (it
has no 2026-07-28 scenarios and no `--requirements` flag); 2025-11-25 is the whole active suite.
`conformance server --requirements R` (exactly the scenarios a spec revision requires, frozen at
its release: 2025-11-25 or 2026-07-28) exists only in the prerelease 0.2.0-alpha.12, installed
next to 0.1.16 under the npm alias `conformance-requirements`; it rejects --scenario and
--spec-version together with --requirements. It runs in the gateway comparison below.

It has no authorization-server scenarios (its `auth/*` scenarios are CLIENT scenarios: they run a
mock AS and resource server and test the client under test), and its server scenarios send no
Authorization header. So for mcpgate in `auth.mode = "local"` the suite runs with a real access
token that the full OAuth flow (DCR, login, consent, code + PKCE) produced, added to every request
to mcpgate by `bearer_preload.mjs` (an undici global dispatcher, loaded with NODE_OPTIONS); the
Host and Origin headers the scenarios send are left alone, so `dns-rebinding-protection` still
checks mcpgate's Host validation, now on authenticated requests.

The gateway: the suite's fixture surface (tools test_*, resources test://..., prompts test_*) is
served by the repo's fixture upstream (`fixture-upstream`, `$MCPGATE_FIXTURE_BIN`). For each spec
version (0.1.16 `--spec-version`) and each revision (0.2.0-alpha.12 `--requirements`) the suite
runs (a) directly against the fixture over Streamable HTTP and (b) against mcpgate
(`auth.mode = "none"`, loopback, no built-in toolset) fronting the fixture as its single stdio
upstream, so names pass through unprefixed. The expected failures of (b) are exactly the
scenarios that fail in (a) (a generated baseline, .work/conformance-gateway-expected-NAME.yml), so
the runner's own check (no unexpected failure, no stale entry) proves the same scenarios pass.
The test then compares the FAILURE and WARNING checks of each scenario (checks.json of `-o DIR`):
they must be the same both ways, except the gateway-only warnings in GATEWAY_ONLY_WARNINGS.
0.1.16's per-scenario tallies must also be equal; with `--requirements` the passed counts may
differ (mcpgate answers stateless requests with JSON, where the fixture streams SSE, so
`server-sse-streams-functional` is INFO instead of SUCCESS through mcpgate), the failed counts
may not. NAME is V or requirements-R. Saved: .work/conformance-fixture-direct-NAME.txt and
.work/conformance-gateway-NAME.txt (tallies), .work/conformance-gateway-vs-direct-NAME.txt (both
Total lines, the failing scenarios, the differences). conformance-baseline.yml is for the
built-in toolsets only.

2026-07-28 fails directly against the fixture too, in the scenarios that need diagnostic tools the
fixture does not have (test_input_required_result_*, test_missing_capability,
test_streaming_elicitation, test_logging_tool, test_trigger_*_change), the tasks extension and
the pending json-schema / custom-header scenarios; they fail the same way through mcpgate.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import E2E_DIR, NODE22, NODE_MODULES, WORK_DIR, node_env, require_node_tools, run
from mcpgate_process import (config_text, free_port, require_fixture_bin, running_fixture_http, running_mcpgate,
                             upstream_toml)

CONFORMANCE = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"  # 0.1.16
# 0.2.0-alpha.12 (npm alias in package.json), the only release with `server --requirements`.
CONFORMANCE_REQUIREMENTS = NODE_MODULES / "conformance-requirements" / "dist" / "index.js"
BASELINE = E2E_DIR / "conformance-baseline.yml"
# Scenarios that need nothing but a correct MCP server: they must pass, never be baselined.
MUST_PASS = {
    "server-initialize",
    "ping",
    "tools-list",
    "dns-rebinding-protection",
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Checks that WARN through mcpgate only, and why that is not a gateway defect: {(scenario, check id): reason}.
GATEWAY_ONLY_WARNINGS = {
    ("server-stateless", f"sep-2575-server-sends-{kind}-list-changed-on-subscription"): (
        f"mcpgate declares {kind}.listChanged in server/discover (its merged lists change when an upstream "
        f"comes or goes), the fixture does not (SKIPPED directly); the suite then mutates the list with the "
        f"diagnostic tool test_trigger_{kind[:-1]}_change, which the fixture does not have, and warns (a SHOULD)")
    for kind in ("tools", "prompts")
}


def test_baseline_lists_only_fixture_scenarios():
    listed = _baselined()
    assert listed, "empty baseline?"
    assert not (listed & MUST_PASS), f"protocol scenarios must not be baselined: {listed & MUST_PASS}"
    for name in listed:
        assert name.startswith(("tools-call-", "elicitation-", "resources-", "prompts-", "completion-")), name
        assert name not in ("resources-list", "prompts-list"), name


def _baselined(baseline: Path | None = BASELINE) -> set[str]:
    if baseline is None:
        return set()
    return set(re.findall(r"^\s*-\s*([a-z0-9-]+)", baseline.read_text(), flags=re.M))


def _scenario_checks(results: Path) -> Iterator[tuple[str, dict]]:
    """(scenario, check) for every check of a run's -o directory (checks.json per scenario)."""
    for checks in sorted(results.glob("*/checks.json")):
        scenario = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        for c in json.loads(checks.read_text()):
            yield scenario, c


def _failing(results: Path) -> set[str]:
    """Scenarios the runner counts as failed against a baseline: a FAILURE or WARNING check."""
    return {s for s, c in _scenario_checks(results) if c.get("status") in ("FAILURE", "WARNING")}


def _failed_checks(results: Path, baseline: Path | None = BASELINE) -> list[str]:
    """One line per failed check outside the baseline: scenario dir, check id, error message."""
    baselined = _baselined(baseline)
    return [f"  {s}: {c.get('id')} {c['status']}: {c.get('errorMessage')}" for s, c in _scenario_checks(results)
            if s not in baselined and c.get("status") in ("FAILURE", "WARNING")]


def _must_pass(spec_version: str) -> set[str]:
    if spec_version == "2025-06-18":
        return MUST_PASS - {"dns-rebinding-protection"}  # a 2025-11-25 scenario
    if spec_version >= "2026":
        return MUST_PASS - {"server-initialize", "ping"}  # stateless: no initialize handshake, no ping scenario
    return MUST_PASS


@dataclass
class SuiteRun:
    name: str  # [tag][requirements-]version: the .work/conformance-NAME* files
    tally: dict[str, str]  # {scenario: "N passed, M failed"}
    total: str  # the `Total: N passed, M failed` line
    results: Path  # -o DIR: checks.json per scenario
    exit_code: int  # 0: no failure outside the baseline, no stale baseline entry


def _run_suite(mcp_url: str, spec_version: str, tmp_path: Path, tag: str = "", env: dict[str, str] | None = None,
               baseline: Path | None = BASELINE, check_exit: bool = True, requirements: bool = False) -> SuiteRun:
    """Run the active server suite (0.1.16 `--spec-version`), or with `requirements` the scenarios
    the revision requires (0.2.0-alpha.12 `--requirements`), against `mcp_url` with `baseline`
    (None: no --expected-failures); assert the must-pass scenarios and, with `check_exit`, exit 0.
    Output goes to .work/conformance-NAME[-full].txt and .work/conformance-results-NAME/."""
    tool = CONFORMANCE_REQUIREMENTS if requirements else CONFORMANCE
    require_node_tools(str(tool.relative_to(NODE_MODULES)))
    name = f"{tag}{'requirements-' if requirements else ''}{spec_version}"
    results = WORK_DIR / f"conformance-results-{name}"  # checks.json per scenario
    shutil.rmtree(results, ignore_errors=True)
    cmd = [NODE22, tool, "server", "--url", mcp_url, "--requirements" if requirements else "--spec-version",
           spec_version, "-o", results]
    if baseline is not None:
        cmd += ["--expected-failures", baseline]
    proc = run(cmd, timeout=180, env=node_env(**(env or {})), cwd=tmp_path)
    out = ANSI.sub("", proc.stdout)
    WORK_DIR.mkdir(exist_ok=True)
    (WORK_DIR / f"conformance-{name}-full.txt").write_text(out + "\n--- stderr ---\n" + proc.stderr)
    summary = out[out.find("=== SUMMARY ===") :] if "=== SUMMARY ===" in out else out[-6000:]
    failing = sorted(_failing(results))
    (WORK_DIR / f"conformance-{name}.txt").write_text(
        summary.rstrip("\n") + f"\n\nfailing scenarios (a FAILURE or WARNING check), {len(failing)}:\n"
        + "".join(f"  {s}\n" for s in failing or ["none"]))

    per_scenario = dict(re.findall(r"^[✓✗] ([a-z0-9-]+): (\d+ passed, \d+ failed)$", out, flags=re.M))
    total = re.search(r"^Total: \d+ passed, \d+ failed$", out, flags=re.M)
    assert total, f"no Total line:\n{out[-4000:]}"
    for scenario in _must_pass(spec_version):
        assert scenario in per_scenario, f"scenario {scenario} did not run:\n{summary}"
        assert per_scenario[scenario].endswith(" 0 failed"), f"{scenario}: {per_scenario[scenario]}\n{summary}"
    assert proc.returncode == 0 or not check_exit, (
        f"conformance {name} against the baseline {baseline} failed (exit {proc.returncode}); "
        f"output in {WORK_DIR / f'conformance-{name}-full.txt'}, checks in {results}\n"
        + "\n".join(_failed_checks(results, baseline))
        + f"\n{summary}"
    )
    return SuiteRun(name, per_scenario, total.group(0), results, proc.returncode)


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


# ====================================================================== the gateway
@contextlib.contextmanager
def _gateway_over_fixture(tmp: Path, log_name: str) -> Iterator[str]:
    """mcpgate, `auth.mode = "none"`, no built-in toolset, the fixture as its one stdio upstream
    (names unprefixed); yields the MCP URL. Its log is copied to .work/`log_name`."""
    port = free_port()
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "mcpgate.toml"
    upstream = upstream_toml("fixture", command=[str(require_fixture_bin()), "--stdio"])
    cfg.write_text(config_text(port, data, ["[auth]", 'mode = "none"'], toolsets=False, extra=upstream))
    with running_mcpgate(cfg, port=port, log_path=tmp / "mcpgate.log", cwd=tmp,
                         last_log_name=log_name):
        yield f"http://127.0.0.1:{port}/mcp"


@dataclass
class GatewayVsDirect:
    direct: SuiteRun
    gateway: SuiteRun
    tally_diff: dict[str, tuple[str | None, str | None]]  # scenario -> (direct, gateway) tallies that differ
    failed: tuple[dict[str, int], dict[str, int]]  # {scenario: failed checks} of the ✗ scenarios, direct, gateway
    unexpected: list[str]  # FAILURE/WARNING checks not the same both ways (besides GATEWAY_ONLY_WARNINGS)
    report: str  # what .work/conformance-gateway-vs-direct-NAME.txt says


def _failed_counts(run_: SuiteRun) -> dict[str, int]:
    return {s: int(t.split(", ")[1].split()[0]) for s, t in run_.tally.items() if not t.endswith(" 0 failed")}


def _bad_checks(results: Path) -> tuple[Counter, dict[tuple[str, str, str], str]]:
    """(scenario, check id, status) of every FAILURE and WARNING check, with multiplicity, and
    the error message of each."""
    bad = [((s, c.get("id"), c["status"]), str(c.get("errorMessage"))) for s, c in _scenario_checks(results)
           if c.get("status") in ("FAILURE", "WARNING")]
    return Counter(k for k, _ in bad), dict(bad)


def _other_status_changes(direct: Path, gateway: Path) -> list[str]:
    """The other checks (SUCCESS, INFO, SKIPPED) whose statuses differ: shown, not asserted."""
    def statuses(results: Path) -> dict[tuple[str, str], list[str]]:
        out: dict[tuple[str, str], list[str]] = {}
        for s, c in _scenario_checks(results):
            out.setdefault((s, c.get("id")), []).append(c.get("status"))
        return out

    a, b = statuses(direct), statuses(gateway)
    return [f"  {s}: {i} {sorted(a.get((s, i), []))} -> {sorted(b.get((s, i), []))}" for s, i in sorted(set(a) | set(b))
            if sorted(a.get((s, i), [])) != sorted(b.get((s, i), []))]


def _gateway_vs_direct(tmp_path: Path, spec_version: str, requirements: bool = False) -> GatewayVsDirect:
    """The suite (a) directly against the fixture upstream over HTTP, then (b) through mcpgate
    fronting it over stdio with (a)'s failing scenarios as the baseline (the runner must exit 0);
    the comparison is written to .work/conformance-gateway-vs-direct-NAME.txt and printed."""
    with running_fixture_http(tmp_path / "fixture-upstream.log") as fixture_url:
        direct = _run_suite(fixture_url, spec_version, tmp_path, tag="fixture-direct-", baseline=None,
                            check_exit=False, requirements=requirements)
    assert direct.tally, "the direct run reported no scenario"
    direct_failing = _failing(direct.results)
    name = direct.name.removeprefix("fixture-direct-")
    # The gateway run's baseline: exactly what fails directly (the runner rejects both an
    # unexpected failure and a stale entry, i.e. a scenario that passes only through mcpgate).
    expected = WORK_DIR / f"conformance-gateway-expected-{name}.yml"
    expected.write_text("# generated by test_conformance.py: the scenarios that fail directly against the fixture\n"
                        "server:" + "".join(f"\n  - {s}" for s in sorted(direct_failing)) +
                        ("" if direct_failing else " []") + "\n")
    log_name = f"mcpgate-gateway-conformance-{name}.log"
    with _gateway_over_fixture(tmp_path / "gateway", log_name) as mcp_url:
        gateway = _run_suite(mcp_url, spec_version, tmp_path, tag="gateway-", baseline=expected,
                             check_exit=False, requirements=requirements)

    tally_diff = {s: (direct.tally.get(s), gateway.tally.get(s)) for s in sorted(set(direct.tally) | set(gateway.tally))
                  if direct.tally.get(s) != gateway.tally.get(s)}
    failed = (_failed_counts(direct), _failed_counts(gateway))
    (bad_direct, msg_direct), (bad_gateway, msg_gateway) = _bad_checks(direct.results), _bad_checks(gateway.results)
    only = [(k, "direct only", msg_direct[k]) for k in sorted(bad_direct - bad_gateway)] + \
           [(k, "gateway only", msg_gateway[k]) for k in sorted(bad_gateway - bad_direct)]
    known = [f"  {s}: {i} {st} ({where}): {GATEWAY_ONLY_WARNINGS[(s, i)]}" for (s, i, st), where, _ in only
             if where == "gateway only" and st == "WARNING" and (s, i) in GATEWAY_ONLY_WARNINGS]
    unexpected = [f"  {s}: {i} {st} ({where}): {msg}" for (s, i, st), where, msg in only
                  if not (where == "gateway only" and st == "WARNING" and (s, i) in GATEWAY_ONLY_WARNINGS)]
    tool = "0.2.0-alpha.12 --requirements" if requirements else "0.1.16 --spec-version"
    lines = [f"conformance {tool} {spec_version}: directly against the fixture vs through mcpgate",
             f"direct:  {direct.total}",
             f"gateway: {gateway.total}",
             f"failed scenarios directly ({len(failed[0])}): "
             + (", ".join(f"{s} ({n})" for s, n in sorted(failed[0].items())) or "none"),
             f"failed scenarios through mcpgate ({len(failed[1])}): "
             + (", ".join(f"{s} ({n})" for s, n in sorted(failed[1].items())) or "none"),
             f"failing directly, counting WARNING checks too: {sorted(direct_failing) or 'none'}",
             f"runner through mcpgate against that baseline: exit {gateway.exit_code}"
             + (" (the same scenarios fail)" if gateway.exit_code == 0 else " (other scenarios fail, see below)"),
             "tally differences (scenario: direct -> gateway):",
             *([f"  {k}: {a} -> {b}" for k, (a, b) in tally_diff.items()] or ["  none"]),
             "FAILURE/WARNING checks not the same both ways:", *(unexpected or ["  none"]),
             "known gateway-only warnings:", *(known or ["  none"]),
             "other check status changes (not asserted; direct -> gateway):",
             *(_other_status_changes(direct.results, gateway.results) or ["  none"]),
             f"mcpgate log: {WORK_DIR / log_name}"]
    report = "\n".join(lines) + "\n"
    (WORK_DIR / f"conformance-gateway-vs-direct-{name}.txt").write_text(report)
    print(f"\n{lines[0]}\n  {lines[1]}\n  {lines[2]}")
    assert gateway.exit_code == 0, (
        f"through mcpgate, the runner found failures besides those of the direct run (exit {gateway.exit_code}); "
        f"output in {WORK_DIR / f'conformance-{gateway.name}-full.txt'}\n{report}")
    return GatewayVsDirect(direct, gateway, tally_diff, failed, unexpected, report)


@pytest.mark.parametrize("spec_version", ["2025-11-25", "2025-06-18"])
def test_conformance_through_gateway_matches_direct(tmp_path, spec_version, capsys):
    """0.1.16's active suite directly against the fixture and through mcpgate: the same scenarios
    pass, with the same per-scenario tallies and the same failed and warning checks."""
    with capsys.disabled():
        cmp = _gateway_vs_direct(tmp_path, spec_version)
    assert not cmp.tally_diff and not cmp.unexpected, cmp.report


@pytest.mark.parametrize("revision", ["2025-11-25", "2026-07-28"])
def test_conformance_requirements_through_gateway_matches_direct(tmp_path, revision, capsys):
    """`conformance server --requirements R` (0.2.0-alpha.12) directly against the fixture and
    through mcpgate: the same scenarios fail, each with as many failed checks, and the same
    FAILURE and WARNING checks (besides GATEWAY_ONLY_WARNINGS). Passed counts are not compared."""
    with capsys.disabled():
        cmp = _gateway_vs_direct(tmp_path, revision, requirements=True)
    direct_failed, gateway_failed = cmp.failed
    assert set(gateway_failed) == set(direct_failed), cmp.report
    assert gateway_failed == direct_failed, cmp.report
    assert not cmp.unexpected, cmp.report
    if revision == "2025-11-25":
        assert not direct_failed, cmp.report  # the fixture implements all of 2025-11-25
