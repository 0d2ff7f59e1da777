-- ScaiVault schema v3 (PostgreSQL): as migrations/003_lean_indexes.sql.
DROP INDEX IF EXISTS certificates_issuer;
