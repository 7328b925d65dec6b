"""Three mcpgate replicas (local mode) on one PostgreSQL database behind nginx round robin, for
test_replicas.py: the deployment of issue 17, "N stateless replicas behind a load balancer".

- PostgreSQL: a fresh database in the cluster of `$MCPGATE_TEST_POSTGRES_URL` (scripts/test.sh
  exports it), dropped at the end. Without that variable the tests are skipped.
- Replicas: each its own port, data dir and TOML, and the same `public_url` (nginx's URL), store
  URL, encryption key file and `[server] trusted_proxies = ["127.0.0.1/32"]`. The signing keys
  live sealed in the store, so the first replica to start creates them and the others load them:
  replica 0 starts alone first.
- nginx (Debian's package; scripts/e2e-install.sh installs it): run by the test as the current
  user, `daemon off`, its own prefix and config in the test's temp dir. Round robin without
  stickiness over the three ports; each location includes the shipped
  deploy/nginx/mcpgate-proxy.conf (keep-alive, `proxy_buffering off` for SSE, and
  `proxy_next_upstream`: a POST goes to the next replica only when it could not be sent, e.g.
  connection refused), and the upstream block keeps the shipped rule that nginx closes idle
  connections before a replica's drain delay ends (`keepalive_timeout`). The access log records
  `$upstream_addr` and the `Mcp-Session-Id` of each request, so tests can see which replica
  served what.

`ReplicaCluster` is a `LocalGate` whose URLs are nginx's, so every helper of local mode (the
browser, `browser_env`, `login_token`, `cli`, `audit`) works through the balancer.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from local_fixtures import LocalGate
from mcpgate_process import WORK_DIR, config_text, free_port, require_mcpgate_bin, spawn_mcpgate, wait_http_200

REPLICAS = 3
# Seconds a replica keeps serving after SIGTERM with /readyz at 503 (`http.drain_delay_secs`).
DRAIN_DELAY_SECS = 2
# nginx's upstream `keepalive_timeout`: below the drain delay, as deploy/nginx/mcpgate.conf has it
# (4 s there against a 5 s delay), so no kept-alive connection outlives a replica's drain delay.
UPSTREAM_KEEPALIVE_SECS = 1
# The proxy settings every location includes: the shipped file itself.
SHIPPED_PROXY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "mcpgate-proxy.conf"
DRAIN_ENV = "MCPGATE_HTTP__DRAIN_DELAY_SECS"
# A configured client for the load generator: client_credentials, tokens that outlive the run.
LOAD_CLIENT_ID = "replica-load"
LOAD_CLIENT_SECRET = "replica-load-secret-" + "x" * 24
# One-line results (the rolling restart's figures) that conftest.py prints in pytest's summary.
SUMMARY_LINES: list[str] = []
ACCESS_LOG_FORMAT = "$msec\\t$request_method\\t$uri\\t$status\\t$upstream_addr\\t$upstream_status\\t$http_mcp_session_id"


def postgres_admin_url() -> str:
    url = os.environ.get("MCPGATE_TEST_POSTGRES_URL", "")
    if not url:
        pytest.skip("MCPGATE_TEST_POSTGRES_URL is not set: the replica test needs PostgreSQL "
                    "(scripts/test.sh starts a throwaway cluster and sets it)")
    return url


def _psql(url: str, sql: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql not found (Debian: postgresql-client; scripts/pg-throwaway.sh installs it)")
    r = subprocess.run([psql, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PGCONNECT_TIMEOUT="10"))
    if r.returncode != 0:
        pytest.fail(f"psql {sql!r} failed ({r.returncode}): {r.stderr}")


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database in the cluster of `admin_url`; yields its URL and drops it at the end."""
    name = f"mcpgate_replicas_{secrets.token_hex(6)}"
    _psql(admin_url, f"CREATE DATABASE {name}")
    parts = urllib.parse.urlsplit(admin_url)
    try:
        yield urllib.parse.urlunsplit(parts._replace(path="/" + name))
    finally:
        # FORCE: a replica killed with -9 may leave a backend behind for a moment.
        with contextlib.suppress(BaseException):
            _psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ====================================================================== replicas
