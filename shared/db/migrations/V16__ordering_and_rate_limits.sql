-- Ordered delivery per key and per-endpoint rate limits (issue 17).
-- An ordered endpoint receives events with the same ordering key in the
-- order they were accepted; a rate-limited one receives at most
-- rate_limit attempts per second across the whole fleet.
ALTER TABLE endpoints
    ADD COLUMN ordered boolean NOT NULL DEFAULT false,
    ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 10000);

-- The event's ordering key, kept so that replays and recoveries to an
-- ordered endpoint go out in order per key.
ALTER TABLE events ADD COLUMN ordering_key text;
