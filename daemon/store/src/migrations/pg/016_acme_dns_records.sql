-- ScaiVault schema v16 (PostgreSQL): dns-01 TXT records written at a customer's DNS provider,
-- noted before they are written and removed once they are withdrawn; the next order of the same
-- managed certificate withdraws what a crash left behind. fqdn is the name after following
-- `_acme-challenge`'s CNAME.
CREATE TABLE acme_dns_records (
    id               TEXT COLLATE "C" PRIMARY KEY,
    managed_cert_id  TEXT COLLATE "C" NOT NULL,
    dns_provider_id  TEXT COLLATE "C" NOT NULL,
    fqdn             TEXT NOT NULL,
    value            TEXT NOT NULL,
    created_at       TEXT COLLATE "C" NOT NULL
);
CREATE INDEX acme_dns_records_mc ON acme_dns_records(managed_cert_id);
