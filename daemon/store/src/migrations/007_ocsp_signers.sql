-- ScaiVault schema v7: delegated OCSP signing certificates (the key lives in the token).
CREATE TABLE ocsp_signers (
    ca_id      TEXT PRIMARY KEY REFERENCES cas(id),
    key_label  TEXT NOT NULL,
    cert_der   BLOB NOT NULL,
    not_after  TEXT NOT NULL
);
