"""FastMCP comparison server for the tools/call load benchmark (bench/run.sh).

Exposes one tool, add(a, b) -> a + b, over streamable HTTP at /mcp in stateless JSON
mode (no sessions, application/json responses instead of SSE).

With --jwks-uri and --issuer (bench/run_auth.sh) /mcp requires a bearer JWT, checked by
FastMCP's JWTVerifier: RS256 signature with the key of the token's kid from the JWKS (cached
after the first fetch), exp, iss == ISSUER, aud == http://127.0.0.1:PORT/mcp (this server's
resource URL) and scope containing "calc".

Usage: bench/.venv/bin/python bench/fastmcp_server.py PORT [--jwks-uri URI --issuer ISSUER]
"""

import argparse

from fastmcp import FastMCP

mcp = FastMCP("bench-calc")


@mcp.tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--jwks-uri")
    ap.add_argument("--issuer")
    a = ap.parse_args()
    port = a.port
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
    mcp.run(
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


if __name__ == "__main__":
    main()
