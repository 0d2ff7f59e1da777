-- ScaiVault schema v1: tenants, tokens, certificate authorities, issued certificates, audit log.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT,
    hash        BLOB NOT NULL UNIQUE,   -- SHA-256 of the token; the token itself is never stored
    policies    TEXT NOT NULL,          -- JSON array of policy names
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);
CREATE INDEX tokens_tenant ON tokens(tenant_id);

CREATE TABLE cas (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    common_name    TEXT NOT NULL,
    ca_type        TEXT NOT NULL CHECK (ca_type IN ('root', 'intermediate')),
    parent_ca_id   TEXT REFERENCES cas(id),
    status         TEXT NOT NULL CHECK (status IN ('active', 'pending_signature', 'retired')),
    key_type       TEXT NOT NULL,
    key_size       INTEGER NOT NULL,
    key_label      TEXT NOT NULL UNIQUE,  -- CKA_LABEL of the key pair on the token
    cert_der       BLOB,
    chain_pem      TEXT,                  -- issuers above an externally signed CA
    csr_pem        TEXT,
    serial         TEXT,
    not_before     TEXT,
    not_after      TEXT,
    settings       TEXT NOT NULL,         -- JSON: crl_interval, ocsp_validity, constraints
    created_at     TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Every certificate a CA signed (CA certificates included), unique serial per issuer.
CREATE TABLE certificates (
    issuer_ca_id      TEXT NOT NULL,
    serial            TEXT NOT NULL,      -- uppercase hex, no separators
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    kind              TEXT NOT NULL CHECK (kind IN ('ca', 'leaf')),
    subject_ca_id     TEXT,               -- for kind = 'ca'
    role              TEXT,
    common_name       TEXT,
    sans              TEXT,               -- JSON array
    cert_der          BLOB,               -- NULL while the serial is only reserved
    status            TEXT NOT NULL CHECK (status IN ('reserved', 'valid', 'revoked')),
    not_before        TEXT,
    not_after         TEXT,
    revoked_at        TEXT,
    revocation_reason TEXT,
    created_at        TEXT NOT NULL,
    PRIMARY KEY (issuer_ca_id, serial)
);
CREATE INDEX certificates_tenant ON certificates(tenant_id, created_at);

-- Hash-chained audit log. seq has no gaps; hash = SHA-256(prev_hash || fields); audit_head holds
-- the newest (seq, hash) so that removing the newest rows is detected too.
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    time        TEXT NOT NULL,
    tenant_id   TEXT,
    token_id    TEXT,
    action      TEXT NOT NULL,
    object_id   TEXT,
    outcome     TEXT NOT NULL,
    request_id  TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_tenant ON audit(tenant_id, seq);

CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
);
