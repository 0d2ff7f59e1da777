-- ScaiVault schema v14 (PostgreSQL): signed OCSP responses shared by every node, pre-signed and
-- refreshed by the leader, served by any node.
CREATE TABLE ocsp_responses (
    ca_id        TEXT COLLATE "C" NOT NULL,
    serial       TEXT COLLATE "C" NOT NULL,
    cert_id      BYTEA NOT NULL,
    der          BYTEA NOT NULL,
    status       TEXT COLLATE "C" NOT NULL CHECK (status IN ('good', 'revoked', 'unknown')),
    this_update  TEXT COLLATE "C" NOT NULL,
    next_update  TEXT COLLATE "C" NOT NULL,
    refresh_at   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (ca_id, serial, cert_id)
);
CREATE INDEX ocsp_responses_refresh_at ON ocsp_responses(refresh_at);
