-- ScaiVault schema v11 (PostgreSQL): the ACME client.
CREATE TABLE acme_accounts (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    tenant_id          TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name               TEXT COLLATE "C" NOT NULL,
    provider           TEXT COLLATE "C" NOT NULL,
    environment        TEXT COLLATE "C" NOT NULL,
    directory_url      TEXT COLLATE "C" NOT NULL,
    email              TEXT COLLATE "C",
    directory_ca_pem   TEXT COLLATE "C",
    account_url        TEXT COLLATE "C" NOT NULL,
    eab_kid            TEXT COLLATE "C",
    status             TEXT COLLATE "C" NOT NULL CHECK (status IN ('valid', 'deactivated')),
    creds_wrapped      BYTEA NOT NULL,
    creds_sealed       BYTEA NOT NULL,
    created_at         TEXT COLLATE "C" NOT NULL,
    deactivated_at     TEXT COLLATE "C",
    rowid              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    UNIQUE (tenant_id, name)
);

CREATE TABLE acme_dns_providers (
    id               TEXT COLLATE "C" PRIMARY KEY,
    tenant_id        TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    name             TEXT COLLATE "C" NOT NULL,
    kind             TEXT COLLATE "C" NOT NULL,
    config           TEXT COLLATE "C" NOT NULL,
    secrets_wrapped  BYTEA NOT NULL,
    secrets_sealed   BYTEA NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL,
    rowid            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    UNIQUE (tenant_id, name)
);

CREATE TABLE acme_certificates (
    id                TEXT COLLATE "C" PRIMARY KEY,
    tenant_id         TEXT COLLATE "C" NOT NULL REFERENCES tenants(id),
    account_id        TEXT COLLATE "C" NOT NULL REFERENCES acme_accounts(id),
    domains           TEXT COLLATE "C" NOT NULL,
    challenge_type    TEXT COLLATE "C" NOT NULL CHECK (challenge_type IN ('http-01', 'dns-01', 'tls-alpn-01')),
    dns_provider_id   TEXT COLLATE "C" REFERENCES acme_dns_providers(id),
    key_type          TEXT COLLATE "C" NOT NULL,
    profile           TEXT COLLATE "C",
    auto_renew        BIGINT NOT NULL,
    status            TEXT COLLATE "C" NOT NULL CHECK (status IN ('pending', 'valid', 'failed')),
    version           BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT COLLATE "C",
    order_kind        TEXT COLLATE "C" CHECK (order_kind IN ('issue', 'renew')),
    order_url         TEXT COLLATE "C",
    order_started_at  TEXT COLLATE "C",
    order_attempts    BIGINT NOT NULL DEFAULT 0,
    renew_at          TEXT COLLATE "C",
    renew_failures    BIGINT NOT NULL DEFAULT 0,
    expiring_notified BIGINT NOT NULL DEFAULT 0,
    ari_version       BIGINT NOT NULL DEFAULT 0,
    ari_next_check    TEXT COLLATE "C",
    created_at        TEXT COLLATE "C" NOT NULL,
    updated_at        TEXT COLLATE "C" NOT NULL,
    rowid             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX acme_certificates_tenant ON acme_certificates(tenant_id);
CREATE INDEX acme_certificates_renew ON acme_certificates(renew_at) WHERE renew_at IS NOT NULL;

CREATE TABLE acme_certificate_versions (
    mc_id          TEXT COLLATE "C" NOT NULL REFERENCES acme_certificates(id),
    version        BIGINT NOT NULL,
    serial_number  TEXT COLLATE "C" NOT NULL,
    certificate    TEXT COLLATE "C" NOT NULL,
    ca_chain       TEXT COLLATE "C" NOT NULL,
    not_before     TEXT COLLATE "C" NOT NULL,
    not_after      TEXT COLLATE "C" NOT NULL,
    key_wrapped    BYTEA NOT NULL,
    key_sealed     BYTEA NOT NULL,
    created_at     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (mc_id, version)
);
