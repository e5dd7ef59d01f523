-- Leases: which server executes a deploying revision or a running run, and until when. A lease
-- that expires (its server died) lets another server take the work over.
ALTER TABLE revisions ADD COLUMN lease_owner TEXT;
ALTER TABLE revisions ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
