-- JWT ids of assertions already accepted (RFC 7523 client assertions, identity
-- assertion grants): each may be used once, across every replica. A row lives
-- until its assertion expires; the sweeper deletes it after that.
CREATE TABLE assertion_jtis (
    key TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX assertion_jtis_expires ON assertion_jtis (expires_at);
