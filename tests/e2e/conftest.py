"""Shared fixtures of mcpgate's end-to-end suite.

One mcpgate process serves the whole pytest session (auth disabled, loopback, a fresh temp
config and data dir). Every test drives it with a real third-party client. Install the clients
first with `scripts/e2e-install.sh`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

# The real OpenID provider harness (oidc-provider): fixtures `idp`, `idp_factory`.
from idp_fixtures import idp, idp_factory  # noqa: F401  (re-exported as fixtures)
# mcpgate in auth.mode = "resource" in front of a fresh IdP: fixtures `rs`, `rs_factory`.
from rs_fixtures import rs, rs_factory  # noqa: F401  (re-exported as fixtures)
# mcpgate in auth.mode = "local" (its own AS and users): fixtures `local_gate`, `local_factory`.
from local_fixtures import local_factory, local_gate  # noqa: F401  (re-exported as fixtures)
# mcpgate in auth.mode = "proxy" (its own AS, users sign in at a fresh IdP): `proxy_gate`, `proxy_factory`.
from proxy_fixtures import proxy_factory, proxy_gate  # noqa: F401  (re-exported as fixtures)
# Process control of the binary, shared by all of them (free_port and mcpgate_bin re-exported).
from mcpgate_process import DOCS_DIR, config_text, free_port, mcpgate_bin, running_mcpgate  # noqa: F401

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent
WORK_DIR = E2E_DIR / ".work"
NODE_MODULES = E2E_DIR / "node_modules"
NODE22 = NODE_MODULES / "node" / "bin" / "node"

EXPECTED_TOOLS = {
    # calc
    "add",
    "subtract",
    "multiply",
    "divide",
    # notes
    "create_note",
    "read_note",
    "list_notes",
    "update_note",
    "delete_note",
    # docs
    "search",
    "fetch",
}
# The contract names 11 tools (4 calc + 5 notes + 2 docs); tests assert the listing is exactly this set.


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def node_env(**extra: str) -> dict[str, str]:
    """Environment for Node tools: Node 22 from `node@22` first on PATH, no colours."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE22.parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env["FORCE_COLOR"] = "0"
    env.update(extra)
    return env


def run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run a subprocess with a hard timeout; its whole process group is killed on timeout."""
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(
            f"timed out after {timeout}s: {' '.join(map(str, cmd))}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
        ) from None
    finally:
        # A CLI may leave children behind in its group (e.g. a spawned helper).
        _kill_group(proc, only_if_alive=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen, only_if_alive: bool = True) -> None:
    if only_if_alive and proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def require_node_tools(*rel_paths: str) -> None:
    if not NODE22.exists():
        pytest.fail(f"{NODE22} missing: run scripts/e2e-install.sh")
    for rel in rel_paths:
        if not (NODE_MODULES / rel).exists():
            pytest.fail(f"{NODE_MODULES / rel} missing: run scripts/e2e-install.sh")


@dataclass
class Gate:
    port: int
    base_url: str
    mcp_url: str
    sse_url: str
    tmp: Path
    log_path: Path
    proc: subprocess.Popen

    def log_tail(self, max_chars: int = 20000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"<no log: {e}>"
        return text[-max_chars:]


def _write_config(tmp: Path, port: int) -> Path:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "mcpgate.toml"
    cfg.write_text(config_text(port, data, ["[auth]", 'mode = "none"']))
    return cfg


@pytest.fixture(scope="session")
def gate(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("mcpgate")
    port = free_port()
    cfg = _write_config(tmp, port)
    log_path = tmp / "mcpgate.log"
    # The last run's server log is kept in .work/ where a developer can find it.
    with running_mcpgate(cfg, port=port, log_path=log_path, cwd=tmp, last_log_name="mcpgate-last-run.log") as proc:
        yield Gate(
            port=port,
            base_url=f"http://127.0.0.1:{port}",
            mcp_url=f"http://127.0.0.1:{port}/mcp",
            sse_url=f"http://127.0.0.1:{port}/sse",
            tmp=tmp,
            log_path=log_path,
            proc=proc,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of mcpgate's log to every failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        g = item.funcargs.get("gate") if hasattr(item, "funcargs") else None
        if g is not None:
            report.sections.append(("mcpgate log (tail)", g.log_tail(8000)))
        i = item.funcargs.get("idp") if hasattr(item, "funcargs") else None
        if i is not None:
            report.sections.append(("IdP log (tail)", i.log_tail(6000)))
        factory = item.funcargs.get("rs_factory") if hasattr(item, "funcargs") else None
        for n, pair in enumerate(getattr(factory, "made", [])):
            report.sections.append((f"resource-mode mcpgate #{n} log (tail)", pair.gate.log_tail(8000)))
            report.sections.append((f"resource-mode IdP #{n} log (tail)", pair.idp.log_tail(5000)))
        rc = item.funcargs.get("replica_cluster") if hasattr(item, "funcargs") else None
        if rc is not None:  # test_replicas.py: the three replicas and nginx
            report.sections.append(("replicas + nginx logs (tails)", rc.log_tail(16000)))
        for mode in ("local", "proxy"):  # a proxy gate's tail includes its IdP's
            factory = item.funcargs.get(f"{mode}_factory") if hasattr(item, "funcargs") else None
            for n, lg in enumerate(getattr(factory, "made", [])):
                report.sections.append((f"{mode}-mode mcpgate #{n} log (tail)", lg.log_tail(10000)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The figures some tests measure (test_replicas.py: the rolling restart under wrk), so that
    scripts/test.sh's output shows them whether the test passed or not."""
    from replica_fixtures import SUMMARY_LINES

    if SUMMARY_LINES:
        terminalreporter.section("measured")
        for line in SUMMARY_LINES:
            terminalreporter.write_line(line)