@dataclass
class Replica:
    index: int
    port: int
    cfg: Path
    tmp: Path
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start it (its log appended) and wait until its own /readyz answers 200."""
        assert self.proc is None or self.proc.poll() is not None, f"replica {self.index} is running"
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {self.starts + 1} =====\n".encode())
            log.flush()
            self.proc = spawn_mcpgate(self.cfg, log=log, cwd=self.tmp, extra_env=self.env)
        self.starts += 1
        wait_http_200(self.proc, f"http://{self.addr}/readyz", what=f"replica {self.index}",
                      log_path=self.log_path, timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.alive(), f"replica {self.index} is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM, then wait for the exit: (exit code, seconds it took)."""
        assert self.alive(), f"replica {self.index} is not running"
        t0 = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            pytest.fail(f"replica {self.index} did not exit within {timeout} s of SIGTERM")
        return code, time.monotonic() - t0

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def readyz(self) -> int:
        try:
            with urllib.request.urlopen(f"http://{self.addr}/readyz", timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"<no log: {e}>"


# ====================================================================== nginx
def nginx_bin() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail("nginx not found: run scripts/e2e-install.sh (it installs Debian's nginx package)")
    return found


@dataclass
class AccessLine:
    msec: float
    method: str
    uri: str
    status: int
    upstreams: list[str]  # every replica tried, in order (more than one: nginx failed over)
    upstream_statuses: list[str]
    session_id: str

    @property
    def served_by(self) -> str:
        return self.upstreams[-1] if self.upstreams else ""


def nginx_conf(prefix: Path, port: int, upstreams: list[str]) -> str:
    # max_fails=0: nginx never takes a replica out of rotation by itself; a refused connection is
    # passed to the next replica every time (cheap on loopback). With its passive marking
    # (max_fails=1, fail_timeout=10s by default) restarting the replicas in turn faster than
    # fail_timeout leaves all three marked down at once ("no live upstreams": 502 for everyone)
    # although two of them are serving.
    servers = "\n".join(f"        server {a} max_fails=0;" for a in upstreams)
    # Only as root does nginx switch its workers to another user (`nobody` by default, which
    # could not write our temp dir): keep them as the current user.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format replicas '{ACCESS_LOG_FORMAT}';
    access_log {prefix}/access.log replicas;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    upstream mcpgate {{
        # Round robin (the default), no stickiness.
{servers}
        keepalive 32;
        keepalive_timeout {UPSTREAM_KEEPALIVE_SECS}s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            include {SHIPPED_PROXY_CONF};
        }}
    }}
}}
"""


@dataclass
class Nginx:
    prefix: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def start(self, upstreams: list[str]) -> None:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(nginx_conf(self.prefix, self.port, upstreams))
        binary = nginx_bin()
        cmd = [binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.error_log)]
        check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t refused the config:\n{check.stderr}\n{conf.read_text()}"
        with open(self.prefix / "nginx.stderr", "ab") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)
        wait_http_200(self.proc, f"http://127.0.0.1:{self.port}/healthz", what="nginx", log_path=self.error_log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers finish their requests
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def lines(self) -> list[AccessLine]:
        out = []
        if not self.access_log.exists():
            return out
        for raw in self.access_log.read_text(errors="replace").splitlines():
            f = raw.split("\t")
            if len(f) != 7:
                continue
            ups = [a.strip() for a in f[4].split(",") if a.strip() not in ("", "-")]
            out.append(AccessLine(float(f[0]), f[1], f[2], int(f[3]), ups,
                                  [s.strip() for s in f[5].split(",")], "" if f[6] == "-" else f[6]))
        return out

    def mark(self) -> int:
        """The number of access-log lines so far (to look at what came after)."""
        return len(self.lines())


# ====================================================================== the cluster
@dataclass
class ReplicaCluster(LocalGate):
    replicas: list[Replica] = field(default_factory=list)
    nginx: Nginx | None = None
    store_url: str = ""
    drain_configured: bool = False

    def log_text(self) -> str:
        return "\n".join(r.log_text() for r in self.replicas)

    def log_tail(self, max_chars: int = 20000) -> str:
        per = max_chars // max(1, len(self.replicas) + 1)
        parts = [f"--- replica {r.index} ({r.addr}, {r.starts} starts) ---\n{r.log_text()[-per:]}" for r in self.replicas]
        if self.nginx is not None:
            with contextlib.suppress(OSError):
                parts.append(f"--- nginx error.log ---\n{self.nginx.error_log.read_text(errors='replace')[-per:]}")
        return "\n".join(parts)

    def failure_evidence(self, mark: int, max_lines: int = 40) -> str:
        """What nginx and the replicas said about failed requests after access-log line `mark`:
        the 5xx lines of the access log, nginx's errors other than the refused connects it passed
        to the next replica, and every replica's WARN and ERROR lines."""
        parts = []
        bad = [line for line in self.nginx.lines()[mark:] if line.status >= 500] if self.nginx else []
        parts.append(f"--- nginx access log, 5xx ({len(bad)}) ---")
        parts += [f"{line.msec:.3f} {line.method} {line.uri} {line.status} via {','.join(line.upstreams)} "
                  f"({','.join(line.upstream_statuses)})" for line in bad[:max_lines]]
        if self.nginx is not None:
            with contextlib.suppress(OSError):
                errors = [raw for raw in self.nginx.error_log.read_text(errors="replace").splitlines()
                          if "[error]" in raw and "(111: Connection refused)" not in raw]
                parts.append(f"--- nginx error.log, errors other than refused connects ({len(errors)}) ---")
                parts += errors[-max_lines:]
        for r in self.replicas:
            noisy = [raw for raw in r.log_text().splitlines()
                     if " ERROR " in raw or " WARN " in raw or raw.startswith("=====")]
            parts.append(f"--- replica {r.index} ({r.addr}) WARN/ERROR ---")
            parts += [raw[:400] for raw in noisy[-max_lines:]]
        return "\n".join(parts)

    def replica_by_addr(self, addr: str) -> Replica:
        return next(r for r in self.replicas if r.addr == addr)

    def ensure_all_running(self) -> None:
        for r in self.replicas:
            if not r.alive():
                r.start()

    def machine_token(self) -> str:
        """A client_credentials token of the load client (issued through the balancer)."""
        from idp_fixtures import basic_auth, http_json

        status, tok = http_json("POST", self.token_endpoint, form={"grant_type": "client_credentials", "scope": "calc"},
                                headers=basic_auth(LOAD_CLIENT_ID, LOAD_CLIENT_SECRET))
        assert status == 200 and tok.get("access_token"), (status, tok)
        return tok["access_token"]


