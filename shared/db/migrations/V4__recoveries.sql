-- Background recoveries: resend to an endpoint every event since a time
-- that it has not received (exhausted, or missed while disabled).
CREATE TABLE recoveries (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    endpoint_id text NOT NULL,
    since       timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'running',
    total       integer NOT NULL DEFAULT 0,
    sent        integer NOT NULL DEFAULT 0,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX recoveries_running ON recoveries (state) WHERE state = 'running';
CREATE INDEX events_by_tenant_time ON events (tenant, created_at);
