//! `GET /v1/sys/health`: token, database and scheduler state; `503` when any is not ready.

use crate::api::schemas::{OneOf, BACKENDS, HEALTH, SCHEDULER_HEALTH};
use crate::app::App;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{get, routes, Route, State};
use schemars::JsonSchema;
use serde::Serialize;
use std::sync::atomic::Ordering;

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.answer::<Health>("GET", "/v1/sys/health");
}

pub fn routes() -> Vec<Route> {
    routes![health]
}

#[derive(Debug, Serialize, JsonSchema)]
struct Health {
    #[schemars(transform = OneOf(HEALTH))]
    status: &'static str,
    #[schemars(transform = OneOf(HEALTH))]
    token: &'static str,
    #[schemars(transform = OneOf(HEALTH))]
    database: &'static str,
    #[schemars(transform = OneOf(SCHEDULER_HEALTH))]
    scheduler: &'static str,
    /// Active CAs whose private key the last check (each 10 s) did not find on the token:
    /// they sign nothing until it is back. Not a reason for `503` (every node shares the token,
    /// and the other CAs work), but for an operator.
    ca_keys_missing: usize,
    crl: CrlHealth,
    cluster: ClusterHealth,
    version: &'static str,
}

/// This node among the nodes sharing the database.
#[derive(Debug, Serialize, JsonSchema)]
struct ClusterHealth {
    /// `sqlite` or `postgres`.
    #[schemars(transform = OneOf(BACKENDS))]
    backend: &'static str,
    /// This node's name (`[cluster] node_name`, else the host name).
    node: String,
    /// Whether this node runs the scheduled jobs (CRLs, ACME, webhooks); always with SQLite.
    leader: bool,
}

/// The CRL scheduler's state across all CAs (aggregated: health is unauthenticated, so it names
/// no CA and no tenant).
#[derive(Debug, Clone, Serialize, Default, JsonSchema)]
struct CrlHealth {
    /// CAs with a published CRL.
    published: i64,
    /// CAs with a revocation not yet on their CRL (rebuilt within seconds).
    pending_rebuild: i64,
    /// The earliest `nextUpdate` among published CRLs (RFC 3339).
    earliest_next_update: Option<String>,
}

/// How long the database check may take before health reports the database unavailable (the
/// SQLite write probe waits at most the busy timeout, 5 s, too).
const DB_CHECK_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Database checks under way at most; a further health request while that many are stuck
/// reports the database unavailable at once.
const DB_CHECKS_AT_ONCE: usize = 4;

/// The CRL summary last read: what health shows while the database cannot be read (zeros only
/// before the first read).
static LAST_CRL: std::sync::Mutex<Option<CrlHealth>> = std::sync::Mutex::new(None);

/// The CRL summary last read, or zeros.
fn last_crl() -> CrlHealth {
    LAST_CRL
        .lock()
        .ok()
        .and_then(|l| l.clone())
        .unwrap_or_default()
}

/// The database's part of health: a read and the start of a write, and the CRL summary.
fn db_check(store: &scaivault_store::Store) -> (bool, CrlHealth) {
    // A write must be possible too: a database that answers reads while another process holds
    // its write lock fails every change. The summary is read on its own: a database held by
    // another writer still answers reads, and its CRLs are still published.
    let writable = store.ping_write().is_ok();
    match store.read(|tx| tx.crl_summary()) {
        Ok((published, pending_rebuild, earliest_next_update)) => {
            let crl = CrlHealth {
                published,
                pending_rebuild,
                earliest_next_update,
            };
            if let Ok(mut last) = LAST_CRL.lock() {
                *last = Some(crl.clone());
            }
            (writable, crl)
        }
        Err(_) => (false, last_crl()),
    }
}

/// How long the scheduler may stay silent before health reports it stalled.
const SCHEDULER_STALE_SECS: i64 = 60;

#[get("/v1/sys/health")]
async fn health(app: &State<App>) -> (Status, Json<Health>) {
    // Bounded by `[hsm] call_timeout`: a hung module makes health say `unavailable`, not hang.
    let token_ok = app.token_alive().await;
    let store = app.store.clone();
    // Bounded, and few at a time: a database that hangs (a stalled network path, a proxy that
    // keeps the connection open) makes health say `unavailable` within DB_CHECK_LIMIT instead of
    // hanging the prober, and checks stuck on it are not joined by more than a few others (each
    // holds a connection and a thread).
    static CHECKING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let db = if CHECKING.fetch_add(1, Ordering::SeqCst) >= DB_CHECKS_AT_ONCE {
        CHECKING.fetch_sub(1, Ordering::SeqCst);
        None
    } else {
        let check = tokio::task::spawn_blocking(move || {
            let r = db_check(&store);
            CHECKING.fetch_sub(1, Ordering::SeqCst);
            r
        });
        tokio::time::timeout(DB_CHECK_LIMIT, check)
            .await
            .ok()
            .and_then(Result::ok)
    };
    let (db_ok, crl) = db.unwrap_or_else(|| (false, last_crl()));

    let beat = app.scheduler_beat.load(Ordering::Relaxed);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sched_ok = beat > 0 && now - beat <= SCHEDULER_STALE_SECS;
    let ok = token_ok && db_ok && sched_ok;
    let word = |b: bool| if b { "ok" } else { "unavailable" };
    (
        if ok {
            Status::Ok
        } else {
            Status::ServiceUnavailable
        },
        Json(Health {
            status: word(ok),
            token: word(token_ok),
            database: word(db_ok),
            scheduler: if beat == 0 {
                "starting"
            } else if sched_ok {
                "ok"
            } else {
                "stalled"
            },
            ca_keys_missing: app.missing_ca_keys.lock().map_or(0, |m| m.len()),
            crl,
            cluster: ClusterHealth {
                backend: app.store.backend(),
                node: app.cluster.node().to_owned(),
                leader: app.cluster.is_leader(),
            },
            version: env!("CARGO_PKG_VERSION"),
        }),
    )
}
