"""Starting and stopping the mcpgate binary, shared by every fixture that runs one
(conftest.py `gate`, rs_fixtures.py resource mode, local_fixtures.py local mode).

- `config_text(port, data_dir, auth_lines)`: the TOML every fixture writes: loopback
  `listen`/`public_url`, SQLite under `data_dir`, the given `[auth...]` lines and the built-in
  toolsets (docs over fixtures/docs/, notes, calc).
- `running_mcpgate(cfg, ...)`: a context manager that starts `mcpgate serve --config cfg` in its
  own process group (stdout+stderr into a log file), waits for `GET /healthz` = 200, yields the
  process, and always stops it (SIGTERM, then SIGKILL) and copies the log to `.work/`. Its two
  halves, `spawn_mcpgate` and `wait_http_200`, serve replicas that are killed and restarted
  (replica_fixtures.py).
- Gateway upstreams: `fixture_bin()` (the `fixture-upstream` example: `$MCPGATE_FIXTURE_BIN` or
  target/debug/examples/fixture-upstream), `running_fixture_http(log_path)` (it over Streamable
  HTTP on a free loopback port, yielding its URL), `everything_command()` (npm
  `@modelcontextprotocol/server-everything` over stdio, from node_modules), and the TOML of
  `[[upstreams]]` (`upstream_toml`) and `[[policy]]` (`policy_toml`) for `config_text(extra=...)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent
WORK_DIR = E2E_DIR / ".work"
DOCS_DIR = E2E_DIR / "fixtures" / "docs"
NODE22 = E2E_DIR / "node_modules" / "node" / "bin" / "node"
SERVER_EVERYTHING = E2E_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


def mcpgate_bin() -> Path:
    """$MCPGATE_BIN (made absolute: the processes run in temp dirs) or target/debug/mcpgate."""
    return Path(os.environ.get("MCPGATE_BIN", REPO_ROOT / "target" / "debug" / "mcpgate")).absolute()


def require_mcpgate_bin() -> Path:
    binary = mcpgate_bin()
    if not binary.exists():
        pytest.fail(f"mcpgate binary not found at {binary} (build it, or set MCPGATE_BIN)")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, data_dir: Path, auth_lines: list[str], *, toolsets: bool = True,
                extra: list[str] | None = None, public_url: str | None = None,
                store_url: str | None = None) -> str:
    """mcpgate's TOML for a loopback instance on `port` with SQLite in `data_dir`.
    `auth_lines` are the `[auth]` table and its sub-tables, line by line. `toolsets=False` leaves
    out the built-in toolsets (a pure gateway); `extra` lines come last (`[[upstreams]]`,
    `[gateway]`, `[[policy]]`). A replica behind a balancer (replica_fixtures.py) passes the
    balancer's `public_url` and a shared `store_url` (PostgreSQL)."""
    builtin = ["[toolsets.docs]", f"path = {json.dumps(str(DOCS_DIR))}", "[toolsets.notes]", "[toolsets.calc]"]
    return "\n".join(
        [
            f"public_url = {json.dumps(public_url or f'http://127.0.0.1:{port}')}",
            f'listen = "127.0.0.1:{port}"',
            f"data_dir = {json.dumps(str(data_dir))}",
            "[store]",
            f"url = {json.dumps(store_url or 'sqlite://' + str(data_dir / 'mcpgate.db'))}",
            *auth_lines,
            *(builtin if toolsets else []),
            *(extra or []),
            "",
        ]
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Path):
        return json.dumps(str(value))
    return json.dumps(value)  # str, int, bool: JSON's spelling is TOML's


def upstream_toml(name: str, **fields: Any) -> list[str]:
    """One `[[upstreams]]` table: `command=[...]` or `url=...`, and any other field
    (`env`, `set_env={...}`, `isolation`, `call_timeout_secs`, ...)."""
    return ["[[upstreams]]", f"name = {json.dumps(name)}", *(f"{k} = {_toml_value(v)}" for k, v in fields.items())]


def policy_toml(**fields: Any) -> list[str]:
    """One `[[policy]]` rule (`tools`, `resources`, `prompts`, `scopes`, `effect`, `subjects`, ...)."""
    return ["[[policy]]", *(f"{k} = {_toml_value(v)}" for k, v in fields.items())]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 10 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def _log_tail(path: Path, max_chars: int = 20000) -> str:
    try:
        return path.read_text(errors="replace")[-max_chars:]
    except OSError as e:
        return f"<no log: {e}>"


