//! `GET /metrics`: Prometheus text, no token (aggregates only; see `crate::metrics`).

use crate::app::App;
use rocket::http::ContentType;
use rocket::{get, routes, Route, State};
use std::sync::atomic::Ordering;

pub fn routes() -> Vec<Route> {
    routes![metrics]
}

#[get("/metrics")]
fn metrics(app: &State<App>) -> (ContentType, String) {
    let (entries, queued) = app.ocsp.sizes();
    let beat = app.scheduler_beat.load(Ordering::Relaxed);
    let (rsa_ready, rsa_target) = app.rsa_pool.level(2048);
    let (signers, sign_queue, signers_stuck) = app.signers.gauges();
    let text = app.metrics.render(
        &[
            (
                "scaivault_hsm_sign_calls_total",
                "C_Sign calls made on the token (every attempt, failed ones and retries included).",
                scaivault_hsm::pkcs11::sign_calls(),
            ),
            (
                "scaivault_cluster_elections_total",
                "Times this node became the leader that runs the scheduled jobs.",
                app.cluster.elections(),
            ),
        ],
        &[
            (
                "scaivault_ocsp_cache_entries",
                "OCSP responses in the cache.",
                entries as f64,
            ),
            (
                "scaivault_ocsp_presign_queue",
                "OCSP responses waiting to be pre-signed.",
                queued as f64,
            ),
            (
                "scaivault_rsa_key_pool_ready",
                "RSA-2048 leaf keys generated ahead and ready to be taken.",
                rsa_ready as f64,
            ),
            (
                "scaivault_rsa_key_pool_target",
                "RSA-2048 leaf keys the pool keeps ready (0 until a role or request uses RSA-2048).",
                rsa_target as f64,
            ),
            (
                "scaivault_signer_threads",
                "Threads that make leaf signatures ([hsm] sign_threads, plus any started beside calls stuck in the token).",
                signers as f64,
            ),
            (
                "scaivault_signer_queue",
                "Leaf signatures waiting for a signer thread.",
                sign_queue as f64,
            ),
            (
                "scaivault_signer_stuck",
                "Signer threads in a token call older than [hsm] call_timeout (a hung module).",
                signers_stuck as f64,
            ),
            (
                "scaivault_cluster_leader",
                "1 while this node runs the cluster's scheduled jobs (always 1 with SQLite).",
                if app.cluster.is_leader() { 1.0 } else { 0.0 },
            ),
            (
                "scaivault_unsettled_commits",
                "Signed certificates whose commit was not confirmed and could not be settled yet (revoked if found stored; retried every scheduler tick).",
                app.unsettled.lock().map_or(0, |l| l.len()) as f64,
            ),
            (
                "scaivault_scheduler_last_tick_timestamp_seconds",
                "Unix time of the scheduler's last tick (0 before the first).",
                beat as f64,
            ),
        ],
    );
    (
        ContentType::new("text", "plain").with_params(("version", "0.0.4")),
        text,
    )
}
