-- ScaiVault schema v4: the reviewed CSR workflow, the events feed, and a per-tenant setting.
CREATE TABLE csrs (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'signing', 'signed')),
    csr_der        BLOB NOT NULL,
    summary        TEXT NOT NULL,   -- JSON: subject, sans, key, fingerprint, requested extensions
    note           TEXT,
    requested_by   TEXT NOT NULL,   -- token id
    created_at     TEXT NOT NULL,
    decided_by     TEXT,
    decided_at     TEXT,
    comment        TEXT,
    reason         TEXT,            -- a rejection's reason, kept for good
    signed_ca_id   TEXT,
    signed_serial  TEXT,
    signed_at      TEXT
);
CREATE INDEX csrs_tenant ON csrs(tenant_id, status);

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    type       TEXT NOT NULL,      -- csr.imported, csr.approved, csr.rejected, certificate.issued, …
    object_id  TEXT,
    time       TEXT NOT NULL,
    data       TEXT NOT NULL       -- JSON, never a secret
);
CREATE INDEX events_tenant ON events(tenant_id, seq);

-- NULL: the configuration's default applies.
ALTER TABLE tenants ADD COLUMN csr_distinct_approver INTEGER;
