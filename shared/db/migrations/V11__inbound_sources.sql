-- Inbound sources: a provider (GitHub, Stripe, Shopify, a Standard Webhooks
-- sender) whose webhooks hookfleet verifies and publishes as the tenant's
-- events. The secret is sealed like an endpoint's (context: the source id);
-- after a rotation the previous one still verifies for a grace period.
CREATE TABLE sources (
    id                         text PRIMARY KEY,
    tenant                     text NOT NULL,
    name                       text NOT NULL,
    kind                       text NOT NULL
        CHECK (kind IN ('github', 'stripe', 'shopify', 'standard_webhooks')),
    type_prefix                text NOT NULL,
    secret                     text NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sources_by_tenant ON sources (tenant, id);

-- The source an event came in through (NULL for events sent to the API or
-- published over AMQP).
ALTER TABLE events ADD COLUMN source text;
