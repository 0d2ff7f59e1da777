//! `POST /v1/pki/acme/issue` and the managed-certificate reads.

use super::{accounts, providers};
use crate::app::{App, Caller};
use crate::error::ApiError;
use scaivault_core::{ids, time_util};
use scaivault_store::{ManagedCertRow, ManagedVersionRow, Page};

/// Most names in one order.
pub const MAX_DOMAINS: usize = 100;

/// What `POST /v1/pki/acme/issue` asks for.
#[derive(Debug)]
pub struct IssueInput {
    /// `acme_…`.
    pub account_id: String,
    /// DNS names (`*.` allowed with dns-01).
    pub domains: Vec<String>,
    /// `http-01`, `dns-01` or `tls-alpn-01`.
    pub challenge_type: String,
    /// Default true.
    pub auto_renew: Option<bool>,
    /// For dns-01.
    pub dns_provider_id: Option<String>,
    /// Default `ec256`.
    pub key_type: Option<String>,
    /// ACME profile (when the CA offers profiles).
    pub profile: Option<String>,
}

fn not_found() -> ApiError {
    ApiError::not_found("acme_certificate_not_found", "managed certificate")
}

/// Checks one DNS name (RFC 1035 preferred syntax, lower-cased, optional leading `*.`; not an IP
/// address, no numeric top label, valid A-labels: the checks role names get, see
/// [`scaivault_core::role::normalize_dns_name`]).
fn check_domain(d: &str, wildcard_ok: bool) -> Result<String, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(
            "invalid_domain",
            format!("domain {d:?} is not valid: {why}"),
        )
    };
    // One trailing dot (the root) is dropped; two would end in an empty label.
    let trimmed = d.strip_suffix('.').unwrap_or(d);
    if trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad(
            "it is an IP address; the ACME client orders DNS names only",
        ));
    }
    let name = trimmed.to_ascii_lowercase();
    let (wild, base) = match name.strip_prefix("*.") {
        Some(b) => (true, b),
        None => (false, name.as_str()),
    };
    if wild && !wildcard_ok {
        return Err(ApiError::bad_request(
            "wildcard_requires_dns01",
            format!("wildcard {d:?} can only be validated with dns-01"),
        ));
    }
    if base.is_empty() || base.len() > 253 || !base.contains('.') {
        return Err(bad(
            "it needs at least two labels and at most 253 characters",
        ));
    }
    for label in base.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return Err(bad("labels are 1-63 letters, digits or inner hyphens"));
        }
    }
    // The rest of the role checks: a numeric top label reads as an IP address, and `xn--`
    // labels must be valid IDNA A-labels.
    scaivault_core::role::normalize_dns_name(&name)
        .map_err(|e| ApiError::bad_request("invalid_domain", format!("domain {e}")))?;
    Ok(name)
}

