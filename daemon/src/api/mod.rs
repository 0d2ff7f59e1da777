//! The HTTP API (Rocket). Handlers are thin: they decode, check the caller's policy, call the
//! operation in `crate::ca` (or the store) and render. Errors become problem documents in one place
//! (`problem`).
//!
//! Unauthenticated paths, all of them, in one place (like Vault's `PathsSpecial`):
//! - `GET /v1/sys/health`
//! - `GET /metrics` (Prometheus text; aggregates only)
//! - `GET /v1/pki/ca/<id>/certificate` (the AIA "CA issuers" URL of issued certificates)
//! - `GET /v1/pki/ca/<id>/chain`
//! - `GET /v1/pki/ca/<id>/crl`
//! - `POST /v1/pki/ocsp/<ca_id>` and `GET /v1/pki/ocsp/<ca_id>/<base64 request>` (the AIA OCSP URL)
//! - `GET /v1/openapi.json`
//!
//! `access::ROUTES` lists every route with what it needs; a unit test ties it to the mounted
//! routes.
//! Every other route takes a `Caller` guard (bearer token) and checks a policy.

pub mod access;
mod acme;
mod audit;
mod ca;
mod certs;
mod csr;
mod guards;
mod health;
mod issue;
mod metrics;
mod ocsp;
pub(crate) mod problem;
pub mod public;
mod revoke;
mod roles;
pub mod schemas;
mod tidy;
pub mod tokens;
mod trust;
mod webhooks;

pub use tokens::new_token;

use crate::app::App;
use rocket::data::{ByteUnit, Limits};
use rocket::{Build, Rocket};

/// A media type and body, as Rocket's responder for them (the relying-party listener takes the
/// same pairs as they are).
pub(crate) fn typed((mime, body): (&'static str, Vec<u8>)) -> (rocket::http::ContentType, Vec<u8>) {
    let ct = rocket::http::ContentType::parse_flexible(mime)
        .unwrap_or(rocket::http::ContentType::Binary);
    (ct, body)
}

/// Builds the Rocket instance for `app`.
pub fn build(app: App) -> Rocket<Build> {
    let body = ByteUnit::from(app.config.limits.body_bytes);
    let limits = Limits::default()
        .limit("json", body)
        .limit("bytes", body)
        .limit("string", body)
        .limit("form", body)
        .limit("data-form", body)
        .limit("file", body);
    let figment = rocket::Config::figment()
        .merge(("address", app.config.server.listen.ip()))
        .merge(("port", app.config.server.listen.port()))
        .merge(("limits", limits))
        .merge(("ident", "ScaiVault"))
        .merge(("log_level", rocket::config::LogLevel::Off))
        .merge(("cli_colors", false));
    rocket::custom(figment)
        .manage(app)
        .attach(guards::RequestLog)
        .mount("/", all_routes())
        .register("/", problem::catchers())
}

/// Every route of the API; each has its entry in [`access::ROUTES`] (a unit test checks).
pub fn all_routes() -> Vec<rocket::Route> {
    [
        health::routes(),
        access::routes(),
        ca::routes(),
        tokens::routes(),
        audit::routes(),
        roles::routes(),
        issue::routes(),
        certs::routes(),
        csr::routes(),
        revoke::routes(),
        tidy::routes(),
        ocsp::routes(),
        trust::routes(),
        metrics::routes(),
        webhooks::routes(),
        acme::routes(),
    ]
    .concat()
}
