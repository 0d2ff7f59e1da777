-- ScaiVault schema v17 (PostgreSQL): a reserved serial keeps its `started` audit record (JSON),
-- appended to the chain by the reconciliation if a crash leaves the issuance unfinished.
ALTER TABLE certificates ADD COLUMN started_audit TEXT;
