//! API tokens and policies.
//!
//! A token is `svt_<id>_<secret>`: `<id>` names the stored row (`tok_<id>`), `<secret>` is 256
//! bits from the OS CSPRNG. Only SHA-256 of the whole token is stored; a presented token is
//! looked up by id and its hash compared in constant time. Deny by default: a token may do only
//! what one of its policies grants.

use crate::error::ApiError;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Policies known to this build, besides `issuer:<role>` (issue and sign under that role only).
pub const KNOWN_POLICIES: &[&str] = &[
    "admin",
    "ca-admin",
    "auditor",
    "csr-approver",
    "csr-requester",
    "acme-operator",
];

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Create, import, sign for, retire CAs.
    CaWrite,
    /// Read CA metadata.
    CaRead,
    /// Read the audit log.
    AuditRead,
    /// Manage tokens.
    TokenAdmin,
    /// Create, change, delete roles.
    RoleWrite,
    /// Read roles and the certificate inventory.
    InventoryRead,
    /// Read stored private keys of issued certificates.
    KeyRead,
    /// Submit CSRs for review.
    CsrImport,
    /// Read CSRs.
    CsrRead,
    /// Approve or reject CSRs.
    CsrReview,
    /// Sign approved CSRs.
    CsrSign,
    /// Read the events feed.
    EventsRead,
    /// Create, read and delete webhooks (`admin` only: a webhook sends the tenant's events to a
    /// URL of the caller's choice).
    WebhookAdmin,
    /// Manage ACME accounts and DNS providers, request managed certificates.
    AcmeWrite,
    /// Read ACME accounts, DNS providers and managed certificates (not their private keys).
    AcmeRead,
}

/// Whether `policies` grant `perm`.
pub fn allows(policies: &[String], perm: Perm) -> bool {
    policies.iter().any(|p| {
        matches!(
            (p.as_str(), perm),
            ("admin", _)
                | (
                    "ca-admin",
                    Perm::CaWrite
                        | Perm::CaRead
                        | Perm::RoleWrite
                        | Perm::InventoryRead
                        | Perm::CsrImport
                        | Perm::CsrRead
                        | Perm::CsrSign
                )
                | (
                    "auditor",
                    Perm::AuditRead
                        | Perm::CaRead
                        | Perm::InventoryRead
                        | Perm::CsrRead
                        | Perm::EventsRead
                )
                | (
                    "csr-approver",
                    Perm::CsrImport | Perm::CsrRead | Perm::CsrReview
                )
                | ("csr-requester", Perm::CsrImport)
                | (
                    "acme-operator",
                    Perm::AcmeWrite | Perm::AcmeRead | Perm::EventsRead
                )
        )
    })
}

/// Whether `policies` let a token issue or sign under `role`: `admin`, or `issuer:<role>`.
pub fn may_issue(policies: &[String], role: &str) -> bool {
    policies
        .iter()
        .any(|p| p == "admin" || p.strip_prefix("issuer:").is_some_and(|r| r == role))
}

