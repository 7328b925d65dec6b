-- bridge mode binds the IdP's answer to one client and one browser. Each
-- bridged client gets its own callback at the IdP (public_url/callback/<key>);
-- pending authorizations wait for mcpgate's consent page and carry the
-- browser they started in; codes delivered through a callback remember their
-- client; Auth0 applications created per UTC day are counted, and the ones
-- that never obtain a token are swept.
ALTER TABLE bridge_clients ADD COLUMN callback_key TEXT;
ALTER TABLE bridge_clients ADD COLUMN client_name TEXT;
-- 1: created through the Auth0 Management API (mcpgate may delete it).
ALTER TABLE bridge_clients ADD COLUMN managed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE bridge_clients ADD COLUMN last_used_at BIGINT;
CREATE UNIQUE INDEX bridge_clients_callback_key ON bridge_clients (callback_key);

-- Pending authorizations live ten minutes; the old unbound ones are dropped.
DROP TABLE bridge_requests;
CREATE TABLE bridge_requests (
    state_hash   TEXT PRIMARY KEY NOT NULL,
    -- 'consent': waiting for mcpgate's consent page (keyed by the request id);
    -- 'idp': at the IdP (keyed by the state sent there).
    stage        TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    client_state TEXT,
    -- JSON pairs sent on to the IdP's authorization endpoint.
    idp_query    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE TABLE bridge_codes (
    code_hash    TEXT PRIMARY KEY NOT NULL,
    client_id    TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    callback     TEXT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE TABLE bridge_budget (
    day  BIGINT PRIMARY KEY NOT NULL,
    used BIGINT NOT NULL
);
