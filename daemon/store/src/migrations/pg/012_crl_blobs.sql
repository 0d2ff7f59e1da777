-- ScaiVault schema v12 (PostgreSQL): the newest CRL of each CA, shared by every node, and an
-- index for the revocations other nodes' OCSP caches poll.
CREATE TABLE crl_blobs (
    ca_id       TEXT COLLATE "C" PRIMARY KEY,
    crl_number  BIGINT NOT NULL,
    der         BYTEA NOT NULL
);
CREATE INDEX certificates_revoked_at ON certificates(revoked_at) WHERE status = 'revoked';
