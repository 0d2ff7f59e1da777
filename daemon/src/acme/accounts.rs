//! ACME accounts: registered at the CA when created, deactivated at the CA when deleted. The
//! instant-acme credentials (account URL and private key) are stored encrypted.

use super::{account_builder, api_error, check_name, nonce_retry, seal_text, unseal_text};
use crate::app::{App, Caller};
use crate::error::ApiError;
use base64::Engine;
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use scaivault_core::{ids, time_util};
use scaivault_store::{AcmeAccountRow, Page};
use zeroize::Zeroizing;

/// What `POST /v1/pki/acme/accounts` asks for.
#[derive(Debug)]
pub struct NewAccountInput {
    /// Unique per tenant.
    pub name: String,
    /// `letsencrypt`, `zerossl`, `buypass`, `google`, `custom`.
    pub provider: String,
    /// `production` (default) or `staging`.
    pub environment: Option<String>,
    /// Contact e-mail.
    pub email: Option<String>,
    /// Directory override (required for `custom`).
    pub directory_url: Option<String>,
    /// External account binding key id.
    pub eab_kid: Option<String>,
    /// External account binding HMAC key (base64url).
    pub eab_hmac_key: Option<Zeroizing<String>>,
    /// Roots trusted for the directory's HTTPS.
    pub directory_ca_pem: Option<String>,
}

/// The directory URL of a well-known provider.
fn known_directory(provider: &str, env: &str) -> Result<Option<&'static str>, ApiError> {
    let url = match (provider, env) {
        ("letsencrypt", "production") => "https://acme-v02.api.letsencrypt.org/directory",
        ("letsencrypt", "staging") => "https://acme-staging-v02.api.letsencrypt.org/directory",
        ("zerossl", "production") => "https://acme.zerossl.com/v2/DV90",
        ("buypass", "production") => "https://api.buypass.com/acme/directory",
        ("buypass", "staging") => "https://api.test4.buypass.no/acme/directory",
        ("google", "production") => "https://dv.acme-v02.api.pki.goog/directory",
        ("google", "staging") => "https://dv.acme-v02.test-api.pki.goog/directory",
        ("custom", _) => return Ok(None),
        ("zerossl", "staging") => {
            return Err(ApiError::bad_request(
                "invalid_environment",
                "zerossl has no staging directory; give directory_url",
            ))
        }
        (p, _) => {
            return Err(ApiError::bad_request(
                "invalid_provider",
                format!(
                    "provider {p:?} is not one of letsencrypt, zerossl, buypass, google, custom"
                ),
            ))
        }
    };
    Ok(Some(url))
}

/// A `directory_url` as an error shows it: not at all when it may hold a credential (user
/// information, a query or a fragment), whatever else is wrong with it.
fn shown_url(u: &str) -> String {
    if u.contains(['@', '?', '#']) {
        "(not shown: it holds user information, a query or a fragment)".to_owned()
    } else {
        format!("{u:?}")
    }
}

