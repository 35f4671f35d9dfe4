-- Deleted endpoints, remembered for a while so that the registry broadcast
-- can tell every worker, including one that starts after the deletion, to
-- cancel the endpoint's pending tasks (retries, DLQ requeues). The producer
-- forgets them after 30 days; beyond that a worker still infers a deletion
-- from the endpoint's absence and the age of its time-ordered id.
CREATE TABLE endpoint_tombstones (
    id         text PRIMARY KEY,
    tenant     text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoint_tombstones_by_age ON endpoint_tombstones (deleted_at);
