"""OAuth load driver for bench/run_oauth.sh (a benchmark, never a test). Stdlib only.

Subcommands (BASE is the authorization server's origin, e.g. http://127.0.0.1:8080):

  check BASE --user U --password P [--mcp]
      One complete flow, one refresh and, with --mcp, a tools/call `add` on BASE/mcp with the
      access token (2026-07-28 stateless request shape). Exits non-zero with the exact
      request/response on any surprise. Prints one JSON line with what it saw.

  flows BASE --workers N --duration S --users U1,U2,... --password P
      N threads, each running complete flows back to back for S seconds:
        POST /register (public client, PKCE) -> GET /authorize -> [login form POST]
        -> [consent page GET + POST] -> redirect to redirect_uri with code -> POST /token
      Each flow starts with an empty cookie jar (a new browser), so every flow logs in (mcpgate
      hashes the password with Argon2id on purpose: tens of ms of CPU per login). Forms are filled
      generically (hidden inputs kept, username/password filled, decision=approve), so a server
      that auto-approves (FastMCP's InMemoryOAuthProvider: /authorize answers 302 with a code)
      runs the same code path minus the pages. Worker i logs in as users[i % len(users)].
      Prints: BENCH_FLOW flows=... duration_s=... flows_per_s=... p50_ms=... p90_ms=...
      p99_ms=... max_ms=... failed=... login_p50_ms=... token_p50_ms=... client_cpu_pct=...
      requests_per_flow=... fail_kinds=ENDPOINT/STATUS:COUNT,... (- when none)
      (+ BENCH_FIRST_FAILURE <request/response> when something failed).

  flows BASE ... --signed-in
      The same flows by a browser that is already signed in: each worker keeps its cookie jar
      across flows and signs in once before the clock starts, so a flow is register -> authorize
      -> consent page -> consent -> token (no password check). For a server without a login (FastMCP)
      this is the same as a new-browser flow.

  codes BASE --n N --out FILE --users ... --password P [--workers W]
      N authorization codes, minted by signed-in browsers (one client per worker, flows up to the
      redirect with the code); writes "client_id code code_verifier" lines for
      bench/oauth_code.lua, which measures only their redemption at /token.

  mint BASE --n N --out FILE --users ... --password P [--workers W]
      N complete flows; writes "client_id refresh_token" lines (one refresh-token chain per
      line, each with its own client) for bench/oauth_refresh.lua.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import http.client
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse

REDIRECT_URI = "http://127.0.0.1:9/cb"
SCOPE = "calc"


class FlowError(RuntimeError):
    pass


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# The forms of a page, found with a few regular expressions instead of html.parser: the driver
# runs on the same cores as the server it measures, and HTMLParser's pure-Python tokenizer cost
# more CPU per consent page than the server spent rendering it. Only what a form filler needs:
# each <form>'s action and method, and its <input>/<button> tags' attributes (entities decoded).
_FORM_RE = re.compile(r"<form\b([^>]*)>(.*?)</form\s*>", re.S | re.I)
_FIELD_RE = re.compile(r"<(input|button)\b([^>]*)>", re.I)
_ATTR_RE = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")


def _attrs(text: str) -> dict[str, str]:
    return {m.group(1).lower(): html.unescape(m.group(2) or m.group(3) or m.group(4) or "")
            for m in _ATTR_RE.finditer(text)}


def page_forms(page: str) -> list[dict]:
    """[{"action", "method", "inputs": [attribute dicts, "type" always set]}] in page order."""
    forms = []
    for fm in _FORM_RE.finditer(page):
        a = _attrs(fm.group(1))
        form = {"action": a.get("action", ""), "method": (a.get("method") or "get").lower(), "inputs": []}
        for im in _FIELD_RE.finditer(fm.group(2)):
            ia = _attrs(im.group(2))
            ia.setdefault("type", "text" if im.group(1).lower() == "input" else "submit")
            form["inputs"].append(ia)
        forms.append(form)
    return forms


class Agent:
    """One keep-alive connection + a cookie dict (reset per flow = a new browser)."""

    def __init__(self, base: str, timeout: float = 30.0):
        u = urllib.parse.urlsplit(base)
        self.base = base.rstrip("/")
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.cookies: dict[str, str] = {}
        self._last: tuple | None = None  # the last exchange, formatted only for a failure report
        self.requests = 0  # HTTP requests sent (retries on a closed keep-alive connection included)

    @property
    def last(self) -> str:
        """The last exchange, for failure reports (password masked)."""
        if self._last is None:
            return ""
        method, path, body, status, headers, data = self._last
        shown = body.decode("utf-8", "replace") if body else ""
        if "password=" in shown:
            shown = "&".join(p if not p.startswith("password=") else "password=***" for p in shown.split("&"))
        hdrs = {k: v for k, v in headers.items() if k.lower() in ("location", "content-type", "www-authenticate")}
        return f"{method} {self.base}{path} [{shown[:400]}] -> {status} {hdrs} {data[:500].decode('utf-8', 'replace')}"

    def _conn(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def req(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        h = {"Accept": "text/html,application/json;q=0.9,*/*;q=0.8"}
        if ctype:
            h["Content-Type"] = ctype
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if headers:
            h.update(headers)
        for attempt in (0, 1):
            c = self._conn()
            self.requests += 1
            try:
                c.request(method, path, body=body, headers=h)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.close()
                if attempt:
                    raise
        for sc in r.headers.get_all("Set-Cookie") or []:
            nv, _, attrs = sc.partition(";")
            name, _, value = nv.strip().partition("=")
            if "max-age=0" in attrs.lower().replace(" ", "") or value == "":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        if r.will_close:
            self.close()
        self._last = (method, path, body, r.status, r.headers, data)
        return r.status, r.headers, data


def _path(base: str, url: str) -> str:
    """Path+query of a Location/action, relative to base (absolute URLs are sent to base)."""
    u = urllib.parse.urlsplit(urllib.parse.urljoin(base + "/", url))
    return u.path + (f"?{u.query}" if u.query else "")


def register(ag: Agent, name: str) -> str:
    body = json.dumps({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none",
                       "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                       "client_name": name, "scope": SCOPE}).encode()
    st, _, data = ag.req("POST", "/register", body, "application/json")
    if st != 201:
        raise FlowError(f"register: {ag.last}")
    return json.loads(data)["client_id"]


def flow(ag: Agent, user: str, password: str, resource: str, timings: dict | None = None,
         signed_in: bool = False) -> dict:
    """One complete flow (a new browser unless `signed_in`: then the cookie jar is kept); returns
    the token response. `timings` gets per-step seconds."""
    t = timings if timings is not None else {}
    if not signed_in:
        ag.cookies = {}
    t0 = time.perf_counter()
    client_id = register(ag, "bench-flow")
    t1 = time.perf_counter()
    t["register"] = t1 - t0
    code, verifier = authorize(ag, client_id, user, password, resource, t)
    t2 = time.perf_counter()
    st, _, data = ag.req("POST", "/token", urllib.parse.urlencode({
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": REDIRECT_URI, "client_id": client_id, "resource": resource}).encode(),
        "application/x-www-form-urlencoded", {"Accept": "application/json"})
    t["token"] = time.perf_counter() - t2
    if st != 200:
        raise FlowError(f"token: {ag.last}")
    tok = json.loads(data)
    if not tok.get("access_token") or not tok.get("refresh_token"):
        raise FlowError(f"token response without access/refresh token: {ag.last}")
    tok["_client_id"] = client_id
    tok["_iss"] = t.pop("_iss", None)
    return tok


def authorize(ag: Agent, client_id: str, user: str, password: str, resource: str,
              t: dict) -> tuple[str, str]:
    """The front channel from /authorize to the redirect with the code: (code, code_verifier)."""
    verifier = b64url(secrets.token_bytes(32))
    state = b64url(secrets.token_bytes(12))
    q = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
        "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()), "code_challenge_method": "S256",
        "state": state, "scope": SCOPE, "resource": resource})
    method, path, body = "GET", f"/authorize?{q}", None
    final = None
    for _ in range(8):
        s0 = time.perf_counter()
        st, hdrs, data = ag.req(method, path, body, "application/x-www-form-urlencoded" if body else None)
        dt = time.perf_counter() - s0
        step = "login" if path.startswith("/login") else "consent" if path.startswith("/consent") else "authorize"
        t[step] = t.get(step, 0.0) + dt
        if st in (301, 302, 303, 307):
            loc = hdrs.get("Location") or ""
            if loc.split("?", 1)[0] == REDIRECT_URI:
                final = loc
                break
            method, path, body = "GET", _path(ag.base, loc), None
            continue
        if st != 200 or "text/html" not in (hdrs.get("Content-Type") or ""):
            raise FlowError(f"front channel: {ag.last}")
        # The sign-in or consent form, not a page's "sign out" form.
        posts = [f for f in page_forms(data.decode("utf-8", "replace")) if f["method"] == "post"
                 and not urllib.parse.urlsplit(f["action"]).path.endswith("/logout")]
        form = next(iter(posts), None)
        if form is None:
            raise FlowError(f"no post form: {ag.last}")
        fields = {}
        for i in form["inputs"]:
            n, typ = i.get("name"), i["type"].lower()
            if not n:
                continue
            if typ == "hidden":
                fields[n] = i.get("value", "")
            elif typ == "password":
                fields[n] = password
            elif typ in ("text", "email") and n.lower() in ("username", "user", "login", "email"):
                fields[n] = user
            elif typ in ("checkbox", "radio") and "checked" in i:
                fields[n] = i.get("value", "on")
        if not any(i["type"].lower() == "password" for i in form["inputs"]):
            fields["decision"] = "approve"
        method, path, body = "POST", _path(ag.base, form["action"]), urllib.parse.urlencode(fields).encode()
    if final is None:
        raise FlowError(f"no redirect to the client after 8 steps: {ag.last}")
    fq = {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(final).query).items()}
    if fq.get("state") != state or "code" not in fq:
        raise FlowError(f"bad authorization response: {final}")
    t["_iss"] = fq.get("iss")
    return fq["code"], verifier


def fail_kind(e: Exception) -> str:
    """A failed flow's endpoint and HTTP status, e.g. "register/429" or "login/500"."""
    m = re.search(r"(?:GET|POST) https?://[^/\s]+/([\w.-]*)[^\[]*\[.*?\] -> (\d{3}) ", str(e), re.S)
    if m:
        return f"{m.group(1) or 'root'}/{m.group(2)}"
    return type(e).__name__ if not isinstance(e, FlowError) else str(e).split(":", 1)[0].replace(" ", "_")


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def _flow_worker(a, i: int, users: list[str], resource: str, start_evt, stop_at, out) -> None:
    """One worker's flows until `stop_at`; its results go to `out` (a list or a queue)."""
    res = {"durations": [], "logins": [], "tokens": [], "failures": [], "kinds": {}, "sent": 0}
    ag = Agent(a.base)
    user = users[i % len(users)]
    if a.signed_in:
        try:  # sign in (one unmeasured flow) before the clock starts
            flow(ag, user, a.password, resource, {}, signed_in=True)
        except Exception as e:  # noqa: BLE001 - counted and reported
            res["failures"].append(f"sign-in {type(e).__name__}: {e}")
            res["kinds"]["sign-in"] = res["kinds"].get("sign-in", 0) + 1
    start_evt.wait()
    while time.perf_counter() < stop_at.value:
        t: dict = {}
        s = time.perf_counter()
        r0 = ag.requests
        try:
            flow(ag, user, a.password, resource, t, signed_in=a.signed_in)
            res["durations"].append(time.perf_counter() - s)
            res["sent"] += ag.requests - r0
            if "login" in t:
                res["logins"].append(t["login"])
            res["tokens"].append(t["token"])
        except Exception as e:  # noqa: BLE001 - counted and reported
            res["failures"].append(f"{type(e).__name__}: {e}")
            res["kinds"][fail_kind(e)] = res["kinds"].get(fail_kind(e), 0) + 1
            ag.close()
    ag.close()
    if hasattr(out, "put"):
        out.put(res)
    else:
        out.append(res)