/// An `https://` URL the ACME client can use: it parses as a request target (the client takes a
/// URL that does not for a bug of its own, and panics), names a host, and carries no user name or
/// password (it is shown in every answer about the account).
fn check_directory_url(u: &str) -> Result<(), ApiError> {
    let shown = shown_url(u);
    let bad = |why: &str| {
        ApiError::bad_request(
            "invalid_directory_url",
            format!("directory_url {shown} {why}"),
        )
    };
    let parsed = url::Url::parse(u).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Not echoed: it holds a secret.
        return Err(ApiError::bad_request(
            "invalid_directory_url",
            "directory_url carries a user name or password; credentials go in eab_kid and \
             eab_hmac_key",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        // Not echoed either: a query may carry a token, and RFC 8555 directories have none.
        return Err(ApiError::bad_request(
            "invalid_directory_url",
            "directory_url carries a query or fragment; an ACME directory URL has neither, and \
             credentials go in eab_kid and eab_hmac_key",
        ));
    }
    if u.parse::<http::Uri>().is_err() {
        return Err(bad("is not a valid request target"));
    }
    Ok(())
}

fn not_found() -> ApiError {
    ApiError::not_found("acme_account_not_found", "ACME account")
}

struct Checked {
    environment: String,
    directory_url: String,
    email: Option<String>,
    eab: Option<(String, Zeroizing<Vec<u8>>)>,
}

fn check(input: &NewAccountInput) -> Result<Checked, ApiError> {
    check_name(&input.name)?;
    let environment = input
        .environment
        .clone()
        .unwrap_or_else(|| "production".into());
    if environment != "production" && environment != "staging" {
        return Err(ApiError::bad_request(
            "invalid_environment",
            format!("environment {environment:?} is not production or staging"),
        ));
    }
    // A directory_url overrides the provider's own: zerossl's missing staging directory is no
    // error then (the refusal says to give one).
    let known = match known_directory(&input.provider, &environment) {
        Err(e) if e.code == "invalid_environment" && input.directory_url.is_some() => None,
        k => k?,
    };
    let directory_url = match (&input.directory_url, known) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.to_owned(),
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing_directory_url",
                "provider custom needs directory_url",
            ))
        }
    };
    if !directory_url.starts_with("https://")
        || directory_url.len() > 2048
        || directory_url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ApiError::bad_request(
            "invalid_directory_url",
            format!(
                "directory_url {} must be an https:// URL",
                shown_url(&directory_url)
            ),
        ));
    }
    check_directory_url(&directory_url)?;
    if let Some(e) = &input.email {
        let ok = e.len() <= 254
            && e.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
            && !e
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == ',');
        if !ok {
            return Err(ApiError::bad_request(
                "invalid_email",
                format!("email {e:?} is not an e-mail address"),
            ));
        }
    }
    let eab = match (&input.eab_kid, &input.eab_hmac_key) {
        (None, None) => None,
        (Some(kid), Some(key)) => {
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let raw = engine.decode(key.trim_end_matches('=')).map_err(|_| {
                ApiError::bad_request("invalid_eab", "eab_hmac_key is not base64url")
            })?;
            if kid.trim().is_empty() || raw.is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_eab",
                    "eab_kid and eab_hmac_key must not be empty",
                ));
            }
            Some((kid.clone(), Zeroizing::new(raw)))
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_eab",
                "eab_kid and eab_hmac_key go together",
            ))
        }
    };
    Ok(Checked {
        environment,
        directory_url,
        email: input.email.clone(),
        eab,
    })
}

/// Registers an account at the CA and stores it.
///
/// # Errors
/// `400` for bad input (`invalid_name`, `invalid_provider`, `invalid_environment`,
/// `missing_directory_url`, `invalid_directory_url`, `invalid_email`, `invalid_eab`,
/// `invalid_directory_ca`); `409 acme_account_name_taken`; the CA's refusal as `400
/// acme_ca_rejected` / `502 acme_ca_error` / `502 acme_ca_unreachable` with its detail.
pub async fn create(
    app: &App,
    caller: &Caller,
    input: NewAccountInput,
) -> Result<AcmeAccountRow, ApiError> {
    let c = check(&input)?;
    let directory_ca_pem = input
        .directory_ca_pem
        .as_deref()
        .map(super::client::normalize_directory_ca)
        .transpose()?;
    let (t, n) = (caller.tenant_id.clone(), input.name.clone());
    if app
        .db(move |s| Ok(s.read(|tx| tx.acme_account_name_taken(&t, &n))?))
        .await?
    {
        return Err(name_taken(&input.name));
    }
    let contact = c.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = c
        .eab
        .as_ref()
        .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    // `create` consumes its builder, so each badNonce retry starts from a fresh one.
    let mut attempt = 0u32;
    let (account, creds) = loop {
        let builder = account_builder(directory_ca_pem.as_deref())?;
        match builder
            .create(&new, c.directory_url.clone(), eab.as_ref())
            .await
        {
            Ok(v) => break v,
            Err(e) if super::is_bad_nonce(&e) && attempt < 8 => attempt += 1,
            Err(e) => return Err(api_error(&e)),
        }
    };
    let json = Zeroizing::new(serde_json::to_string(&creds).map_err(ApiError::internal)?);
    let (creds_wrapped, creds_sealed) = seal_text(app, &json).await?;
    let row = AcmeAccountRow {
        id: ids::new_id("acme"),
        tenant_id: caller.tenant_id.clone(),
        name: input.name.clone(),
        provider: input.provider.clone(),
        environment: c.environment,
        directory_url: c.directory_url,
        email: c.email,
        directory_ca_pem,
        account_url: account.id().to_owned(),
        eab_kid: input.eab_kid.clone(),
        status: "valid".into(),
        creds_wrapped,
        creds_sealed,
        created_at: time_util::rfc3339(time_util::now()),
        deactivated_at: None,
    };
    let rec = caller.record("acme.account.create", Some(&row.id), "success");
    let stored = row.clone();
    app.db(move |s| {
        s.write(|tx| {
            tx.insert_acme_account(&stored)?;
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::Conflict(_) => name_taken(&stored.name),
            other => ApiError::from(other),
        })
    })
    .await?;
    Ok(row)
}

