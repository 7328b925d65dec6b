"""mcpgate's admin console (/admin) in a real browser: Debian's Chromium, headless, driven by
puppeteer-core (`browser_admin.mjs`), against mcpgate in local mode with an admin (`root`, made
with `mcpgate users set-admin`) and a plain user (`alice`, who remembered a consent first).

What the browser does: /admin without a session goes to the console's sign-in; root signs in,
sees the users, adds `carol`, disables her, revokes alice's consent, rotates the signing key,
opens the clients, sessions, upstreams and auth funnel pages, and ends alice's MCP session (which
then answers 404); alice signs in and gets the 403 page. On every page: the CSP stops an inline
script, the stylesheet applies, and axe-core finds no serious or critical violation, in light and
in dark. The CLI and the audit log confirm each action.

In proxy mode (`browser_admin_idp.mjs`, the real oidc-provider IdP): the console's sign-in goes
through the IdP's login and consent pages, and `[admin] groups` decides the role at each sign-in:
in the group, /admin; taken out of it at the IdP, the next sign-in gets 403 and so does the
browser that signed in before.

Screenshots: a temp dir, or `$MCPGATE_SCREENSHOTS` (e.g. `docs/images`) when set and `CI` is not
`true`, as test_browser_pages.py does:
    MCPGATE_SCREENSHOTS=docs/images tests/e2e/.venv/bin/python -m pytest tests/e2e -k browser_admin
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.parse
from pathlib import Path

import pytest

from conftest import NODE22, node_env, require_node_tools, run
from idp_fixtures import http_json
from rs_fixtures import McpHttp
from test_browser_pages import CHROMIUM, screenshot_dir

HERE = Path(__file__).resolve().parent
REDIRECT = "http://127.0.0.1:9/callback"


def test_admin_console_in_a_real_browser(local_factory, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/e2e-install.sh as root (apt-get install chromium)")
    require_node_tools("puppeteer-core/package.json", "axe-core/axe.min.js")
    gate = local_factory(users={"root": None, "alice": None})
    r = gate.cli("users", "set-admin", "root")
    assert r.returncode == 0, r.stderr
    # alice remembers a consent, so the console has one to revoke, and opens an MCP session for
    # the console to end.
    token = _remember_a_consent(gate)
    mcp = McpHttp(gate, token)
    r = mcp.initialize()
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert mcp.request("tools/list").status_code == 200

    out = screenshot_dir(tmp_path)
    cfg = tmp_path / "admin.json"
    cfg.write_text(json.dumps({"base": gate.base_url, "admin": ["root", gate.users["root"]],
                               "user": ["alice", gate.users["alice"]], "out": str(out),
                               "chromium": str(CHROMIUM)}))
    r = run([NODE22, HERE / "browser_admin.mjs", cfg], timeout=240, env=node_env(), cwd=HERE)
    assert r.returncode == 0, f"browser_admin.mjs exited {r.returncode}\n--- stderr ---\n{r.stderr[-6000:]}"
    found = json.loads(r.stdout)
    work = HERE / ".work"
    work.mkdir(exist_ok=True)
    (work / "browser-admin.json").write_text(json.dumps(found, indent=1))

    # Every page, light and dark: no serious or critical accessibility violation.
    assert len(found["axe"]) == 18, sorted(found["axe"])
    serious = {name: [v for v in violations if v["impact"] in ("serious", "critical")]
               for name, violations in found["axe"].items()}
    assert not any(serious.values()), json.dumps({k: v for k, v in serious.items() if v}, indent=1)
    for name, page in found["pages"].items():
        assert page["inlineScriptRan"] is False and page["stylesheetApplied"] is True, name

    # Anonymous visitors went to sign in; the admin got in; alice got 403.
    assert found["statuses"]["nonAdmin"] == 403, found["statuses"]
    assert "Not an admin" in found["pages"]["admin-forbidden-light"]["text"]
    assert found["pages"]["admin-users-light"]["title"].startswith("Users"), found["pages"]["admin-users-light"]
    assert "Signed in as root (admin)" in found["pages"]["admin-users-light"]["text"]
    for name in ("admin-clients", "admin-sessions", "admin-upstreams", "admin-funnel"):
        assert found["statuses"][name] == 200, name
    # The funnel has alice's sign-in: a chart (inline SVG) and its numbers.
    assert found["funnel"]["svgCount"] >= 1, found["funnel"]["text"][:2000]
    assert "completed" in found["funnel"]["text"].lower(), found["funnel"]["text"][:2000]

    # The session ended from the console: the client's next request on it is 404.
    assert "MCP session ended" in found["afterEndSession"]["text"], found["afterEndSession"]["text"][:2000]
    r = mcp.request("tools/list")
    assert r.status_code == 404, (r.status_code, r.text[:300])
    assert gate.audit('action="session.end"') or gate.audit('"action":"session.end"'), gate.log_text()[-3000:]
    assert found["pages"]["phone-users"]["overflowsSideways"] is False

    # Each action happened, said so, and is in the audit log.
    assert "User added." in found["afterAdd"]["text"] and "carol" in found["afterAdd"]["text"]
    assert "User disabled" in found["afterDisable"]["text"] and "disabled since" in found["afterDisable"]["text"]
    assert "Consent revoked" in found["afterRevoke"]["text"]
    assert "New signing key added" in found["afterRotate"]["text"]
    users = gate.cli("users", "list").stdout
    assert any(line.startswith("carol\t") and "disabled" in line for line in users.splitlines()), users
    assert gate.cli("consents", "list", "alice").stdout.strip() == ""
    assert len(gate.cli("keys", "list").stdout.strip().splitlines()) == 2
    for action in ("user.add", "user.disable", "consent.revoke", "key.rotate"):
        assert gate.audit(f'action="{action}"') or gate.audit(f'"action":"{action}"'), (action, gate.log_text()[-3000:])

    shots = {Path(p).name for p in found["screenshots"]}
    for name in ("admin-signin", "admin-users", "admin-user", "admin-keys", "admin-clients", "admin-sessions",
                 "admin-upstreams", "admin-funnel", "admin-forbidden"):
        for scheme in ("light", "dark"):
            assert f"{name}-{scheme}.png" in shots and (out / f"{name}-{scheme}.png").stat().st_size > 5000, name


def _remember_a_consent(gate) -> str:
    """alice signs in to a registered client and remembers her consent (the local browser helper);
    returns her access token."""
    status, client = http_json("POST", f"{gate.base_url}/register", json_body={
        "client_name": "Claude Desktop", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"]})
    assert status == 201, client
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    q = urllib.parse.urlencode({"response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT,
                                "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
                                "scope": "notes:read", "resource": f"{gate.base_url}/mcp"})
    back = gate.front_channel(f"{gate.base_url}/authorize?{q}", "alice", redirect_uri=REDIRECT, remember=True)
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))["code"]
    status, tokens = http_json("POST", f"{gate.base_url}/token", form={
        "grant_type": "authorization_code", "client_id": client["client_id"], "code": code,
        "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert status == 200, tokens
    return tokens["access_token"]


def test_admin_console_signs_in_at_the_identity_provider(proxy_factory, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/e2e-install.sh as root (apt-get install chromium)")
    require_node_tools("puppeteer-core/package.json", "axe-core/axe.min.js")
    gate = proxy_factory(extra_toml=["[admin]", 'groups = ["mcpgate-admins"]'])
    out = screenshot_dir(tmp_path)
    cfg = tmp_path / "admin-idp.json"
    cfg.write_text(json.dumps({"base": gate.base_url, "idp": gate.idp.issuer, "user": "dana",
                               "group": "mcpgate-admins", "out": str(out), "chromium": str(CHROMIUM)}))
    r = run([NODE22, HERE / "browser_admin_idp.mjs", cfg], timeout=240, env=node_env(), cwd=HERE)
    assert r.returncode == 0, f"browser_admin_idp.mjs exited {r.returncode}\n--- stderr ---\n{r.stderr[-6000:]}"
    found = json.loads(r.stdout)
    work = HERE / ".work"
    work.mkdir(exist_ok=True)
    (work / "browser-admin-idp.json").write_text(json.dumps(found, indent=1))

    assert "idp-login" in found["steps"], found["steps"]
    assert len(found["axe"]) == 2, sorted(found["axe"])
    serious = {name: [v for v in violations if v["impact"] in ("serious", "critical")]
               for name, violations in found["axe"].items()}
    assert not any(serious.values()), json.dumps({k: v for k, v in serious.items() if v}, indent=1)
    assert "Sign in with your identity provider" in found["pages"]["admin-signin-idp-light"]["text"]

    # In the group: the console; out of it at the IdP: 403 at the next sign-in, and in the
    # browser that signed in before.
    assert found["statuses"]["inGroup"] == 200, found["statuses"]
    assert "Signed in as oidc:dana@example.test (admin)" in found["inGroup"]["text"], found["inGroup"]["text"][:1000]
    assert found["statuses"]["outOfGroup"] == 403, found["statuses"]
    assert "Not an admin" in found["outOfGroup"]["text"]
    assert found["statuses"]["firstBrowserAfter"] == 403, found["statuses"]
    line = next(l for l in gate.cli("users", "list").stdout.splitlines() if "dana@example.test" in l)
    assert "admin" not in line.split("\t"), line
    for action in ("user.grant_admin", "user.revoke_admin"):
        assert gate.audit(f'action="{action}"') or gate.audit(f'"action":"{action}"'), (action, gate.log_text()[-3000:])
    shots = {Path(p).name for p in found["screenshots"]}
    for scheme in ("light", "dark"):
        assert f"admin-signin-idp-{scheme}.png" in shots and (out / f"admin-signin-idp-{scheme}.png").stat().st_size > 5000
