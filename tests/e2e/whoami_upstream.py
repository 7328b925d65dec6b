"""An OAuth-protected upstream MCP server for test_upstream_user_auth.py: FastMCP (bench/.venv) as a
resource server only. It verifies the e2e IdP's JWTs (FastMCP's JWTVerifier: RS256 with the key of
the token's kid from the IdP's JWKS, `iss`, `aud` == this server's URL, scope `whoami`) and serves
RFC 9728 metadata naming the IdP (RemoteAuthProvider). One tool, `whoami`, returns who the token
says is calling: `sub`, `aud`, `client_id`, `azp`, `scope`.

Usage: bench/.venv/bin/python tests/e2e/whoami_upstream.py PORT --issuer ISSUER --jwks-uri URI
"""

import argparse

from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--jwks-uri", required=True)
    a = ap.parse_args()
    base = f"http://127.0.0.1:{a.port}"
    verifier = JWTVerifier(jwks_uri=a.jwks_uri, issuer=a.issuer, audience=f"{base}/mcp", required_scopes=["whoami"])
    auth = RemoteAuthProvider(token_verifier=verifier, authorization_servers=[a.issuer], base_url=base,
                              scopes_supported=["whoami"], resource_name="whoami")
    mcp = FastMCP("whoami", auth=auth)

    @mcp.tool
    def whoami() -> dict:
        """Who the bearer token says is calling."""
        token = get_access_token()
        claims = dict(token.claims or {}) if token else {}
        return {k: claims.get(k) for k in ("sub", "aud", "client_id", "azp", "scope", "iss")}

    mcp.run(transport="http", host="127.0.0.1", port=a.port, path="/mcp", show_banner=False, log_level="warning")


if __name__ == "__main__":
    main()
