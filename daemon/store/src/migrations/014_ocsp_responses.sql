-- ScaiVault schema v14 (issue #11): signed OCSP responses shared by every node of a cluster, so
-- that the leader pre-signs and refreshes them once and any node serves them. Written only with
-- the PostgreSQL backend (one node keeps its responses in memory).
-- cert_id: the CertID (DER) answered; status: what the response says ('good', 'revoked',
-- 'unknown'); refresh_at: served until then (thisUpdate + validity/2), re-signed before.
CREATE TABLE ocsp_responses (
    ca_id        TEXT NOT NULL,
    serial       TEXT NOT NULL,
    cert_id      BLOB NOT NULL,
    der          BLOB NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('good', 'revoked', 'unknown')),
    this_update  TEXT NOT NULL,
    next_update  TEXT NOT NULL,
    refresh_at   TEXT NOT NULL,
    PRIMARY KEY (ca_id, serial, cert_id)
);
CREATE INDEX ocsp_responses_refresh_at ON ocsp_responses(refresh_at);
