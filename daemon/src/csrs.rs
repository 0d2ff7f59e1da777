//! The reviewed CSR workflow: a requester imports a CSR, a reviewer approves it (or rejects it
//! with a reason kept for good), and a CA administrator signs it against a chosen CA. State
//! changes are single conditional updates, so concurrent approve/reject/sign calls on one CSR
//! cannot both succeed; signing first claims the CSR (`approved → signing`), so parallel sign
//! calls yield exactly one certificate.

use crate::app::{App, Caller};
use crate::error::ApiError;
use crate::issue::{self, Issued, LeafOrder};
use scaivault_core::role::ApprovedNames;
use scaivault_core::{csr, time_util};
use scaivault_hsm::KeyType;
use scaivault_store::CsrRow;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::Duration;

/// What reviewers see of a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// RFC 4514 subject.
    pub subject: String,
    /// Subject CN.
    pub common_name: Option<String>,
    /// Requested names.
    pub sans: Sans,
    /// `ec`, `rsa`, `ed25519`.
    pub key_type: String,
    /// Key size.
    pub key_bits: u32,
    /// SHA-256 of the request DER (hex).
    pub fingerprint_sha256: String,
    /// OIDs of requested extensions other than SAN (never copied into the certificate).
    pub requested_extensions: Vec<String>,
}

/// Requested subjectAltNames by type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Sans {
    /// DNS names.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ip: Vec<String>,
    /// URIs.
    pub uri: Vec<String>,
    /// E-mail addresses (shown, never issued).
    pub email: Vec<String>,
}

fn summary(p: &csr::ParsedCsr) -> Summary {
    Summary {
        subject: p.subject.to_string(),
        common_name: p.common_name.clone(),
        sans: Sans {
            dns: p.dns.clone(),
            ip: p.ips.iter().map(ToString::to_string).collect(),
            uri: p.uris.clone(),
            email: p.emails.clone(),
        },
        key_type: p.key.key_type.into(),
        key_bits: p.key.bits,
        fingerprint_sha256: p.fingerprint_sha256.clone(),
        requested_extensions: p.other_extensions.clone(),
    }
}

/// Decodes the stored summary.
///
/// # Errors
/// Internal when damaged.
pub fn decode_summary(row: &CsrRow) -> Result<Summary, ApiError> {
    serde_json::from_str(&row.summary).map_err(ApiError::internal)
}

fn event(kind: &str, data: serde_json::Value) -> (String, String) {
    (kind.to_owned(), data.to_string())
}

/// Imports a CSR for review.
///
/// # Errors
/// `400 invalid_csr`, `400 invalid_note`.
pub async fn import(
    app: &App,
    caller: &Caller,
    csr_pem: &str,
    note: Option<String>,
) -> Result<CsrRow, ApiError> {
    if note.as_deref().is_some_and(|n| !free_text_ok(n)) {
        return Err(ApiError::bad_request(
            "invalid_note",
            "note must be at most 1024 characters, without control (other than line breaks) or invisible ones",
        ));
    }
    let parsed = csr::parse_pem(csr_pem)?;
    // Nothing that could not go into a certificate reaches an approver.
    csr::check_for_workflow(&parsed)?;
    approved_names(&parsed)?;
    let s = summary(&parsed);
    let now = time_util::rfc3339(time_util::now());
    let row = CsrRow {
        id: scaivault_core::ids::new_id("csr"),
        tenant_id: caller.tenant_id.clone(),
        status: "pending".into(),
        csr_der: parsed.der.clone(),
        summary: serde_json::to_string(&s).map_err(ApiError::internal)?,
        note,
        requested_by: caller.token_id.clone(),
        created_at: now.clone(),
        decided_by: None,
        decided_at: None,
        comment: None,
        reason: None,
        signed_ca_id: None,
        signed_serial: None,
        signed_at: None,
    };
    let rec = caller.record("csr.import", Some(&row.id), "success");
    let (kind, data) = event(
        "csr.imported",
        serde_json::json!({"id": row.id, "subject": s.subject, "fingerprint_sha256": s.fingerprint_sha256}),
    );
    let r2 = row.clone();
    app.db(move |st| {
        st.write(|tx| {
            tx.insert_csr(&r2)?;
            tx.insert_event(&r2.tenant_id, &kind, Some(&r2.id), &now, &data)?;
            tx.append_audit(&rec)
        })
        .map_err(ApiError::from)
    })
    .await?;
    Ok(row)
}

