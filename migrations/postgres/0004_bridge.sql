-- bridge mode: the IdP redirects to mcpgate's /callback, which sends the
-- browser on to the client with mcpgate as `iss` (RFC 9207). mcpgate keeps
-- each bridged client's own redirect URIs and each pending authorization.
CREATE TABLE bridge_clients (
    client_id     TEXT PRIMARY KEY NOT NULL,
    redirect_uris TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE bridge_requests (
    state_hash   TEXT PRIMARY KEY NOT NULL,
    client_id    TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    client_state TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
