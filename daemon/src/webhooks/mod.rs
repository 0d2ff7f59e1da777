//! Webhooks: a tenant's events POSTed to a URL, signed with HMAC-SHA256 (docs/WEBHOOKS.md).
//!
//! Invariants:
//! - The secret is kept only encrypted under the token's key-encryption key ([`KEK_LABEL`], the
//!   one that protects stored leaf keys); it is never returned, logged or audited.
//! - A webhook sees the events recorded after its creation, in order. The issuance path does no
//!   webhook work: the worker ([`worker`]) reads the events table by sequence number.
//!
//! Non-goals: per-URL rate limits, an outbound proxy, blocking private addresses (webhooks are
//! `admin`-only; the receiver is the operator's choice).

pub mod http;
pub mod worker;

use crate::app::{App, Caller};
use crate::error::ApiError;
use crate::issue::KEK_LABEL;
use scaivault_core::{ids, time_util};
use scaivault_store::{Page, WebhookDeliveryRow, WebhookRow};
use zeroize::Zeroizing;

/// Event types a webhook may name (those the daemon records, and those of API.md's feed).
pub const EVENT_TYPES: &[&str] = &[
    "certificate.issued",
    "certificate.revoked",
    "certificate.renewed",
    "certificate.renewal_failed",
    "certificate.expiring",
    "crl.generated",
    "csr.imported",
    "csr.approved",
    "csr.rejected",
    "csr.signed",
];

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET: usize = 16;
/// Longest accepted secret, in bytes.
pub const MAX_SECRET: usize = 512;
/// Longest accepted URL, in bytes.
pub const MAX_URL: usize = 2048;
/// Most patterns in one webhook's `events`.
pub const MAX_PATTERNS: usize = 32;

fn not_found() -> ApiError {
    ApiError::not_found("webhook_not_found", "webhook")
}

/// Whether `pattern` (an event type, or a prefix ending in `*`) selects `kind`.
pub fn matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Whether `p` is a known event type, `*`, or `<prefix>.*` where the prefix selects at least one
/// known type (webhook `events` and the feed's `?type=`).
pub fn is_pattern(p: &str) -> bool {
    match p.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => {
            prefix.ends_with('.')
                && !prefix.contains('*')
                && EVENT_TYPES.iter().any(|t| t.starts_with(prefix))
        }
        None => EVENT_TYPES.contains(&p),
    }
}

