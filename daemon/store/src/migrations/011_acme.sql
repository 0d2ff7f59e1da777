-- ScaiVault schema: the ACME client (issue #7). Numbered 010 because 009 belongs to the webhooks
-- work; registered after 008 in MIGRATIONS (009 goes before it when both are merged).
-- Every secret column holds AES-256-GCM ciphertext whose data key is encrypted by the token's
-- key-encryption key (`*_wrapped` = the data key under the KEK, `*_sealed` = nonce || ciphertext).
CREATE TABLE acme_accounts (
    id                 TEXT PRIMARY KEY,            -- acme_…
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    name               TEXT NOT NULL,
    provider           TEXT NOT NULL,               -- letsencrypt, zerossl, buypass, google, custom
    environment        TEXT NOT NULL,               -- production, staging
    directory_url      TEXT NOT NULL,
    email              TEXT,
    directory_ca_pem   TEXT,                        -- extra roots for the directory's HTTPS (public)
    account_url        TEXT NOT NULL,               -- the CA's account id (kid)
    eab_kid            TEXT,
    status             TEXT NOT NULL CHECK (status IN ('valid', 'deactivated')),
    creds_wrapped      BLOB NOT NULL,               -- instant-acme AccountCredentials (key inside)
    creds_sealed       BLOB NOT NULL,
    created_at         TEXT NOT NULL,
    deactivated_at     TEXT,
    UNIQUE (tenant_id, name)
);

CREATE TABLE acme_dns_providers (
    id               TEXT PRIMARY KEY,              -- dns_…
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    name             TEXT NOT NULL,
    kind             TEXT NOT NULL,
    config           TEXT NOT NULL,                 -- JSON without the secret keys
    secrets_wrapped  BLOB NOT NULL,                 -- JSON object of the secret keys, encrypted
    secrets_sealed   BLOB NOT NULL,
    created_at       TEXT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE acme_certificates (
    id                TEXT PRIMARY KEY,             -- mc_…
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    account_id        TEXT NOT NULL REFERENCES acme_accounts(id),
    domains           TEXT NOT NULL,                -- JSON array
    challenge_type    TEXT NOT NULL CHECK (challenge_type IN ('http-01', 'dns-01', 'tls-alpn-01')),
    dns_provider_id   TEXT REFERENCES acme_dns_providers(id),
    key_type          TEXT NOT NULL,
    profile           TEXT,
    auto_renew        INTEGER NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'valid', 'failed')),
    version           INTEGER NOT NULL DEFAULT 0,   -- latest version (0: none yet)
    last_error        TEXT,
    -- the order in flight: NULL when none; 'issue' (first version) or 'renew'
    order_kind        TEXT CHECK (order_kind IN ('issue', 'renew')),
    order_url         TEXT,
    order_started_at  TEXT,
    order_attempts    INTEGER NOT NULL DEFAULT 0,   -- starts of the current order (restarts count)
    renew_at          TEXT,                         -- when the scheduler next renews (NULL: never)
    renew_failures    INTEGER NOT NULL DEFAULT 0,
    expiring_notified INTEGER NOT NULL DEFAULT 0,   -- the version certificate.expiring was fired for
    ari_version       INTEGER NOT NULL DEFAULT 0,   -- the version ARI (RFC 9773) was last asked about
    ari_next_check    TEXT,                         -- when to ask the CA's renewal info again
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX acme_certificates_tenant ON acme_certificates(tenant_id);
CREATE INDEX acme_certificates_renew ON acme_certificates(renew_at) WHERE renew_at IS NOT NULL;

CREATE TABLE acme_certificate_versions (
    mc_id          TEXT NOT NULL REFERENCES acme_certificates(id),
    version        INTEGER NOT NULL,
    serial_number  TEXT NOT NULL,
    certificate    TEXT NOT NULL,                   -- PEM leaf
    ca_chain       TEXT NOT NULL,                   -- PEM, issuer first
    not_before     TEXT NOT NULL,
    not_after      TEXT NOT NULL,
    key_wrapped    BLOB NOT NULL,                   -- the private key (PKCS#8 PEM), encrypted
    key_sealed     BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (mc_id, version)
);