def spawn_mcpgate(cfg: Path, *, log: Any, cwd: Path, stdout: Any = None,
                  extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`mcpgate serve --config cfg` in its own process group, stdout+stderr into the open file
    `log` (only stderr when `stdout` takes stdout)."""
    binary = require_mcpgate_bin()
    env = dict(os.environ, NO_COLOR="1", **(extra_env or {}))  # plain log lines for failure reports
    env.setdefault("RUST_BACKTRACE", "1")
    return subprocess.Popen([str(binary), "serve", "--config", str(cfg)], stdout=stdout or log,
                            stderr=log if stdout else subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True)


def wait_http_200(proc: subprocess.Popen, url: str, *, what: str, log_path: Path, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200; fail the test if `proc` exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} before ready:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready (GET {url} != 200) within {timeout} s:\n{_log_tail(log_path)}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_mcpgate(cfg: Path, *, port: int, log_path: Path, cwd: Path, what: str = "mcpgate",
                    last_log_name: str | None = None, ready_timeout: float = 30.0,
                    log_mode: str = "wb", stdout_path: Path | None = None) -> Iterator[subprocess.Popen]:
    """`mcpgate serve --config cfg` until /healthz answers 200; stopped at exit. The log (stdout
    and stderr, or only stderr when `stdout_path` takes stdout) goes to `log_path`
    (`log_mode="ab"` appends, for a restart); at exit it is copied to `.work/<last_log_name>` when
    that is given."""
    log = open(log_path, log_mode)
    out = open(stdout_path, log_mode) if stdout_path is not None else None
    proc = spawn_mcpgate(cfg, log=log, cwd=cwd, stdout=out)
    try:
        wait_http_200(proc, f"http://127.0.0.1:{port}/healthz", what=what, log_path=log_path, timeout=ready_timeout)
        yield proc
    finally:
        stop_process(proc)
        log.close()
        if out is not None:
            out.close()
        if last_log_name:
            try:
                WORK_DIR.mkdir(exist_ok=True)
                (WORK_DIR / last_log_name).write_bytes(log_path.read_bytes())
            except OSError:
                pass


# ------------------------------------------------------------------------ gateway upstreams
def fixture_bin() -> Path:
    """$MCPGATE_FIXTURE_BIN (made absolute) or target/debug/examples/fixture-upstream
    (`cargo build --examples`)."""
    default = REPO_ROOT / "target" / "debug" / "examples" / "fixture-upstream"
    return Path(os.environ.get("MCPGATE_FIXTURE_BIN", default)).absolute()


def require_fixture_bin() -> Path:
    binary = fixture_bin()
    if not binary.exists():
        pytest.fail(f"fixture upstream not found at {binary} (cargo build --examples, or set MCPGATE_FIXTURE_BIN)")
    return binary


def everything_command() -> list[str]:
    """npm @modelcontextprotocol/server-everything over stdio, run by Node 22 from node_modules
    (never npx: nothing is fetched at test time)."""
    for path in (NODE22, SERVER_EVERYTHING):
        if not path.exists():
            pytest.fail(f"{path} missing: run scripts/e2e-install.sh")
    return [str(NODE22), str(SERVER_EVERYTHING), "stdio"]


@contextlib.contextmanager
def running_fixture_http(log_path: Path, ready_timeout: float = 15.0) -> Iterator[str]:
    """`fixture-upstream --http 127.0.0.1:0` in its own process group; yields its MCP URL (from the
    `listening on http://ADDR/mcp` line, printed once the socket is bound, so there is no port
    race). stderr goes to `log_path`. The group is killed at exit."""
    binary = require_fixture_bin()
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(binary), "--http", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if proc.poll() is not None or left <= 0:
                pytest.fail(f"fixture-upstream --http did not start (exit {proc.returncode}), stdout {line!r}:\n"
                            f"{_log_tail(log_path)}")
            if select.select([proc.stdout], [], [], min(left, 0.2))[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        m = re.match(r"listening on (http://\S+/mcp)", line.decode())
        assert m, f"unexpected first line of fixture-upstream: {line!r}"
        yield m.group(1)
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        proc.stdout.close()
        log.close()
