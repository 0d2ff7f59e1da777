//! `/v1/pki/csr`: import, list, get, approve, reject, sign — and `GET /v1/events`.

use super::ca::page_limit;
use super::problem::{Body, OptionalBody, CSR_BODY_BYTES};
use crate::api::schemas::{OneOf, CSR_STATES, CSR_USAGES, KEY_TYPES};
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::csrs::{self, Usage};
use crate::error::ApiError;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{get, post, routes, Route, State};
use scaivault_store::{CsrRow, EventRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<ImportRequest>("POST", "/v1/pki/csr/import");
    b.answer::<CsrView>("POST", "/v1/pki/csr/import");
    b.answer::<CsrList>("GET", "/v1/pki/csr");
    b.answer::<CsrView>("GET", "/v1/pki/csr/{id}");
    b.request::<ApproveRequest>("POST", "/v1/pki/csr/{id}/approve");
    b.answer::<CsrView>("POST", "/v1/pki/csr/{id}/approve");
    b.request::<RejectRequest>("POST", "/v1/pki/csr/{id}/reject");
    b.answer::<CsrView>("POST", "/v1/pki/csr/{id}/reject");
    b.request::<SignRequest>("POST", "/v1/pki/csr/{id}/sign");
    b.answer::<SignResponse>("POST", "/v1/pki/csr/{id}/sign");
    b.answer::<EventList>("GET", "/v1/events");
}

pub fn routes() -> Vec<Route> {
    routes![import, list, get_one, approve, reject, sign, events]
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Csr")]
struct CsrView {
    id: String,
    #[schemars(transform = OneOf(CSR_STATES))]
    status: String,
    subject: String,
    common_name: Option<String>,
    sans: csrs::Sans,
    /// Requested names the certificate will not carry (e-mail SANs: `email:…`), so that the
    /// approver sees what signing leaves out.
    not_issued: Vec<String>,
    #[schemars(transform = OneOf(KEY_TYPES))]
    key_type: String,
    key_bits: u32,
    fingerprint_sha256: String,
    requested_extensions: Vec<String>,
    csr_pem: String,
    note: Option<String>,
    requested_by: String,
    created_at: String,
    decided_by: Option<String>,
    decided_at: Option<String>,
    comment: Option<String>,
    reason: Option<String>,
    signed_ca_id: Option<String>,
    serial_number: Option<String>,
    signed_at: Option<String>,
}

fn view(r: CsrRow) -> Result<CsrView, ApiError> {
    let s = csrs::decode_summary(&r)?;
    // `signing` is an internal claim; callers see it as `approved`.
    let status = if r.status == "signing" {
        "approved".to_owned()
    } else {
        r.status
    };
    Ok(CsrView {
        id: r.id,
        status,
        subject: s.subject,
        common_name: s.common_name,
        not_issued: s.sans.email.iter().map(|e| format!("email:{e}")).collect(),
        sans: s.sans,
        key_type: s.key_type,
        key_bits: s.key_bits,
        fingerprint_sha256: s.fingerprint_sha256,
        requested_extensions: s.requested_extensions,
        csr_pem: scaivault_core::pem::encode("CERTIFICATE REQUEST", &r.csr_der)?,
        note: r.note,
        requested_by: r.requested_by,
        created_at: r.created_at,
        decided_by: r.decided_by,
        decided_at: r.decided_at,
        comment: r.comment,
        reason: r.reason,
        signed_ca_id: r.signed_ca_id,
        serial_number: r
            .signed_serial
            .as_deref()
            .map(scaivault_core::serial::Serial::parse)
            .transpose()?
            .map(|s| s.to_string()),
        signed_at: r.signed_at,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "ImportCsrRequest")]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    csr_pem: String,
    #[serde(default)]
    note: Option<String>,
}

#[post("/v1/pki/csr/import", data = "<body>")]
async fn import(
    app: &State<App>,
    caller: Caller,
    body: Body<ImportRequest, { CSR_BODY_BYTES }>,
) -> Result<(Status, Json<CsrView>), ApiError> {
    app.require(&caller, Perm::CsrImport, "csr.import", None)
        .await?;
    let b = body.0;
    let res = async { view(csrs::import(app, &caller, &b.csr_pem, b.note).await?) }.await;
    let out = app.finish(&caller, "csr.import", None, res).await?;
    Ok((Status::Created, Json(out)))
}

#[derive(Debug, Serialize, JsonSchema)]
struct CsrList {
    items: Vec<CsrView>,
    next_cursor: Option<String>,
}

#[get("/v1/pki/csr?<status>&<limit>&<cursor>")]
async fn list(
    app: &State<App>,
    caller: Caller,
    status: Option<String>,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<CsrList>, ApiError> {
    app.require(&caller, Perm::CsrRead, "csr.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    if let Some(s) = &status {
        if !["pending", "approved", "rejected", "signed"].contains(&s.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!("status {s:?} is not pending, approved, rejected or signed"),
            ));
        }
    }
    let tenant = caller.tenant_id.clone();
    let page = app
        .db(move |s| {
            s.read(|tx| tx.list_csrs(&tenant, status.as_deref(), cursor.as_deref(), limit))
                .map_err(|e| match e {
                    scaivault_store::Error::Conflict(_) => {
                        ApiError::bad_request("invalid_cursor", "cursor is not valid")
                    }
                    other => ApiError::from(other),
                })
        })
        .await?;
    Ok(Json(CsrList {
        items: page.items.into_iter().map(view).collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    }))
}

