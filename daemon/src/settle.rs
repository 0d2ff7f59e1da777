//! Signed certificates whose commit was not confirmed.
//!
//! An issuance whose certificate commit failed answers `503 database_unavailable` ("nothing was
//! issued") and drops the certificate. When the failure was the connection's (it broke, or the
//! server went silent, around `COMMIT`), the server may have applied the commit anyway — at once,
//! with the confirmation lost on the way, or later, once a stalled server (a synchronous standby
//! that is down, say) moves again. The certificate would then be `valid` in the inventory
//! although nobody received it.
//!
//! So the failed issuance's own write (its `error:` audit record) also *settles* the serial: a
//! reservation row left is deleted, and a certificate found stored `valid` is revoked
//! (`cessation_of_operation`, audited as `certificate.reconcile` / `revoked_unconfirmed`, with a
//! `certificate.revoked` event). When that write cannot be made either (the database is still
//! gone), the serial waits in [`App::unsettled`] and the scheduler tries again on every tick
//! ([`retry`]) until the write goes through. On PostgreSQL a commit that is still in progress
//! holds the row and the cluster's write lock, so a settling write waits for it (up to
//! `lock_timeout`) or fails and is tried again: whichever way the commit ends, the settling write
//! sees it. A stop with serials still waiting logs them (`unsettled certificate commits`) for an
//! operator to revoke if they show up `valid`.

use crate::app::App;
use scaivault_store::{AuditRecord, Tx};

/// A serial whose certificate commit was not confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsettled {
    /// The tenant the certificate was issued for.
    pub tenant_id: String,
    /// Its issuer.
    pub ca_id: String,
    /// Its serial (canonical form).
    pub serial: String,
}

/// Settles `u` inside a write transaction: deletes a reservation row left, revokes a
/// certificate found stored `valid` (with its audit record and event). Returns whether it was
/// revoked.
///
/// # Errors
/// SQL failures.
pub fn apply(tx: &Tx<'_>, u: &Unsettled, shared: bool) -> scaivault_store::Result<bool> {
    let now = scaivault_core::time_util::rfc3339(scaivault_core::time_util::now());
    if !tx.settle_unconfirmed(&u.ca_id, &u.serial, &now)? {
        return Ok(false);
    }
    if shared {
        // A `good` another node stored for it must not outlive the revocation.
        tx.delete_ocsp_responses(&u.ca_id, &u.serial)?;
    }
    tx.append_audit(&AuditRecord {
        time: now.clone(),
        tenant_id: Some(u.tenant_id.clone()),
        token_id: None,
        action: "certificate.reconcile".into(),
        object_id: Some(format!("{}:{}", u.ca_id, u.serial)),
        outcome: "revoked_unconfirmed".into(),
        request_id: None,
        detail: Some(
            "stored by a commit whose confirmation never arrived, although the request was answered that nothing was issued: revoked (cessation_of_operation)"
                .into(),
        ),
    })?;
    let data = serde_json::json!({
        "serial": scaivault_core::serial::api_form(&u.serial), "ca_id": u.ca_id,
        "reason": "cessation_of_operation", "revoked_at": now, "unfinished": true,
    })
    .to_string();
    tx.insert_event(
        &u.tenant_id,
        "certificate.revoked",
        Some(&u.serial),
        &now,
        &data,
    )?;
    Ok(true)
}

/// What to do after [`apply`] committed: a revoked certificate leaves the OCSP cache and wakes
/// the CRL rebuild, with a warning that names it.
pub fn after(app: &App, u: &Unsettled, revoked: bool) {
    if revoked {
        tracing::warn!(serial = %u.serial, ca = %u.ca_id, "a certificate whose commit was not confirmed was found stored: revoked (nobody received it)");
        app.after_revocation(&u.ca_id, &u.serial);
    }
}

/// Keeps `u` for [`retry`] (its settling write failed).
pub fn defer(app: &App, u: Unsettled) {
    tracing::error!(serial = %u.serial, ca = %u.ca_id, "a certificate whose commit was not confirmed could not be settled yet: trying again on every scheduler tick");
    if let Ok(mut list) = app.unsettled.lock() {
        if !list.contains(&u) {
            list.push(u);
        }
    }
}

/// Tries once more to settle every waiting serial (each in a write of its own, so one that
/// fails does not hold back the others); called on every scheduler tick.
pub async fn retry(app: &App) {
    let waiting = match app.unsettled.lock() {
        Ok(list) if !list.is_empty() => list.clone(),
        _ => return,
    };
    let shared = app.cluster.is_shared();
    for u in waiting {
        let revoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (job_u, flag) = (u.clone(), revoked.clone());
        let written = app
            .write(Box::new(move |tx| {
                let r = apply(tx, &job_u, shared)?;
                flag.store(r, std::sync::atomic::Ordering::Release);
                Ok(())
            }))
            .await;
        match written {
            Ok(()) => {
                if let Ok(mut list) = app.unsettled.lock() {
                    list.retain(|x| x != &u);
                }
                let revoked = revoked.load(std::sync::atomic::Ordering::Acquire);
                if !revoked {
                    tracing::info!(serial = %u.serial, ca = %u.ca_id, "a certificate whose commit was not confirmed was not stored: settled");
                }
                after(app, &u, revoked);
            }
            Err(e) => {
                tracing::debug!(serial = %u.serial, error = %e, "settling an unconfirmed commit failed again");
            }
        }
    }
}

/// At a stop: names the serials still waiting, for an operator to revoke if they show up
/// `valid` (nothing else will look for them).
pub fn log_left(app: &App) {
    let Ok(list) = app.unsettled.lock() else {
        return;
    };
    if !list.is_empty() {
        let serials: Vec<String> = list
            .iter()
            .map(|u| {
                format!(
                    "{}:{}",
                    u.ca_id,
                    scaivault_core::serial::api_form(&u.serial)
                )
            })
            .collect();
        tracing::error!(serials = %serials.join(", "), "unsettled certificate commits at stop: revoke these serials if they show up as valid");
    }
}
