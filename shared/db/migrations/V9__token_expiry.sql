-- API tokens may expire; a listing names a token by `tok_` and the first
-- 16 hex digits of its hash, so nothing new is stored for that.
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;
CREATE INDEX api_tokens_by_tenant ON api_tokens (tenant, created_at);
