//! Several nodes on one database (`[storage] backend = "postgres"`): which node runs the
//! cluster's scheduled jobs, and how a node learns of revocations another node made.
//!
//! **Leadership.** The scheduled jobs whose effects are shared (CRL rebuilds, ACME orders and
//! renewals, webhook deliveries) run on one node at a time, the leader: the node whose dedicated
//! database connection holds a PostgreSQL session advisory lock ([`Store::try_lead`]). Every half
//! [`ClusterConfig::lease`](crate::config::ClusterConfig::lease) a follower tries to take the lock
//! and the leader checks that its connection still holds it. When the leader dies its connection
//! closes (or TCP keepalives end it when its host vanished), the server drops the lock, and a
//! follower takes over at its next try: failover within half a lease plus the server's detection.
//! A leader that cannot reach the database steps down at once. With SQLite there is one node and
//! it always leads.
//!
//! **OCSP.** Signed responses are shared through the database table `ocsp_responses`: the leader
//! alone pre-signs and refreshes (its cache and the shared rows about to go stale), any node that
//! signs on demand stores its response there, and a node that misses its own cache reads the
//! shared row before signing (see [`crate::ocsp`]). Each node still keeps its in-memory cache in
//! front of the table. What stays per node: that cache, the RSA key pool, rate limits.
//!
//! **Revocations from other nodes.** A revocation deletes the serial's shared OCSP responses in
//! its own transaction, and a response is stored only while the status it says still holds, so
//! the table never answers `good` for a revoked certificate. A node invalidates its OCSP cache
//! entry right after its own revocation commits. To see the other nodes' revocations, every node of a PostgreSQL cluster
//! reads the revocations committed since its last look once a second
//! ([`Tx::revocations_since`](scaivault_store::Tx::revocations_since), an indexed range read) and
//! invalidates those entries; the leader also wakes its CRL scheduler for them.
//!
//! [`Store::try_lead`]: scaivault_store::Store::try_lead

use crate::app::App;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// How often a node of a PostgreSQL cluster looks for other nodes' revocations.
const REVOCATION_POLL: Duration = Duration::from_secs(1);
/// How far back each look reaches before the newest revocation already seen: a revocation is
/// stamped before its transaction commits, so one stamped earlier may commit later.
const REVOCATION_OVERLAP: time::Duration = time::Duration::seconds(30);
/// Revocations read per look at most (the next look continues).
const REVOCATION_BATCH: usize = 1000;

/// This node's place in the cluster.
#[derive(Debug)]
pub struct Cluster {
    node: String,
    shared: bool,
    leader: AtomicBool,
    /// Times this node became leader.
    elected: AtomicU64,
    /// A leadership check is under way (one at a time: a check stuck on a hung connection is not
    /// joined by more).
    checking: std::sync::Arc<AtomicBool>,
}

impl Cluster {
    /// `shared`: the database may have other nodes (PostgreSQL); otherwise this node leads from
    /// the start.
    pub fn new(node: String, shared: bool) -> Self {
        Cluster {
            node,
            shared,
            leader: AtomicBool::new(!shared),
            elected: AtomicU64::new(u64::from(!shared)),
            checking: std::sync::Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether this node runs the cluster's scheduled jobs now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether other nodes may share the database.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// How many times this node became leader.
    pub fn elections(&self) -> u64 {
        self.elected.load(Ordering::Relaxed)
    }
}

/// This node's name: `[cluster] node_name`, else the host name.
pub fn node_name(configured: Option<&str>) -> String {
    if let Some(n) = configured.filter(|n| !n.trim().is_empty()) {
        return n.trim().to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "scaivault".into())
}

/// Runs leadership and the revocation watch until `shutdown` resolves; then gives up leadership
/// so another node takes over without waiting for the connection to time out.
pub async fn run(app: App, shutdown: impl std::future::Future<Output = ()>) {
    if !app.cluster.is_shared() {
        return;
    }
    let half = app.config.cluster.lease() / 2;
    let mut lead_tick = tokio::time::interval(half.max(Duration::from_millis(500)));
    lead_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch_tick = tokio::time::interval(REVOCATION_POLL);
    watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = RevocationWatch::new(scaivault_core::time_util::now());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = lead_tick.tick() => elect(&app).await,
            _ = watch_tick.tick() => watch.look(&app).await,
            _ = &mut shutdown => break,
        }
    }
    let store = app.store.clone();
    let _ = tokio::task::spawn_blocking(move || store.step_down()).await;
    if app.cluster.leader.swap(false, Ordering::SeqCst) {
        tracing::info!(node = %app.cluster.node, "leadership given up (stopping)");
    }
}

