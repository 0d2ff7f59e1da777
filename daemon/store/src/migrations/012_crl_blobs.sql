-- ScaiVault schema v12 (issue #11): the newest CRL of each CA, shared by every node of a cluster
-- (on one host the file next to the database serves it too), and an index for the revocations
-- that other nodes' OCSP caches poll (`Tx::revocations_since`).
CREATE TABLE crl_blobs (
    ca_id       TEXT PRIMARY KEY,
    crl_number  INTEGER NOT NULL,
    der         BLOB NOT NULL
);
CREATE INDEX certificates_revoked_at ON certificates(revoked_at) WHERE status = 'revoked';
