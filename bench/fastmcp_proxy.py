"""FastMCP proxy for the gateway-overhead benchmark (bench/run_gateway.sh).

Puts FastMCP's proxy in front of one upstream MCP server (the fixture upstream over Streamable
HTTP) and serves it over streamable HTTP at /mcp in stateless JSON mode, like
bench/fastmcp_server.py (no sessions, application/json responses, access log off).

FastMCP 4.1.2 has no `FastMCP.as_proxy`: its proxy factory is `fastmcp.server.create_proxy`
(a `FastMCPProxy` over a `ProxyProvider`). Read from the installed source, with a URL target and
no `mode` it builds a fresh `ProxyClient` for every proxied request (`_create_client_factory`):
`ProxyTool.run` enters `async with client:` around each call, so every tools/call opens its own
backend connection, negotiates the era of the front request (a 2026-07-28 front request pins the
backend to 2026-07-28, adopted without a `server/discover` round trip), sends one tools/call and
closes it. The tool list is fetched from the backend on first use and cached for 300 s
(`ProxyProvider(cache_ttl=...)`), so tools/list is not on the measured path.

Usage: bench/.venv/bin/python bench/fastmcp_proxy.py PORT UPSTREAM_URL
"""

import argparse

from fastmcp.server import create_proxy

# Run as a script from bench/, so its sibling is importable: the same serving settings.
from fastmcp_server import serve_stateless_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("upstream", help="Streamable HTTP URL of the upstream, e.g. http://127.0.0.1:PORT/mcp")
    a = ap.parse_args()
    proxy = create_proxy(a.upstream, name="bench-proxy")
    serve_stateless_json(proxy, a.port)


if __name__ == "__main__":
    main()
