-- ScaiVault schema v13 (issue #11): http-01 and tls-alpn-01 challenge answers shared by every node
-- of a cluster, so that a follower behind the load balancer can answer the CA's validation of an
-- order the leader runs. Written only with the PostgreSQL backend (one node needs no table).
-- http-01: name = the token, value = the key authorization; tls-alpn-01: name = the lowercase DNS
-- name, value = hex SHA-256 of the key authorization (RFC 8737 §3).
CREATE TABLE acme_challenge_answers (
    kind        TEXT NOT NULL CHECK (kind IN ('http-01', 'tls-alpn-01')),
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);
