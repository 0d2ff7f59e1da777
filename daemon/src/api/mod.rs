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
//!
//! Every other route takes a `Caller` guard (bearer token) and checks a policy.

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
mod problem;
mod revoke;
mod roles;
mod tidy;
pub mod tokens;
mod trust;

pub use tokens::new_token;

use crate::app::App;
use rocket::data::{ByteUnit, Limits};
use rocket::{Build, Rocket};

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
        .mount("/", health::routes())
        .mount("/", ca::routes())
        .mount("/", tokens::routes())
        .mount("/", audit::routes())
        .mount("/", roles::routes())
        .mount("/", issue::routes())
        .mount("/", certs::routes())
        .mount("/", csr::routes())
        .mount("/", revoke::routes())
        .mount("/", tidy::routes())
        .mount("/", ocsp::routes())
        .mount("/", trust::routes())
        .mount("/", metrics::routes())
        .mount("/", acme::routes())
        .register("/", problem::catchers())
}
