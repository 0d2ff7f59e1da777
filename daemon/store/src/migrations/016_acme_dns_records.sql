-- ScaiVault schema v16: dns-01 TXT records written at a customer's DNS provider, noted before
-- they are written and removed once they are withdrawn. A record a crash (or a failed
-- withdrawal) left behind is found here and withdrawn by the next order of the same managed
-- certificate. fqdn is the name after following `_acme-challenge`'s CNAME.
CREATE TABLE acme_dns_records (
    id               TEXT PRIMARY KEY,
    managed_cert_id  TEXT NOT NULL,
    dns_provider_id  TEXT NOT NULL,
    fqdn             TEXT NOT NULL,
    value            TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX acme_dns_records_mc ON acme_dns_records(managed_cert_id);
