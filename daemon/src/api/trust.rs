//! `/v1/pki/trust-anchors` (create, list, get, delete) and `POST /v1/pki/certificates/validate`.
//!
//! Policies: managing trust anchors needs `admin` or `ca-admin` (they decide what the tenant
//! trusts, like CAs); reading them also `auditor`. Validation is open to every token of the
//! tenant: it changes nothing and reveals nothing but the tenant's own trust decisions, and
//! services that check their peers' certificates should not need a CA-management policy.

use super::ca::page_limit;
use super::problem::Body;
use crate::api::schemas::{OneOf, ANCHOR_KINDS, PURPOSES};
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::error::ApiError;
use crate::trust::{anchors, validation};
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{delete, get, post, routes, Route, State};
use scaivault_core::validate::Outcome;
use scaivault_store::TrustAnchorRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<CreateRequest>("POST", "/v1/pki/trust-anchors");
    b.answer::<AnchorResponse>("POST", "/v1/pki/trust-anchors");
    b.answer::<AnchorList>("GET", "/v1/pki/trust-anchors");
    b.answer::<AnchorResponse>("GET", "/v1/pki/trust-anchors/{id}");
    b.request::<ValidateRequest>("POST", "/v1/pki/certificates/validate");
    b.answer::<ValidateResponse>("POST", "/v1/pki/certificates/validate");
}

pub fn routes() -> Vec<Route> {
    routes![create, list, get_one, remove, validate]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "CreateTrustAnchorRequest")]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    certificate_pem: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "TrustAnchor")]
struct AnchorResponse {
    id: String,
    name: String,
    subject: String,
    fingerprint_sha256: String,
    not_after: String,
    certificate: String,
    created_at: String,
}

fn view(r: TrustAnchorRow) -> Result<AnchorResponse, ApiError> {
    Ok(AnchorResponse {
        certificate: scaivault_core::pem::certificate(&r.cert_der)?,
        id: r.id,
        name: r.name,
        subject: r.subject,
        fingerprint_sha256: r.fingerprint_sha256,
        not_after: r.not_after,
        created_at: r.created_at,
    })
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "TrustAnchorList")]
struct AnchorList {
    items: Vec<AnchorResponse>,
    next_cursor: Option<String>,
}

#[post("/v1/pki/trust-anchors", data = "<body>")]
async fn create(
    app: &State<App>,
    caller: Caller,
    body: Body<CreateRequest>,
) -> Result<(Status, Json<AnchorResponse>), ApiError> {
    app.require(&caller, Perm::CaWrite, "trust_anchor.create", None)
        .await?;
    let b = body.0;
    let res =
        async { view(anchors::create(app, &caller, &b.name, &b.certificate_pem).await?) }.await;
    let out = app
        .finish(&caller, "trust_anchor.create", None, res)
        .await?;
    Ok((Status::Created, Json(out)))
}

#[get("/v1/pki/trust-anchors?<limit>&<cursor>")]
async fn list(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<AnchorList>, ApiError> {
    app.require(&caller, Perm::CaRead, "trust_anchor.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    let page = anchors::list(app, &caller.tenant_id, cursor, limit).await?;
    Ok(Json(AnchorList {
        items: page.items.into_iter().map(view).collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    }))
}

#[get("/v1/pki/trust-anchors/<id>")]
async fn get_one(
    app: &State<App>,
    caller: Caller,
    id: &str,
) -> Result<Json<AnchorResponse>, ApiError> {
    app.require(&caller, Perm::CaRead, "trust_anchor.read", Some(id))
        .await?;
    Ok(Json(view(anchors::get(app, &caller.tenant_id, id).await?)?))
}

#[delete("/v1/pki/trust-anchors/<id>")]
async fn remove(app: &State<App>, caller: Caller, id: &str) -> Result<Status, ApiError> {
    app.require(&caller, Perm::CaWrite, "trust_anchor.delete", Some(id))
        .await?;
    let res = anchors::delete(app, &caller, id).await;
    app.finish(&caller, "trust_anchor.delete", Some(id), res)
        .await?;
    Ok(Status::NoContent)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ValidateRequest {
    certificate_pem: String,
    #[serde(default)]
    chain_pem: Option<String>,
    #[serde(default)]
    #[schemars(transform = OneOf(PURPOSES))]
    purpose: Option<String>,
    #[serde(default)]
    dns_name: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    at_time: Option<String>,
    #[serde(default)]
    check_revocation: bool,
    #[serde(default)]
    crls_pem: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
struct ChainEntry {
    subject: String,
    serial_number: String,
    fingerprint_sha256: String,
}

#[derive(Debug, Serialize, JsonSchema)]
struct AnchorRef {
    #[schemars(transform = OneOf(ANCHOR_KINDS))]
    kind: &'static str,
    id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ValidationError")]
struct Reason {
    #[schemars(transform = OneOf(&scaivault_core::validate::Code::NAMES))]
    code: &'static str,
    message: String,
}

#[derive(Debug, Serialize, JsonSchema)]
struct ValidateResponse {
    valid: bool,
    chain: Vec<ChainEntry>,
    trust_anchor: Option<AnchorRef>,
    errors: Vec<Reason>,
}

impl From<Outcome> for ValidateResponse {
    fn from(o: Outcome) -> Self {
        ValidateResponse {
            valid: o.valid,
            chain: o
                .chain
                .into_iter()
                .map(|c| ChainEntry {
                    subject: c.subject,
                    serial_number: c.serial_number,
                    fingerprint_sha256: c.fingerprint_sha256,
                })
                .collect(),
            trust_anchor: o.anchor.map(|a| AnchorRef {
                kind: a.kind.as_str(),
                id: a.id,
            }),
            errors: o
                .errors
                .into_iter()
                .map(|f| Reason {
                    code: f.code.as_str(),
                    message: f.message,
                })
                .collect(),
        }
    }
}

#[post("/v1/pki/certificates/validate", data = "<body>")]
async fn validate(
    app: &State<App>,
    caller: Caller,
    body: Body<ValidateRequest>,
) -> Result<Json<ValidateResponse>, ApiError> {
    let b = body.0;
    let input = validation::ValidateInput {
        certificate_pem: b.certificate_pem,
        chain_pem: b.chain_pem,
        purpose: b.purpose,
        dns_name: b.dns_name,
        ip: b.ip,
        at_time: b.at_time,
        check_revocation: b.check_revocation,
        crls_pem: b.crls_pem,
    };
    let outcome = validation::validate(app, &caller, input).await?;
    Ok(Json(outcome.into()))
}
