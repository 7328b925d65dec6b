"""mcpgate's sign-in, consent and error pages in a real browser: Debian's Chromium, headless, driven
by puppeteer-core (`browser_pages.mjs`), against mcpgate in local mode with two users and a
`[branding]` section.

What the browser does: the sign-in page (the user name field focused), a wrong password (the error
under the field, the password focused), the right one, the consent page (signed in as alice, scopes
in words, the localhost warning, keyboard order), "Not you? Sign out" (back to the sign-in page of
the same request), bob signs in and approves (the code is redeemed here at /token); on a phone
(390 px) sign-in and consent without sideways scrolling, then deny (`access_denied`); the error
pages of an unknown client and of a redirect URI that is not registered. On every page: the CSP
stops an inline script, the stylesheet applies, and axe-core finds no serious or critical
violation, in light and in dark.

Everything the browser saw (every axe finding, also moderate and minor ones) is kept in
`.work/browser-pages.json`. Screenshots: written to a temp dir, or to `$MCPGATE_SCREENSHOTS` (e.g. `docs/images`, relative to
the repo) when that is set and `CI` is not `true`, so that CI never changes the tree. Refresh the
committed ones with
    MCPGATE_SCREENSHOTS=docs/images tests/e2e/.venv/bin/python -m pytest tests/e2e -k browser_pages
"""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import pytest

from conftest import NODE22, node_env, require_node_tools, run
from idp_fixtures import http_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CHROMIUM = Path(os.environ.get("MCPGATE_CHROMIUM", "/usr/bin/chromium"))

BRANDING = [
    "[branding]",
    'product_name = "Acme AI"',
    'server_name = "Acme notes and docs"',
    'support_url = "https://help.acme.example/mcp"',
    "[branding.scopes]",
    '"docs:read" = "Search and read the Acme handbook"',
]


def screenshot_dir(tmp_path: Path) -> Path:
    wanted = os.environ.get("MCPGATE_SCREENSHOTS")
    if os.environ.get("CI") == "true" or not wanted:
        out = tmp_path / "screenshots"
    else:
        out = Path(wanted) if Path(wanted).is_absolute() else REPO / wanted
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_pages_in_a_real_browser(local_factory, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/e2e-install.sh as root (apt-get install chromium)")
    require_node_tools("puppeteer-core/package.json", "axe-core/axe.min.js")
    gate = local_factory(users={"alice": None, "bob": None}, extra_toml=BRANDING)
    out = screenshot_dir(tmp_path)
    cfg = tmp_path / "browser.json"
    cfg.write_text(json.dumps({"base": gate.base_url, "users": gate.users, "out": str(out),
                               "chromium": str(CHROMIUM)}))
    r = run([NODE22, HERE / "browser_pages.mjs", cfg], timeout=240, env=node_env(), cwd=HERE)
    assert r.returncode == 0, f"browser_pages.mjs exited {r.returncode}\n--- stderr ---\n{r.stderr[-6000:]}"
    found = json.loads(r.stdout)
    pages = found["pages"]
    # Everything the browser saw (every axe finding, also moderate and minor), for people.
    work = HERE / ".work"
    work.mkdir(exist_ok=True)
    (work / "browser-pages.json").write_text(json.dumps(found, indent=1))

    # Every page, light and dark: no serious or critical accessibility violation.
    assert len(found["axe"]) >= 14, sorted(found["axe"])
    serious = {name: [v for v in violations if v["impact"] in ("serious", "critical")]
               for name, violations in found["axe"].items()}
    assert not any(serious.values()), json.dumps({k: v for k, v in serious.items() if v}, indent=1)

    # The CSP the browser enforced, and the stylesheet it applied (the default accent).
    csp = found["signinHeaders"]["content-security-policy"]
    assert "style-src 'self'" in csp and "unsafe-inline" not in csp and "script" not in csp, csp
    for name, page in pages.items():
        assert page["inlineScriptRan"] is False and page["stylesheetApplied"] is True, name
    assert pages["signin-light"]["buttonBackground"] == "rgb(37, 87, 214)", pages["signin-light"]
    assert pages["signin-light"]["bodyBackground"] != pages["signin-dark"]["bodyBackground"], "no dark scheme"

    # Sign-in: branded, labelled fields; the error under the field after a wrong password.
    signin = pages["signin"]
    assert signin["title"] == "Sign in · Acme AI", signin["title"]
    assert "Sign in to Acme notes and docs so that Claude Desktop can use it as you." in signin["text"], signin["text"]
    assert [(f["id"], f["label"]) for f in signin["labels"]] == [("username", "User name"), ("password", "Password")]
    failed = pages["signin-error"]
    assert failed["signinError"] == "Wrong user name or password.", failed
    password = [f for f in failed["labels"] if f["id"] == "password"][0]
    assert password["invalid"] == "true" and password["describedBy"] == "signin-error", failed["labels"]

    # Consent: who is signed in, what is asked in words, where the browser goes back to.
    consent = pages["consent"]["text"]
    for words in ("Signed in as alice", "Not you? Sign out", "Claude Desktop wants to use Acme notes and docs as you.",
                  "Read your notes", "Create, change and delete your notes", "Search and read the Acme handbook",
                  "127.0.0.1", "only returns to programs on this computer (localhost)",
                  "Remember this decision for this app", "Get help"):
        assert words in consent, (words, consent)
    assert pages["consent"]["forms"] == ["/logout", "/consent"], pages["consent"]["forms"]
    # Keyboard: sign-out, remember, Allow, Deny, then the help link, in that order.
    order = found["consentTabOrder"]
    expected = ["button:::/logout", "input:remember::/consent", "button:decision:approve:/consent",
                "button:decision:deny:/consent"]
    assert [o for o in order if o in expected] == expected, order
    assert pages["signed-out"]["url"].startswith("/login?request="), pages["signed-out"]
    assert "Signed in as bob" in pages["consent-bob"]["text"]

    # On a phone nothing scrolls sideways.
    for name in ("phone-signin-light", "phone-signin-dark", "phone-consent-light", "phone-consent-dark",
                 "phone-error-light"):
        assert pages[name]["overflowsSideways"] is False, name

    # Approve reached the client with a code bob's token comes from; deny with access_denied.
    approve = found["flows"]["approve"]
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(approve["callback"]).query))
    assert q["state"] == approve["state"] and q["iss"] == gate.issuer, q
    status, tokens = http_json("POST", gate.token_endpoint, form={
        "grant_type": "authorization_code", "client_id": found["clientId"], "code": q["code"],
        "code_verifier": approve["verifier"], "redirect_uri": found["redirectUri"]})
    assert status == 200 and tokens.get("access_token"), (status, tokens)
    deny = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(found["flows"]["deny"]["callback"]).query))
    assert deny["error"] == "access_denied" and deny["state"] == found["flows"]["deny"]["state"], deny

    # Error pages: the same look, what went wrong and what to do.
    assert found["errorStatus"] == 400 and found["badRedirectStatus"] == 400
    error = pages["error-light"]
    assert error["h1"] == "This sign-in request is not valid", error
    assert "this client is not registered here" in error["text"] and "Try connecting again" in error["text"], error
    assert "Contact support" in error["text"], error
    assert "redirect" in pages["desktop-bad-redirect"]["text"].lower(), pages["desktop-bad-redirect"]

    shots = {Path(p).name for p in found["screenshots"]}
    for name in ("signin", "signin-error", "consent", "error", "phone-signin", "phone-consent"):
        for scheme in ("light", "dark"):
            assert f"{name}-{scheme}.png" in shots and (out / f"{name}-{scheme}.png").stat().st_size > 5000, name
