#!/usr/bin/env python3
"""A scripted user agent for headless OAuth logins (stdlib only).

Given an authorization URL, it behaves like a user in a browser: it follows redirects with a
cookie jar, fills in and submits every HTML form it is shown (the IdP's login form, the IdP's
consent form, a gateway's consent form, ...) and stops at the client's ``redirect_uri`` without
fetching it. The result is the final redirect URL, carrying ``code``, ``state`` and ``iss`` (or
``error``).

Forms are filled generically: text/email inputs named ``login``, ``username``, ``user``,
``email`` or ``name`` get the user name, password inputs get the password, hidden and preset
fields keep their values; among several submit buttons an approve-like one is pressed
(``approve``, ``allow``, ``accept``, ``continue``, ...), or on consent pages a deny-like one with
``deny`` (falling back to an abort/cancel link).

Library:
    from idp_agent import authorize
    final_url = authorize(auth_url, user="alice")

CLI:
    python idp_agent.py URL [--user alice] [--password pw] [--deny | --deny-at URL_PREFIX]
                            [--deliver] [--log FILE]
prints the final redirect URL on stdout. ``--deliver`` then GETs that URL (for clients whose
callback server listens locally: mcp-remote, the Inspector), so ``idp/browser`` (this with
``--deliver``) can serve as ``$BROWSER``. Defaults come from the environment: ``IDP_AGENT_USER``
(alice), ``IDP_AGENT_PASSWORD`` (any non-empty), ``IDP_AGENT_DENY`` (``1``, or a URL prefix), ``IDP_AGENT_DELIVER=1``,
``IDP_AGENT_LOG`` (append one JSON line per run: url, final URL or error, steps).
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
from html.parser import HTMLParser

USER_FIELDS = ("login", "username", "user", "email", "name", "user_name", "userid")
APPROVE_WORDS = ("approve", "allow", "accept", "authorize", "authorise", "consent", "grant", "yes", "continue", "confirm", "sign-in", "sign in", "login", "submit")
DENY_WORDS = ("deny", "reject", "decline", "cancel", "abort", "no")


class AgentError(RuntimeError):
    """The login flow could not be completed. `steps` lists what the agent did."""

    def __init__(self, message: str, steps: list[str]):
        super().__init__(message + "\n  steps:\n    " + "\n    ".join(steps[-30:]))
        self.steps = steps


@dataclass
class _Form:
    action: str | None
    method: str
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (type, name, value)
    buttons: list[tuple[str | None, str, str]] = field(default_factory=list)  # (name, value, label)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._form: _Form | None = None
        self._button: list | None = None
        self._link: list | None = None

    def handle_starttag(self, tag, attrs):
        a = {k.lower(): (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = _Form(action=a.get("action"), method=(a.get("method") or "get").lower())
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            typ = (a.get("type") or "text").lower()
            name = a.get("name")
            if typ in ("submit", "image"):
                self._form.buttons.append((name, a.get("value", ""), a.get("value", "")))
            elif typ in ("checkbox", "radio"):
                if name and "checked" in a:
                    self._form.fields.append((typ, name, a.get("value", "on")))
            elif name and typ not in ("button", "reset", "file"):
                self._form.fields.append((typ, name, a.get("value", "")))
        elif tag == "button" and self._form is not None:
            typ = (a.get("type") or "submit").lower()
            if typ == "submit":
                self._button = [a.get("name"), a.get("value", ""), ""]
        elif tag == "textarea" and self._form is not None and a.get("name"):
            self._form.fields.append(("textarea", a["name"], ""))
        elif tag == "a" and a.get("href"):
            self._link = [a["href"], ""]

    def handle_data(self, data):
        if self._button is not None:
            self._button[2] += data
        if self._link is not None:
            self._link[1] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "button" and self._button is not None and self._form is not None:
            name, value, label = self._button
            self._form.buttons.append((name, value, label.strip()))
            self._button = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], self._link[1].strip()))
            self._link = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # surfaces as HTTPError with the 3xx code; we follow by hand


def _same_endpoint(url: str, target: str) -> bool:
    u, t = urllib.parse.urlsplit(url), urllib.parse.urlsplit(target)
    return (u.scheme, u.netloc, u.path or "/") == (t.scheme, t.netloc, t.path or "/")


def _matches(label: str, words: tuple[str, ...]) -> bool:
    label = label.strip().lower()
    return any(re.match(re.escape(w) + r"(\b|$)", label) for w in words)


def _choose_button(form: _Form, deny: bool):
    if not form.buttons:
        return None
    want, avoid = (DENY_WORDS, APPROVE_WORDS) if deny else (APPROVE_WORDS, DENY_WORDS)
    for b in form.buttons:
        if _matches(b[1], want) or _matches(b[2], want) or (b[0] and _matches(b[0], want)):
            return b
    if deny:
        return None
    for b in form.buttons:
        if not (_matches(b[1], avoid) or _matches(b[2], avoid) or (b[0] and _matches(b[0], avoid))):
            return b
    return form.buttons[0]


def _fill(form: _Form, user: str, password: str) -> list[tuple[str, str]]:
    out = []
    for typ, name, value in form.fields:
        if typ == "password":
            value = password
        elif typ in ("text", "email", "") and name.lower() in USER_FIELDS:
            value = user
        out.append((name, value))
    return out


def _pick_form(forms: list[_Form]) -> _Form | None:
    for f in forms:  # a login form first
        if any(t == "password" for t, _, _ in f.fields):
            return f
    for f in forms:
        if f.method == "post":
            return f
    return forms[0] if forms else None


def authorize(
    url: str,
    user: str = "alice",
    password: str = "password",
    *,
    redirect_uri: str | None = None,
    deny: bool | str = False,
    timeout: float = 10.0,
    max_steps: int = 25,
    cookie_jar: http.cookiejar.CookieJar | None = None,
    steps: list[str] | None = None,
) -> str:
    """Run the front-channel part of an authorization request; return the final redirect URL.

    `redirect_uri` defaults to the `redirect_uri` query parameter of `url`; the agent stops at the
    first redirect (or auto-submitted form_post) to it. Pass the same `cookie_jar` to several
    calls to keep the IdP session (a second authorization then needs no login).
    `deny`: True presses the deny-like button (or the abort/cancel link) of every consent page
    (a page whose form has no password field; login forms are always submitted); a string denies
    only on pages whose URL starts with it (e.g. the gateway's base URL).
    """
    if redirect_uri is None:
        qs = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        if "redirect_uri" not in qs:
            raise ValueError("the authorization URL has no redirect_uri: pass redirect_uri=")
        redirect_uri = qs["redirect_uri"][0]
    jar = cookie_jar if cookie_jar is not None else http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    opener.addheaders = [("User-Agent", "mcpgate-e2e-idp-agent/1"), ("Accept", "text/html,application/json;q=0.9,*/*;q=0.8")]
    log = steps if steps is not None else []

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
        log.append(f"{method} {target} -> {status}")

        if status in (301, 302, 303, 307, 308):
            loc = headers.get("Location")
            if not loc:
                raise AgentError(f"{status} without Location", log)
            nxt = urllib.parse.urljoin(target, loc)
            if _same_endpoint(nxt, redirect_uri):
                log.append(f"stop at redirect_uri {nxt}")
                return nxt
            if status in (307, 308) and method == "POST":
                target = nxt  # keep method and body
            else:
                method, target, body = "GET", nxt, None
            continue

        text = content.decode(headers.get_content_charset() or "utf-8", "replace")
        if status >= 400:
            raise AgentError(f"HTTP {status} from {target}: {text[:800]}", log)
        ctype = headers.get_content_type()
        if ctype != "text/html":
            raise AgentError(f"unexpected {ctype} response from {target}: {text[:800]}", log)

        page = _PageParser()
        page.feed(text)
        form = _pick_form(page.forms)
        if form is None:
            raise AgentError(f"no form on the page at {target}: {text[:800]}", log)
        action = urllib.parse.urljoin(target, form.action or target)
        fields = _fill(form, user, password)

        if _same_endpoint(action, redirect_uri):
            # response_mode=form_post: hand the fields back as a query string.
            final = action.split("?", 1)[0] + "?" + urllib.parse.urlencode(fields)
            log.append(f"stop at form_post to redirect_uri {final}")
            return final

        is_login = any(t == "password" for t, _, _ in form.fields)
        deny_here = not is_login and (deny is True or (isinstance(deny, str) and target.startswith(deny)))
        button = _choose_button(form, deny_here)
        if deny_here and button is None:
            links = [(h, t) for h, t in page.links if _matches(t.strip("[] "), DENY_WORDS) or "abort" in h]
            if not links:
                raise AgentError(f"deny requested but no deny button or abort link at {target}", log)
            method, target, body = "GET", urllib.parse.urljoin(target, links[0][0]), None
            continue
        if button is not None and button[0]:
            fields.append((button[0], button[1]))
        encoded = urllib.parse.urlencode(fields)
        if form.method == "post":
            method, target, body = "POST", action, encoded.encode()
        else:
            method, target, body = "GET", action.split("?", 1)[0] + "?" + encoded, None
        log.append(f"  submit form {[n for n, _ in fields]}")
    raise AgentError(f"gave up after {max_steps} steps without reaching {redirect_uri}", log)


def deliver(final_url: str, timeout: float = 10.0) -> int:
    """GET the final redirect URL (the client's own callback server); return the HTTP status."""
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(final_url, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="authorization URL")
    ap.add_argument("--user", default=env.get("IDP_AGENT_USER", "alice"))
    ap.add_argument("--password", default=env.get("IDP_AGENT_PASSWORD", "password"))
    ap.add_argument("--redirect-uri", default=None, help="default: the URL's redirect_uri parameter")
    env_deny = env.get("IDP_AGENT_DENY") or ""
    ap.add_argument("--deny", action="store_true", default=env_deny in ("1", "true"),
                    help="deny on every consent page")
    ap.add_argument("--deny-at", metavar="URL_PREFIX", default=env_deny if "://" in env_deny else None,
                    help="deny only on consent pages whose URL starts with URL_PREFIX")
    ap.add_argument("--deliver", action="store_true", default=env.get("IDP_AGENT_DELIVER") == "1",
                    help="GET the final redirect URL (let the client's callback server receive it)")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--log", default=env.get("IDP_AGENT_LOG"), help="append a JSON line per run here")
    a = ap.parse_args(argv)

    steps: list[str] = []
    record = {"time": time.time(), "url": a.url, "user": a.user, "deliver": a.deliver}
    code = 0
    try:
        final = authorize(a.url, a.user, a.password, redirect_uri=a.redirect_uri, deny=a.deny_at or a.deny,
                          timeout=a.timeout, steps=steps)
        record["final_url"] = final
        print(final, flush=True)
        if a.deliver:
            # Exit 0 whatever the callback answered: xdg-open runs $BROWSER again when it fails,
            # which would deliver a second code. The status is printed and logged.
            record["deliver_status"] = deliver(final, timeout=a.timeout)
            if record["deliver_status"] >= 400:
                print(f"callback answered HTTP {record['deliver_status']}", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - CLI: report, log and exit non-zero
        record["error"] = f"{type(e).__name__}: {e}"
        print(record["error"], file=sys.stderr)
        code = 2
    record["steps"] = steps
    if a.log:
        with open(a.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