#[get("/v1/pki/csr/<id>")]
async fn get_one(app: &State<App>, caller: Caller, id: &str) -> Result<Json<CsrView>, ApiError> {
    app.require(&caller, Perm::CsrRead, "csr.read", Some(id))
        .await?;
    Ok(Json(view(csrs::get(app, &caller.tenant_id, id).await?)?))
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "ApproveCsrRequest")]
#[serde(deny_unknown_fields)]
struct ApproveRequest {
    #[serde(default)]
    comment: Option<String>,
}

#[post("/v1/pki/csr/<id>/approve", data = "<body>")]
async fn approve(
    app: &State<App>,
    caller: Caller,
    id: &str,
    body: OptionalBody<ApproveRequest>,
) -> Result<Json<CsrView>, ApiError> {
    app.require(&caller, Perm::CsrReview, "csr.approve", Some(id))
        .await?;
    let comment = body.0.and_then(|b| b.comment);
    let res = async { view(csrs::decide(app, &caller, id, true, comment).await?) }.await;
    Ok(Json(
        app.finish(&caller, "csr.approve", Some(id), res).await?,
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "RejectCsrRequest")]
// Decoded as optional so that its absence is `400 reason_required`, as a blank one is.
#[schemars(extend("required" = ["reason"]))]
#[serde(deny_unknown_fields)]
struct RejectRequest {
    /// Why (required: `400 reason_required` without one; shown to the requester and audited).
    #[serde(default)]
    #[schemars(required, length(min = 1))]
    reason: Option<String>,
}

#[post("/v1/pki/csr/<id>/reject", data = "<body>")]
async fn reject(
    app: &State<App>,
    caller: Caller,
    id: &str,
    body: Body<RejectRequest>,
) -> Result<Json<CsrView>, ApiError> {
    app.require(&caller, Perm::CsrReview, "csr.reject", Some(id))
        .await?;
    let res = async { view(csrs::decide(app, &caller, id, false, body.0.reason).await?) }.await;
    Ok(Json(
        app.finish(&caller, "csr.reject", Some(id), res).await?,
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "SignCsrRequest")]
#[serde(deny_unknown_fields)]
struct SignRequest {
    ca_id: String,
    validity_days: i64,
    #[serde(default)]
    #[schemars(transform = OneOf(CSR_USAGES))]
    usage: Option<String>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(rename = "SignedCsr")]
struct SignResponse {
    certificate: String,
    ca_chain: Vec<String>,
    serial_number: String,
    not_before: String,
    not_after: String,
    issuing_ca_id: String,
}

#[post("/v1/pki/csr/<id>/sign", data = "<body>")]
async fn sign(
    app: &State<App>,
    caller: Caller,
    id: &str,
    body: Body<SignRequest>,
) -> Result<Json<SignResponse>, ApiError> {
    app.require(&caller, Perm::CsrSign, "csr.sign", Some(id))
        .await?;
    let b = body.0;
    let res = async {
        let usage = match b.usage.as_deref() {
            None | Some("both") => Usage::Both,
            Some("server") => Usage::Server,
            Some("client") => Usage::Client,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_usage",
                    format!("usage {other:?} is not server, client or both"),
                ))
            }
        };
        let i = csrs::sign(app, &caller, id, &b.ca_id, b.validity_days, usage).await?;
        Ok(SignResponse {
            certificate: i.certificate,
            ca_chain: i.ca_chain,
            serial_number: i.serial.to_string(),
            not_before: i.not_before,
            not_after: i.not_after,
            issuing_ca_id: i.issuing_ca_id,
        })
    }
    .await;
    Ok(Json(app.finish(&caller, "csr.sign", Some(id), res).await?))
}

#[derive(Debug, Serialize, JsonSchema)]
struct EventList {
    items: Vec<serde_json::Value>,
    next_cursor: Option<String>,
}

fn event_view(e: EventRow) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq, "type": e.kind, "object_id": e.object_id, "time": e.time,
        "data": serde_json::from_str::<serde_json::Value>(&e.data).unwrap_or(serde_json::Value::Null),
    })
}

#[get("/v1/events?<limit>&<cursor>&<type>&<since>")]
async fn events(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
    r#type: Option<String>,
    since: Option<String>,
) -> Result<Json<EventList>, ApiError> {
    app.require(&caller, Perm::EventsRead, "events.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    if let Some(t) = &r#type {
        if !crate::webhooks::is_pattern(t) {
            let shown: String = t.chars().take(64).collect();
            return Err(ApiError::bad_request(
                "invalid_type",
                format!(
                    "type {shown:?} is not an event type or a pattern such as \"certificate.*\" \
                     or \"*\" (types: {})",
                    crate::webhooks::EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    let since = since
        .map(|s| {
            // An offset's `+` sent unencoded arrives as a space (form decoding): read it back.
            scaivault_core::time_util::parse_rfc3339(&s.replace(' ', "+"))
                .map(scaivault_core::time_util::rfc3339)
                .map_err(|_| {
                    ApiError::bad_request("invalid_since", format!("since {s:?} is not RFC 3339"))
                })
        })
        .transpose()?;
    let tenant = caller.tenant_id.clone();
    let page = app
        .db(move |s| {
            s.read(|tx| {
                tx.list_events_filtered(
                    &tenant,
                    cursor.as_deref(),
                    limit,
                    r#type.as_deref(),
                    since.as_deref(),
                )
            })
            .map_err(|e| match e {
                scaivault_store::Error::Conflict(_) => {
                    ApiError::bad_request("invalid_cursor", "cursor is not valid")
                }
                other => ApiError::from(other),
            })
        })
        .await?;
    Ok(Json(EventList {
        items: page.items.into_iter().map(event_view).collect(),
        next_cursor: page.next_cursor,
    }))
}