/// Loads a CSR of the caller's tenant.
///
/// # Errors
/// `404 csr_not_found`.
pub async fn get(app: &App, tenant_id: &str, id: &str) -> Result<CsrRow, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| tx.get_csr(&t, &i)).map_err(|e| match e {
            scaivault_store::Error::NotFound => ApiError::not_found("csr_not_found", "CSR"),
            other => ApiError::from(other),
        })
    })
    .await
}

fn state_conflict(id: &str, current: &str, wanted: &str) -> ApiError {
    let code = if wanted == "sign" && current == "pending" {
        "csr_not_approved"
    } else {
        "csr_state_conflict"
    };
    ApiError::conflict(code, format!("CSR {id} is {current}; cannot {wanted} it"))
}

/// The names a certificate for `parsed` carries: its DNS/IP/URI SAN values, and its CN repeated
/// in the SAN when it is a DNS name or an IP address. Checked at import too, so that a CSR that
/// could never be signed (nothing to certify, a mangled host-like CN) does not reach an approver.
///
/// # Errors
/// `400 invalid_csr`, `400 csr_without_names`.
fn approved_names(parsed: &csr::ParsedCsr) -> Result<ApprovedNames, ApiError> {
    // Only the subject and the SAN names are taken from the request; other requested extensions
    // are ignored.
    let mut dns: Vec<String> = parsed
        .dns
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let mut ips = parsed.ips.clone();
    // The CN is repeated in the SAN when it is a DNS name or an IP address. A CN that reads like
    // a host name but is neither (a URI, `a..b`, `a_b.example`) would have to go into the SAN
    // as something it is not: refused, so that no certificate carries a mangled name.
    // A CN without a dot (`Billing`) or with a space stays free text, as before.
    if let Some(cn) = parsed
        .common_name
        .as_ref()
        .filter(|cn| cn.contains('.') && !cn.contains(' '))
    {
        if let Ok(ip) = cn.parse::<std::net::IpAddr>() {
            if !ips.contains(&ip) {
                ips.insert(0, ip);
            }
        } else if let Ok(name) = scaivault_core::role::normalize_dns_name(cn) {
            if !dns.contains(&name) {
                dns.insert(0, name);
            }
        } else {
            return Err(ApiError::bad_request(
                "invalid_csr",
                format!(
                    "the CSR's common name {cn:?} looks like a host name but is neither a DNS \
                     name nor an IP address; put the name in the subjectAltName and use a CN \
                     that is one, or none"
                ),
            ));
        }
    }
    dns.dedup();
    let names = ApprovedNames {
        common_name: parsed.common_name.clone(),
        dns_names: dns,
        ips,
        uris: parsed.uris.clone(),
    };
    if names.dns_names.is_empty() && names.ips.is_empty() && names.uris.is_empty() {
        return Err(ApiError::bad_request(
            "csr_without_names",
            "the CSR names no DNS name, IP or URI to certify",
        ));
    }
    Ok(names)
}

/// A note, comment or reason a person wrote for others to read: at most 1024 characters, no
/// control characters but line breaks, nothing invisible (no bidirectional overrides that would
/// show `approved\u{202e}gnp.exe` as something else).
fn free_text_ok(t: &str) -> bool {
    t.chars().count() <= 1024
        && !t
            .chars()
            .any(|c| scaivault_core::name::is_hidden(c) && c != '\n')
}

