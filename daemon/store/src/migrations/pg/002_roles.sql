-- ScaiVault schema v2 (PostgreSQL): PKI roles and opt-in stored leaf keys.
CREATE TABLE roles (
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name        TEXT COLLATE "C" NOT NULL,
    ca_id       TEXT COLLATE "C" NOT NULL REFERENCES cas(id),
    config      TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL,
    rowid       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE stored_keys (
    issuer_ca_id  TEXT COLLATE "C" NOT NULL,
    serial        TEXT COLLATE "C" NOT NULL,
    wrapped_key   BYTEA NOT NULL,
    sealed        BYTEA NOT NULL,
    PRIMARY KEY (issuer_ca_id, serial),
    FOREIGN KEY (issuer_ca_id, serial) REFERENCES certificates(issuer_ca_id, serial)
);

CREATE INDEX certificates_issuer ON certificates(issuer_ca_id, status);
CREATE INDEX certificates_serial ON certificates(serial);
