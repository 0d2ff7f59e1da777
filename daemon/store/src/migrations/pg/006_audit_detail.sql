-- ScaiVault schema v6 (PostgreSQL): an optional free-text detail on audit records.
ALTER TABLE audit ADD COLUMN detail TEXT COLLATE "C";
