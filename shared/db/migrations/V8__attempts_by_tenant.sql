-- The tenant's attempts at every endpoint, newest first (`GET /v1/attempts`,
-- which `hookfleet tail` follows).
CREATE INDEX attempts_by_tenant ON attempts (tenant, started_at);
