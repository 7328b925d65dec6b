-- Rate-limit counters shared by every replica: one fixed window per key
-- (a limit's name and a client address or account digest). The window
-- restarts in the statement that counts a hit once it has passed; the
-- sweeper deletes rows whose window ended (expires_at).
CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY,
    hits BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX rate_limits_expires ON rate_limits (expires_at);

-- Addresses an account signed in from: exempt from the account's shared
-- sign-in allowance until expires_at (both are digests or limit keys).
CREATE TABLE login_known_addresses (
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (account, address)
);
CREATE INDEX login_known_addresses_expires ON login_known_addresses (expires_at);

-- Outbound fetches that failed (client metadata documents, client key
-- sets), by a digest of their URL: no replica fetches the URL again before
-- expires_at. reason is the failure as the fetching replica classified it.
CREATE TABLE fetch_failures (
    key TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX fetch_failures_expires ON fetch_failures (expires_at);
