//! The scheduler: one tokio task that ticks on an interval (recording the heartbeat that
//! `/v1/sys/health` reports) and runs the periodic jobs: CRL regeneration, every CA's CRL once per
//! `crl_interval` and dirty CRLs shortly after a revocation (debounced). Its state lives in the
//! database (CRL numbers, next updates, dirty marks), so it survives restarts. It also starts
//! tasks of their own, which a slow peer can delay only themselves: the webhook delivery worker
//! (`webhooks::worker`), OCSP pre-signing, the CA key watch, the settling of certificate commits
//! that were not confirmed (`crate::settle`) and the ACME client's work (orders
//! left in flight, renewal information, due renewals: [`acme_renewals`]). It stops when the
//! shutdown signal fires, and those tasks with it.
//!
//! With several nodes on one PostgreSQL database only the leader (see [`crate::cluster`]) runs
//! the CRL, ACME and webhook jobs and OCSP pre-signing and refresh (into the response table the
//! nodes share, see [`crate::ocsp`]); every node keeps its heartbeat and its rate-limit buckets.

use crate::app::App;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Tick interval.
pub const TICK: Duration = Duration::from_secs(10);
/// How often the audit chain's head goes to the log ([`log_audit_head`]), besides at start and
/// stop.
pub const AUDIT_HEAD_EVERY: Duration = Duration::from_secs(3600);
/// How long after a revocation the CRL rebuild waits, to batch revocations that come together.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// A rebuild after a revocation also waits this multiple of the previous pass's duration, so a
/// stream of revocations against a large CRL (seconds to build at a million entries) keeps the
/// scheduler busy at most half the time instead of rebuilding back to back. OCSP answers
/// `revoked` at once regardless; the CRL follows within about two build times.
pub const COOLDOWN_FACTOR: u32 = 1;

/// Ticks until `shutdown` resolves (the daemon's stop, not one HTTP listener's: a reload may
/// replace the listener while the scheduler keeps running).
pub async fn run(app: App, beat: Arc<AtomicI64>, shutdown: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(TICK);
    let mut last_pass = Duration::ZERO;
    let mut head_logged = tokio::time::Instant::now();
    let presigner = tokio::spawn(crate::ocsp::presigner(app.clone()));
    let webhooks = tokio::spawn(crate::webhooks::worker::run(app.clone()));
    let key_watch = tokio::spawn(watch_ca_keys(app.clone()));
    let settler = tokio::spawn(crate::settle::run(app.clone()));
    let mut acme = tokio::spawn(acme_renewals(app.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                beat.store(time::OffsetDateTime::now_utc().unix_timestamp(), Ordering::Relaxed);
                app.limits.forget_idle();
                if head_logged.elapsed() >= AUDIT_HEAD_EVERY {
                    head_logged = tokio::time::Instant::now();
                    log_audit_head(&app, "hourly").await;
                }
                if app.cluster.is_leader() {
                    last_pass = timed(leader_pass(&app)).await;
                }
                // OCSP responses in use that go stale before the next tick but one: re-signed now.
                // In a cluster by the leader only, which also refreshes the shared table.
                if app.cluster.is_leader() {
                    let now = scaivault_core::time_util::now();
                    let mut queued = app.ocsp.queue_refresh(now, crate::ocsp::REFRESH_HORIZON);
                    if app.cluster.is_shared() {
                        queued += crate::ocsp::refresh_shared(&app, now).await;
                    }
                    if queued > 0 {
                        tracing::debug!(queued, "OCSP responses queued for refresh");
                    }
                }
            }
            _ = app.crl_wake.notified() => {
                tokio::time::sleep(DEBOUNCE.max(last_pass * COOLDOWN_FACTOR)).await;
                if app.cluster.is_leader() {
                    last_pass = timed(crate::revoke::rebuild_due(&app)).await;
                }
            }
            _ = app.sched_wake.notified() => {
                if app.cluster.is_leader() {
                    last_pass = timed(leader_pass(&app)).await;
                }
            }
            // The ACME task never ends by itself: a panic in it is logged and it starts again
            // (before it ran inside this loop, and a panic stopped the heartbeat).
            ended = &mut acme => {
                tracing::error!(error = ?ended.err(), "the ACME renewal task ended; starting it again");
                acme = tokio::spawn(acme_renewals(app.clone()));
            }
            _ = &mut shutdown => break,
        }
    }
    presigner.abort();
    webhooks.abort();
    key_watch.abort();
    settler.abort();
    acme.abort();
}

/// The ACME client's scheduled work ([`crate::acme::renew::tick`]: orders left in flight,
/// renewal information, due renewals, expiry events), every [`TICK`] on the leader and at once
/// when this node becomes the leader, in a task of its own: a CA that answers slowly (each request may take 30 s) delays only this, never a CRL
/// rebuild, and a stop aborts it between two steps (an order it started runs in its own task,
/// which a stop interrupts cleanly; a renewal it claimed and had not started yet is resumed as
/// an order in flight at the next start).
async fn acme_renewals(app: App) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.acme_wake.notified() => {}
        }
        if app.cluster.is_leader() {
            crate::acme::renew::tick(&app).await;
        }
    }
}

