-- Local authorization server state. Secrets and tokens are stored hashed
-- (SHA-256, base64url); private keys and replayable token responses sealed
-- with AES-256-GCM. Times are epoch seconds.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    alg            TEXT NOT NULL,
    private_sealed TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    activate_at    BIGINT NOT NULL,
    retire_at      BIGINT
);

CREATE TABLE oauth_clients (
    client_id    TEXT PRIMARY KEY NOT NULL,
    secret_hash  TEXT,
    metadata     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE TABLE auth_requests (
    id_hash      TEXT PRIMARY KEY NOT NULL,
    browser_hash TEXT NOT NULL,
    csrf_hash    TEXT NOT NULL,
    request      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE TABLE user_sessions (
    id_hash    TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE consents (
    user_id    TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

CREATE TABLE auth_codes (
    code_hash       TEXT PRIMARY KEY NOT NULL,
    client_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    scope           TEXT NOT NULL,
    resource        TEXT NOT NULL,
    family_id       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    redeemed_at     BIGINT,
    response_sealed TEXT
);

CREATE TABLE refresh_tokens (
    token_hash      TEXT PRIMARY KEY NOT NULL,
    family_id       TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    scope           TEXT NOT NULL,
    resource        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    rotated_at      BIGINT,
    response_sealed TEXT,
    revoked_at      BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id, client_id);
