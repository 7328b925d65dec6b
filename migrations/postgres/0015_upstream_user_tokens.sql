-- Per-user upstream authorization (`[upstreams.user_auth]`): each user's own
-- tokens at an OAuth-protected upstream, the connect attempts in flight, and
-- the client mcpgate registered at each upstream's authorization server.

-- One token set per (user, upstream); connection_id = upstream || ' ' || user_id.
-- `version` grows with every write: a refresh is written only over the
-- version it started from. `refresh_lease_until`: one caller (of any
-- replica) refreshes at a time; the others wait for its result.
CREATE TABLE upstream_user_tokens (
    connection_id        TEXT PRIMARY KEY NOT NULL,
    user_id              TEXT NOT NULL,
    upstream             TEXT NOT NULL,
    sealed               TEXT NOT NULL,
    expires_at           BIGINT,
    version              BIGINT NOT NULL,
    refresh_lease_until  BIGINT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX upstream_user_tokens_user ON upstream_user_tokens (user_id);

-- One row per redirect to an upstream's authorization server; the state is
-- stored hashed, the PKCE verifier sealed; taken (deleted) by the callback.
CREATE TABLE upstream_connect_attempts (
    state_hash      TEXT PRIMARY KEY NOT NULL,
    user_id         TEXT NOT NULL,
    upstream        TEXT NOT NULL,
    browser_hash    TEXT NOT NULL,
    secrets_sealed  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL
);

-- The client mcpgate uses at an upstream's authorization server, shared by
-- replicas (the first registration wins). Sealed JSON: client id and secret.
CREATE TABLE upstream_clients (
    upstream    TEXT PRIMARY KEY NOT NULL,
    issuer      TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
