//! The order worker: one tokio task per managed certificate with an order in flight.
//!
//! new order → fetch authorizations → provision each pending authorization's challenge
//! (http-01 / tls-alpn-01 responders, or the dns-01 provider, which waits for propagation) →
//! tell the CA it is ready → poll the order (honouring `Retry-After`) → finalize with a CSR for
//! a key generated here → poll and download the chain → store it as the next version.
//!
//! - The whole order is bounded by `[acme] order_timeout`.
//! - `badNonce` answers are retried (`nonce_retry!`) on top of instant-acme's own two retries.
//! - A failure writes no version: a first issuance ends `failed`, a renewal keeps the current
//!   version `valid` and is retried with backoff; `last_error` carries the CA's detail.
//! - Restarts: the row says an order is in flight (`order_kind`) until it ends. After a crash the
//!   scheduler finds such rows and starts the order again from a new order (authorizations the CA
//!   already validated are reused by the CA). After [`MAX_ATTEMPTS`] starts it fails cleanly.

use super::order::{self, Issued};
use super::seal_text;
use crate::app::App;
use crate::error::ApiError;
use scaivault_core::time_util;
use scaivault_store::{AuditRecord, ManagedCertRow, ManagedVersionRow};
use std::sync::Arc;

/// How many times one order may be started (restarts after a crash count) before it fails.
pub const MAX_ATTEMPTS: i64 = 3;
/// The token id written in the worker's audit records.
pub const WORKER: &str = "acme-worker";

/// Starts the order of `mc_id` in the background unless it already runs in this process.
pub fn spawn(app: &App, mc_id: &str) {
    if !app.cluster.is_leader() {
        // Orders run on the cluster's leader: its next scheduler tick finds this one in flight.
        tracing::debug!(mc = %mc_id, "ACME order left to the leader");
        return;
    }
    if app.acme.is_stopping() || !app.acme.claim(mc_id) {
        return;
    }
    let app = app.clone();
    let id = mc_id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = run(&app, &id).await {
            tracing::error!(mc = %id, error = %e, "ACME order bookkeeping failed");
        }
        app.acme.release(&id);
    });
}

async fn load(app: &App, id: &str) -> Result<ManagedCertRow, ApiError> {
    let i = id.to_owned();
    app.db(move |s| Ok(s.read(|tx| tx.get_managed_cert_any_tenant(&i))?))
        .await
}

async fn save(app: &App, row: ManagedCertRow, rec: Option<AuditRecord>) -> Result<(), ApiError> {
    app.db(move |s| {
        Ok(s.write(|tx| {
            tx.update_managed_cert(&row)?;
            if let Some(r) = &rec {
                tx.append_audit(r)?;
            }
            Ok(())
        })?)
    })
    .await
}

/// An audit record written by the worker or the scheduler (token id [`WORKER`]).
pub fn record(
    mc: &ManagedCertRow,
    action: &str,
    outcome: &str,
    detail: Option<String>,
) -> AuditRecord {
    AuditRecord {
        time: time_util::rfc3339(time_util::now()),
        tenant_id: Some(mc.tenant_id.clone()),
        token_id: Some(WORKER.into()),
        action: action.into(),
        object_id: Some(mc.id.clone()),
        outcome: outcome.into(),
        request_id: None,
        detail,
    }
}

async fn run(app: &App, id: &str) -> Result<(), ApiError> {
    let mut mc = load(app, id).await?;
    let Some(kind) = mc.order_kind.clone() else {
        return Ok(());
    };
    let now = time_util::now();
    mc.order_attempts += 1;
    mc.order_started_at = Some(time_util::rfc3339(now));
    mc.updated_at = time_util::rfc3339(now);
    if mc.order_attempts > MAX_ATTEMPTS {
        let msg = format!(
            "the order was interrupted {} times (daemon restarts); giving up",
            mc.order_attempts - 1
        );
        return fail(app, mc, &kind, msg, None).await;
    }
    save(app, mc.clone(), None).await?;
    tracing::info!(mc = %mc.id, kind = %kind, attempt = mc.order_attempts, "ACME order starting");
    let budget = app.config.acme.order_timeout();
    let retry_after: Arc<std::sync::Mutex<Option<std::time::SystemTime>>> = Arc::default();
    let order = super::client::RETRY_AFTER.scope(
        retry_after.clone(),
        tokio::time::timeout(budget, order::run(app, &mc, budget)),
    );
    let outcome = tokio::select! {
        o = order => o,
        () = app.acme.stopped() => {
            // The daemon stops: the order stays in flight in the database and starts again
            // from a new order at the next start (dns-01 records it noted are withdrawn then).
            tracing::info!(mc = %mc.id, kind = %kind, "ACME order interrupted by the daemon's stop; it runs again at the next start");
            // A stop is no crash: it does not count against MAX_ATTEMPTS.
            let mut mc = mc;
            mc.order_attempts -= 1;
            return save(app, mc, None).await;
        }
    };
    let ra = retry_after.lock().ok().and_then(|s| *s);
    match outcome {
        Ok(Ok(issued)) => store(app, mc, &kind, issued).await,
        Ok(Err(msg)) => fail(app, mc, &kind, msg, ra).await,
        Err(_) => {
            // Cut off where it was, possibly waiting for a dns-01 record to propagate: what it
            // published is withdrawn now (a failed first issuance has no next order to do it).
            order::withdraw_leftovers(app, &mc).await;
            let msg = format!(
                "the order did not complete within {} s (acme.order_timeout)",
                budget.as_secs()
            );
            fail(app, mc, &kind, msg, ra).await
        }
    }
}

