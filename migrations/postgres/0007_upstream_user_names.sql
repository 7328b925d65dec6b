-- Upstream users' display names ("<preset>:<email or login>") are not
-- unique: two subjects at the identity provider may share an email, and
-- the first must not lock the second out. Only local users' names (what
-- the login form and the CLI look up) stay unique.
ALTER TABLE users DROP CONSTRAINT users_username_key;
CREATE UNIQUE INDEX users_local_username ON users (username) WHERE password_hash <> '!upstream';
CREATE INDEX users_username ON users (username);
