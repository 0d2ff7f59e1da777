//! The certificate inventory: `GET /v1/pki/certificates` (filters `ca_id`, `role`, `status`,
//! `expiring_within`), `GET /v1/pki/certificates/<serial>`, and
//! `GET /v1/pki/certificates/<serial>/private-key` (admin; only when the role stored the key).

use super::ca::page_limit;
use crate::api::schemas::{OneOf, CERT_KINDS, CERT_STATES};
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::error::ApiError;
use rocket::serde::json::Json;
use rocket::{get, routes, Route, State};
use scaivault_core::serial::Serial;
use scaivault_core::{duration, pem, time_util};
use scaivault_store::{CertFilter, CertRow};
use schemars::JsonSchema;
use serde::Serialize;

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.answer::<CertList>("GET", "/v1/pki/certificates");
    b.answer::<CertView>("GET", "/v1/pki/certificates/{serial}");
    b.answer::<KeyView>("GET", "/v1/pki/certificates/{serial}/private-key");
}

pub fn routes() -> Vec<Route> {
    routes![list, get_one, private_key]
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Certificate")]
struct CertView {
    serial_number: String,
    certificate: Option<String>,
    ca_id: String,
    role: Option<String>,
    #[schemars(transform = OneOf(CERT_KINDS))]
    kind: String,
    common_name: Option<String>,
    sans: Vec<String>,
    #[schemars(transform = OneOf(CERT_STATES))]
    status: String,
    not_before: Option<String>,
    not_after: Option<String>,
    revoked_at: Option<String>,
    #[schemars(transform = OneOf(scaivault_core::crl::REASONS))]
    revocation_reason: Option<String>,
    created_at: String,
}

fn view(r: CertRow, now: &str) -> Result<CertView, ApiError> {
    let status = if r.status == "valid" && r.not_after.as_deref().is_some_and(|na| na <= now) {
        "expired".to_owned()
    } else {
        r.status
    };
    Ok(CertView {
        serial_number: Serial::parse(&r.serial)?.to_string(),
        certificate: r.cert_der.as_deref().map(pem::certificate).transpose()?,
        ca_id: r.issuer_ca_id,
        role: r.role,
        kind: r.kind,
        common_name: r.common_name,
        sans: r
            .sans
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default(),
        status,
        not_before: r.not_before,
        not_after: r.not_after,
        revoked_at: r.revoked_at,
        revocation_reason: r.revocation_reason,
        created_at: r.created_at,
    })
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "CertificateList")]
struct CertList {
    items: Vec<CertView>,
    next_cursor: Option<String>,
}

#[allow(clippy::too_many_arguments)] // one query parameter each
#[get("/v1/pki/certificates?<ca_id>&<role>&<status>&<expiring_within>&<limit>&<cursor>")]
async fn list(
    app: &State<App>,
    caller: Caller,
    ca_id: Option<String>,
    role: Option<String>,
    status: Option<String>,
    expiring_within: Option<String>,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<CertList>, ApiError> {
    app.require(&caller, Perm::InventoryRead, "certificate.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    if let Some(s) = &status {
        if !["valid", "revoked", "expired"].contains(&s.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!("status {s:?} is not valid, revoked or expired"),
            ));
        }
    }
    let now_t = time_util::now();
    let now = time_util::rfc3339(now_t);
    let expiring_before = match &expiring_within {
        None => None,
        Some(d) => {
            let secs = i64::try_from(duration::parse_seconds(d)?).unwrap_or(i64::MAX);
            let end = now_t
                .checked_add(time::Duration::seconds(secs))
                .filter(|t| t.year() <= 9999)
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_duration", "expiring_within is too large")
                })?;
            Some(time_util::rfc3339(end))
        }
    };
    let filter = CertFilter {
        ca_id,
        role,
        status,
        expiring_before,
        now: now.clone(),
    };
    let tenant = caller.tenant_id.clone();
    let page = app
        .db(move |s| {
            s.read(|tx| tx.list_certificates(&tenant, &filter, cursor.as_deref(), limit))
                .map_err(|e| match e {
                    scaivault_store::Error::Conflict(_) => {
                        ApiError::bad_request("invalid_cursor", "cursor is not valid")
                    }
                    other => ApiError::from(other),
                })
        })
        .await?;
    Ok(Json(CertList {
        items: page
            .items
            .into_iter()
            .map(|r| view(r, &now))
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    }))
}

async fn load(app: &App, caller: &Caller, serial: &str) -> Result<CertRow, ApiError> {
    let key = Serial::parse(serial)?.key();
    let tenant = caller.tenant_id.clone();
    app.db(move |s| {
        s.read(|tx| tx.get_certificate(&tenant, &key))
            .map_err(|e| match e {
                scaivault_store::Error::NotFound => {
                    ApiError::not_found("certificate_not_found", "certificate")
                }
                other => ApiError::from(other),
            })
    })
    .await
}

#[get("/v1/pki/certificates/<serial>")]
async fn get_one(
    app: &State<App>,
    caller: Caller,
    serial: &str,
) -> Result<Json<CertView>, ApiError> {
    app.require(
        &caller,
        Perm::InventoryRead,
        "certificate.read",
        Some(&audit_serial(serial)),
    )
    .await?;
    let row = load(app, &caller, serial).await?;
    Ok(Json(view(row, &time_util::rfc3339(time_util::now()))?))
}

/// A serial from the path as audit records name serials: the stored form when it parses (as
/// revocations record it), else as typed, cut to 64 characters.
fn audit_serial(serial: &str) -> String {
    Serial::parse(serial).map_or_else(|_| serial.chars().take(64).collect(), |s| s.key())
}

#[derive(Serialize, JsonSchema)]
#[schemars(rename = "StoredPrivateKey")]
struct KeyView {
    serial_number: String,
    private_key: String,
}

#[get("/v1/pki/certificates/<serial>/private-key")]
async fn private_key(
    app: &State<App>,
    caller: Caller,
    serial: &str,
) -> Result<Json<KeyView>, ApiError> {
    let object = audit_serial(serial);
    app.require(
        &caller,
        Perm::KeyRead,
        "certificate.read_private_key",
        Some(&object),
    )
    .await?;
    let res = async {
        let row = load(app, &caller, serial).await?;
        let (ca, sn) = (row.issuer_ca_id.clone(), row.serial.clone());
        let stored = app
            .db(move |s| {
                s.read(|tx| tx.get_stored_key(&ca, &sn))
                    .map_err(|e| match e {
                        scaivault_store::Error::NotFound => {
                            ApiError::not_found("private_key_not_stored", "stored private key")
                        }
                        other => ApiError::from(other),
                    })
            })
            .await?;
        let object = format!("{}:{}", row.issuer_ca_id, row.serial);
        // Reading a secret is audited before it is handed out.
        app.audit(caller.record("certificate.read_private_key", Some(&object), "success"))
            .await?;
        let key = crate::issue::unseal(app, stored.wrapped_key, stored.sealed).await?;
        Ok(KeyView {
            serial_number: Serial::parse(&row.serial)?.to_string(),
            private_key: key.as_str().to_owned(),
        })
    }
    .await;
    Ok(Json(
        app.finish(&caller, "certificate.read_private_key", Some(&object), res)
            .await?,
    ))
}
