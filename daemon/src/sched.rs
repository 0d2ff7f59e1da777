//! The scheduler: one tokio task ticking on an interval and recording a heartbeat that
//! `/v1/sys/health` reports. Periodic jobs (CRL regeneration, ACME renewal) hang off this tick in
//! their issues. It stops when the shutdown signal fires.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Tick interval.
pub const TICK: Duration = Duration::from_secs(10);

/// Ticks until `shutdown` resolves.
pub async fn run(beat: Arc<AtomicI64>, shutdown: rocket::Shutdown) {
    let mut tick = tokio::time::interval(TICK);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => beat.store(time::OffsetDateTime::now_utc().unix_timestamp(), Ordering::Relaxed),
            _ = &mut shutdown => break,
        }
    }
}
