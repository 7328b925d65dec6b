-- Server-initiated messages of Streamable HTTP sessions (list changes,
-- resource updates, logging outside a call), whichever replica raised them:
-- the replica holding the session's GET stream is told by NOTIFY
-- mcpgate_mcp_events (the session id only) and sends them on; a client that
-- reconnects its GET stream with Last-Event-ID (= seq) gets the ones after
-- it on any replica. The sweeper deletes old rows.
CREATE TABLE mcp_events (
    seq BIGSERIAL PRIMARY KEY,
    session TEXT NOT NULL,
    -- the JSON-RPC message
    message TEXT NOT NULL,
    -- the replica that raised it (list changes seen by several replicas'
    -- upstream links are stored once)
    origin TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX mcp_events_session ON mcp_events (session, seq);
CREATE INDEX mcp_events_created ON mcp_events (created_at);

-- The GET stream that delivers a session's messages: the newest one opened,
-- on whatever replica (older ones stay open but quiet); and the seq up to
-- which a stream has sent them (a new stream sends what came after).
ALTER TABLE mcp_sessions ADD COLUMN stream_claim TEXT;
ALTER TABLE mcp_sessions ADD COLUMN stream_sent BIGINT;
