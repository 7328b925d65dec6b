-- Upstream users' display names ("<preset>:<email or login>") are not
-- unique: two subjects at the identity provider may share an email, and
-- the first must not lock the second out. Only local users' names (what
-- the login form and the CLI look up) stay unique. SQLite cannot drop a
-- column constraint, so the table is rebuilt (nothing references it).
CREATE TABLE users_new (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    profile       TEXT
);
INSERT INTO users_new (id, username, password_hash, created_at, updated_at, profile)
    SELECT id, username, password_hash, created_at, updated_at, profile FROM users;
DROP TABLE users;
ALTER TABLE users_new RENAME TO users;
CREATE UNIQUE INDEX users_local_username ON users (username) WHERE password_hash <> '!upstream';
CREATE INDEX users_username ON users (username);
