//! Webhooks and their deliveries (migration 010).
//!
//! The delivery worker reads the events table by sequence number from each webhook's cursor; the
//! issuance path writes nothing here.

use super::Tx;
use crate::db::{params, OptionalExtension, Row};
use crate::rows::{EventRow, Page, WebhookDeliveryRow, WebhookRow};
use crate::Result;

const COLS: &str = "id, tenant_id, url, events, secret_enc, created_at, cursor, rowid";

fn row(r: &Row<'_>) -> Result<(i64, WebhookRow)> {
    Ok((
        r.get(7)?,
        WebhookRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            url: r.get(2)?,
            events: r.get(3)?,
            secret_enc: r.get(4)?,
            created_at: r.get(5)?,
            cursor: r.get(6)?,
        },
    ))
}

const DCOLS: &str = "id, webhook_id, event_seq, event_type, status, attempts, next_attempt_ms, \
     last_http_status, last_error, created_at, updated_at";

fn delivery(r: &Row<'_>) -> Result<WebhookDeliveryRow> {
    Ok(WebhookDeliveryRow {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        event_seq: r.get(2)?,
        event_type: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_ms: r.get(6)?,
        last_http_status: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

impl Tx<'_> {
    /// Adds a webhook. Its cursor is set to the newest event, whatever `w.cursor` says: a webhook
    /// sees only events recorded after it.
    ///
    /// # Errors
    /// SQL failures.
    pub fn insert_webhook(&self, w: &WebhookRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO webhooks (id, tenant_id, url, events, secret_enc, created_at, cursor) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT COALESCE(MAX(seq), 0) FROM events))",
            )?
            .execute(params![
                w.id,
                w.tenant_id,
                w.url,
                w.events,
                w.secret_enc,
                w.created_at
            ])?;
        Ok(())
    }

    /// The tenant's webhook `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`], also for another tenant's webhook.
    pub fn get_webhook(&self, tenant_id: &str, id: &str) -> Result<WebhookRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {COLS} FROM webhooks WHERE tenant_id = ?1 AND id = ?2"
            ))?
            .query_row(params![tenant_id, id], row)
            .map(|(_, w)| w)
    }

    /// A page of the tenant's webhooks in creation order.
    ///
    /// # Errors
    /// SQL failures; [`Error::Conflict`] for a malformed cursor.
    pub fn list_webhooks(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<WebhookRow>> {
        self.tenant_page("webhooks", COLS, row, tenant_id, cursor, limit)
    }

    /// Every webhook of every tenant (for the delivery worker).
    ///
    /// # Errors
    /// SQL failures.
    pub fn all_webhooks(&self) -> Result<Vec<WebhookRow>> {
        let mut st = self
            .tx
            .prepare_cached(&format!("SELECT {COLS} FROM webhooks ORDER BY rowid"))?;
        let rows = st
            .query_map(params![], row)?
            .map(|r| r.map(|(_, w)| w))
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Removes the tenant's webhook `id` and its deliveries.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn delete_webhook(&self, tenant_id: &str, id: &str) -> Result<()> {
        self.get_webhook(tenant_id, id)?;
        self.tx
            .prepare_cached("DELETE FROM webhook_deliveries WHERE webhook_id = ?1")?
            .execute(params![id])?;
        self.tx
            .prepare_cached("DELETE FROM webhooks WHERE tenant_id = ?1 AND id = ?2")?
            .execute(params![tenant_id, id])?;
        Ok(())
    }

    /// The tenant's events after `seq`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn events_after(&self, tenant_id: &str, seq: i64, limit: usize) -> Result<Vec<EventRow>> {
        let mut st = self.tx.prepare_cached(
            "SELECT seq, tenant_id, type, object_id, time, data FROM events \
             WHERE tenant_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = st
            .query_map(
                params![tenant_id, seq, i64::try_from(limit).unwrap_or(100)],
                |r| {
                    Ok(EventRow {
                        seq: r.get(0)?,
                        tenant_id: r.get(1)?,
                        kind: r.get(2)?,
                        object_id: r.get(3)?,
                        time: r.get(4)?,
                        data: r.get(5)?,
                    })
                },
            )?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The event `seq`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn event_by_seq(&self, seq: i64) -> Result<EventRow> {
        self.tx
            .prepare_cached(
                "SELECT seq, tenant_id, type, object_id, time, data FROM events WHERE seq = ?1",
            )?
            .query_row(params![seq], |r| {
                Ok(EventRow {
                    seq: r.get(0)?,
                    tenant_id: r.get(1)?,
                    kind: r.get(2)?,
                    object_id: r.get(3)?,
                    time: r.get(4)?,
                    data: r.get(5)?,
                })
            })
    }

    /// Queues `deliveries` (new, pending rows) for webhook `webhook_id` and moves its cursor to
    /// `cursor`. Returns false (and changes nothing) when the webhook is gone.
    ///
    /// # Errors
    /// SQL failures.
    pub fn enqueue_deliveries(
        &self,
        webhook_id: &str,
        deliveries: &[WebhookDeliveryRow],
        cursor: i64,
    ) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached("UPDATE webhooks SET cursor = ?2 WHERE id = ?1 AND cursor < ?2")?
            .execute(params![webhook_id, cursor])?;
        if n == 0 {
            return Ok(false);
        }
        let mut st = self.tx.prepare_cached(&format!(
            "INSERT INTO webhook_deliveries ({DCOLS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING"
        ))?;
        for d in deliveries {
            st.execute(params![
                d.id,
                webhook_id,
                d.event_seq,
                d.event_type,
                d.status,
                d.attempts,
                d.next_attempt_ms,
                d.last_http_status,
                d.last_error,
                d.created_at,
                d.updated_at
            ])?;
        }
        Ok(true)
    }

    /// The webhook's oldest pending delivery, if any.
    ///
    /// # Errors
    /// SQL failures.
    pub fn next_pending_delivery(&self, webhook_id: &str) -> Result<Option<WebhookDeliveryRow>> {
        self
            .tx
            .prepare_cached(&format!(
                "SELECT {DCOLS} FROM webhook_deliveries WHERE webhook_id = ?1 AND status = 'pending' \
                 ORDER BY event_seq LIMIT 1"
            ))?
            .query_row(params![webhook_id], delivery)
            .optional()
    }

    /// Claims attempt number `attempts + 1` of pending delivery `id` until `lease_until_ms`
    /// (Unix milliseconds): only when it is still pending with `attempts` attempts and due at
    /// `now_ms`. Counts the attempt (it is made whether or not its outcome can be recorded) and
    /// moves `next_attempt_ms` to the lease's end, so no other node sends the same attempt
    /// meanwhile; returns whether this call claimed it.
    ///
    /// # Errors
    /// SQL failures.
    pub fn claim_delivery(
        &self,
        id: &str,
        attempts: i64,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE webhook_deliveries SET next_attempt_ms = ?4, attempts = attempts + 1 \
                 WHERE id = ?1 AND status = 'pending' AND attempts = ?2 \
                 AND COALESCE(next_attempt_ms, 0) <= ?3",
            )?
            .execute(params![id, attempts, now_ms, lease_until_ms])?;
        Ok(n == 1)
    }

    /// Records an attempt's outcome (status, attempts, next attempt, last status and error).
    /// `d.attempts` is the attempt claimed ([`Self::claim_delivery`]). Returns false when the
    /// delivery is gone (its webhook was deleted), no longer pending, or when its attempt count
    /// differs (another node claimed a later attempt after this one's lease ran out: a delivery
    /// only moves forward).
    ///
    /// # Errors
    /// SQL failures.
    pub fn update_delivery(&self, d: &WebhookDeliveryRow) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, next_attempt_ms = ?4, \
                 last_http_status = ?5, last_error = ?6, updated_at = ?7 \
                 WHERE id = ?1 AND status = 'pending' AND attempts = ?3",
            )?
            .execute(params![
                d.id,
                d.status,
                d.attempts,
                d.next_attempt_ms,
                d.last_http_status,
                d.last_error,
                d.updated_at
            ])?;
        Ok(n > 0)
    }

    /// A page of the webhook's deliveries, newest first; `cursor` continues below the last one
    /// of the previous page.
    ///
    /// # Errors
    /// SQL failures; [`crate::Error::Conflict`] for a malformed cursor.
    pub fn recent_deliveries(
        &self,
        webhook_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<WebhookDeliveryRow>> {
        let before = match super::parse_cursor(cursor)? {
            0 => i64::MAX,
            seq => seq,
        };
        let mut st = self.tx.prepare_cached(&format!(
            "SELECT {DCOLS} FROM webhook_deliveries WHERE webhook_id = ?1 AND event_seq < ?2 \
             ORDER BY event_seq DESC LIMIT ?3"
        ))?;
        let rows = st
            .query_map(
                params![webhook_id, before, super::limit_plus_one(limit)],
                delivery,
            )?
            .map(|r| r.map(|d| (d.event_seq, d)))
            .collect::<Result<Vec<_>>>()?;
        Ok(super::page(rows, limit))
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{both_backends, fixture, Kind};
    use crate::{TenantRow, WebhookDeliveryRow, WebhookRow};

    fn hook(id: &str) -> WebhookRow {
        WebhookRow {
            id: id.into(),
            tenant_id: "tn_a".into(),
            url: "http://127.0.0.1:1/".into(),
            events: "[\"*\"]".into(),
            secret_enc: vec![9; 40],
            created_at: "x".into(),
            cursor: 0,
        }
    }

    fn pending(id: &str, seq: i64) -> WebhookDeliveryRow {
        WebhookDeliveryRow {
            id: id.into(),
            webhook_id: String::new(),
            event_seq: seq,
            event_type: "certificate.issued".into(),
            status: "pending".into(),
            attempts: 0,
            next_attempt_ms: Some(0),
            last_http_status: None,
            last_error: None,
            created_at: "x".into(),
            updated_at: "x".into(),
        }
    }

    both_backends!(cursor_starts_after_existing_events_and_deliveries_go_in_order);

    fn cursor_starts_after_existing_events_and_deliveries_go_in_order(kind: Kind) {
        let Some(f) = fixture(kind) else {
            return;
        };
        let s = &f.store;
        s.write(|tx| {
            tx.insert_tenant(&TenantRow {
                id: "tn_a".into(),
                name: "a".into(),
                created_at: "x".into(),
            })?;
            tx.insert_event("tn_a", "certificate.issued", None, "t", "{}")?;
            tx.insert_event("tn_a", "certificate.issued", None, "t", "{}")?;
            tx.insert_webhook(&hook("wh_1"))
        })
        .unwrap();
        let w = s.read(|tx| tx.get_webhook("tn_a", "wh_1")).unwrap();
        assert_eq!(w.cursor, 2);
        assert!(s.read(|tx| tx.get_webhook("tn_b", "wh_1")).is_err());
        s.write(|tx| {
            tx.insert_event("tn_a", "certificate.revoked", None, "t", "{}")?;
            tx.insert_event("tn_a", "certificate.issued", None, "t", "{}")
        })
        .unwrap();
        let evs = s.read(|tx| tx.events_after("tn_a", 2, 10)).unwrap();
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
        assert!(s
            .write(|tx| tx.enqueue_deliveries(
                "wh_1",
                &[pending("whd_4", 4), pending("whd_3", 3)],
                4
            ))
            .unwrap());
        // A stale cursor does not go back.
        assert!(!s
            .write(|tx| tx.enqueue_deliveries("wh_1", &[pending("whd_x", 3)], 3))
            .unwrap());
        let first = s
            .read(|tx| tx.next_pending_delivery("wh_1"))
            .unwrap()
            .unwrap();
        assert_eq!(first.id, "whd_3");
        assert!(s
            .write(|tx| tx.claim_delivery(&first.id, 0, 1_000, 31_000))
            .unwrap());
        let mut done = first.clone();
        done.status = "delivered".into();
        done.attempts = 1;
        assert!(s.write(|tx| tx.update_delivery(&done)).unwrap());
        let next = s
            .read(|tx| tx.next_pending_delivery("wh_1"))
            .unwrap()
            .unwrap();
        assert_eq!(next.id, "whd_4");
        let all = s.read(|tx| tx.recent_deliveries("wh_1", None, 10)).unwrap();
        assert_eq!(all.items.len(), 2);
        assert!(all.next_cursor.is_none());
        // One per page, newest first, then the older one, then the end.
        let p1 = s.read(|tx| tx.recent_deliveries("wh_1", None, 1)).unwrap();
        assert_eq!(p1.items[0].id, "whd_4");
        let p2 = s
            .read(|tx| tx.recent_deliveries("wh_1", p1.next_cursor.as_deref(), 1))
            .unwrap();
        assert_eq!(p2.items[0].id, "whd_3");
        assert!(p2.next_cursor.is_none(), "the oldest one ends the list");
        assert!(matches!(
            s.read(|tx| tx.recent_deliveries("wh_1", Some("abc"), 1)),
            Err(crate::Error::Conflict(_))
        ));
        s.write(|tx| tx.delete_webhook("tn_a", "wh_1")).unwrap();
        assert!(!s.write(|tx| tx.update_delivery(&next)).unwrap());
        assert!(s.read(|tx| tx.all_webhooks()).unwrap().is_empty());
    }
}
