-- proxy mode: users who sign in at an upstream identity provider, the
-- in-flight upstream logins, and the upstream tokens of each grant.

-- JSON identity claims (email, name, groups) of upstream users; NULL for local users.
ALTER TABLE users ADD COLUMN profile TEXT;

-- One row per redirect to the upstream IdP, created only after consent and
-- consumed (deleted) by the callback. The state is stored hashed; the PKCE
-- verifier and nonce sealed.
CREATE TABLE upstream_logins (
    state_hash       TEXT PRIMARY KEY NOT NULL,
    request_hash     TEXT NOT NULL,
    browser_hash     TEXT NOT NULL,
    secrets_sealed   TEXT NOT NULL,
    remember         BIGINT NOT NULL,
    -- The signed-in user whose remembered consent skipped the consent page, if any.
    consented_user   TEXT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL
);

-- Upstream tokens per downstream grant (refresh-token family), sealed.
CREATE TABLE upstream_tokens (
    family_id   TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    expires_at  BIGINT,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX upstream_tokens_user ON upstream_tokens (user_id);