/// Checks the request and stores a `pending` managed certificate with an order in flight; the
/// caller then starts the worker.
///
/// # Errors
/// `400 invalid_domain`, `duplicate_domain`, `too_many_domains`, `wildcard_requires_dns01`,
/// `invalid_challenge_type`, `dns_provider_required`, `dns_provider_not_applicable`,
/// `challenge_listener_not_configured`, `invalid_key_type`, `invalid_profile`; `404
/// acme_account_not_found`, `dns_provider_not_found`; `409 acme_account_deactivated`.
pub async fn create(
    app: &App,
    caller: &Caller,
    mut input: IssueInput,
) -> Result<ManagedCertRow, ApiError> {
    let challenge_type = input.challenge_type.clone();
    let ct = challenge_type.as_str();
    if !["http-01", "dns-01", "tls-alpn-01"].contains(&ct) {
        return Err(ApiError::bad_request(
            "invalid_challenge_type",
            format!("challenge_type {ct:?} is not http-01, dns-01 or tls-alpn-01"),
        ));
    }
    if input.domains.is_empty() || input.domains.len() > MAX_DOMAINS {
        return Err(ApiError::bad_request(
            if input.domains.is_empty() {
                "invalid_domain"
            } else {
                "too_many_domains"
            },
            format!("domains must hold 1 to {MAX_DOMAINS} names"),
        ));
    }
    let mut domains = Vec::with_capacity(input.domains.len());
    for d in &input.domains {
        let n = check_domain(d, ct == "dns-01")?;
        if domains.contains(&n) {
            return Err(ApiError::bad_request(
                "duplicate_domain",
                format!("domain {n:?} is listed twice"),
            ));
        }
        domains.push(n);
    }
    let key_type = input.key_type.clone().unwrap_or_else(|| "ec256".into());
    super::order::key_spec(&key_type)?;
    if let Some(p) = &input.profile {
        if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::bad_request(
                "invalid_profile",
                format!("profile {p:?} is not a profile name"),
            ));
        }
    }
    let listener = match ct {
        "http-01" => Some((
            "acme.http_challenge_listen",
            app.config.acme.http_challenge_listen,
        )),
        "tls-alpn-01" => Some((
            "acme.tls_challenge_listen",
            app.config.acme.tls_challenge_listen,
        )),
        _ => None,
    };
    if let Some((key, None)) = listener {
        return Err(ApiError::bad_request(
            "challenge_listener_not_configured",
            format!("{ct} needs {key} in the configuration"),
        ));
    }
    match (ct, &input.dns_provider_id) {
        ("dns-01", None) => {
            // The product page's request names no provider: "a configured DNS provider" is the
            // tenant's only one. With none, or several, the caller must say.
            let page = providers::list(app, &caller.tenant_id, None, 2).await?;
            match page.items.as_slice() {
                [only] => input.dns_provider_id = Some(only.id.clone()),
                [] => return Err(ApiError::bad_request(
                    "dns_provider_required",
                    "dns-01 needs a DNS provider: create one (POST /v1/pki/acme/dns-providers) \
                         or name it in dns_provider_id",
                )),
                _ => {
                    return Err(ApiError::bad_request(
                        "dns_provider_required",
                        "the tenant has several DNS providers: name one in dns_provider_id",
                    ))
                }
            }
        }
        ("dns-01", Some(pid)) => {
            providers::get(app, &caller.tenant_id, pid).await?;
        }
        (_, Some(_)) => {
            return Err(ApiError::bad_request(
                "dns_provider_not_applicable",
                format!("dns_provider_id is only for dns-01, not {ct}"),
            ))
        }
        _ => {}
    }
    let account = accounts::get(app, &caller.tenant_id, &input.account_id).await?;
    if account.status != "valid" {
        return Err(ApiError::conflict(
            "acme_account_deactivated",
            format!("ACME account {} is deactivated", account.id),
        ));
    }
    let now = time_util::rfc3339(time_util::now());
    let row = ManagedCertRow {
        id: ids::new_id("mc"),
        tenant_id: caller.tenant_id.clone(),
        account_id: account.id,
        domains: serde_json::to_string(&domains).map_err(ApiError::internal)?,
        challenge_type: ct.to_owned(),
        dns_provider_id: input.dns_provider_id.clone(),
        key_type,
        profile: input.profile.clone(),
        auto_renew: input.auto_renew.unwrap_or(true),
        status: "pending".into(),
        version: 0,
        last_error: None,
        order_kind: Some("issue".into()),
        order_url: None,
        order_started_at: None,
        order_attempts: 0,
        renew_at: None,
        renew_failures: 0,
        created_at: now.clone(),
        updated_at: now,
    };
    let rec = caller.record("acme.certificate.request", Some(&row.id), "success");
    let stored = row.clone();
    app.db(move |s| {
        Ok(s.write(|tx| {
            tx.insert_managed_cert(&stored)?;
            tx.append_audit(&rec)
        })?)
    })
    .await?;
    Ok(row)
}

/// The tenant's managed certificate and its latest version (if any).
///
/// # Errors
/// `404 acme_certificate_not_found`.
pub async fn get(
    app: &App,
    tenant_id: &str,
    id: &str,
) -> Result<(ManagedCertRow, Option<ManagedVersionRow>), ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| {
            let mc = tx.get_managed_cert(&t, &i)?;
            let v = if mc.version > 0 {
                Some(tx.get_managed_version(&mc.id, mc.version)?)
            } else {
                None
            };
            Ok((mc, v))
        })
        .map_err(|e| match e {
            scaivault_store::Error::NotFound => not_found(),
            other => ApiError::from(other),
        })
    })
    .await
}

/// Deletes managed certificate `id`: no more renewals, its versions and their keys gone (the
/// certificates stay valid at their CA until they expire; the audit trail keeps the record).
/// dns-01 records an earlier order left at the provider are withdrawn first; one that cannot be
/// withdrawn keeps the certificate (`409`), so that it is not forgotten at the provider.
///
/// # Errors
/// `404 acme_certificate_not_found`; `409 acme_order_in_flight`; `409 acme_dns_records_left`.
pub async fn delete(app: &App, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let (mc, _) = get(app, &caller.tenant_id, id).await?;
    let in_flight = |id: &str| {
        ApiError::conflict(
            "acme_order_in_flight",
            format!("an order of {id} is in flight: delete it once the order has ended"),
        )
    };
    if mc.order_kind.is_some() {
        return Err(in_flight(id));
    }
    super::order::withdraw_leftovers(app, &mc).await;
    let i = id.to_owned();
    let left = app
        .db(move |s| Ok(s.read(|tx| tx.dns_records_of(&i))?))
        .await?;
    if let Some(r) = left.first() {
        return Err(ApiError::conflict(
            "acme_dns_records_left",
            format!(
                "a dns-01 record an earlier order of {id} left at DNS provider {} ({}) could not be \
                 withdrawn; fix the provider and delete again",
                r.dns_provider_id, r.fqdn
            ),
        ));
    }
    let rec = caller.record("acme.certificate.delete", Some(id), "success");
    let (t, i) = (caller.tenant_id.clone(), id.to_owned());
    app.db(move |s| {
        s.write(|tx| {
            tx.delete_managed_cert(&t, &i)?;
            tx.append_audit(&rec).map(drop)
        })
        .map_err(|e| match e {
            scaivault_store::Error::NotFound => not_found(),
            scaivault_store::Error::Conflict(_) => in_flight(&i),
            other => ApiError::from(other),
        })
    })
    .await
}