/// One leadership round: take or keep the lock, or lose it (nothing to do with SQLite).
pub async fn elect(app: &App) {
    if !app.cluster.is_shared() {
        return;
    }
    let lease = app.config.cluster.lease();
    // A quarter lease: a leader whose check hangs (its path to the database stalls) stops
    // acting as leader before the server, which ends its silent session after a lease
    // (`Store::try_lead_for`), lets another node take the lock.
    let limit = (lease / 4).max(Duration::from_millis(250));
    let lead = if app.cluster.checking.swap(true, Ordering::SeqCst) {
        tracing::warn!(node = %app.cluster.node, "the previous leadership check still has no answer from the database");
        false
    } else {
        let store = app.store.clone();
        let checking = app.cluster.checking.clone();
        let check = tokio::task::spawn_blocking(move || {
            let r = store.try_lead_for(lease);
            checking.store(false, Ordering::SeqCst);
            r
        });
        match tokio::time::timeout(limit, check).await {
            Ok(Ok(Ok(lead))) => lead,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "leadership check failed");
                false
            }
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(node = %app.cluster.node, limit_ms = limit.as_millis(), "the leadership check got no answer from the database in time");
                false
            }
        }
    };
    let was = app.cluster.leader.swap(lead, Ordering::SeqCst);
    match (was, lead) {
        (false, true) => {
            app.cluster.elected.fetch_add(1, Ordering::Relaxed);
            tracing::info!(node = %app.cluster.node, "this node is now the leader: it runs the scheduled jobs");
            // Catch up at once: CRLs marked dirty, and the ACME orders and renewals the
            // previous leader left.
            app.crl_wake.notify_one();
            app.sched_wake.notify_one();
            app.acme_wake.notify_one();
        }
        (true, false) => {
            tracing::warn!(node = %app.cluster.node, "this node lost the leadership: scheduled jobs stop here");
        }
        _ => {}
    }
}

/// Reads the revocations committed since the last look and drops their cached OCSP responses.
struct RevocationWatch {
    /// The newest `revoked_at` seen.
    newest: OffsetDateTime,
    /// Revocations seen within the overlap window, by `(ca, serial)` → `revoked_at`.
    seen: HashMap<(String, String), OffsetDateTime>,
    /// A read that outlived [`REVOCATION_POLL`] (the database hangs): no other starts until it
    /// ends, and the loop that also keeps the leadership is not held up by it.
    late: Option<tokio::task::JoinHandle<()>>,
}

impl RevocationWatch {
    fn new(now: OffsetDateTime) -> Self {
        RevocationWatch {
            newest: now,
            seen: HashMap::new(),
            late: None,
        }
    }

    async fn look(&mut self, app: &App) {
        if self.late.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.late = None;
        let since = scaivault_core::time_util::rfc3339(self.newest - REVOCATION_OVERLAP);
        let store = app.store.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut read = tokio::task::spawn_blocking(move || {
            let _ = tx.send(store.read(|tx| tx.revocations_since(&since, REVOCATION_BATCH)));
        });
        if tokio::time::timeout(REVOCATION_POLL, &mut read)
            .await
            .is_err()
        {
            // The next look reads from the same point again.
            self.late = Some(read);
            return;
        }
        let rows = match rx.await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "revocation watch: read failed");
                return;
            }
            Err(_) => return,
        };
        let fresh = self.fold(rows);
        if fresh.is_empty() {
            return;
        }
        for (ca, serial) in &fresh {
            app.ocsp.invalidate(ca, serial);
        }
        tracing::debug!(
            count = fresh.len(),
            "revocations seen in the database: OCSP cache entries dropped"
        );
        if app.cluster.is_leader() {
            app.crl_wake.notify_one();
        }
    }

    /// Records `rows` and returns those not seen before.
    fn fold(&mut self, rows: Vec<(String, String, String)>) -> Vec<(String, String)> {
        let mut fresh = Vec::new();
        for (ca, serial, at) in rows {
            let Ok(at) = scaivault_core::time_util::parse_rfc3339(&at) else {
                continue;
            };
            if at > self.newest {
                self.newest = at;
            }
            let key = (ca, serial);
            if self.seen.insert(key.clone(), at).is_none() {
                fresh.push(key);
            }
        }
        let horizon = self.newest - REVOCATION_OVERLAP - REVOCATION_OVERLAP;
        self.seen.retain(|_, at| *at >= horizon);
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_watch_reports_each_revocation_once_and_moves_forward() {
        let mut w = RevocationWatch::new(datetime!(2026-11-28 10:00 UTC));
        let row = |ca: &str, s: &str, at: &str| (ca.to_owned(), s.to_owned(), at.to_owned());
        let first = w.fold(vec![
            row("ca1", "01", "2026-11-28T09:59:50Z"),
            row("ca1", "02", "2026-11-28T10:00:05Z"),
        ]);
        assert_eq!(first.len(), 2);
        assert_eq!(w.newest, datetime!(2026-11-28 10:00:05 UTC));
        // The overlap reads both again, plus a late commit stamped earlier.
        let again = w.fold(vec![
            row("ca1", "01", "2026-11-28T09:59:50Z"),
            row("ca2", "01", "2026-11-28T09:59:59Z"),
            row("ca1", "02", "2026-11-28T10:00:05Z"),
        ]);
        assert_eq!(again, vec![("ca2".to_owned(), "01".to_owned())]);
        // Old entries leave the dedup set once far behind.
        w.fold(vec![row("ca3", "09", "2026-11-28T11:00:00Z")]);
        assert_eq!(w.seen.len(), 1);
        assert!(w.fold(vec![row("bad", "x", "not a time")]).is_empty());
    }
}
