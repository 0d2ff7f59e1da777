-- ScaiVault schema v6: an optional free-text detail on audit records (a reviewer's comment or a
-- rejection reason; never a secret). Hashed into the chain only when present, so older records
-- verify unchanged.
ALTER TABLE audit ADD COLUMN detail TEXT;