fn name_taken(name: &str) -> ApiError {
    ApiError::conflict(
        "acme_account_name_taken",
        format!("an ACME account named {name:?} exists"),
    )
}

/// The tenant's account `id`.
///
/// # Errors
/// `404 acme_account_not_found`.
pub async fn get(app: &App, tenant_id: &str, id: &str) -> Result<AcmeAccountRow, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| tx.get_acme_account(&t, &i))
            .map_err(|e| match e {
                scaivault_store::Error::NotFound => not_found(),
                other => ApiError::from(other),
            })
    })
    .await
}

/// A page of the tenant's accounts.
///
/// # Errors
/// `400 invalid_cursor`.
pub async fn list(
    app: &App,
    tenant_id: &str,
    cursor: Option<String>,
    limit: usize,
) -> Result<Page<AcmeAccountRow>, ApiError> {
    let t = tenant_id.to_owned();
    app.db(move |s| {
        s.read(|tx| tx.list_acme_accounts(&t, cursor.as_deref(), limit))
            .map_err(cursor_error)
    })
    .await
}

/// Maps a store error of a list call (a bad cursor is the caller's fault).
pub fn cursor_error(e: scaivault_store::Error) -> ApiError {
    match e {
        scaivault_store::Error::Conflict(_) => {
            ApiError::bad_request("invalid_cursor", "cursor is not valid")
        }
        other => ApiError::from(other),
    }
}

/// The live instant-acme account for a stored row.
///
/// # Errors
/// Decryption failures; the CA's directory not answering.
pub async fn open(app: &App, row: &AcmeAccountRow) -> Result<Account, instant_acme::Error> {
    let json = unseal_text(app, row.creds_wrapped.clone(), row.creds_sealed.clone())
        .await
        .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
    let creds: AccountCredentials = serde_json::from_str(&json)?;
    let builder = account_builder(row.directory_ca_pem.as_deref())
        .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
    builder.from_credentials(creds).await
}

/// Deactivates the tenant's account `id` at the CA, then marks it deactivated here.
///
/// # Errors
/// `404 acme_account_not_found`; `409 acme_account_deactivated`; the CA's refusal.
pub async fn deactivate(app: &App, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let row = get(app, &caller.tenant_id, id).await?;
    if row.status == "deactivated" {
        return Err(ApiError::conflict(
            "acme_account_deactivated",
            format!("ACME account {id} is already deactivated"),
        ));
    }
    let account = open(app, &row).await.map_err(|e| api_error(&e))?;
    nonce_retry!(account.clone().deactivate()).map_err(|e| api_error(&e))?;
    let mut rec = caller.record("acme.account.deactivate", Some(id), "success");
    let (t, i) = (caller.tenant_id.clone(), id.to_owned());
    app.db(move |s| {
        s.write(|tx| {
            let stopped =
                tx.deactivate_acme_account(&t, &i, &time_util::rfc3339(time_util::now()))?;
            if stopped > 0 {
                rec.detail = Some(format!("renewals stopped: {stopped} managed certificates"));
            }
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::Conflict(what) => {
                ApiError::conflict("acme_account_deactivated", what)
            }
            other => ApiError::from(other),
        })
    })
    .await?;
    Ok(())
}