/// Looks for every active CA's key pair on the token, every [`TICK`], in a task of its own (a
/// slow or hung token delays only this, never the scheduler). Each node checks: each has its own
/// view of the token. One lookup per CA, well under a millisecond with SoftHSM; nothing is read
/// from the keys.
///
/// A CA whose private or public key object is gone — deleted by hand, a token restored from an
/// older copy — stops signing: while it is missing, every pass takes its issuer out of the cache
/// (also one a request cached again meanwhile) and the token drops the session copy it signed
/// with ([`scaivault_hsm::Token::forget_copies`]), so requests answer `503 hsm_key_missing`.
/// Each change is logged; health counts the missing ones. A lookup that fails leaves that CA's
/// state as it was; a token that does not answer ends the pass.
pub async fn watch_ca_keys(app: App) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        check_ca_keys(&app).await;
    }
}

/// One pass of [`watch_ca_keys`].
pub async fn check_ca_keys(app: &App) {
    /// Set while a pass's token work runs: a token that hangs holds one blocking thread, not one
    /// more per tick (the wait for it ends at `[hsm] call_timeout`, the thread does not).
    static BUSY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            BUSY.store(false, Ordering::Release);
        }
    }
    if BUSY.swap(true, Ordering::AcqRel) {
        return;
    }
    let done = Done;
    // The database first, on its own: a database that does not answer must not be reported as a
    // token that did not (the token call's limit would run out while the read waits).
    let keys = match app
        .db(|s| {
            s.read(|tx| tx.active_ca_keys())
                .map_err(crate::error::ApiError::from)
        })
        .await
    {
        Ok(k) => k,
        Err(e) => {
            tracing::debug!(error = %e.detail, "CA key check skipped: the database read failed");
            return;
        }
    };
    let token = app.token.clone();
    let found = app
        .token_blocking("key check", move || {
            // BUSY stays set until the token work ends, also when the wait for it gave up.
            let _done = done;
            let mut seen = Vec::with_capacity(keys.len());
            for (id, label) in keys {
                let here = match token.key_present(&label) {
                    Ok(p) => Some(p),
                    Err(e) if e.is_unavailable() => return Err(crate::error::ApiError::from(e)),
                    Err(e) => {
                        tracing::warn!(ca = %id, error = %e, "the CA's key could not be looked up");
                        None
                    }
                };
                seen.push((id, label, here));
            }
            Ok(seen)
        })
        .await;
    let seen = match found {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e.detail, "CA key check skipped");
            return;
        }
    };
    let missing_now: Vec<(String, String)> = {
        let Ok(mut missing) = app.missing_ca_keys.lock() else {
            return;
        };
        let active: std::collections::BTreeSet<&str> =
            seen.iter().map(|(id, ..)| id.as_str()).collect();
        // CAs no longer active (retired, deleted) are no longer counted.
        missing.retain(|id| active.contains(id.as_str()));
        for (id, _, here) in &seen {
            match (*here, missing.contains(id)) {
                (Some(false), false) => {
                    tracing::error!(ca = %id, "the CA's key pair is not (wholly) on the token: the CA signs nothing until it is back");
                    missing.insert(id.clone());
                }
                (Some(true), true) => {
                    tracing::info!(ca = %id, "the CA's key pair is on the token again");
                    missing.remove(id);
                }
                // Unchanged, or not looked up this time: as it was.
                _ => {}
            }
        }
        seen.iter()
            .filter(|(id, ..)| missing.contains(id))
            .map(|(id, label, _)| (id.clone(), label.clone()))
            .collect()
    };
    // Every pass while missing: an issuer a request built again meanwhile goes too.
    let evicted: Vec<String> = match app.issuers.write() {
        Ok(mut cache) => missing_now
            .iter()
            .filter(|(id, _)| cache.remove(id).is_some())
            .map(|(_, label)| label.clone())
            .collect(),
        Err(_) => Vec::new(),
    };
    if evicted.is_empty() {
        return;
    }
    app.issue_cache.clear();
    let token = app.token.clone();
    let _ = app
        .token_blocking("forget key copies", move || {
            for label in &evicted {
                token.forget_copies(label);
            }
            Ok(())
        })
        .await;
}

/// The scheduler's jobs that run once per cluster: reservations of dead nodes, then CRLs (the
/// ACME job, also the leader's, runs in [`acme_renewals`]).
async fn leader_pass(app: &App) {
    crate::metrics::Metrics::bump(&app.metrics.leader_passes);
    if app.cluster.is_shared() {
        // Reservations of nodes that died mid-issuance and did not come back.
        let store = app.store.clone();
        match tokio::task::spawn_blocking(move || crate::serve::reconcile_reservations(&store))
            .await
        {
            Ok(Ok(n)) if n > 0 => app.crl_wake.notify_one(),
            Ok(Err(e)) => tracing::warn!(error = %e, "reconciling stale reservations failed"),
            _ => {}
        }
    }
    crate::revoke::rebuild_due(app).await;
}

/// Logs the audit chain's head (`SEQ:HASH`) at info level (target `scaivault::audit`). A log
/// shipped off the host keeps it where whoever can write the database cannot reach, and
/// `scaivault audit verify --expect-head SEQ:HASH` shows later that the chain still holds it (the
/// chain alone cannot show that records were cut from its end together with the head stored
/// beside it).
pub async fn log_audit_head(app: &App, when: &'static str) {
    let store = app.store.clone();
    match app
        .blocking(move || Ok(store.read(|tx| tx.audit_head())?))
        .await
    {
        Ok(Some((seq, hash))) => {
            tracing::info!(target: "scaivault::audit", head = %format_args!("{seq}:{hash}"), when, "audit chain head");
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e.detail, "the audit chain head could not be read"),
    }
}

async fn timed(f: impl std::future::Future<Output = ()>) -> Duration {
    let t0 = std::time::Instant::now();
    f.await;
    t0.elapsed()
}
