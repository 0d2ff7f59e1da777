//! The delivery worker: a tokio task started by the scheduler.
//!
//! Every `webhooks.poll_ms` it reads the webhook list (one small read; nothing else happens when
//! there is none) and starts one task per webhook that is not already being served. That task:
//! 1. takes the webhook's oldest pending delivery; when there is none, reads the tenant's events
//!    after the webhook's cursor, queues the matching ones as pending deliveries and moves the
//!    cursor, in one transaction;
//! 2. if the delivery is due, POSTs it (signed; `webhooks.timeout_secs` for the whole exchange)
//!    and records the outcome: `delivered` on 2xx; otherwise the attempt count and the next
//!    attempt's time (`retry_base_ms` doubled per attempt, at most `retry_max_secs`), or `failed`
//!    after `max_attempts`;
//! 3. goes on with the next delivery only after a success or a final failure, so one webhook's
//!    deliveries arrive in event order.
//!
//! State lives in the database, so retries survive a restart. Its writes join the group commit
//! with [`Durability::Wal`] (no `fsync` of their own; the next `Disk` commit syncs them): a
//! power loss may lose the last outcomes, and those deliveries are made again (a lost queue entry
//! under a new delivery id). Delivery is at
//! least once: an attempt cut short by a stop or a crash is made again after the restart, with
//! the same `ScaiVault-Delivery` id.

use super::{http, matches, patterns};
use crate::app::App;
use crate::error::ApiError;
use crate::issue::KEK_LABEL;
use scaivault_core::{ids, time_util};
use scaivault_store::{Durability, WebhookDeliveryRow, WebhookRow};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use zeroize::Zeroizing;

/// Deliveries one webhook task makes before it yields to the next poll.
const MAX_PER_RUN: usize = 100;
/// Events read per step of a cursor.
const EVENTS_PER_STEP: usize = 100;

type TlsSlot = Arc<OnceLock<Result<Arc<rustls::ClientConfig>, String>>>;

/// Runs until aborted (the scheduler aborts it at shutdown; the tasks it started go with it).
pub async fn run(app: App) {
    let poll = Duration::from_millis(app.config.webhooks.poll_ms);
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let tls: TlsSlot = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::time::sleep(poll).await;
        while tasks.try_join_next().is_some() {}
        if !app.cluster.is_leader() {
            // Another node delivers (deliveries in flight here finish first).
            continue;
        }
        let hooks = match app
            .db(|s| s.read(|tx| tx.all_webhooks()).map_err(ApiError::from))
            .await
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(code = e.code, "webhook worker: cannot read webhooks");
                continue;
            }
        };
        for hook in hooks {
            let claimed = busy.lock().is_ok_and(|mut b| b.insert(hook.id.clone()));
            if !claimed {
                continue;
            }
            let (app, busy, tls) = (app.clone(), busy.clone(), tls.clone());
            tasks.spawn(async move {
                let id = hook.id.clone();
                serve(&app, hook, &tls).await;
                if let Ok(mut b) = busy.lock() {
                    b.remove(&id);
                }
            });
        }
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

/// Delay before attempt `attempts + 1`, in milliseconds.
fn backoff_ms(base_ms: u64, max_secs: u64, attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
    let delay = base_ms
        .saturating_mul(1u64 << shift)
        .min(max_secs.saturating_mul(1000));
    i64::try_from(delay).unwrap_or(i64::MAX)
}

/// Serves one webhook until nothing is due.
async fn serve(app: &App, hook: WebhookRow, tls: &TlsSlot) {
    let Ok(patterns) = patterns(&hook) else {
        tracing::error!(webhook = %hook.id, "webhook has damaged event patterns");
        return;
    };
    let mut secret: Option<Zeroizing<Vec<u8>>> = None;
    let mut cursor = hook.cursor;
    for _ in 0..MAX_PER_RUN {
        let id = hook.id.clone();
        let pending = match app
            .db(move |s| {
                s.read(|tx| tx.next_pending_delivery(&id))
                    .map_err(ApiError::from)
            })
            .await
        {
            Ok(p) => p,
            Err(_) => return,
        };
        let Some(delivery) = pending else {
            match enqueue(app, &hook, &patterns, cursor).await {
                Some(next) => {
                    cursor = next;
                    continue;
                }
                None => return,
            }
        };
        if delivery.next_attempt_ms.unwrap_or(0) > now_ms() {
            return;
        }
        if secret.is_none() {
            match decrypt(app, &hook).await {
                Ok(s) => secret = Some(s),
                Err(e) => {
                    tracing::warn!(webhook = %hook.id, code = e.code, "webhook secret unavailable");
                    return;
                }
            }
        }
        let Some(key) = secret.as_ref() else { return };
        if !attempt(app, &hook, delivery, key, tls).await {
            return;
        }
    }
}

