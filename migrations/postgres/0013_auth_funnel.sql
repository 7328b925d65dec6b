-- The auth funnel: one row per step of an authorization attempt (request,
-- sign-in, consent, upstream callback, code redeemed, first MCP call,
-- refresh), with the reason it stopped (NULL: the step passed). Steps of one
-- attempt share `attempt` (a hash of the client id and the PKCE challenge);
-- refreshes and MCP calls are joined to it through `grant_key` (a hash of the
-- grant's family id). Written in batches off the request path; the sweeper
-- keeps a bounded window (src/funnel/README.md).
CREATE TABLE auth_funnel (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    attempt TEXT NOT NULL,
    client_id TEXT NOT NULL,
    user_id TEXT,
    step TEXT NOT NULL,
    reason TEXT,
    grant_key TEXT
);
CREATE INDEX auth_funnel_at ON auth_funnel (at);
CREATE INDEX auth_funnel_client ON auth_funnel (client_id, at);
CREATE INDEX auth_funnel_grant ON auth_funnel (grant_key);