/// A page of the tenant's managed certificates, each with its latest version.
///
/// # Errors
/// `400 invalid_cursor`.
pub async fn list(
    app: &App,
    tenant_id: &str,
    cursor: Option<String>,
    limit: usize,
) -> Result<Page<(ManagedCertRow, Option<ManagedVersionRow>)>, ApiError> {
    let t = tenant_id.to_owned();
    app.db(move |s| {
        s.read(|tx| {
            let page = tx.list_managed_certs(&t, cursor.as_deref(), limit)?;
            let mut items = Vec::with_capacity(page.items.len());
            for mc in page.items {
                let v = if mc.version > 0 {
                    Some(tx.get_managed_version(&mc.id, mc.version)?)
                } else {
                    None
                };
                items.push((mc, v));
            }
            Ok(Page {
                items,
                next_cursor: page.next_cursor,
            })
        })
        .map_err(super::accounts::cursor_error)
    })
    .await
}

/// The versions of the tenant's managed certificate `id`, oldest first.
///
/// # Errors
/// `404 acme_certificate_not_found`.
pub async fn versions(
    app: &App,
    tenant_id: &str,
    id: &str,
) -> Result<Vec<ManagedVersionRow>, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| {
            tx.get_managed_cert(&t, &i)?;
            tx.list_managed_versions(&i)
        })
        .map_err(|e| match e {
            scaivault_store::Error::NotFound => not_found(),
            other => ApiError::from(other),
        })
    })
    .await
}

/// Version `n` of the tenant's managed certificate `id`.
///
/// # Errors
/// `404 acme_certificate_not_found`, `acme_version_not_found`.
pub async fn version(
    app: &App,
    tenant_id: &str,
    id: &str,
    n: i64,
) -> Result<ManagedVersionRow, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    let found = app
        .db(move |s| {
            Ok(s.read(|tx| {
                tx.get_managed_cert(&t, &i)?;
                tx.get_managed_version(&i, n)
                    .map(Some)
                    .or_else(|e| match e {
                        scaivault_store::Error::NotFound => Ok(None),
                        other => Err(other),
                    })
            }))
        })
        .await?;
    match found {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(ApiError::not_found(
            "acme_version_not_found",
            &format!("version {n}"),
        )),
        Err(scaivault_store::Error::NotFound) => Err(not_found()),
        Err(other) => Err(ApiError::from(other)),
    }
}

/// Decrypts a version's private key for `caller` (who must hold `KeyRead`) and audits the read.
///
/// # Errors
/// Decryption failures; `503 audit_unavailable`.
pub async fn read_key(
    app: &App,
    caller: &Caller,
    id: &str,
    v: &ManagedVersionRow,
) -> Result<zeroize::Zeroizing<String>, ApiError> {
    let key = super::unseal_text(app, v.key_wrapped.clone(), v.key_sealed.clone()).await?;
    app.audit(caller.record("acme.certificate.key_read", Some(id), "success"))
        .await?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::check_domain;

    #[test]
    fn domains_are_checked_and_normalised() {
        assert_eq!(
            check_domain("WWW.Example.COM.", false).unwrap(),
            "www.example.com"
        );
        assert_eq!(
            check_domain("*.example.com", true).unwrap(),
            "*.example.com"
        );
        assert_eq!(
            check_domain("*.example.com", false).unwrap_err().code,
            "wildcard_requires_dns01"
        );
        for bad in [
            "example",
            "a..b",
            "a.example..",
            "a.example...",
            "-a.example",
            "a-.example",
            "a_b.example",
            "",
            "*.*.example.com",
        ] {
            assert_eq!(
                check_domain(bad, true).unwrap_err().code,
                "invalid_domain",
                "{bad}"
            );
        }
        let long = format!("{}.example", "a".repeat(64));
        assert_eq!(
            check_domain(&long, false).unwrap_err().code,
            "invalid_domain"
        );
    }
}
