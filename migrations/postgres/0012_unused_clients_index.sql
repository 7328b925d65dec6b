-- /register counts the registrations that never obtained a token (the cap
-- `max_unused_clients`) on every registration: without this index that was
-- a scan of every client, so registration slowed as clients accumulated.
CREATE INDEX oauth_clients_unused ON oauth_clients (client_id) WHERE last_used_at IS NULL;