/// Queues the matching events after `cursor`; the new cursor, or `None` when there was nothing
/// new (or the webhook is gone).
async fn enqueue(app: &App, hook: &WebhookRow, patterns: &[String], cursor: i64) -> Option<i64> {
    let t = hook.tenant_id.clone();
    let events = app
        .db(move |s| {
            s.read(|tx| tx.events_after(&t, cursor, EVENTS_PER_STEP))
                .map_err(ApiError::from)
        })
        .await
        .ok()?;
    let last = events.last()?.seq;
    let now = time_util::rfc3339(time_util::now());
    let rows: Vec<WebhookDeliveryRow> = events
        .into_iter()
        .filter(|e| patterns.iter().any(|p| matches(p, &e.kind)))
        .map(|e| WebhookDeliveryRow {
            id: ids::new_id("whd"),
            webhook_id: hook.id.clone(),
            event_seq: e.seq,
            event_type: e.kind,
            status: "pending".into(),
            attempts: 0,
            next_attempt_ms: Some(0),
            last_http_status: None,
            last_error: None,
            created_at: now.clone(),
            updated_at: now.clone(),
        })
        .collect();
    let alive = Arc::new(AtomicBool::new(false));
    let flag = alive.clone();
    let id = hook.id.clone();
    let res = app
        .write_with(
            Box::new(move |tx| {
                flag.store(tx.enqueue_deliveries(&id, &rows, last)?, Ordering::Relaxed);
                Ok(())
            }),
            Durability::Wal,
        )
        .await;
    if let Err(e) = res {
        tracing::warn!(webhook = %hook.id, error = %e, "webhook deliveries not queued");
        return None;
    }
    alive.load(Ordering::Relaxed).then_some(last)
}

async fn decrypt(app: &App, hook: &WebhookRow) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let token = app.token.clone();
    let enc = hook.secret_enc.clone();
    app.blocking(move || Ok(Zeroizing::new(token.kek_decrypt(KEK_LABEL, &enc)?)))
        .await
}

