-- A token's first MCP call is one funnel row across replicas: each replica
-- still notices a token's first call on its own (in memory, no store round
-- trip on the request path), and the batched funnel writer inserts the row
-- with its `once_key` (a hash of the token) ON CONFLICT DO NOTHING, so the
-- replicas after the first insert nothing and count nothing. NULL (every
-- other step) is never a conflict.
ALTER TABLE auth_funnel ADD COLUMN once_key TEXT;
CREATE UNIQUE INDEX auth_funnel_once ON auth_funnel (once_key);

-- Bridge mode: the PKCE challenge of the authorization request a delivered
-- code answers, so the code's redemption joins its funnel attempt (as on the
-- local server, where the code record carries it). NULL for codes stored
-- before this migration.
ALTER TABLE bridge_codes ADD COLUMN code_challenge TEXT;
