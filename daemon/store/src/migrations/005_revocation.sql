-- ScaiVault schema v5: revocation state per CA (CRL number, the published CRL).
CREATE TABLE crl_state (
    ca_id        TEXT PRIMARY KEY REFERENCES cas(id),
    crl_number   INTEGER NOT NULL,   -- the number of the newest CRL; strictly increasing
    this_update  TEXT,
    next_update  TEXT,
    der          BLOB,               -- the newest published CRL
    dirty        INTEGER NOT NULL DEFAULT 0  -- a revocation happened since it was built
);
CREATE INDEX certificates_revoked ON certificates(issuer_ca_id, status) WHERE status = 'revoked';
