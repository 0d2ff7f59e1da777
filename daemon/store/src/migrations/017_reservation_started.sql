-- ScaiVault schema v17: a serial reserved as a row (PostgreSQL: several nodes share the database,
-- there is no reservation journal) keeps its `started` audit record (JSON), so that the
-- reconciliation of an issuance a crash left unfinished appends it to the chain before the
-- `certificate.reconcile` record, as the journal does on SQLite. Cleared once the certificate is
-- stored.
ALTER TABLE certificates ADD COLUMN started_audit TEXT;
