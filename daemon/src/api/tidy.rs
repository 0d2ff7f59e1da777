//! `POST /v1/pki/tidy` (admin): removes leaf certificates that expired more than `retention` ago
//! from the inventory (and so from future CRLs), like Vault's `pki/tidy`. `dry_run` reports without
//! deleting. CA certificates are never removed.

use super::problem::OptionalBody;
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::error::ApiError;
use rocket::serde::json::Json;
use rocket::{post, routes, Route, State};
use scaivault_core::{duration, time_util};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<TidyRequest>("POST", "/v1/pki/tidy");
    b.answer::<TidyReport>("POST", "/v1/pki/tidy");
}

pub fn routes() -> Vec<Route> {
    routes![tidy]
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TidyRequest {
    /// How long expired certificates are kept (Go duration); default `720h`.
    #[serde(default)]
    retention: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Serialize, JsonSchema)]
struct TidyReport {
    dry_run: bool,
    retention: String,
    cutoff: String,
    certificates_removed: u64,
    revoked_removed: u64,
    crls_rebuilt_for: Vec<String>,
}

#[post("/v1/pki/tidy", data = "<body>")]
async fn tidy(
    app: &State<App>,
    caller: Caller,
    body: OptionalBody<TidyRequest>,
) -> Result<Json<TidyReport>, ApiError> {
    app.require(&caller, Perm::TokenAdmin, "pki.tidy", None)
        .await?;
    let b = body.0.unwrap_or_default();
    let res = async {
        let retention = b.retention.unwrap_or_else(|| "720h".into());
        let secs = i64::try_from(duration::parse_seconds(&retention)?).unwrap_or(i64::MAX);
        let cutoff = time_util::now()
            .checked_sub(time::Duration::seconds(secs))
            .filter(|t| t.year() >= 1970)
            .ok_or_else(|| ApiError::bad_request("invalid_duration", "retention is too large"))?;
        // Revoked certificates stay (and on their CRL) until the CRLs' grace after expiry has
        // passed too: RFC 5280 §3.3 keeps an entry until a regularly scheduled CRL issued after
        // the certificate expired has listed it.
        let revoked_cutoff =
            time_util::rfc3339(cutoff.min(time_util::now() - crate::revoke::EXPIRED_GRACE));
        let cutoff = time_util::rfc3339(cutoff);
        let (t, c, apply) = (caller.tenant_id.clone(), cutoff.clone(), !b.dry_run);
        let mut rec = caller.record(
            "pki.tidy",
            None,
            if b.dry_run { "dry_run" } else { "success" },
        );
        rec.detail = Some(format!("retention {retention}"));
        let (removed, revoked, cas) = app
            .db(move |s| {
                s.write(|tx| {
                    let out = tx.tidy_certificates(&t, &c, &revoked_cutoff, apply)?;
                    tx.append_audit(&rec)?;
                    Ok(out)
                })
                .map_err(ApiError::from)
            })
            .await?;
        if !b.dry_run && !cas.is_empty() {
            app.crl_wake.notify_one();
        }
        if !b.dry_run && removed > 0 {
            // The journal's records of what was just removed go with their segment.
            if let Some(j) = app.store.journal() {
                j.rotate();
            }
        }
        Ok(TidyReport {
            dry_run: b.dry_run,
            retention,
            cutoff,
            certificates_removed: removed,
            revoked_removed: revoked,
            crls_rebuilt_for: if b.dry_run { Vec::new() } else { cas },
        })
    }
    .await;
    Ok(Json(app.finish(&caller, "pki.tidy", None, res).await?))
}
