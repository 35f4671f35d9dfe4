-- Parked messages (issue 16 item 5). Every service still parks to the
-- {p}.dead queue; the ledger moves each message from there into this
-- table, committing before it acks, so that a tenant's parked messages are
-- listed and requeued from its own rows: one noisy tenant can no longer
-- push another's out of reach at the head of a shared queue.
CREATE TABLE parked (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL: a message no tenant can be told from (no API call shows it).
    tenant               text,
    kind                 text NOT NULL CHECK (kind IN ('event', 'task', 'record')),
    message_id           text,
    reason               text,
    parked_by            text,
    event_id             text,
    endpoint_id          text,
    -- Where a requeue sends it; NULL when the message does not say.
    original_exchange    text,
    original_routing_key text,
    -- The AMQP basic properties as sent in a content header (headers with
    -- their AMQP types), so that a requeue republishes them faithfully.
    properties           bytea NOT NULL,
    body                 bytea NOT NULL,
    -- SHA-256 of the properties (less the queue's x-delivery-count) and
    -- the body: the same message delivered twice by the queue (the ledger
    -- stopped between commit and ack) is one row.
    fingerprint          bytea NOT NULL UNIQUE,
    parked_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parked_by_tenant ON parked (tenant, id);
CREATE INDEX parked_by_endpoint ON parked (tenant, endpoint_id, id);
