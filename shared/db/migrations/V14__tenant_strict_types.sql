-- A tenant with strict_types refuses events whose type is not in its
-- catalogue.
ALTER TABLE tenants ADD COLUMN strict_types boolean NOT NULL DEFAULT false;
