#!/bin/sh
# $BROWSER for mcp-remote / the Inspector against mcpgate in local mode: log in on mcpgate's own
# login page, answer its consent page, and GET the final redirect so the client's callback server
# receives it. Options via LOCAL_BROWSER_* env (see local_browser.py); set LOCAL_BROWSER_LOG to
# keep a record, the opener discards output.
exec "${LOCAL_BROWSER_PYTHON:-python3}" "$(dirname "$0")/local_browser.py" --deliver "$@"
