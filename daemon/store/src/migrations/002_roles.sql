-- ScaiVault schema v2: PKI roles and opt-in stored leaf keys.
CREATE TABLE roles (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    ca_id       TEXT NOT NULL REFERENCES cas(id),
    config      TEXT NOT NULL,   -- JSON: the role's fields
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Leaf private keys kept at a role's request: sealed with AES-256-GCM under a random data key,
-- which is itself encrypted by a key-encryption key inside the token.
CREATE TABLE stored_keys (
    issuer_ca_id  TEXT NOT NULL,
    serial        TEXT NOT NULL,
    wrapped_key   BLOB NOT NULL,  -- data key encrypted by the token KEK
    sealed        BLOB NOT NULL,  -- nonce || AES-256-GCM(private key PEM)
    PRIMARY KEY (issuer_ca_id, serial),
    FOREIGN KEY (issuer_ca_id, serial) REFERENCES certificates(issuer_ca_id, serial)
);

CREATE INDEX certificates_issuer ON certificates(issuer_ca_id, status);
CREATE INDEX certificates_serial ON certificates(serial);
