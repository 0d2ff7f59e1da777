-- ScaiVault schema v15 (PostgreSQL): as the SQLite migration — `Tx::get_certificate` probes the
-- primary key (issuer_ca_id, serial) for each of the tenant's CAs; the serial-only index goes.
DROP INDEX IF EXISTS certificates_serial;
