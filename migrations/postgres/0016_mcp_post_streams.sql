-- The events of a POST's SSE response (progress, server requests, the
-- answer) whose client connection broke before the answer went out: written
-- only then, by the replica running the request, so a GET with the
-- Last-Event-ID "<stream>.<idx>" on any replica gets the rest (NOTIFY
-- mcpgate_mcp_events with the session id wakes it). An ordinary request
-- writes nothing here. The sweeper deletes old rows.
CREATE TABLE mcp_post_events (
    -- the random name of the POST stream (the first part of its event ids)
    stream TEXT NOT NULL,
    idx BIGINT NOT NULL,
    session TEXT NOT NULL,
    -- the JSON-RPC message; NULL for a priming event or the end of a stream
    -- that ended without an answer
    message TEXT,
    -- the stream's last event (the answer, or its end without one)
    ends_stream BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (stream, idx)
);
CREATE INDEX mcp_post_events_created ON mcp_post_events (created_at);

-- A client's answer to a server request (sampling, elicitation) that reached
-- another replica than the one that asked: the request id names the asking
-- replica (origin), which is told by NOTIFY mcpgate_mcp_responses (the
-- origin only), takes its rows and checks the owner again.
CREATE TABLE mcp_response_relay (
    id BIGSERIAL PRIMARY KEY,
    origin TEXT NOT NULL,
    session TEXT NOT NULL,
    -- the owner key of the principal that POSTed the answer
    owner TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX mcp_response_relay_origin ON mcp_response_relay (origin);
