-- ScaiVault schema v13 (PostgreSQL): http-01 and tls-alpn-01 challenge answers shared by every
-- node, so that a follower can answer the CA's validation of an order the leader runs.
-- http-01: name = the token, value = the key authorization; tls-alpn-01: name = the lowercase DNS
-- name, value = hex SHA-256 of the key authorization (RFC 8737 §3).
CREATE TABLE acme_challenge_answers (
    kind        TEXT COLLATE "C" NOT NULL CHECK (kind IN ('http-01', 'tls-alpn-01')),
    name        TEXT COLLATE "C" NOT NULL,
    value       TEXT NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, name)
);