class _Stop:
    """The shared deadline for thread workers (a multiprocessing Value for process workers)."""

    def __init__(self) -> None:
        self.value = 0.0


def cmd_flows(a) -> int:
    """N workers: threads (one GIL, the default) or, with --processes, one process each, so
    the driver's own Python does not limit what is measured."""
    import multiprocessing as mp
    users = a.users.split(",")
    resource = a.resource or f"{a.base.rstrip('/')}/mcp"
    if a.processes:
        ctx = mp.get_context("fork")
        start_evt, stop_at, out = ctx.Barrier(a.workers + 1), ctx.Value("d", 0.0), ctx.Queue()
        runners = [ctx.Process(target=_flow_worker, args=(a, i, users, resource, start_evt, stop_at, out),
                               daemon=True) for i in range(a.workers)]
    else:
        start_evt, stop_at, out = threading.Barrier(a.workers + 1), _Stop(), []
        runners = [threading.Thread(target=_flow_worker, args=(a, i, users, resource, start_evt, stop_at, out),
                                    daemon=True) for i in range(a.workers)]
    for r in runners:
        r.start()
    c0 = os.times()
    t0 = time.perf_counter()
    stop_at.value = t0 + a.duration
    start_evt.wait()
    results = []
    if a.processes:
        for _ in runners:
            results.append(out.get(timeout=a.duration + 120))
    for r in runners:
        r.join(timeout=a.duration + 120)
    if not a.processes:
        results = out
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) \
        + (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    durations = [d for r in results for d in r["durations"]]
    logins = [d for r in results for d in r["logins"]]
    tokens = [d for r in results for d in r["tokens"]]
    failures = [f for r in results for f in r["failures"]]
    kinds: dict[str, int] = {}
    for r in results:
        for k, n in r["kinds"].items():
            kinds[k] = kinds.get(k, 0) + n
    sent = sum(r["sent"] for r in results)
    ms = lambda s: f"{s * 1000:.1f}"  # noqa: E731
    print(f"BENCH_FLOW flows={len(durations)} duration_s={wall:.2f} flows_per_s={len(durations) / wall:.2f} "
          f"p50_ms={ms(pct(durations, 50))} p90_ms={ms(pct(durations, 90))} p99_ms={ms(pct(durations, 99))} "
          f"max_ms={ms(max(durations) if durations else 0)} failed={len(failures)} "
          f"login_p50_ms={ms(pct(logins, 50))} login_n={len(logins)} token_p50_ms={ms(pct(tokens, 50))} "
          f"workers={a.workers} client_cpu_pct={cpu / wall * 100:.0f} "
          f"requests_per_flow={sent / len(durations) if durations else 0:.1f} "
          f"fail_kinds={','.join(f'{k}:{n}' for k, n in sorted(kinds.items())) or '-'}")
    if failures:
        print(f"BENCH_FIRST_FAILURE {failures[0]}")
    return 0


def cmd_codes(a) -> int:
    users = a.users.split(",")
    resource = a.resource or f"{a.base.rstrip('/')}/mcp"
    out: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    share = [a.n // a.workers + (1 if i < a.n % a.workers else 0) for i in range(a.workers)]

    def worker(i: int) -> None:
        ag = Agent(a.base)
        mine: list[str] = []
        try:
            user = users[i % len(users)]
            client_id = register(ag, "bench-codes")
            for _ in range(share[i]):
                code, verifier = authorize(ag, client_id, user, a.password, resource, {})
                mine.append(f"{client_id} {code} {verifier}")
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(str(e))
        finally:
            ag.close()
        with lock:
            out.extend(mine)

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(a.workers)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    if len(out) != a.n:
        print(f"codes: only {len(out)}/{a.n} codes; first error: {errors[:1]}", file=sys.stderr)
        return 1
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


def cmd_mint(a) -> int:
    users = a.users.split(",")
    resource = a.resource or f"{a.base.rstrip('/')}/mcp"
    out: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()
    todo = list(range(a.n))

    def worker(i: int) -> None:
        ag = Agent(a.base)
        while True:
            with lock:
                if not todo:
                    break
                k = todo.pop()
            try:
                tok = flow(ag, users[k % len(users)], a.password, resource)
                with lock:
                    out.append(f"{tok['_client_id']} {tok['refresh_token']}")
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append(str(e))
                    todo.append(k) if len(errors) < 5 else None
        ag.close()

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(a.workers)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    if len(out) != a.n:
        print(f"mint: only {len(out)}/{a.n} chains; first error: {errors[:1]}", file=sys.stderr)
        return 1
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


MCP_BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": "add", "arguments": {"a": 1, "b": 2}, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "oauth-bench-check", "version": "1"}}}}


def cmd_check(a) -> int:
    resource = a.resource or f"{a.base.rstrip('/')}/mcp"
    ag = Agent(a.base)
    seen: dict = {}
    try:
        t: dict = {}
        tok = flow(ag, a.user, a.password, resource, t)
        seen["login_page"] = "login" in t
        seen["iss"] = tok["_iss"]
        seen["token_keys"] = sorted(k for k in tok if not k.startswith("_"))
        seen["access_token_bytes"] = len(tok["access_token"])
        seen["refresh_token_bytes"] = len(tok["refresh_token"])
        st, _, data = ag.req("POST", "/token", urllib.parse.urlencode({
            "grant_type": "refresh_token", "refresh_token": tok["refresh_token"],
            "client_id": tok["_client_id"]}).encode(), "application/x-www-form-urlencoded", {"Accept": "application/json"})
        if st != 200:
            raise FlowError(f"refresh: {ag.last}")
        new = json.loads(data)
        if not new.get("refresh_token") or new["refresh_token"] == tok["refresh_token"]:
            raise FlowError(f"refresh did not rotate the refresh token: {ag.last}")
        if a.mcp:
            ag.cookies = {}
            st, hdrs, data = ag.req("POST", "/mcp", json.dumps(MCP_BODY).encode(), "application/json", {
                "Accept": "application/json, text/event-stream", "Authorization": f"Bearer {new['access_token']}",
                "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "add"})
            text = data.decode("utf-8", "replace")
            if st != 200 or '"result"' not in text or '"isError":true' in text.replace(" ", ""):
                raise FlowError(f"tools/call add with the refreshed access token: {ag.last}")
            seen["mcp_add"] = "ok"
            st, _, _ = ag.req("POST", "/mcp", json.dumps(MCP_BODY).encode(), "application/json", {
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "add"})
            if st != 401:
                raise FlowError(f"tools/call without a token should be 401: {ag.last}")
            seen["mcp_no_token"] = st
    except FlowError as e:
        print(f"check failed: {e}", file=sys.stderr)
        return 1
    finally:
        ag.close()
    print(json.dumps(seen))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("base")
    c.add_argument("--user", default="bench0")
    c.add_argument("--password", required=True)
    c.add_argument("--resource")
    c.add_argument("--mcp", action="store_true")
    f = sub.add_parser("flows")
    f.add_argument("base")
    f.add_argument("--workers", type=int, default=4)
    f.add_argument("--duration", type=float, default=10)
    f.add_argument("--users", default="bench0")
    f.add_argument("--password", required=True)
    f.add_argument("--resource")
    f.add_argument("--signed-in", action="store_true")
    f.add_argument("--processes", action="store_true",
                   help="one process per worker instead of threads sharing one GIL")
    k = sub.add_parser("codes")
    k.add_argument("base")
    k.add_argument("--n", type=int, required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--users", default="bench0")
    k.add_argument("--password", required=True)
    k.add_argument("--workers", type=int, default=4)
    k.add_argument("--resource")
    m = sub.add_parser("mint")
    m.add_argument("base")
    m.add_argument("--n", type=int, required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--users", default="bench0")
    m.add_argument("--password", required=True)
    m.add_argument("--workers", type=int, default=4)
    m.add_argument("--resource")
    a = ap.parse_args()
    return {"check": cmd_check, "flows": cmd_flows, "codes": cmd_codes, "mint": cmd_mint}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
