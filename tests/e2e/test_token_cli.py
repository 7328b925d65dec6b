"""Token tools against the e2e IdP: `mcpgate token client-credentials`, `decode`, `verify` and
`refresh`, the real mcpgate binary against the real oidc-provider (tests/e2e/idp). Secrets go in
on stdin or in files, never argv; tokens come out on stdout only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from idp_fixtures import DEFAULT_OPAQUE_RESOURCE, MACHINE_CLIENT, RS_CLIENT, Idp, jwt_parts
from mcpgate_process import config_text, require_mcpgate_bin

REDIRECT = "http://127.0.0.1:33334/callback"


def mcpgate(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(require_mcpgate_bin()), "token", *args],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def client_credentials(idp: Idp, secret: str, *extra: str) -> subprocess.CompletedProcess:
    return mcpgate(
        "client-credentials", "--issuer", idp.issuer, "--client-id", MACHINE_CLIENT[0],
        "--client-secret-file", "-", "--resource", idp.mcp_resource, *extra,
        stdin=secret + "\n",
    )


def test_client_credentials_decode_and_verify_against_the_idp(idp: Idp, tmp_path: Path):
    got = client_credentials(idp, MACHINE_CLIENT[1], "--scope", "calc docs:read")
    assert got.returncode == 0, got.stderr
    token = got.stdout.strip()
    assert got.stdout.count("\n") == 1, "the token alone on stdout"
    header, claims = jwt_parts(token)
    assert header["typ"] == "at+jwt" and header["kid"] == idp.info()["active_kid"]
    assert claims["aud"] == idp.mcp_resource and claims["sub"] == MACHINE_CLIENT[0]
    assert claims["scope"] == "calc docs:read"
    # The explanation (stderr) says what the token is, never the token or the secret.
    assert "client_secret_basic" in got.stderr and "expires in 60 minutes" in got.stderr, got.stderr
    assert token not in got.stderr and MACHINE_CLIENT[1] not in got.stderr

    # The token endpoint's refusal, with the hint.
    wrong = client_credentials(idp, "not-the-secret")
    assert wrong.returncode == 1, wrong.stderr
    assert wrong.stdout == ""
    assert "invalid_client" in wrong.stderr and "hint:" in wrong.stderr, wrong.stderr

    # decode: header and claims, times in words, from a file.
    token_file = tmp_path / "token"
    token_file.write_text(token)
    decoded = mcpgate("decode", str(token_file))
    assert decoded.returncode == 0, decoded.stderr
    assert f"header.kid  {header['kid']}" in decoded.stdout
    assert idp.mcp_resource in decoded.stdout and "(in 60 minutes)" in decoded.stdout, decoded.stdout

    # verify with flags: the IdP's JWKS found by discovery, the audience and scopes required.
    ok = mcpgate("verify", "-", "--issuer", idp.issuer, "--audience", idp.mcp_resource,
                 "--scope", "calc", stdin=token)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"pass  signature  RS256 signature verifies with key {header['kid']}" in ok.stdout, ok.stdout
    assert "the token is valid for this server" in ok.stdout

    # A wrong audience: the aud check fails, naming the token's aud and the expected one.
    other = "http://127.0.0.1:18000/other-mcp"
    bad = mcpgate("verify", str(token_file), "--issuer", idp.issuer, "--audience", other, "--json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    verdict = json.loads(bad.stdout)
    assert verdict["valid"] is False
    [finding] = verdict["findings"]
    assert finding["check"] == "aud" and finding["outcome"] == "fail", verdict
    assert idp.mcp_resource in finding["summary"] and other in finding["summary"], finding

    # verify --config: what a resource-mode mcpgate in front of this IdP would accept
    # (its audience is public_url + /mcp, the IdP's MCP resource).
    config = tmp_path / "mcpgate.toml"
    config.write_text(config_text(18000, tmp_path, [
        "[auth]", 'mode = "resource"', "[auth.resource]", f"issuer = {json.dumps(idp.issuer)}",
    ]))
    as_configured = mcpgate("verify", "-", "--config", str(config), stdin=token)
    assert as_configured.returncode == 0, as_configured.stdout + as_configured.stderr
    assert 'auth.mode = "resource"' in as_configured.stdout
    # The token lacks notes:read/notes:write of the advertised scopes: accepted, with a warning.
    assert "warn  scope" in as_configured.stdout and "notes:write" in as_configured.stdout, as_configured.stdout


def test_refresh_rotates_and_the_old_refresh_token_dies(idp: Idp, tmp_path: Path):
    client = idp.register(redirect_uris=[REDIRECT], client_name="e2e token cli")
    cid = client["client_id"]
    res = idp.authorize(cid, REDIRECT, user="alice", scope="notes:read calc")
    status, tok = idp.exchange_code(res, cid)
    assert status == 200 and tok.get("refresh_token"), tok
    old = tok["refresh_token"]

    saved = tmp_path / "refresh-token"
    saved.write_text(old + "\n")
    fresh = mcpgate("refresh", "--issuer", idp.issuer, "--client-id", cid,
                    "--refresh-token-file", str(saved), "--refresh-token-out", str(saved))
    assert fresh.returncode == 0, fresh.stderr
    access = fresh.stdout.strip()
    assert "\n" not in access, "the new refresh token went to the file, not stdout"
    _, claims = jwt_parts(access)
    assert claims["sub"] == "alice" and claims["aud"] == idp.mcp_resource
    new = saved.read_text().strip()
    assert new and new != old
    assert saved.stat().st_mode & 0o077 == 0, "the refresh token file is private"
    assert "rotated" in fresh.stderr and "old one is now dead" in fresh.stderr, fresh.stderr
    for secret in (access, new, old):
        assert secret not in fresh.stderr

    # The old one is dead at the IdP: refused with the hint for invalid_grant.
    dead = mcpgate("refresh", "--issuer", idp.issuer, "--client-id", cid,
                   "--refresh-token-file", "-", stdin=old)
    assert dead.returncode == 1, dead.stdout + dead.stderr
    assert "invalid_grant" in dead.stderr and "hint: the refresh token" in dead.stderr, dead.stderr
    assert dead.stdout == ""


def test_verify_introspects_an_opaque_token_as_a_configured_mcpgate_would(idp: Idp, tmp_path: Path):
    # A machine client's opaque token for the IdP's opaque resource, fetched by the CLI. mcpgate in
    # resource mode with introspection configured asks the IdP about it (RFC 7662), and so does
    # `token verify --config`. Machine tokens have no `sub`: the caller is `client_id`.
    got = mcpgate(
        "client-credentials", "--issuer", idp.issuer, "--client-id", MACHINE_CLIENT[0],
        "--client-secret-file", "-", "--resource", DEFAULT_OPAQUE_RESOURCE, "--scope", "calc",
        stdin=MACHINE_CLIENT[1],
    )
    assert got.returncode == 0, got.stderr
    opaque = got.stdout.strip()
    assert "." not in opaque and "an opaque token" in got.stderr, got.stderr
    secret_file = tmp_path / "rs.secret"
    secret_file.write_text(RS_CLIENT[1])
    config = tmp_path / "mcpgate.toml"
    config.write_text(config_text(18001, tmp_path, [
        "[auth]", 'mode = "resource"', "[auth.resource]", f"issuer = {json.dumps(idp.issuer)}",
        f"audiences = [{json.dumps(DEFAULT_OPAQUE_RESOURCE)}]",
        "[auth.resource.introspection]", f"client_id = {json.dumps(RS_CLIENT[0])}",
        f"client_secret_file = {json.dumps(str(secret_file))}", 'subject_claim = "client_id"',
    ]))
    ok = mcpgate("verify", "-", "--config", str(config), "--scope", "calc", stdin=opaque)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "pass  active" in ok.stdout and "introspection" in ok.stdout, ok.stdout

    # Revoked at the IdP: introspection says inactive, and the check is named.
    status, _ = idp.revoke(opaque)
    assert status == 200
    revoked = mcpgate("verify", "-", "--config", str(config), stdin=opaque)
    assert revoked.returncode == 1, revoked.stdout + revoked.stderr
    assert "FAIL  active" in revoked.stdout, revoked.stdout
