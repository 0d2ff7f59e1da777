-- ScaiVault schema v1 for PostgreSQL: the same tables as migrations/001_init.sql.
-- Conventions of the PostgreSQL files: INTEGER → BIGINT, BLOB → BYTEA, TEXT → TEXT COLLATE "C"
-- (byte order, like SQLite's BINARY collation: RFC 3339 times and names compare as in SQLite),
-- booleans stay integers, and a table whose lists page by SQLite's implicit rowid gets an
-- explicit `rowid` identity column so the queries stay the same.
CREATE TABLE tenants (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at  TEXT COLLATE "C" NOT NULL
);

CREATE TABLE tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name        TEXT COLLATE "C",
    hash        BYTEA NOT NULL UNIQUE,
    policies    TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    expires_at  TEXT COLLATE "C",
    revoked_at  TEXT COLLATE "C",
    rowid       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX tokens_tenant ON tokens(tenant_id);

CREATE TABLE cas (
    id             TEXT COLLATE "C" PRIMARY KEY,
    tenant_id      TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name           TEXT COLLATE "C" NOT NULL,
    common_name    TEXT COLLATE "C" NOT NULL,
    ca_type        TEXT COLLATE "C" NOT NULL CHECK (ca_type IN ('root', 'intermediate')),
    parent_ca_id   TEXT COLLATE "C" REFERENCES cas(id),
    status         TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'pending_signature', 'retired')),
    key_type       TEXT COLLATE "C" NOT NULL,
    key_size       BIGINT NOT NULL,
    key_label      TEXT COLLATE "C" NOT NULL UNIQUE,
    cert_der       BYTEA,
    chain_pem      TEXT COLLATE "C",
    csr_pem        TEXT COLLATE "C",
    serial         TEXT COLLATE "C",
    not_before     TEXT COLLATE "C",
    not_after      TEXT COLLATE "C",
    settings       TEXT COLLATE "C" NOT NULL,
    created_at     TEXT COLLATE "C" NOT NULL,
    rowid          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    UNIQUE (tenant_id, name)
);

-- Serials are unique per issuer by primary key: two nodes can never record the same one.
CREATE TABLE certificates (
    issuer_ca_id      TEXT COLLATE "C" NOT NULL,
    serial            TEXT COLLATE "C" NOT NULL,
    tenant_id         TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    kind              TEXT COLLATE "C" NOT NULL CHECK (kind IN ('ca', 'leaf')),
    subject_ca_id     TEXT COLLATE "C",
    role              TEXT COLLATE "C",
    common_name       TEXT COLLATE "C",
    sans              TEXT COLLATE "C",
    cert_der          BYTEA,
    status            TEXT COLLATE "C" NOT NULL CHECK (status IN ('reserved', 'valid', 'revoked')),
    not_before        TEXT COLLATE "C",
    not_after         TEXT COLLATE "C",
    revoked_at        TEXT COLLATE "C",
    revocation_reason TEXT COLLATE "C",
    created_at        TEXT COLLATE "C" NOT NULL,
    rowid             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (issuer_ca_id, serial)
);
CREATE INDEX certificates_tenant ON certificates(tenant_id, created_at);
CREATE INDEX certificates_tenant_rowid ON certificates(tenant_id, rowid);

CREATE TABLE audit (
    seq         BIGINT PRIMARY KEY,
    time        TEXT COLLATE "C" NOT NULL,
    tenant_id   TEXT COLLATE "C",
    token_id    TEXT COLLATE "C",
    action      TEXT COLLATE "C" NOT NULL,
    object_id   TEXT COLLATE "C",
    outcome     TEXT COLLATE "C" NOT NULL,
    request_id  TEXT COLLATE "C",
    prev_hash   TEXT COLLATE "C" NOT NULL,
    hash        TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_tenant ON audit(tenant_id, seq);

CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT COLLATE "C" NOT NULL
);
