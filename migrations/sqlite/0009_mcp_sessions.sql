-- MCP sessions (Streamable HTTP 2025-03-26 .. 2025-11-25, and legacy SSE),
-- shared by every replica: who owns each session id and the initialize
-- parameters a replica replays to restore it. The edge writes the owner and rmcp the
-- state, in either order; a DELETE leaves a tombstone (ended_at) so a late
-- write cannot bring the session back. The sweeper deletes expired rows.
CREATE TABLE mcp_sessions (
    id TEXT PRIMARY KEY,
    -- 'streamable' (/mcp) or 'legacy_sse' (/sse + /messages)
    transport TEXT NOT NULL DEFAULT 'streamable',
    owner TEXT,
    state TEXT,
    protocol_version TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at BIGINT
);
CREATE INDEX mcp_sessions_expires ON mcp_sessions (expires_at);

-- Legacy SSE messages POSTed to a replica that does not hold the session's
-- event stream (PostgreSQL only: one SQLite file serves one replica). Kept
-- so both dialects have the same tables.
CREATE TABLE mcp_relay (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    message TEXT NOT NULL,
    principal TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX mcp_relay_session ON mcp_relay (session);
