#!/usr/bin/env python3
"""A scripted browser for mcpgate's OWN login and consent pages (`auth.mode = "local"`), stdlib only.

Unlike the generic `idp_agent.py` (which fills in whatever form a third-party IdP shows), this one
knows mcpgate's contract and checks it on every step, so a broken page fails loudly:

    GET  /authorize?...           -> 200 HTML. Without a login session: the LOGIN page,
                                     <form method="post" action="/login"> with hidden `request`
                                     and `csrf`, inputs `username` and `password`.
                                     (With a session: the CONSENT page, or 303 to redirect_uri.)
    POST /login                   -> 303 to /consent?request=ID      (200/401 page = login failed)
    GET  /consent?request=ID      -> 200 HTML, <form method="post" action="/consent"> with hidden
                                     `request` and `csrf`, buttons name="decision" value="approve"
                                     / value="deny", optional checkbox `remember`.
    POST /consent                 -> 303 to redirect_uri?code=..&state=..&iss=..
                                     (deny: redirect_uri?error=access_denied&state=..&iss=..)

Cookies set along the way are kept in a cookie jar (pass the same jar to reuse the login
session). The browser stops at the client's redirect_uri without fetching it, and returns that URL.

Library:
    from local_browser import authorize
    final_url = authorize(auth_url, "alice", "s3cret")            # approve
    final_url = authorize(auth_url, "alice", "s3cret", deny=True)  # press "deny"
    trace = Trace(); authorize(..., trace=trace)                   # what happened, for asserts

CLI (the same options and env as idp_agent.py, so it plugs into clients the same way):
    python local_browser.py URL [--user alice] [--password pw] [--deny] [--remember]
                                [--deliver] [--log FILE]
prints the final redirect URL. `--deliver` then GETs it (the client's own callback server:
mcp-remote, the Inspector); `local_browser.sh` is this with `--deliver`, for use as `$BROWSER`.
Env defaults: LOCAL_BROWSER_USER, LOCAL_BROWSER_PASSWORD, LOCAL_BROWSER_DENY=1,
LOCAL_BROWSER_REMEMBER=1, LOCAL_BROWSER_LOG (one JSON line per run: url, final URL or error,
steps, the pages seen and cookies set).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

# Shared page parsing and plumbing with the generic IdP agent (same directory).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idp_agent import AgentError, _Form, _NoRedirect, _PageParser, _same_endpoint, deliver  # noqa: E402


class LoginFailed(AgentError):
    """POST /login did not redirect to the consent page (wrong password, unknown user, ...)."""

    def __init__(self, message: str, steps: list[str], status: int, page: str):
        super().__init__(message, steps)
        self.status = status
        self.page = page


@dataclass
class Trace:
    """What the browser saw, for tests to assert on."""

    steps: list[str] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)  # "login" / "consent", in order
    login_posts: int = 0
    consent_posts: int = 0
    request_ids: list[str] = field(default_factory=list)  # hidden `request` of each page
    set_cookies: list[str] = field(default_factory=list)  # raw Set-Cookie header values
    final_url: str | None = None

    @property
    def final_params(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.final_url or "").query))


def _hidden(form: _Form) -> dict[str, str]:
    return {name: value for typ, name, value in form.fields if typ == "hidden"}


def _form_with_action(forms: list[_Form], base: str, path: str) -> _Form | None:
    for f in forms:
        action = urllib.parse.urlsplit(urllib.parse.urljoin(base, f.action or base))
        if action.path == path:
            return f
    return None


def _checkbox(html: str, name: str) -> str | None:
    """The value a browser submits for the checkbox `name` when ticked (None: no such checkbox)."""
    for tag in re.findall(r"<input\b[^>]*>", html, flags=re.I):
        attrs = dict((k.lower(), v1 or v2 or v3) for k, v1, v2, v3 in
                     re.findall(r"""([\w-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", tag))
        if attrs.get("type", "").lower() == "checkbox" and attrs.get("name") == name:
            return attrs.get("value") or "on"
    return None


def _check_form(form: _Form, page: str, target: str, text: str, log: list[str]) -> dict[str, str]:
    if form.method != "post":
        raise AgentError(f"the {page} form must be method=post, got {form.method!r} at {target}", log)
    hidden = _hidden(form)
    for name in ("request", "csrf"):
        if not hidden.get(name):
            raise AgentError(f"the {page} form has no (or an empty) hidden input {name!r} at {target}: "
                             f"fields {form.fields}\n{text[:1500]}", log)
    return hidden


def authorize(
    url: str,
    user: str = "alice",
    password: str = "password",
    *,
    redirect_uri: str | None = None,
    deny: bool | str = False,
    remember: bool = False,
    timeout: float = 10.0,
    cookie_jar: http.cookiejar.CookieJar | None = None,
    steps: list[str] | None = None,
    trace: Trace | None = None,
    max_steps: int = 12,
) -> str:
    """Log in to mcpgate (if needed) and answer its consent page; return the final redirect URL.

    `deny` (True, or a URL prefix as in idp_agent: deny when the consent page's URL starts with
    it) presses value="deny". `remember` ticks the `remember` checkbox when the page has one.
    Raises LoginFailed when the login is refused, AgentError on any contract violation."""
    if redirect_uri is None:
        qs = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "redirect_uri" not in qs:
            raise ValueError("the authorization URL has no redirect_uri: pass redirect_uri=")
        redirect_uri = qs["redirect_uri"][0]
    tr = trace if trace is not None else Trace()
    if steps is not None:
        tr.steps = steps
    log = tr.steps
    jar = cookie_jar if cookie_jar is not None else http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    opener.addheaders = [("User-Agent", "mcpgate-e2e-local-browser/1"),
                         ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")]

    method, target, body = "GET", url, None
    for _ in range(max_steps):
        req = urllib.request.Request(target, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            resp = opener.open(req, timeout=timeout)
            status, headers, content = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers, content = e.code, e.headers, e.read()
        tr.set_cookies += headers.get_all("Set-Cookie") or []
        path = urllib.parse.urlsplit(target).path
        log.append(f"{method} {target} -> {status}")

        if status in (301, 302, 303, 307, 308):
            loc = headers.get("Location")
            if not loc:
                raise AgentError(f"{status} without Location from {method} {target}", log)
            nxt = urllib.parse.urljoin(target, loc)
            if _same_endpoint(nxt, redirect_uri):
                log.append(f"stop at redirect_uri {nxt}")
                tr.final_url = nxt
                return nxt
            if method == "POST" and path == "/login":
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(nxt).query))
                if urllib.parse.urlsplit(nxt).path != "/consent" or not q.get("request"):
                    raise AgentError(f"POST /login redirected to {nxt}, want /consent?request=ID", log)
                if status != 303:
                    raise AgentError(f"POST /login answered {status}, want 303", log)
            if method == "POST" and path == "/consent":
                raise AgentError(f"POST /consent redirected to {nxt}, not to the client's redirect_uri "
                                 f"{redirect_uri}", log)
            method, target, body = "GET", nxt, None
            continue

        text = content.decode(headers.get_content_charset() or "utf-8", "replace")
        if method == "POST" and path == "/login":
            tr.pages.append("login-error")
            raise LoginFailed(f"login as {user!r} refused: POST /login -> {status}: {text[:600]}", log, status, text)
        if status != 200:
            raise AgentError(f"HTTP {status} from {method} {target}: {text[:1500]}", log)
        if headers.get_content_type() != "text/html":
            raise AgentError(f"want text/html from {target}, got {headers.get_content_type()}: {text[:800]}", log)

        page = _PageParser()
        page.feed(text)
        login = _form_with_action(page.forms, target, "/login")
        consent = _form_with_action(page.forms, target, "/consent")
        if login is not None:
            tr.pages.append("login")
            hidden = _check_form(login, "login", target, text, log)
            names = {n for _, n, _ in login.fields}
            if not {"username", "password"} <= names or not any(t == "password" for t, _, _ in login.fields):
                raise AgentError(f"the login form lacks username/password inputs: {login.fields}", log)
            tr.request_ids.append(hidden["request"])
            fields = [(n, v) for t, n, v in login.fields if t == "hidden"]
            fields += [("username", user), ("password", password)]
            tr.login_posts += 1
            method, body = "POST", urllib.parse.urlencode(fields).encode()
            target = urllib.parse.urljoin(target, login.action)
            log.append(f"  login form: hidden {sorted(hidden)}, submit as {user!r}")
        elif consent is not None:
            tr.pages.append("consent")
            hidden = _check_form(consent, "consent", target, text, log)
            decisions = {v for n, v, _ in consent.buttons if n == "decision"}
            if decisions != {"approve", "deny"}:
                raise AgentError(f"the consent form must have decision=approve and decision=deny buttons, "
                                 f"got {consent.buttons}\n{text[:1500]}", log)
            tr.request_ids.append(hidden["request"])
            deny_here = deny is True or (isinstance(deny, str) and target.startswith(deny))
            fields = [(n, v) for t, n, v in consent.fields if t == "hidden"]
            # Checkboxes: _PageParser keeps only the checked ones; `remember` is ours to decide.
            fields += [(n, v) for t, n, v in consent.fields if t == "checkbox" and n != "remember"]
            if remember:
                box = _checkbox(text, "remember")
                if box is None:
                    raise AgentError("remember requested but the consent page has no `remember` checkbox", log)
                fields.append(("remember", box))  # what a browser sends: the value attribute, or "on"
            fields.append(("decision", "deny" if deny_here else "approve"))
            tr.consent_posts += 1
            method, body = "POST", urllib.parse.urlencode(fields).encode()
            target = urllib.parse.urljoin(target, consent.action)
            log.append(f"  consent form: hidden {sorted(hidden)}, decision={'deny' if deny_here else 'approve'}"
                       f"{' remember' if remember else ''}")
        else:
            raise AgentError(f"neither the login form (action=/login) nor the consent form (action=/consent) "
                             f"at {target}: {text[:1500]}", log)
    raise AgentError(f"gave up after {max_steps} steps without reaching {redirect_uri}", log)


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="authorization URL (mcpgate's /authorize?...)")
    ap.add_argument("--user", default=env.get("LOCAL_BROWSER_USER", "alice"))
    ap.add_argument("--password", default=env.get("LOCAL_BROWSER_PASSWORD", "password"))
    ap.add_argument("--redirect-uri", default=None, help="default: the URL's redirect_uri parameter")
    ap.add_argument("--deny", action="store_true", default=env.get("LOCAL_BROWSER_DENY") in ("1", "true"))
    ap.add_argument("--remember", action="store_true", default=env.get("LOCAL_BROWSER_REMEMBER") in ("1", "true"))
    ap.add_argument("--deliver", action="store_true", default=env.get("LOCAL_BROWSER_DELIVER") == "1",
                    help="GET the final redirect URL (let the client's callback server receive it)")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--log", default=env.get("LOCAL_BROWSER_LOG"), help="append a JSON line per run here")
    a = ap.parse_args(argv)

    tr = Trace()
    record: dict = {"time": time.time(), "url": a.url, "user": a.user, "deliver": a.deliver}
    code = 0
    try:
        final = authorize(a.url, a.user, a.password, redirect_uri=a.redirect_uri, deny=a.deny,
                          remember=a.remember, timeout=a.timeout, trace=tr)
        record["final_url"] = final
        print(final, flush=True)
        if a.deliver:
            # Exit 0 whatever the callback answered (xdg-open would run $BROWSER again on failure).
            record["deliver_status"] = deliver(final, timeout=a.timeout)
            if record["deliver_status"] >= 400:
                print(f"callback answered HTTP {record['deliver_status']}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - CLI: report, log and exit non-zero
        record["error"] = f"{type(e).__name__}: {e}"
        print(record["error"], file=sys.stderr)
        code = 2
    record.update(steps=tr.steps, pages=tr.pages, set_cookies=tr.set_cookies)
    if a.log:
        with open(a.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
