-- ScaiVault schema v3: fewer b-trees touched per issued certificate. Filters by issuer use the
-- primary key (issuer_ca_id, serial); listing by tenant uses certificates_tenant.
DROP INDEX IF EXISTS certificates_issuer;