/// Records a failed order: no version is written. `retry_after`: the CA's `Retry-After` on an
/// error answer during the order, if it sent one.
async fn fail(
    app: &App,
    mut mc: ManagedCertRow,
    kind: &str,
    msg: String,
    retry_after: Option<std::time::SystemTime>,
) -> Result<(), ApiError> {
    tracing::warn!(mc = %mc.id, kind, error = %msg, "ACME order failed");
    let now = time_util::now();
    mc.last_error = Some(msg.clone());
    mc.order_kind = None;
    mc.order_url = None;
    mc.order_attempts = 0;
    mc.updated_at = time_util::rfc3339(now);
    let (action, event) = if kind == "renew" {
        mc.renew_failures += 1;
        let mut delay = super::renew::backoff(mc.renew_failures);
        if msg.contains("urn:ietf:params:acme:error:rateLimited") {
            // The CA's rate limits count failures too: wait until the CA's Retry-After, or at
            // least an hour when it sent none.
            delay = match retry_after {
                Some(at) => at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .max(std::time::Duration::from_secs(60)),
                None => delay.max(super::renew::RATE_LIMITED_DELAY),
            };
        }
        mc.renew_at = Some(time_util::rfc3339(now + delay));
        ("acme.certificate.renew", Some("certificate.renewal_failed"))
    } else {
        mc.status = "failed".into();
        mc.renew_at = None;
        ("acme.certificate.issue", None)
    };
    let rec = record(&mc, action, "error:acme_order_failed", Some(msg.clone()));
    let data = serde_json::json!({
        "managed_certificate_id": mc.id, "domains": serde_json::from_str::<serde_json::Value>(&mc.domains).unwrap_or_default(),
        "error": msg, "failures": mc.renew_failures, "next_attempt_at": mc.renew_at,
    })
    .to_string();
    app.db(move |s| {
        Ok(s.write(|tx| {
            tx.update_managed_cert(&mc)?;
            if let Some(ev) = event {
                tx.insert_event(&mc.tenant_id, ev, Some(&mc.id), &mc.updated_at, &data)?;
            }
            tx.append_audit(&rec)
        })?)
    })
    .await?;
    Ok(())
}

/// Stores a new version and ends the order.
async fn store(
    app: &App,
    mut mc: ManagedCertRow,
    kind: &str,
    issued: Issued,
) -> Result<(), ApiError> {
    let (key_wrapped, key_sealed) = seal_text(app, &issued.key_pem).await?;
    let now = time_util::now();
    let version = ManagedVersionRow {
        mc_id: mc.id.clone(),
        version: mc.version + 1,
        serial_number: issued.serial.clone(),
        certificate: issued.leaf_pem,
        ca_chain: issued.chain_pem,
        not_before: time_util::rfc3339(issued.not_before),
        not_after: time_util::rfc3339(issued.not_after),
        key_wrapped,
        key_sealed,
        created_at: time_util::rfc3339(now),
    };
    mc.version = version.version;
    mc.status = "valid".into();
    mc.last_error = None;
    mc.order_kind = None;
    mc.order_url = None;
    mc.order_attempts = 0;
    mc.renew_failures = 0;
    mc.renew_at = if mc.auto_renew {
        Some(time_util::rfc3339(super::renew::due_at(
            &app.config.acme,
            issued.not_before,
            issued.not_after,
        )))
    } else {
        None
    };
    mc.updated_at = time_util::rfc3339(now);
    let (action, event) = if kind == "renew" {
        ("acme.certificate.renew", "certificate.renewed")
    } else {
        ("acme.certificate.issue", "certificate.issued")
    };
    let rec = record(&mc, action, "success", None);
    let data = serde_json::json!({
        "managed_certificate_id": mc.id, "version": version.version,
        "serial": version.serial_number, "not_after": version.not_after,
        "domains": serde_json::from_str::<serde_json::Value>(&mc.domains).unwrap_or_default(),
        "source": "acme",
    })
    .to_string();
    tracing::info!(mc = %mc.id, version = version.version, serial = %version.serial_number, "ACME certificate stored");
    app.db(move |s| {
        Ok(s.write(|tx| {
            tx.insert_managed_version(&version)?;
            tx.update_managed_cert(&mc)?;
            tx.insert_event(&mc.tenant_id, event, Some(&mc.id), &mc.updated_at, &data)?;
            tx.append_audit(&rec)
        })?)
    })
    .await?;
    Ok(())
}
