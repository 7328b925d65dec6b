"""Starting and stopping the mcpgate binary, shared by every fixture that runs one
(conftest.py `gate`, rs_fixtures.py resource mode, local_fixtures.py local mode).

- `config_text(port, data_dir, auth_lines)`: the TOML every fixture writes: loopback
  `listen`/`public_url`, SQLite under `data_dir`, the given `[auth...]` lines and the built-in
  toolsets (docs over fixtures/docs/, notes, calc).
- `running_mcpgate(cfg, ...)`: a context manager that starts `mcpgate serve --config cfg` in its
  own process group (stdout+stderr into a log file), waits for `GET /healthz` = 200, yields the
  process, and always stops it (SIGTERM, then SIGKILL) and copies the log to `.work/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent
WORK_DIR = E2E_DIR / ".work"
DOCS_DIR = E2E_DIR / "fixtures" / "docs"


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


def config_text(port: int, data_dir: Path, auth_lines: list[str]) -> str:
    """mcpgate's TOML for a loopback instance on `port` with SQLite in `data_dir`.
    `auth_lines` are the `[auth]` table and its sub-tables, line by line."""
    return "\n".join(
        [
            f'public_url = "http://127.0.0.1:{port}"',
            f'listen = "127.0.0.1:{port}"',
            f"data_dir = {json.dumps(str(data_dir))}",
            "[store]",
            f"url = {json.dumps('sqlite://' + str(data_dir / 'mcpgate.db'))}",
            *auth_lines,
            "[toolsets.docs]",
            f"path = {json.dumps(str(DOCS_DIR))}",
            "[toolsets.notes]",
            "[toolsets.calc]",
            "",
        ]
    )


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


@contextlib.contextmanager
def running_mcpgate(cfg: Path, *, port: int, log_path: Path, cwd: Path, what: str = "mcpgate",
                    last_log_name: str | None = None, ready_timeout: float = 30.0,
                    log_mode: str = "wb", stdout_path: Path | None = None) -> Iterator[subprocess.Popen]:
    """`mcpgate serve --config cfg` until /healthz answers 200; stopped at exit. The log (stdout
    and stderr, or only stderr when `stdout_path` takes stdout) goes to `log_path`
    (`log_mode="ab"` appends, for a restart); at exit it is copied to `.work/<last_log_name>` when
    that is given."""
    binary = require_mcpgate_bin()
    log = open(log_path, log_mode)
    out = open(stdout_path, log_mode) if stdout_path is not None else None
    env = dict(os.environ, NO_COLOR="1")  # plain log lines for failure reports
    env.setdefault("RUST_BACKTRACE", "1")
    proc = subprocess.Popen([str(binary), "serve", "--config", str(cfg)], stdout=out or log,
                            stderr=log if out else subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{what} exited with {proc.returncode} before ready:\n{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{what} not ready (GET /healthz != 200) within {ready_timeout} s:\n{_log_tail(log_path)}")
            time.sleep(0.05)
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