/// Approves (`reason == None`) or rejects a pending CSR.
///
/// # Errors
/// `404`; `409` when not pending; `403 separation_of_duties` when the importer tries to decide
/// and the tenant requires a different approver; `400 reason_required`.
pub async fn decide(
    app: &App,
    caller: &Caller,
    id: &str,
    approve: bool,
    text: Option<String>,
) -> Result<CsrRow, ApiError> {
    let action = if approve { "approve" } else { "reject" };
    // Shown to reviewers and kept in the audit chain: nothing there may hide or reorder text.
    if text.as_deref().is_some_and(|t| !free_text_ok(t)) {
        return Err(ApiError::bad_request(
            "invalid_comment",
            "comment or reason must be at most 1024 characters, without control (other than line breaks) or invisible ones",
        ));
    }
    if !approve && text.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "reason_required",
            "a rejection needs a reason",
        ));
    }
    let row = get(app, &caller.tenant_id, id).await?;
    let tenant = caller.tenant_id.clone();
    let setting = app
        .db(move |s| {
            s.read(|tx| tx.tenant_csr_distinct_approver(&tenant))
                .map_err(ApiError::from)
        })
        .await?;
    let distinct = setting.unwrap_or(app.config.csr.require_distinct_approver);
    if distinct && row.requested_by == caller.token_id {
        // Audited once, as `denied`, by the handler's `App::finish`.
        return Err(ApiError::new(
            rocket::http::Status::Forbidden,
            "separation_of_duties",
            "this tenant requires the approver to be a different token from the one that imported the CSR",
        ));
    }
    let to = if approve { "approved" } else { "rejected" };
    let now = time_util::rfc3339(time_util::now());
    let mut rec = caller.record(&format!("csr.{action}"), Some(id), "success");
    rec.detail = text.clone();
    let (kind, data) = event(
        &format!("csr.{to}"),
        serde_json::json!({"id": id, "by": caller.token_id, "comment": if approve { text.clone() } else { None }, "reason": if approve { None } else { text.clone() }}),
    );
    let (t, i, by) = (
        caller.tenant_id.clone(),
        id.to_owned(),
        caller.token_id.clone(),
    );
    let (comment, reason) = if approve { (text, None) } else { (None, text) };
    app.db(move |s| {
        s.write(|tx| {
            tx.transition_csr(
                &t,
                &i,
                "pending",
                to,
                Some(&by),
                &now,
                comment.as_deref(),
                reason.as_deref(),
            )?;
            tx.insert_event(&t, &kind, Some(&i), &now, &data)?;
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::Conflict(current) => state_conflict(&i, &current, action),
            other => ApiError::from(other),
        })
    })
    .await?;
    get(app, &caller.tenant_id, id).await
}

/// What the certificate is for.
#[derive(Debug, Clone, Copy)]
pub enum Usage {
    /// serverAuth.
    Server,
    /// clientAuth.
    Client,
    /// Both.
    Both,
}

