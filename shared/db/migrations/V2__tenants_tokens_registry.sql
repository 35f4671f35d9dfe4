-- Tenants and their API tokens (stored as SHA-256 hashes, never in clear).
CREATE TABLE tenants (
    id         text PRIMARY KEY,
    name       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE api_tokens (
    hash       text PRIMARY KEY,
    tenant     text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The first characters of the token, to tell tokens apart in listings.
    prefix     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Endpoints gain custom headers, a rotation grace period and a time of
-- disabling.
ALTER TABLE endpoints
    ADD COLUMN headers                    jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN previous_secret            text,
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN disabled_at                timestamptz;

-- Events the router has claimed ('routing') or fanned out ('routed'), so
-- that a repeat (the same id from the same tenant, over HTTP or AMQP) is not
-- delivered twice. Rows older than the retention window are deleted.
CREATE TABLE routed_events (
    tenant     text NOT NULL,
    id         text NOT NULL,
    event_type text NOT NULL,
    state      text NOT NULL DEFAULT 'routing',
    routed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);
CREATE INDEX routed_events_by_age ON routed_events (routed_at);