/// Checks that every policy is known.
///
/// # Errors
/// `unknown_policy` naming the first unknown one.
pub fn check_policies(policies: &[String]) -> Result<(), ApiError> {
    if policies.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_policies",
            "at least one policy is required",
        ));
    }
    for p in policies {
        let issuer_ok = p.strip_prefix("issuer:").is_some_and(|r| {
            !r.is_empty()
                && r.len() <= 128
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
        if !KNOWN_POLICIES.contains(&p.as_str()) && !issuer_ok {
            return Err(ApiError::bad_request(
                "unknown_policy",
                format!(
                    "policy {p:?} is not one of {}, issuer:<role>",
                    KNOWN_POLICIES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A freshly minted token: the row id, the secret string (shown once) and its hash.
pub struct NewToken {
    /// `tok_…`.
    pub id: String,
    /// The bearer token, shown once.
    pub token: zeroize::Zeroizing<String>,
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
}

/// Mints a token.
pub fn mint() -> NewToken {
    let id_hex = hex::encode(scaivault_core::ids::random_bytes(16));
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(scaivault_core::ids::random_bytes(32));
    let token = zeroize::Zeroizing::new(format!("svt_{id_hex}_{secret}"));
    let hash = hash(&token);
    NewToken {
        id: format!("tok_{id_hex}"),
        token,
        hash,
    }
}

/// SHA-256 of a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The row id a presented token names, if it has the right shape.
pub fn token_id(token: &str) -> Option<String> {
    let rest = token.strip_prefix("svt_")?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.is_empty() {
        return None;
    }
    Some(format!("tok_{id}"))
}

/// `text` with the secret part of every bearer token in it replaced by `[redacted]` (the
/// `svt_<id>_` prefix stays, so that the token can still be told apart): for what a caller puts
/// where an id belongs (a path segment, an object id) before it is logged or audited. Borrowed
/// when there was nothing to redact. Linear in `text`: each `svt_` is checked against the fixed
/// shape (`svt_`, 32 hex digits, `_`) in constant time, and only a token's secret is scanned.
pub fn redact_tokens(text: &str) -> std::borrow::Cow<'_, str> {
    const PREFIX: usize = 4 + 32 + 1;
    let secret_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    // `copied`: the end of the text already in `out`.
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find("svt_") {
        let at = from + found;
        let shaped = bytes.len() > PREFIX
            && bytes[at + 4..].len() > 33
            && bytes[at + 4..at + 36].iter().all(u8::is_ascii_hexdigit)
            && bytes[at + 36] == b'_'
            && secret_char(bytes[at + PREFIX]);
        if !shaped {
            from = at + 4;
            continue;
        }
        let end = bytes[at + PREFIX..]
            .iter()
            .position(|b| !secret_char(*b))
            .map_or(bytes.len(), |e| at + PREFIX + e);
        let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
        o.push_str(&text[copied..at + PREFIX]);
        o.push_str("[redacted]");
        copied = end;
        from = end;
    }
    match out {
        None => std::borrow::Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            std::borrow::Cow::Owned(o)
        }
    }
}

/// A request path as the request log shows it: as sent, unless its percent-decoded form holds a
/// bearer token (`svt%5F…`), which is then shown decoded and redacted, control characters as
/// `?` (a decoded path must not forge log lines).
pub fn loggable_path(raw: &str) -> String {
    let decoded = rocket::http::RawStr::new(raw).percent_decode_lossy();
    let redacted = redact_tokens(&decoded);
    if matches!(redacted, std::borrow::Cow::Borrowed(_)) {
        return redact_tokens(raw).into_owned();
    }
    redacted
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Constant-time comparison of the presented token's hash with the stored one.
pub fn hash_matches(token: &str, stored: &[u8]) -> bool {
    hash(token).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_text_lose_their_secret() {
        let t = mint();
        let id_hex = t.id.strip_prefix("tok_").unwrap();
        let text = format!("/v1/auth/tokens/{}", *t.token);
        assert_eq!(
            redact_tokens(&text),
            format!("/v1/auth/tokens/svt_{id_hex}_[redacted]")
        );
        let two = format!("a {} b {}.", *t.token, *t.token);
        let r = redact_tokens(&two);
        assert!(!r.contains(t.token.as_str()), "{r}");
        assert_eq!(r.matches("_[redacted]").count(), 2, "{r}");
        assert!(r.ends_with("[redacted]."), "{r}");
        for kept in ["tok_abc", "svt_", "svt_zz_x", "role svt_short_x", ""] {
            assert_eq!(redact_tokens(kept), kept);
        }
        // A token behind something token-like is still found.
        let hidden = format!("svt_x_{}", *t.token);
        let r = redact_tokens(&hidden);
        assert!(!r.contains(t.token.as_str()), "{r}");
        assert!(r.ends_with("_[redacted]"), "{r}");
        // Nothing to redact: borrowed (a path is then logged as sent), and linear on a long run
        // of near-tokens.
        assert!(matches!(
            redact_tokens("/svt_svt_x"),
            std::borrow::Cow::Borrowed(_)
        ));
        let long = "svt_".repeat(100_000);
        assert!(matches!(
            redact_tokens(&long),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(loggable_path("/svt_%41"), "/svt_%41");
        // Percent-encoded in a path: redacted in its decoded form.
        let encoded = format!("/v1/auth/tokens/{}", t.token.replace('_', "%5F"));
        let shown = loggable_path(&encoded);
        assert_eq!(shown, format!("/v1/auth/tokens/svt_{id_hex}_[redacted]"));
        assert_eq!(loggable_path("/v1/pki/ca/ca_1%0A"), "/v1/pki/ca/ca_1%0A");
        let forged = format!("/x%0A{}", t.token.replace('_', "%5F"));
        assert!(!loggable_path(&forged).contains('\n'));
    }

    #[test]
    fn minted_tokens_round_trip_and_differ() {
        let a = mint();
        let b = mint();
        assert_ne!(*a.token, *b.token);
        assert_eq!(token_id(&a.token).as_deref(), Some(a.id.as_str()));
        assert!(hash_matches(&a.token, &a.hash));
        assert!(!hash_matches(&b.token, &a.hash));
        assert!(a.token.len() > 32 + 43);
        assert_eq!(token_id("svt_zz_x"), None);
        assert_eq!(token_id("Bearer x"), None);
    }

    #[test]
    fn deny_by_default() {
        let p = |s: &str| vec![s.to_owned()];
        assert!(allows(&p("admin"), Perm::TokenAdmin));
        assert!(allows(&p("ca-admin"), Perm::CaWrite));
        assert!(!allows(&p("ca-admin"), Perm::AuditRead));
        assert!(!allows(&p("auditor"), Perm::CaWrite));
        assert!(allows(&p("auditor"), Perm::AuditRead));
        assert!(!allows(&[], Perm::CaRead));
        assert!(!allows(&p("issuer:x"), Perm::CaRead));
        assert!(check_policies(&p("root")).is_err());
        assert!(check_policies(&p("issuer:svc-mtls")).is_ok());
        assert!(check_policies(&p("issuer:")).is_err());
        assert!(may_issue(&p("issuer:svc-mtls"), "svc-mtls"));
        assert!(!may_issue(&p("issuer:svc-mtls"), "other"));
        assert!(!may_issue(&p("ca-admin"), "svc-mtls"));
        assert!(!allows(&p("issuer:svc-mtls"), Perm::InventoryRead));
    }
}