def binary_accepts_env(cfg: Path, cwd: Path, env: dict[str, str]) -> bool:
    """Whether `mcpgate check-config` accepts the configuration with `env` added: a setting another
    branch adds is refused (unknown key) by a binary built without it."""
    r = subprocess.run([str(require_mcpgate_bin()), "check-config", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60, cwd=cwd, env=dict(os.environ, NO_COLOR="1", **env))
    return r.returncode == 0


@contextlib.contextmanager
def start_cluster(tmp: Path, *, access_token_ttl_secs: int, users: tuple[str, ...] = ("alice", "bob")) -> Iterator[ReplicaCluster]:
    admin_url = postgres_admin_url()
    tmp.mkdir(parents=True, exist_ok=True)
    key_file = tmp / "encryption.key"
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    key_file.chmod(0o600)
    nginx = Nginx(prefix=tmp / "nginx", port=free_port())
    public_url = f"http://127.0.0.1:{nginx.port}"
    with fresh_database(admin_url) as store_url, contextlib.ExitStack() as stack:
        replicas: list[Replica] = []
        for i in range(REPLICAS):
            rtmp = tmp / f"replica-{i}"
            data = rtmp / "data"
            data.mkdir(parents=True)
            port = free_port()
            auth = ["[auth]", 'mode = "local"', "[auth.local]", f"access_token_ttl_secs = {access_token_ttl_secs}",
                    f'encryption_key_file = "{key_file}"',
                    "[[auth.local.clients]]", f'client_id = "{LOAD_CLIENT_ID}"',
                    f'client_secret = "{LOAD_CLIENT_SECRET}"', 'scopes = ["calc"]', "access_token_ttl_secs = 3600"]
            server = ["[server]", 'trusted_proxies = ["127.0.0.1/32"]']
            cfg = rtmp / "mcpgate.toml"
            cfg.write_text(config_text(port, data, auth, extra=server, public_url=public_url, store_url=store_url))
            replicas.append(Replica(index=i, port=port, cfg=cfg, tmp=rtmp, log_path=rtmp / "mcpgate.log", env={}))

        drain_env = {DRAIN_ENV: str(DRAIN_DELAY_SECS)}
        drain = binary_accepts_env(replicas[0].cfg, replicas[0].tmp, drain_env)
        for r in replicas:
            r.env = drain_env if drain else {}
            stack.callback(r.stop)

        cluster = ReplicaCluster(port=nginx.port, tmp=tmp, cfg=replicas[0].cfg, data_dir=replicas[0].tmp / "data",
                                 log_path=replicas[0].log_path, stdout_path=None, users={},
                                 access_token_ttl_secs=access_token_ttl_secs, replicas=replicas, nginx=nginx,
                                 store_url=store_url, drain_configured=drain)
        # The CLI migrates the fresh database; users exist before any replica starts (no admin).
        for name in users:
            cluster.add_user(name)
        replicas[0].start()  # creates the signing key in the store
        for r in replicas[1:]:
            r.start()
        stack.callback(nginx.stop)
        nginx.start([r.addr for r in replicas])
        try:
            yield cluster
        finally:
            stack.close()
            WORK_DIR.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                for r in replicas:
                    shutil.copyfile(r.log_path, WORK_DIR / f"mcpgate-replica-{r.index}-last-run.log")
                shutil.copyfile(nginx.access_log, WORK_DIR / "nginx-replicas-access.log")
                shutil.copyfile(nginx.error_log, WORK_DIR / "nginx-replicas-error.log")
