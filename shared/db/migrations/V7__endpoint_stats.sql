-- Hourly rollups of each endpoint's attempts, so that its stats over a
-- week cost a few hundred rows instead of every attempt in the week. The
-- ledger adds to them in the transaction that writes the attempts (only
-- for attempts actually inserted, so a redelivered record counts once).
--
-- Latencies are kept as a histogram: bucket b holds durations d with
-- floor(ln(max(d, 1 ms)) / ln(1.25)) = b, 50 buckets up to about 60 s (the
-- last one takes everything longer), so a percentile read from it is
-- within 12% of the exact one.
CREATE FUNCTION hookfleet_latency_bucket(duration_ms integer) RETURNS integer
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    AS $$ SELECT least(49, floor(ln(greatest(duration_ms, 1)) / ln(1.25)))::integer $$;

CREATE TABLE endpoint_stats (
    endpoint_id text NOT NULL,
    -- The start of the UTC hour.
    hour        timestamptz NOT NULL,
    tenant      text NOT NULL,
    attempts    bigint NOT NULL,
    succeeded   bigint NOT NULL,
    -- 50 counts, one per latency bucket.
    latency     bigint[] NOT NULL,
    PRIMARY KEY (endpoint_id, hour)
);

-- The histogram of a set of durations, as endpoint_stats.latency keeps it.
CREATE FUNCTION hookfleet_latency_histogram_add(counts bigint[], duration_ms integer)
    RETURNS bigint[] IMMUTABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
DECLARE
    slot integer := hookfleet_latency_bucket(duration_ms) + 1;
BEGIN
    counts[slot] := counts[slot] + 1;
    RETURN counts;
END $$;
CREATE AGGREGATE hookfleet_latency_histogram(integer) (
    SFUNC = hookfleet_latency_histogram_add,
    STYPE = bigint[],
    INITCOND = '{0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}'
);

-- Recomputes every rollup from the attempts (after loading attempts by
-- other means than the ledger, and once here for the attempts so far).
-- The ledger adds to the rollups with the same grouping as it writes.
CREATE FUNCTION hookfleet_rebuild_endpoint_stats() RETURNS void LANGUAGE sql AS $$
    TRUNCATE endpoint_stats;
    INSERT INTO endpoint_stats (endpoint_id, hour, tenant, attempts, succeeded, latency)
    SELECT endpoint_id, date_bin('1 hour', started_at, '2000-01-01 00:00:00+00'), tenant,
           count(*), count(*) FILTER (WHERE result = 'succeeded'),
           hookfleet_latency_histogram(duration_ms)
    FROM attempts GROUP BY 1, 2, 3;
$$;
SELECT hookfleet_rebuild_endpoint_stats();

-- An endpoint's latest failure in a window, found without walking past
-- its successes.
CREATE INDEX attempts_failed_by_endpoint ON attempts (endpoint_id, started_at)
    WHERE result <> 'succeeded';
