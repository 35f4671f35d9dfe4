-- The endpoint registry (written by the producer).
CREATE TABLE endpoints (
    id              text PRIMARY KEY,
    tenant          text NOT NULL,
    url             text NOT NULL,
    description     text NOT NULL DEFAULT '',
    -- Subscription patterns: exact types, 'prefix.*' or '*'.
    event_types     text[] NOT NULL,
    secret          text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_by_tenant ON endpoints (tenant, id);
-- The router asks for endpoints whose patterns overlap an event's patterns.
CREATE INDEX endpoints_by_subscription ON endpoints USING gin (event_types);

-- The ledger (written by the ledger service).
CREATE TABLE events (
    tenant      text NOT NULL,
    id          text NOT NULL,
    event_type  text NOT NULL,
    -- The payload bytes exactly as received (JSON is UTF-8 text).
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL,
    routed_at   timestamptz NOT NULL,
    fan_out     integer NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- One row per event and endpoint.
CREATE TABLE deliveries (
    id               text PRIMARY KEY,
    tenant           text NOT NULL,
    event_id         text NOT NULL,
    endpoint_id      text NOT NULL,
    state            text NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    next_attempt_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_by_event ON deliveries (tenant, event_id);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, state, updated_at);

-- One row per try.
CREATE TABLE attempts (
    id               text PRIMARY KEY,
    delivery_id      text NOT NULL,
    tenant           text NOT NULL,
    event_id         text NOT NULL,
    endpoint_id      text NOT NULL,
    attempt          integer NOT NULL,
    result           text NOT NULL,
    status_code      integer,
    error            text,
    response_excerpt text,
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL,
    next_attempt_at  timestamptz,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attempts_by_event ON attempts (tenant, event_id, started_at);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, started_at);
