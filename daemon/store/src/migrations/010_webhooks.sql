-- ScaiVault schema v10: webhooks and their delivery attempts.
--
-- A webhook reads the events table by sequence number: `cursor` is the last events.seq it has
-- looked at (set to the newest event when the webhook is created, so it sees only later events).
-- Matching events become delivery rows, attempted in event order; the attempt count and the
-- next attempt's time are stored, so retries survive a restart.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,      -- JSON array of event types or `prefix*` patterns
    secret_enc  BLOB NOT NULL,      -- the HMAC secret encrypted under the token's KEK
    created_at  TEXT NOT NULL,
    cursor      INTEGER NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks(tenant_id);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_seq        INTEGER NOT NULL,
    event_type       TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms  INTEGER,         -- Unix milliseconds; NULL once delivered or failed
    last_http_status INTEGER,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries(webhook_id, status, event_seq);
