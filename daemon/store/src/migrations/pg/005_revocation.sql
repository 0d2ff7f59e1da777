-- ScaiVault schema v5 (PostgreSQL): revocation state per CA; one CRL number counter per CA.
CREATE TABLE crl_state (
    ca_id        TEXT COLLATE "C" PRIMARY KEY REFERENCES cas(id),
    crl_number   BIGINT NOT NULL,
    this_update  TEXT COLLATE "C",
    next_update  TEXT COLLATE "C",
    der          BYTEA,
    dirty        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX certificates_revoked ON certificates(issuer_ca_id, rowid) WHERE status = 'revoked';
