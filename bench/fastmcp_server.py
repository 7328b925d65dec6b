"""FastMCP comparison server for the tools/call load benchmark (bench/run.sh).

Exposes one tool, add(a, b) -> a + b, over streamable HTTP at /mcp in stateless JSON
mode (no sessions, application/json responses instead of SSE).

Usage: bench/.venv/bin/python bench/fastmcp_server.py PORT
"""

import sys

from fastmcp import FastMCP

mcp = FastMCP("bench-calc")


@mcp.tool
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: fastmcp_server.py PORT")
    port = int(sys.argv[1])
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
