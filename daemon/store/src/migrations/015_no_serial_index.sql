-- ScaiVault schema v15: one b-tree fewer written per issued certificate. The only lookup by serial
-- alone (`Tx::get_certificate`, a tenant's certificate by serial) probes the primary key
-- (issuer_ca_id, serial) once for each of the tenant's CAs instead.
DROP INDEX IF EXISTS certificates_serial;
