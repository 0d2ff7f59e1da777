-- ScaiVault schema v9 (PostgreSQL): a reserved serial keeps its to-be-signed certificate.
ALTER TABLE certificates ADD COLUMN tbs_der BYTEA;
