//! The scheduler: one tokio task that ticks on an interval (recording the heartbeat that
//! `/v1/sys/health` reports) and runs the periodic jobs: CRL regeneration, every CA's CRL once per
//! `crl_interval` and dirty CRLs shortly after a revocation (debounced). Its state lives in the
//! database (CRL numbers, next updates, dirty marks), so it survives restarts. It stops when the
//! shutdown signal fires.

use crate::app::App;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Tick interval.
pub const TICK: Duration = Duration::from_secs(10);
/// How long after a revocation the CRL rebuild waits, to batch revocations that come together.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// Ticks until `shutdown` resolves.
pub async fn run(app: App, beat: Arc<AtomicI64>, shutdown: rocket::Shutdown) {
    let mut tick = tokio::time::interval(TICK);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                beat.store(time::OffsetDateTime::now_utc().unix_timestamp(), Ordering::Relaxed);
                crate::revoke::rebuild_due(&app).await;
            }
            _ = app.crl_wake.notified() => {
                tokio::time::sleep(DEBOUNCE).await;
                crate::revoke::rebuild_due(&app).await;
            }
            _ = &mut shutdown => break,
        }
    }
}