/// Signs an approved CSR with CA `ca_id` for `validity_days`.
///
/// # Errors
/// `404`; `409` unless approved (`csr_not_approved` while pending); `400 ca_not_found`,
/// `ca_not_active`, `invalid_validity`, `validity_exceeds_ca`, `csr_without_names`.
pub async fn sign(
    app: &App,
    caller: &Caller,
    id: &str,
    ca_id: &str,
    validity_days: i64,
    usage: Usage,
) -> Result<Issued, ApiError> {
    let row = get(app, &caller.tenant_id, id).await?;
    if row.status != "approved" {
        return Err(state_conflict(id, &row.status, "sign"));
    }
    if !(1..=3650).contains(&validity_days) {
        return Err(ApiError::bad_request(
            "invalid_validity",
            "validity_days must be between 1 and 3650",
        ));
    }
    let ca = crate::ca::get(app, &caller.tenant_id, ca_id)
        .await
        .map_err(|e| {
            if e.code == "ca_not_found" {
                ApiError::bad_request("ca_not_found", format!("CA {ca_id:?} not found"))
            } else {
                e
            }
        })?;
    let issuer = app.issuer_for(ca).await?;
    let now = time_util::now();
    let not_after = now + Duration::days(validity_days);
    if not_after > issuer.info.not_after {
        return Err(ApiError::bad_request(
            "validity_exceeds_ca",
            format!(
                "the certificate would end {} but CA {ca_id} ends {}",
                time_util::rfc3339(not_after),
                time_util::rfc3339(issuer.info.not_after)
            ),
        ));
    }
    let parsed = csr::parse_der(&row.csr_der)?;
    // Checked at import; again for CSRs imported before that check existed.
    csr::check_for_workflow(&parsed)?;
    let names = approved_names(&parsed)?;
    // Claim it: only one signer gets past this.
    let claim_at = time_util::rfc3339(now);
    let (t, i) = (caller.tenant_id.clone(), id.to_owned());
    app.db(move |s| {
        s.write(|tx| tx.transition_csr(&t, &i, "approved", "signing", None, &claim_at, None, None))
            .map_err(|e| match e {
                scaivault_store::Error::Conflict(current) => state_conflict(&i, &current, "sign"),
                other => ApiError::from(other),
            })
    })
    .await?;
    let (server_auth, client_auth) = match usage {
        Usage::Server => (true, false),
        Usage::Client => (false, true),
        Usage::Both => (true, true),
    };
    let key_type = match parsed.key.key_type {
        "rsa" => KeyType::Rsa,
        "ed25519" => KeyType::Ed25519,
        _ => KeyType::Ec,
    };
    let rec = caller.record("csr.sign", Some(id), "success");
    let (t, i, ca) = (caller.tenant_id.clone(), id.to_owned(), ca_id.to_owned());
    let order = LeafOrder {
        role: None,
        // The subject as requested, less its e-mail addresses (shown at review, not issued, like
        // e-mail SANs).
        subject: scaivault_core::name::without_email(&parsed.subject)?,
        names,
        spki_der: parsed.spki_der.clone(),
        key_type,
        window: (issuer.info.backdated(now, Duration::seconds(30)), not_after),
        server_auth,
        client_auth,
        sealed: None,
        on_store: Some(Box::new(move |tx, serial| {
            let at = time_util::rfc3339(time_util::now());
            tx.finish_csr(&t, &i, &ca, serial, &at)?;
            tx.insert_event(
                &t,
                "csr.signed",
                Some(&i),
                &at,
                &serde_json::json!({"id": i, "ca_id": ca, "serial": scaivault_core::serial::api_form(serial)}).to_string(),
            )?;
            tx.append_audit(&rec).map(|_| ())
        })),
        basis: None,
    };
    let issuer: Arc<_> = issuer;
    match issue::sign_order(app, caller, &issuer, order).await {
        Ok(done) => Ok(done),
        Err(e) => {
            // Give the claim back so the CSR can be signed again.
            let (t, i) = (caller.tenant_id.clone(), id.to_owned());
            let at = time_util::rfc3339(time_util::now());
            let released = app
                .db(move |s| {
                    Ok(s.write(|tx| {
                        tx.transition_csr(&t, &i, "signing", "approved", None, &at, None, None)
                    }))
                })
                .await;
            match released {
                Ok(Ok(_)) => {}
                // Back to `approved` already: a certificate commit that was not confirmed, found
                // applied and settled (`crate::settle`), which undid the CSR's `signed`.
                Ok(Err(scaivault_store::Error::Conflict(current))) if current == "approved" => {}
                Ok(Err(r)) => {
                    tracing::error!(error = %r, csr = %id, "could not release a CSR after a failed signature");
                }
                Err(r) => {
                    tracing::error!(error = %r, csr = %id, "could not release a CSR after a failed signature");
                }
            }
            Err(e)
        }
    }
}