/// One attempt; whether it was delivered.
async fn attempt(
    app: &App,
    hook: &WebhookRow,
    mut d: WebhookDeliveryRow,
    secret: &[u8],
    tls: &TlsSlot,
) -> bool {
    let cfg = app.config.webhooks.clone();
    let seq = d.event_seq;
    let event = match app
        .db(move |s| s.read(|tx| tx.event_by_seq(seq)).map_err(ApiError::from))
        .await
    {
        Ok(e) => e,
        Err(e) if e.code == "not_found" => {
            // Events are never deleted; should one vanish, its delivery must not block the rest.
            d.status = "failed".into();
            d.next_attempt_ms = None;
            d.last_error = Some("the event no longer exists".into());
            d.updated_at = time_util::rfc3339(time_util::now());
            return store_outcome(app, hook, &d).await;
        }
        Err(_) => return false,
    };
    let body = serde_json::json!({
        "id": format!("evt_{}", event.seq),
        "type": event.kind,
        "created_at": event.time,
        "tenant": event.tenant_id,
        "object_id": event.object_id,
        "data": serde_json::from_str::<serde_json::Value>(&event.data)
            .unwrap_or(serde_json::Value::Null),
    })
    .to_string();
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let headers = [
        ("Content-Type", "application/json".to_owned()),
        ("ScaiVault-Event", event.kind.clone()),
        ("ScaiVault-Delivery", d.id.clone()),
        ("ScaiVault-Timestamp", timestamp.clone()),
        (
            "ScaiVault-Signature",
            http::signature(secret, &timestamp, body.as_bytes()),
        ),
    ];
    if d.attempts >= i64::from(cfg.max_attempts) {
        // No attempt left: the last one's outcome was never recorded (a failed write, a crash),
        // or `max_attempts` was lowered since. Either way the delivery failed; the last error
        // recorded, if any, stays in the message.
        d.status = "failed".into();
        d.next_attempt_ms = None;
        d.last_error = Some(match d.last_error.take() {
            Some(prev) => format!(
                "no attempt left after {} (max_attempts = {}); the last error recorded: {prev}",
                d.attempts, cfg.max_attempts
            ),
            None => format!("the outcome of attempt {} was not recorded", d.attempts),
        });
        d.updated_at = time_util::rfc3339(time_util::now());
        tracing::warn!(webhook = %hook.id, delivery = %d.id, event = %event.kind,
            attempts = d.attempts, "webhook delivery failed for good");
        return store_outcome(app, hook, &d).await;
    }
    // Lease this attempt (several nodes: a leader that just lost its place, and the new one, must
    // not both send it). The lease outlasts the attempt; the outcome replaces it. The claim
    // counts the attempt.
    let (id, attempts) = (d.id.clone(), d.attempts);
    let now = now_ms();
    let lease_ms = i64::try_from(cfg.timeout_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX / 4)
        .saturating_add(5_000);
    let won = Arc::new(AtomicBool::new(false));
    let flag = won.clone();
    let claimed = app
        .write_with(
            Box::new(move |tx| {
                let lease = now.saturating_add(lease_ms);
                flag.store(
                    tx.claim_delivery(&id, attempts, now, lease)?,
                    Ordering::Relaxed,
                );
                Ok(())
            }),
            Durability::Wal,
        )
        .await;
    if claimed.is_err() || !won.load(Ordering::Relaxed) {
        return false;
    }
    d.attempts += 1;
    let ca_file = cfg.ca_file.clone();
    let tls_config = || tls.get_or_init(|| http::tls_config(&ca_file)).clone();
    let outcome = tokio::time::timeout(
        Duration::from_secs(cfg.timeout_secs),
        http::post(&hook.url, &headers, body.as_bytes(), tls_config),
    )
    .await;
    let (code, error) = match outcome {
        Ok(Ok(c)) if (200..300).contains(&c) => (Some(c), None),
        Ok(Ok(c)) => (Some(c), Some(format!("the receiver answered {c}"))),
        Ok(Err(e)) => (None, Some(e)),
        Err(_) => (
            None,
            Some(format!("no answer within {} s", cfg.timeout_secs)),
        ),
    };
    d.last_http_status = code.map(i64::from);
    d.updated_at = time_util::rfc3339(time_util::now());
    let delivered = error.is_none();
    if delivered {
        d.status = "delivered".into();
        d.next_attempt_ms = None;
    } else if d.attempts >= i64::from(cfg.max_attempts) {
        d.status = "failed".into();
        d.next_attempt_ms = None;
    } else {
        d.next_attempt_ms = Some(now_ms().saturating_add(backoff_ms(
            cfg.retry_base_ms,
            cfg.retry_max_secs,
            d.attempts,
        )));
    }
    d.last_error = error;
    match (delivered, d.status.as_str()) {
        (true, _) => tracing::info!(webhook = %hook.id, delivery = %d.id, event = %event.kind,
            attempts = d.attempts, http_status = ?code, "webhook delivered"),
        (false, "failed") => tracing::warn!(webhook = %hook.id, delivery = %d.id,
            event = %event.kind, attempts = d.attempts, http_status = ?code,
            error = ?d.last_error, "webhook delivery failed for good"),
        _ => tracing::info!(webhook = %hook.id, delivery = %d.id, event = %event.kind,
            attempts = d.attempts, http_status = ?code, error = ?d.last_error,
            "webhook delivery failed; will retry"),
    }
    let gave_up = d.status == "failed";
    // A final failure lets the next delivery go; a deleted webhook stops here.
    store_outcome(app, hook, &d).await && (delivered || gave_up)
}

/// Stores an attempt's outcome; false when it could not be stored or the delivery is gone.
async fn store_outcome(app: &App, hook: &WebhookRow, d: &WebhookDeliveryRow) -> bool {
    let row = d.clone();
    let alive = Arc::new(AtomicBool::new(false));
    let flag = alive.clone();
    if let Err(e) = app
        .write_with(
            Box::new(move |tx| {
                flag.store(tx.update_delivery(&row)?, Ordering::Relaxed);
                Ok(())
            }),
            Durability::Wal,
        )
        .await
    {
        tracing::warn!(webhook = %hook.id, delivery = %d.id, error = %e, "delivery outcome not stored");
        return false;
    }
    alive.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_ms(1000, 3600, 1), 1000);
        assert_eq!(backoff_ms(1000, 3600, 2), 2000);
        assert_eq!(backoff_ms(1000, 3600, 5), 16000);
        assert_eq!(backoff_ms(1000, 3600, 30), 3_600_000);
        assert_eq!(backoff_ms(1000, 3600, i64::MAX), 3_600_000);
    }
}
