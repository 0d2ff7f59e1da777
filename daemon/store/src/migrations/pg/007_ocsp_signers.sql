-- ScaiVault schema v7 (PostgreSQL): delegated OCSP signing certificates.
CREATE TABLE ocsp_signers (
    ca_id      TEXT COLLATE "C" PRIMARY KEY REFERENCES cas(id),
    key_label  TEXT COLLATE "C" NOT NULL,
    cert_der   BYTEA NOT NULL,
    not_after  TEXT COLLATE "C" NOT NULL
);
