-- ScaiVault schema v8: trust anchors, per tenant (CA certificates from outside ScaiVault that the
-- tenant trusts when validating certificates). One certificate at most once per tenant.
CREATE TABLE trust_anchors (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants(id),
    name                TEXT NOT NULL,
    subject             TEXT NOT NULL,
    fingerprint_sha256  TEXT NOT NULL,   -- lowercase hex SHA-256 of cert_der
    cert_der            BLOB NOT NULL,
    not_after           TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    UNIQUE (tenant_id, fingerprint_sha256),
    UNIQUE (tenant_id, name)
);
