//! `POST /v1/pki/revoke`, `GET /v1/pki/ca/<id>/crl` (public; DER, `?format=pem`) and
//! `POST /v1/pki/ca/<id>/crl` (rebuild now), `POST /v1/pki/ca/<id>/crl/import` (an offline CA's
//! CRL, signed in a key ceremony).

use super::guards::PublicClient;
use super::problem::Body;
use crate::api::schemas::OneOf;
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::error::ApiError;
use crate::revoke;
use rocket::http::ContentType;
use rocket::serde::json::Json;
use rocket::{get, post, routes, Route, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<RevokeRequest>("POST", "/v1/pki/revoke");
    b.answer::<RevokeResponse>("POST", "/v1/pki/revoke");
    b.answer::<Rebuilt>("POST", "/v1/pki/ca/{id}/crl");
    b.request::<ImportCrlRequest>("POST", "/v1/pki/ca/{id}/crl/import");
    b.answer::<ImportedCrl>("POST", "/v1/pki/ca/{id}/crl/import");
}

pub fn routes() -> Vec<Route> {
    routes![revoke_cert, get_crl, rebuild_crl, import_crl]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    serial_number: String,
    #[serde(default)]
    #[schemars(transform = OneOf(scaivault_core::crl::REASONS))]
    reason: Option<String>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Revoked")]
struct RevokeResponse {
    serial_number: String,
    revoked_at: String,
    #[schemars(transform = OneOf(scaivault_core::crl::REASONS))]
    reason: String,
}

#[post("/v1/pki/revoke", data = "<body>")]
async fn revoke_cert(
    app: &State<App>,
    caller: Caller,
    body: Body<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    app.require(&caller, Perm::CaWrite, "certificate.revoke", None)
        .await?;
    let b = body.0;
    // The audit object in the stored form (no colons, upper case), as on success; when it is no
    // serial at all, its first 64 characters as typed.
    let serial = scaivault_core::serial::Serial::parse(&b.serial_number)
        .map_or_else(|_| b.serial_number.chars().take(64).collect(), |s| s.key());
    let res = async {
        let reason = b.reason.as_deref().unwrap_or("unspecified");
        let r = revoke::revoke(app, &caller, &b.serial_number, reason).await?;
        Ok(RevokeResponse {
            serial_number: r.serial_number,
            revoked_at: r.revoked_at,
            reason: r.reason,
        })
    }
    .await;
    Ok(Json(
        app.finish(&caller, "certificate.revoke", Some(&serial), res)
            .await?,
    ))
}

#[get("/v1/pki/ca/<id>/crl?<format>")]
async fn get_crl(
    app: &State<App>,
    _client: PublicClient,
    id: &str,
    format: Option<&str>,
) -> Result<SharedBody, ApiError> {
    let (mime, bytes) = crl_body(app, id, format).await?;
    Ok(SharedBody(
        ContentType::parse_flexible(mime).unwrap_or(ContentType::Binary),
        bytes,
    ))
}

/// A body shared with a cache (the published CRL), sent without copying it.
pub(crate) struct SharedBody(ContentType, std::sync::Arc<[u8]>);

impl<'r> rocket::response::Responder<'r, 'static> for SharedBody {
    fn respond_to(self, _: &'r rocket::Request<'_>) -> rocket::response::Result<'static> {
        let len = self.1.len();
        rocket::Response::build()
            .header(self.0)
            .sized_body(len, std::io::Cursor::new(self.1))
            .ok()
    }
}

/// The CA's current CRL as `format` (`der`, the default, or `pem`): media type and bytes. Shared
/// with the relying-party listener (`super::public`).
pub(crate) async fn crl_body(
    app: &App,
    id: &str,
    format: Option<&str>,
) -> Result<(&'static str, std::sync::Arc<[u8]>), ApiError> {
    let pem_wanted = match format.unwrap_or("der") {
        "der" => false,
        "pem" => true,
        other => {
            return Err(ApiError::bad_request(
                "invalid_format",
                format!("format {other:?} is not der or pem"),
            ))
        }
    };
    let der = revoke::current(app, id).await?;
    if pem_wanted {
        Ok((
            "application/x-pem-file",
            scaivault_core::pem::encode("X509 CRL", &der)?
                .into_bytes()
                .into(),
        ))
    } else {
        Ok(("application/pkix-crl", der))
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(rename = "RebuiltCrl")]
struct Rebuilt {
    crl_number: i64,
    entries: usize,
}

#[post("/v1/pki/ca/<id>/crl")]
async fn rebuild_crl(
    app: &State<App>,
    caller: Caller,
    id: &str,
) -> Result<Json<Rebuilt>, ApiError> {
    app.require(&caller, Perm::CaWrite, "crl.rebuild", Some(id))
        .await?;
    let res = async {
        crate::ca::get(app, &caller.tenant_id, id).await?;
        let rec = caller.record("crl.rebuild", Some(id), "success");
        let (n, entries) = revoke::rebuild_audited(app, id, Some(rec)).await?;
        Ok(Rebuilt {
            crl_number: n,
            entries,
        })
    }
    .await;
    Ok(Json(
        app.finish(&caller, "crl.rebuild", Some(id), res).await?,
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ImportCrlRequest {
    /// PEM (`X509 CRL`) or base64 DER.
    crl_pem: String,
}

#[derive(Serialize, JsonSchema)]
struct ImportedCrl {
    crl_number: i64,
    entries: usize,
    this_update: String,
    next_update: String,
    retired_cas: Vec<String>,
}

/// Publishes an offline CA's CRL signed in a key ceremony.
#[post("/v1/pki/ca/<id>/crl/import", data = "<body>")]
async fn import_crl(
    app: &State<App>,
    caller: Caller,
    id: &str,
    body: Body<ImportCrlRequest>,
) -> Result<Json<ImportedCrl>, ApiError> {
    app.require(&caller, Perm::CaWrite, "crl.import", Some(id))
        .await?;
    let res = async {
        let i = revoke::import(app, &caller, id, &body.0.crl_pem).await?;
        Ok(ImportedCrl {
            crl_number: i.crl_number,
            entries: i.entries,
            this_update: i.this_update,
            next_update: i.next_update,
            retired_cas: i.retired_cas,
        })
    }
    .await;
    Ok(Json(
        app.finish(&caller, "crl.import", Some(id), res).await?,
    ))
}
