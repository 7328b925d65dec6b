-- Whether the authorization request carried redirect_uri: then /token must
-- send the same value (RFC 6749 §4.1.3). Codes issued before this migration
-- live minutes; they keep the old, lenient rule.
ALTER TABLE auth_codes ADD COLUMN redirect_uri_sent BOOLEAN NOT NULL DEFAULT FALSE;
