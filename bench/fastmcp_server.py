"""FastMCP comparison server for the tools/call load benchmark (bench/run.sh).

Exposes one tool, add(a, b) -> a + b, over streamable HTTP at /mcp in stateless JSON
mode (no sessions, application/json responses instead of SSE).

With --jwks-uri and --issuer (bench/run_auth.sh) /mcp requires a bearer JWT, checked by
FastMCP's JWTVerifier: RS256 signature with the key of the token's kid from the JWKS (cached
after the first fetch), exp, iss == ISSUER, aud == http://127.0.0.1:PORT/mcp (this server's
resource URL) and scope containing "calc".

With --oauth (bench/run_oauth.sh) FastMCP is also the OAuth authorization server: FastMCP
4.1.2's only authorization server that runs in-process (no upstream IdP) is
`fastmcp.server.auth.providers.in_memory.InMemoryOAuthProvider` ("for testing purposes"), mounted
on the MCP SDK's auth routes (`/register`, `/authorize`, `/token`, `/revoke`, RFC 8414 metadata).
Read from the installed source: DCR stores the client in a dict; /authorize approves at once (no
login, no consent page: 302 to redirect_uri with a code); /token checks PKCE and issues random
opaque tokens kept in dicts; a refresh deletes the old refresh token and issues a new pair
(rotation without a reuse grace, without family revocation). Nothing is persisted, hashed,
signed or encrypted. `OAuthProxy`/`OIDCProxy` need an upstream IdP for every refresh, so they
are no in-process comparison. /mcp then requires one of its tokens with scope "calc".

Usage: bench/.venv/bin/python bench/fastmcp_server.py PORT [--jwks-uri URI --issuer ISSUER | --oauth]
"""

import argparse

from fastmcp import FastMCP

mcp = FastMCP("bench-calc")


@mcp.tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def serve_stateless_json(server: FastMCP, port: int) -> None:
    """Streamable HTTP at 127.0.0.1:PORT/mcp, stateless, JSON answers, no access log: the
    settings every FastMCP leg of the benchmarks runs with (bench/fastmcp_proxy.py too)."""
    server.run(
        transport="http",
        host="127.0.0.1",
        port=port,
        path="/mcp",
        stateless_http=True,
        json_response=True,
        show_banner=False,
        log_level="warning",
        # Per-request access logging off: give FastMCP its best case.
        uvicorn_config={"access_log": False},
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--jwks-uri")
    ap.add_argument("--issuer")
    ap.add_argument("--oauth", action="store_true")
    a = ap.parse_args()
    port = a.port
    if a.oauth and (a.jwks_uri or a.issuer):
        ap.error("--oauth goes without --jwks-uri/--issuer")
    if a.oauth:
        from fastmcp.server.auth.providers.in_memory import InMemoryOAuthProvider
        from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions

        mcp.auth = InMemoryOAuthProvider(
            base_url=f"http://127.0.0.1:{port}",
            client_registration_options=ClientRegistrationOptions(
                enabled=True, valid_scopes=["calc"], default_scopes=["calc"]
            ),
            revocation_options=RevocationOptions(enabled=True),
            required_scopes=["calc"],
        )
    if a.jwks_uri or a.issuer:
        if not (a.jwks_uri and a.issuer):
            ap.error("--jwks-uri and --issuer go together")
        from fastmcp.server.auth.providers.jwt import JWTVerifier

        base = f"http://127.0.0.1:{port}"
        mcp.auth = JWTVerifier(
            jwks_uri=a.jwks_uri,
            issuer=a.issuer,
            audience=f"{base}/mcp",
            algorithm="RS256",
            required_scopes=["calc"],
            base_url=base,
        )
    serve_stateless_json(mcp, port)


if __name__ == "__main__":
    main()
