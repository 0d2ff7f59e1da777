//! Trust anchors: CA certificates from outside ScaiVault that a tenant trusts when validating.
//! Only CA certificates are accepted; the same certificate (by SHA-256) at most once per tenant.

use crate::app::{App, Caller};
use crate::error::ApiError;
use scaivault_core::{ids, time_util, validate};
use scaivault_store::{Page, TrustAnchorRow};

/// Longest anchor name, in bytes.
const MAX_NAME: usize = 128;

fn not_found() -> ApiError {
    ApiError::not_found("trust_anchor_not_found", "trust anchor")
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty()
        || name.len() > MAX_NAME
        || name.chars().any(scaivault_core::name::is_hidden)
    {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!(
                "name {name:?} must be 1-{MAX_NAME} bytes without control or invisible characters"
            ),
        ));
    }
    Ok(())
}

/// Adds `certificate_pem` (exactly one CA certificate) as the trust anchor `name`.
///
/// # Errors
/// `400 invalid_name`, `invalid_certificate`, `not_a_ca_certificate`; `409 trust_anchor_exists`
/// (same certificate) or `trust_anchor_name_taken`.
pub async fn create(
    app: &App,
    caller: &Caller,
    name: &str,
    certificate_pem: &str,
) -> Result<TrustAnchorRow, ApiError> {
    check_name(name)?;
    let mut blocks = validate::pem_blocks(certificate_pem, "CERTIFICATE")
        .map_err(|e| ApiError::bad_request("invalid_certificate", e))?;
    if blocks.len() != 1 {
        return Err(ApiError::bad_request(
            "invalid_certificate",
            format!(
                "certificate_pem must hold exactly one certificate, not {}",
                blocks.len()
            ),
        ));
    }
    let der = blocks.pop().unwrap_or_default();
    let info = validate::check_anchor(&der)?;
    let row = TrustAnchorRow {
        id: ids::new_id("ta"),
        tenant_id: caller.tenant_id.clone(),
        name: name.to_owned(),
        subject: info.subject,
        fingerprint_sha256: info.fingerprint_sha256,
        cert_der: der,
        not_after: time_util::rfc3339(info.not_after),
        created_at: time_util::rfc3339(time_util::now()),
    };
    let rec = caller.record("trust_anchor.create", Some(&row.id), "success");
    let stored = row.clone();
    app.db(move |s| {
        s.write(|tx| {
            tx.insert_trust_anchor(&stored)?;
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::Conflict(what) if what == "fingerprint" => ApiError::conflict(
                "trust_anchor_exists",
                format!(
                    "this certificate (SHA-256 {}) is already a trust anchor",
                    stored.fingerprint_sha256
                ),
            ),
            scaivault_store::Error::Conflict(_) => ApiError::conflict(
                "trust_anchor_name_taken",
                format!("a trust anchor named {:?} exists", stored.name),
            ),
            other => ApiError::from(other),
        })
    })
    .await?;
    Ok(row)
}

/// The tenant's trust anchor `id`.
///
/// # Errors
/// `404 trust_anchor_not_found` (also another tenant's).
pub async fn get(app: &App, tenant_id: &str, id: &str) -> Result<TrustAnchorRow, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| tx.get_trust_anchor(&t, &i))
            .map_err(|e| match e {
                scaivault_store::Error::NotFound => not_found(),
                other => ApiError::from(other),
            })
    })
    .await
}

/// A page of the tenant's trust anchors.
///
/// # Errors
/// `400 invalid_cursor`.
pub async fn list(
    app: &App,
    tenant_id: &str,
    cursor: Option<String>,
    limit: usize,
) -> Result<Page<TrustAnchorRow>, ApiError> {
    let t = tenant_id.to_owned();
    app.db(move |s| {
        s.read(|tx| tx.list_trust_anchors(&t, cursor.as_deref(), limit))
            .map_err(|e| match e {
                scaivault_store::Error::Conflict(_) => {
                    ApiError::bad_request("invalid_cursor", "cursor is not valid")
                }
                other => ApiError::from(other),
            })
    })
    .await
}

/// Removes the tenant's trust anchor `id`.
///
/// # Errors
/// `404 trust_anchor_not_found`.
pub async fn delete(app: &App, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let rec = caller.record("trust_anchor.delete", Some(id), "success");
    let (t, i) = (caller.tenant_id.clone(), id.to_owned());
    app.db(move |s| {
        s.write(|tx| {
            tx.delete_trust_anchor(&t, &i)?;
            tx.append_audit(&rec)?;
            Ok(())
        })
        .map_err(|e| match e {
            scaivault_store::Error::NotFound => not_found(),
            other => ApiError::from(other),
        })
    })
    .await
}
