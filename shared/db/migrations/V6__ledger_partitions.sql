-- The ledger's history is partitioned by day of the event's creation time:
-- an event, its deliveries and all their attempts (retries and replays
-- included) live in the same day's partitions and leave together when
-- retention drops that day. The key is the event's time, not the attempt's,
-- because it is known and fixed for every record of the event, so a
-- redelivered record always meets its first copy's row (ON CONFLICT needs
-- the partition key in every unique index).
--
-- Day partitions (`<table>_pYYYYMMDD`, UTC days) are made ahead of time and
-- dropped after `retention.period` by the ledger; the default partitions
-- catch whatever falls outside them (an AMQP producer's odd timestamp, rows
-- from before this migration), and the ledger moves such rows into a day
-- partition when it makes that day.

ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE deliveries RENAME TO deliveries_unpartitioned;
ALTER TABLE attempts RENAME TO attempts_unpartitioned;

CREATE TABLE events (
    tenant      text NOT NULL,
    id          text NOT NULL,
    event_type  text NOT NULL,
    -- The payload bytes exactly as received (JSON is UTF-8 text).
    payload     text NOT NULL,
    created_at  timestamptz NOT NULL,
    routed_at   timestamptz NOT NULL,
    fan_out     integer NOT NULL,
    PRIMARY KEY (tenant, id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- One row per event and endpoint.
CREATE TABLE deliveries (
    id               text NOT NULL,
    tenant           text NOT NULL,
    event_id         text NOT NULL,
    endpoint_id      text NOT NULL,
    state            text NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0,
    last_status_code integer,
    last_error       text,
    next_attempt_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    event_created_at timestamptz NOT NULL,
    PRIMARY KEY (id, event_created_at)
) PARTITION BY RANGE (event_created_at);
CREATE TABLE deliveries_default PARTITION OF deliveries DEFAULT;

-- One row per try.
CREATE TABLE attempts (
    id               text NOT NULL,
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
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    trigger          text NOT NULL DEFAULT 'scheduled',
    event_created_at timestamptz NOT NULL,
    PRIMARY KEY (id, event_created_at)
) PARTITION BY RANGE (event_created_at);
CREATE TABLE attempts_default PARTITION OF attempts DEFAULT;

INSERT INTO events SELECT * FROM events_unpartitioned;
INSERT INTO deliveries
SELECT d.id, d.tenant, d.event_id, d.endpoint_id, d.state, d.attempts, d.last_status_code,
       d.last_error, d.next_attempt_at, d.updated_at, coalesce(e.created_at, d.updated_at)
FROM deliveries_unpartitioned d
LEFT JOIN events_unpartitioned e ON e.tenant = d.tenant AND e.id = d.event_id;
INSERT INTO attempts
SELECT a.id, a.delivery_id, a.tenant, a.event_id, a.endpoint_id, a.attempt, a.result,
       a.status_code, a.error, a.response_excerpt, a.started_at, a.duration_ms,
       a.next_attempt_at, a.recorded_at, a.trigger, coalesce(e.created_at, a.started_at)
FROM attempts_unpartitioned a
LEFT JOIN events_unpartitioned e ON e.tenant = a.tenant AND e.id = a.event_id;

DROP TABLE attempts_unpartitioned;
DROP TABLE deliveries_unpartitioned;
DROP TABLE events_unpartitioned;

-- The read API's access paths (each becomes one index per partition).
CREATE INDEX events_by_tenant_time ON events (tenant, created_at);
CREATE INDEX deliveries_by_event ON deliveries (tenant, event_id);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, state, updated_at);
CREATE INDEX attempts_by_event ON attempts (tenant, event_id, started_at);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, started_at);
