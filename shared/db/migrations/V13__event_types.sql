-- The event-type catalogue: each tenant's event types, and every version
-- of each. A PUT makes a new version; the type's row points at the current
-- one. A version's schema is JSON Schema (2020-12 unless it says
-- otherwise), or NULL for a type that is documented but not checked. It is
-- kept as `json`, not `jsonb`, so the API shows a schema as it was
-- written, key order included.
CREATE TABLE event_types (
    tenant      text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);
CREATE TABLE event_type_versions (
    tenant      text NOT NULL,
    name        text NOT NULL,
    version     integer NOT NULL,
    description text NOT NULL DEFAULT '',
    deprecated  boolean NOT NULL DEFAULT false,
    schema      json,
    examples    json NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name, version),
    FOREIGN KEY (tenant, name) REFERENCES event_types (tenant, name) ON DELETE CASCADE
);
