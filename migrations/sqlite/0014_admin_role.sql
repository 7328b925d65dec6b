-- The admin console (/admin): who may use it, and users an admin disabled
-- (a disabled user cannot sign in; their sessions and refresh tokens ended
-- when they were disabled).
ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
