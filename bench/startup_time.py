"""Start-up-to-ready time of mcpgate: exec -> first HTTP 200 on /healthz.

Each run writes its own config; --fresh gives every run a new, empty data dir (first start:
SQLite file created, migrations, keys), otherwise all runs share one data dir that a first,
unmeasured run has initialised. Prints one line: STARTUP mode=... median_ms=... runs_ms=[...]

Usage: startup_time.py BIN WORKDIR [--fresh] [--runs N] [--args 'serve --config {config}']
"""

import argparse
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: str, port: int, data_dir: str) -> None:
    os.makedirs(data_dir, exist_ok=True)
    with open(path, "w") as f:
        f.write(
            f'public_url = "http://127.0.0.1:{port}"\n'
            f'listen = "127.0.0.1:{port}"\n'
            f'data_dir = "{data_dir}"\n'
            f"[store]\n"
            f'url = "sqlite://{data_dir}/mcpgate.db"\n'
            f"[auth]\n"
            f'mode = "none"\n'
            f"[toolsets.calc]\n"
        )


def healthz_ok(port: int) -> bool:
    """One raw HTTP/1.1 GET /healthz; True on a 200 status line. Cheap when refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = s.recv(64)
            return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def one_run(bin_: str, args_tmpl: str, workdir: str, data_dir: str, idx: int, limit_s: float) -> float:
    port = free_port()
    cfg = os.path.join(workdir, f"startup-{idx}.toml")
    write_config(cfg, port, data_dir)
    argv = [bin_] + shlex.split(args_tmpl.format(config=cfg))
    log = open(os.path.join(workdir, f"startup-{idx}.log"), "wb")
    env = dict(os.environ, MCPGATE_CONFIG=cfg)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = t0 + limit_s
        while True:
            if healthz_ok(port):
                return (time.perf_counter() - t0) * 1000.0
            if proc.poll() is not None:
                raise RuntimeError(f"mcpgate exited with {proc.returncode}; see {log.name}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"not ready within {limit_s}s; see {log.name}")
            time.sleep(0.001)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("workdir")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--args", default="serve --config {config}")
    ap.add_argument("--limit", type=float, default=15.0, help="seconds per run before giving up")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    mode = "fresh" if a.fresh else "warm"
    shared = os.path.join(a.workdir, "data-warm")
    if not a.fresh:
        one_run(a.bin, a.args, a.workdir, shared, 0, a.limit)  # initialise, not measured
    times = []
    for i in range(1, a.runs + 1):
        data_dir = os.path.join(a.workdir, f"data-fresh-{i}") if a.fresh else shared
        times.append(one_run(a.bin, a.args, a.workdir, data_dir, i, a.limit))
    runs = ", ".join(f"{t:.1f}" for t in times)
    print(f"STARTUP mode={mode} median_ms={statistics.median(times):.1f} runs_ms=[{runs}]")


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        print(f"STARTUP error: {e}", file=sys.stderr)
        sys.exit(1)
