-- An endpoint is a URL or a destination (an AMQP exchange and routing key
-- template, as JSON); exactly one of the two is set.
ALTER TABLE endpoints
    ALTER COLUMN url DROP NOT NULL,
    ADD COLUMN destination jsonb,
    ADD CONSTRAINT endpoints_url_or_destination
        CHECK ((url IS NULL) <> (destination IS NULL));