/// Checks `events`: 1..=32 entries, each a known type, `*`, or `<prefix>.*` where the prefix
/// selects at least one known type.
///
/// # Errors
/// `400 invalid_events`.
pub fn check_events(events: &[String]) -> Result<(), ApiError> {
    if events.is_empty() || events.len() > MAX_PATTERNS {
        return Err(ApiError::bad_request(
            "invalid_events",
            format!("events must list 1 to {MAX_PATTERNS} event types or patterns"),
        ));
    }
    for e in events {
        if !is_pattern(e) {
            return Err(ApiError::bad_request(
                "invalid_events",
                format!(
                    "{e:?} is not an event type or a pattern such as \"certificate.*\" or \"*\" \
                     (types: {})",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the URL: `http` or `https`, a host, no user name or password, no fragment.
///
/// # Errors
/// `400 invalid_url` (the detail never repeats the URL: it may carry a credential).
pub fn check_url(text: &str) -> Result<(), ApiError> {
    let bad = |why: &str| ApiError::bad_request("invalid_url", format!("url {why}"));
    if text.len() > MAX_URL {
        return Err(bad(&format!("must be at most {MAX_URL} bytes")));
    }
    // The parser would drop or encode these, and the URL shown would not be the one used
    // (a zero-width space in the path was sent as `%E2%80%8B`, a non-ASCII host as its A-label).
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(
            "must not contain whitespace or control characters (percent-encode them)",
        ));
    }
    if !text.is_ascii() {
        return Err(bad(
            "must be ASCII: percent-encode other characters, give a host as its A-label (xn--…)",
        ));
    }
    let bytes = text.as_bytes();
    let broken_escape = bytes.iter().enumerate().any(|(i, b)| {
        *b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if broken_escape {
        return Err(bad("has a '%' that is not followed by two hex digits"));
    }
    let url = url::Url::parse(text).map_err(|e| bad(&format!("does not parse: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be http or https"));
    }
    // Written out: `http:p`, `http:/p` and `http:///p` parse (WHATWG) as host `p`, which is not
    // what anyone meant to type.
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    let after = if lower.starts_with("https://") {
        &text[8..]
    } else if lower.starts_with("http://") {
        &text[7..]
    } else {
        ""
    };
    if url.host().is_none() || after.is_empty() || after.starts_with(['/', '\\']) {
        return Err(bad("must name a host (http://host/…)"));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || after.contains('@') && {
            let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
            authority.contains('@')
        }
    {
        return Err(bad("must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(bad("must not have a fragment"));
    }
    if url.port() == Some(0) {
        return Err(bad("must not name port 0"));
    }
    Ok(())
}

/// Checks the secret's length.
///
/// # Errors
/// `400 invalid_secret` (the detail never repeats the secret).
pub fn check_secret(secret: &str) -> Result<(), ApiError> {
    if !(MIN_SECRET..=MAX_SECRET).contains(&secret.len()) {
        return Err(ApiError::bad_request(
            "invalid_secret",
            format!("secret must be {MIN_SECRET} to {MAX_SECRET} bytes"),
        ));
    }
    Ok(())
}

/// The stored patterns of a webhook.
///
/// # Errors
/// Internal when the stored JSON is damaged.
pub fn patterns(row: &WebhookRow) -> Result<Vec<String>, ApiError> {
    serde_json::from_str(&row.events).map_err(ApiError::internal)
}

/// Creates a webhook for the caller's tenant.
///
/// # Errors
/// `400 invalid_url`, `invalid_events`, `invalid_secret`; token and store failures.
pub async fn create(
    app: &App,
    caller: &Caller,
    url: String,
    events: Vec<String>,
    secret: Zeroizing<String>,
) -> Result<WebhookRow, ApiError> {
    check_url(&url)?;
    check_events(&events)?;
    check_secret(&secret)?;
    let token = app.token.clone();
    let secret_enc = app
        .blocking(move || {
            token.ensure_kek(KEK_LABEL)?;
            Ok(token.kek_encrypt(KEK_LABEL, secret.as_bytes())?)
        })
        .await?;
    let row = WebhookRow {
        id: ids::new_id("wh"),
        tenant_id: caller.tenant_id.clone(),
        url,
        events: serde_json::to_string(&events).map_err(ApiError::internal)?,
        secret_enc,
        created_at: time_util::rfc3339(time_util::now()),
        cursor: 0,
    };
    let rec = caller.record("webhook.create", Some(&row.id), "success");
    let stored = row.clone();
    app.db(move |s| {
        s.write(|tx| {
            tx.insert_webhook(&stored)?;
            tx.append_audit(&rec)
        })
        .map_err(ApiError::from)
    })
    .await?;
    tracing::info!(webhook = %row.id, tenant = %row.tenant_id, "webhook created");
    Ok(row)
}

/// The tenant's webhook `id`.
///
/// # Errors
/// `404 webhook_not_found` (also another tenant's).
pub async fn get(app: &App, tenant_id: &str, id: &str) -> Result<WebhookRow, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| tx.get_webhook(&t, &i)).map_err(|e| match e {
            scaivault_store::Error::NotFound => not_found(),
            other => ApiError::from(other),
        })
    })
    .await
}

/// A page of the tenant's webhooks.
///
/// # Errors
/// `400 invalid_cursor`.
pub async fn list(
    app: &App,
    tenant_id: &str,
    cursor: Option<String>,
    limit: usize,
) -> Result<Page<WebhookRow>, ApiError> {
    let t = tenant_id.to_owned();
    app.db(move |s| {
        s.read(|tx| tx.list_webhooks(&t, cursor.as_deref(), limit))
            .map_err(|e| match e {
                scaivault_store::Error::Conflict(_) => {
                    ApiError::bad_request("invalid_cursor", "cursor is not valid")
                }
                other => ApiError::from(other),
            })
    })
    .await
}

/// Deletes the tenant's webhook `id` and its delivery records; no attempt starts after this.
///
/// # Errors
/// `404 webhook_not_found`.
pub async fn delete(app: &App, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let rec = caller.record("webhook.delete", Some(id), "success");
    let (t, i) = (caller.tenant_id.clone(), id.to_owned());
    app.db(move |s| {
        s.write(|tx| {
            tx.delete_webhook(&t, &i)?;
            tx.append_audit(&rec)?;
            Ok(())
        })
        .map_err(|e| match e {
            scaivault_store::Error::NotFound => not_found(),
            other => ApiError::from(other),
        })
    })
    .await?;
    tracing::info!(webhook = %id, "webhook deleted");
    Ok(())
}

/// A page of the webhook's deliveries, newest first (`cursor` from the previous page).
///
/// # Errors
/// `404 webhook_not_found`; `400 invalid_cursor`.
pub async fn deliveries(
    app: &App,
    tenant_id: &str,
    id: &str,
    cursor: Option<String>,
    limit: usize,
) -> Result<scaivault_store::Page<WebhookDeliveryRow>, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| {
            tx.get_webhook(&t, &i)?;
            tx.recent_deliveries(&i, cursor.as_deref(), limit)
        })
        .map_err(|e| match e {
            scaivault_store::Error::NotFound => not_found(),
            scaivault_store::Error::Conflict(_) => {
                ApiError::bad_request("invalid_cursor", "cursor is not valid")
            }
            other => ApiError::from(other),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_types_and_prefixes() {
        assert!(matches("*", "csr.signed"));
        assert!(matches("certificate.*", "certificate.revoked"));
        assert!(!matches("certificate.*", "crl.generated"));
        assert!(matches("certificate.issued", "certificate.issued"));
        assert!(!matches("certificate.issued", "certificate.issued2"));
    }

    #[test]
    fn events_urls_and_secrets_are_checked() {
        let ev = |v: &[&str]| check_events(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert!(ev(&["certificate.issued", "csr.*", "*"]).is_ok());
        for bad in [&[][..], &["certificate"], &["nope.*"], &["cert*"], &["a.b"]] {
            assert_eq!(ev(bad).unwrap_err().code, "invalid_events", "{bad:?}");
        }
        assert!(check_url("https://hooks.example/x?y=1").is_ok());
        assert!(check_url("http://127.0.0.1:8080/").is_ok());
        assert!(check_url("HTTPS://Hooks.example/").is_ok());
        assert!(check_url("http://xn--bcher-kva.example/a%20b%2F").is_ok());
        for bad in [
            "ftp://x/",
            "https://user:pw@h/",
            "https://user@h/",
            "not a url",
            "http://h/#f",
            "http:p",
            "http:/p/x",
            "http:///p",
            "https:\\\\h/",
            "http://127.0.0.1:18421/x\r\nX-Inj: 1",
            "http://h/x\u{0}y",
            "http://h/a b",
            "http://@127.0.0.1:18421/",
            "http://127.0.0.1:18520/\u{200b}",
            "http://bücher.example/",
            "http://h/%zz",
            "http://h/%4",
            "http://h/x%",
            "http://127.0.0.1:0/",
        ] {
            assert_eq!(check_url(bad).unwrap_err().code, "invalid_url", "{bad}");
        }
        assert!(check_secret("0123456789abcdef").is_ok());
        assert_eq!(check_secret("short").unwrap_err().code, "invalid_secret");
    }
}
