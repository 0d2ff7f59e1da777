-- ScaiVault schema v8 (PostgreSQL): trust anchors, per tenant.
CREATE TABLE trust_anchors (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    tenant_id           TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name                TEXT COLLATE "C" NOT NULL,
    subject             TEXT COLLATE "C" NOT NULL,
    fingerprint_sha256  TEXT COLLATE "C" NOT NULL,
    cert_der            BYTEA NOT NULL,
    not_after           TEXT COLLATE "C" NOT NULL,
    created_at          TEXT COLLATE "C" NOT NULL,
    rowid               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    UNIQUE (tenant_id, fingerprint_sha256),
    UNIQUE (tenant_id, name)
);
