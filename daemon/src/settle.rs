//! Signed certificates whose commit was not confirmed.
//!
//! An issuance whose certificate commit failed answers `503 database_unavailable` ("nothing was
//! issued") and drops the certificate. When the failure was the connection's (it broke, or the
//! server went silent, around `COMMIT`), the server may have applied the commit anyway — at once,
//! with the confirmation lost on the way, or later, once a stalled server (a synchronous standby
//! that is down, say) moves again. The certificate would then be `valid` in the inventory
//! although it was never returned to the caller.
//!
//! Only such a failure counts (`scaivault_store::Error::Unconfirmed`: a `COMMIT` sent whose
//! answer never came, or an outcome lost after the signature); a commit the server refused was
//! not applied. For those, the failed issuance's own write (its `error:` audit record) also
//! *settles* the serial: a reservation row left is deleted, and a certificate found stored `valid`
//! is revoked (`cessation_of_operation`, audited as `certificate.reconcile` /
//! `revoked_unconfirmed`, with a `certificate.revoked` event; a CSR its commit marked `signed`
//! goes back to `approved`). The certificate was never returned to the caller, but between the
//! late commit and the settling it is in the inventory, and its `certificate.issued` event may
//! have gone out to webhooks. When the settling write cannot be made either (the database is
//! still gone), the serial waits in [`App::unsettled`] and a task of its own ([`run`]) tries again
//! every scheduler tick until the write goes through, stopping a pass at the first failure (a
//! stalled database costs one wait per pass, and never holds the scheduler). On PostgreSQL a
//! commit still in progress holds the cluster's write lock, so a settling write waits for it (up
//! to `lock_timeout`) or fails and is tried again: whichever way the commit ends, the settling
//! write sees it. Each waiting serial is logged when it starts waiting (`could not be settled
//! yet`), and a stop logs those left (`unsettled certificate commits`) for an operator to revoke
//! if they show up `valid`.

use crate::app::App;
use scaivault_store::{AuditRecord, Settled, Tx};

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
/// certificate found stored `valid` (with its audit record and event).
///
/// # Errors
/// SQL failures.
pub fn apply(tx: &Tx<'_>, u: &Unsettled, shared: bool) -> scaivault_store::Result<Settled> {
    let now = scaivault_core::time_util::rfc3339(scaivault_core::time_util::now());
    let settled = tx.settle_unconfirmed(&u.ca_id, &u.serial, &now)?;
    if settled != Settled::Revoked {
        return Ok(settled);
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
            "stored by a commit whose confirmation never arrived; the certificate was not returned to the caller: revoked (cessation_of_operation)"
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
    Ok(Settled::Revoked)
}

/// Where a write job leaves what [`apply`] found, for [`after`] once the write committed.
#[derive(Clone, Default)]
pub struct Found(std::sync::Arc<std::sync::Mutex<Option<Settled>>>);

impl Found {
    /// [`apply`], keeping its finding.
    ///
    /// # Errors
    /// SQL failures.
    pub fn apply(&self, tx: &Tx<'_>, u: &Unsettled, shared: bool) -> scaivault_store::Result<()> {
        let settled = apply(tx, u, shared)?;
        if let Ok(mut s) = self.0.lock() {
            *s = Some(settled);
        }
        Ok(())
    }

    /// What [`Found::apply`] found (nothing stored when it did not run).
    pub fn take(&self) -> Settled {
        self.0
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or(Settled::NotStored)
    }
}

/// What to do after [`apply`] committed: a revoked certificate leaves the OCSP cache and wakes
/// the CRL rebuild; each outcome is logged with the serial.
pub fn after(app: &App, u: &Unsettled, settled: Settled) {
    match settled {
        Settled::Revoked => {
            tracing::warn!(serial = %u.serial, ca = %u.ca_id, "a certificate whose commit was not confirmed was found stored: revoked (it was not returned to the caller)");
            app.after_revocation(&u.ca_id, &u.serial);
        }
        Settled::AlreadyRevoked => {
            tracing::info!(serial = %u.serial, ca = %u.ca_id, "a certificate whose commit was not confirmed was found stored and revoked already: settled");
        }
        Settled::NotStored => {
            tracing::info!(serial = %u.serial, ca = %u.ca_id, "a certificate whose commit was not confirmed was not stored: settled");
        }
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

/// Tries every [`crate::sched::TICK`] to settle the waiting serials, in a task of its own (a
/// database that does not answer delays only this); aborted at a stop.
pub async fn run(app: App) {
    let mut tick = tokio::time::interval(crate::sched::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        retry(&app).await;
    }
}

/// Tries once more to settle the waiting serials, each in a write of its own, oldest first;
/// the pass stops at the first write that fails (the next ones would wait for the same
/// database).
pub async fn retry(app: &App) {
    let waiting = match app.unsettled.lock() {
        Ok(list) if !list.is_empty() => list.clone(),
        _ => return,
    };
    let shared = app.cluster.is_shared();
    for u in waiting {
        let found = Found::default();
        let (job_u, slot) = (u.clone(), found.clone());
        let written = app
            .write(Box::new(move |tx| slot.apply(tx, &job_u, shared)))
            .await;
        if let Err(e) = written {
            tracing::debug!(serial = %u.serial, error = %e, "settling an unconfirmed commit failed again");
            return;
        }
        if let Ok(mut list) = app.unsettled.lock() {
            list.retain(|x| x != &u);
        }
        after(app, &u, found.take());
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
