//! `google`: Google Cloud DNS API v1 with a service account.
//!
//! Authentication (Google's OAuth 2.0 for server-to-server applications): a JWT with the
//! `ndev.clouddns.readwrite` scope is signed RS256 with the service account's private key and
//! exchanged at the key's `token_uri` for an access token (`grant_type`
//! `urn:ietf:params:oauth:grant-type:jwt-bearer`), which is reused until shortly before it
//! expires.
//!
//! The managed zone is the one whose `dnsName` is the longest parent of the record's name
//! (`GET /dns/v1/projects/{project}/managedZones?dnsName=…`). `present` and `cleanup` read the
//! TXT RRset at the name (`GET …/managedZones/{zone}/rrsets?name=…&type=TXT`) and replace it in
//! one change (`POST …/managedZones/{zone}/changes` with the old set in `deletions` and the new
//! one in `additions`), so other values at the name stay; Cloud DNS refuses the change if the
//! set changed in between.
//!
//! Config: `project`, `service_account_json` (the key file's JSON, as a string or an object),
//! `api_base_url` (optional, default `https://dns.googleapis.com`).

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::{invalid, Fields};
use crate::http::{self, Redactor};
use crate::{DnsError, DnsProvider};

pub(crate) const SECRET_KEYS: &[&str] = &["service_account_json"];

const NAME: &str = "google";
const DEFAULT_BASE: &str = "https://dns.googleapis.com";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const SCOPE: &str = "https://www.googleapis.com/auth/ndev.clouddns.readwrite";
const TTL: u64 = 60;
/// Lifetime asked for the JWT (Google's maximum is one hour).
const JWT_LIFETIME: u64 = 3600;

pub(crate) struct Google {
    project: String,
    base: String,
    client_email: String,
    key_id: Option<String>,
    token_uri: String,
    signer: SigningKey<Sha256>,
    client: reqwest::Client,
    redactor: Redactor,
    /// The access token and when to stop using it.
    token: tokio::sync::Mutex<Option<(zeroize::Zeroizing<String>, Instant)>>,
    /// Read-modify-write of an RRset: one at a time through this provider.
    lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Google {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Google")
            .field("project", &self.project)
            .field("api_base_url", &self.base)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("service_account_json", &"[redacted]")
            .finish()
    }
}

const SA: &str = "service_account_json";

pub(crate) fn parse(f: &mut Fields<'_>) -> Result<Box<dyn DnsProvider>, DnsError> {
    let project = f.req_str("project")?.trim().to_string();
    if !project
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ':' || c == '.')
    {
        return Err(invalid("project", "must be a Google Cloud project id"));
    }
    let sa: Value = match f.opt_value(SA) {
        None => return Err(invalid(SA, "is required")),
        Some(Value::String(s)) => serde_json::from_str(s)
            .map_err(|_| invalid(SA, "must be the service account key file's JSON"))?,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(invalid(SA, "must be the service account key file's JSON")),
    };
    let field = |k: &str| sa.get(k).and_then(Value::as_str).map(str::to_string);
    if field("type").as_deref() != Some("service_account") {
        return Err(invalid(SA, "`type` must be \"service_account\""));
    }
    let client_email =
        field("client_email").ok_or_else(|| invalid(SA, "`client_email` is missing"))?;
    let pem = zeroize::Zeroizing::new(
        field("private_key").ok_or_else(|| invalid(SA, "`private_key` is missing"))?,
    );
    let key = {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;
        RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .map_err(|_| invalid(SA, "`private_key` is not an RSA private key in PEM"))?
    };
    let token_uri = field("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
    match reqwest::Url::parse(&token_uri) {
        Ok(u) if matches!(u.scheme(), "https" | "http") => {}
        _ => return Err(invalid(SA, "`token_uri` must be an https:// URL")),
    }
    let base = f
        .opt_url("api_base_url")?
        .unwrap_or_else(|| DEFAULT_BASE.to_string());
    Ok(Box::new(Google {
        project,
        base,
        client_email,
        key_id: field("private_key_id"),
        token_uri,
        signer: SigningKey::<Sha256>::new(key),
        client: http::client()?,
        redactor: Redactor::new([pem.to_string()]),
        token: tokio::sync::Mutex::new(None),
        lock: tokio::sync::Mutex::new(()),
    }))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn unquoted(content: &str) -> String {
    let inner = content
        .strip_prefix('"')
        .and_then(|c| c.strip_suffix('"'))
        .unwrap_or(content);
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// A Google API error body (`{"error":{"code","message","status"}}` or OAuth's
/// `{"error","error_description"}`) as one line.
fn google_error(bytes: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(bytes).ok();
    match v.as_ref().and_then(|v| v.get("error")) {
        Some(Value::Object(e)) => format!(
            "{} {}",
            e.get("status").and_then(Value::as_str).unwrap_or(""),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        ),
        Some(Value::String(e)) => format!(
            "{e}: {}",
            v.as_ref()
                .and_then(|v| v.get("error_description"))
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

impl Google {
    /// The signed JWT assertion for the token exchange.
    fn assertion(&self) -> Result<String, DnsError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.clone().into();
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + JWT_LIFETIME,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        // PKCS#1 v1.5 signatures are deterministic; try_sign does not panic.
        let sig = self
            .signer
            .try_sign(signing_input.as_bytes())
            .map_err(|_| DnsError::Provider(format!("{NAME}: cannot sign the token request")))?;
        Ok(format!("{signing_input}.{}", b64url(&sig.to_bytes())))
    }

    async fn access_token(&self) -> Result<zeroize::Zeroizing<String>, DnsError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let assertion = zeroize::Zeroizing::new(self.assertion()?);
        let resp = self
            .client
            .post(&self.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| self.redactor.transport(NAME, &e))?;
        let (status, bytes) = http::body(NAME, &self.redactor, resp).await?;
        if !status.is_success() {
            return Err(DnsError::Provider(format!(
                "{NAME}: the token endpoint answered {status}: {}",
                self.redactor.clean(&google_error(&bytes))
            )));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| DnsError::Provider(format!("{NAME}: unreadable token response")))?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                DnsError::Provider(format!("{NAME}: no access_token in the token response"))
            })?;
        let lifetime = v.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
        let token = zeroize::Zeroizing::new(token.to_string());
        *cached = Some((
            token.clone(),
            Instant::now() + Duration::from_secs(lifetime.saturating_sub(60)),
        ));
        Ok(token)
    }

    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, DnsError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| DnsError::Provider(format!("{NAME}: bad api_base_url: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| DnsError::Provider(format!("{NAME}: bad api_base_url")))?
            .pop_if_empty()
            .extend(["dns", "v1", "projects", &self.project])
            .extend(segments);
        Ok(url)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Value>,
    ) -> Result<Value, DnsError> {
        let token = self.access_token().await?;
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .bearer_auth(token.as_str());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.redactor.transport(NAME, &e))?;
        let (status, bytes) = http::body(NAME, &self.redactor, resp).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|_| DnsError::Provider(format!("{NAME}: unreadable response")));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            // A revoked token: get a new one next time.
            *self.token.lock().await = None;
        }
        Err(DnsError::Provider(format!(
            "{NAME}: {method} {} answered {status}: {}",
            url.path(),
            self.redactor.clean(&google_error(&bytes))
        )))
    }

    /// The managed zone holding `fqdn` (the longest `dnsName`).
    async fn zone(&self, fqdn: &str) -> Result<String, DnsError> {
        let name = fqdn.trim_end_matches('.');
        let labels: Vec<&str> = name.split('.').collect();
        for i in 0..labels.len().saturating_sub(1) {
            let candidate = format!("{}.", labels[i..].join("."));
            let mut url = self.url(&["managedZones"])?;
            url.query_pairs_mut().append_pair("dnsName", &candidate);
            let v = self.call(reqwest::Method::GET, url, None).await?;
            let found = v
                .get("managedZones")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|z| {
                    z.get("dnsName")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.eq_ignore_ascii_case(&candidate))
                        && z.get("visibility").and_then(Value::as_str) != Some("private")
                })
                .and_then(|z| z.get("name").and_then(Value::as_str));
            if let Some(zone) = found {
                return Ok(zone.to_string());
            }
        }
        Err(DnsError::Provider(format!(
            "{NAME}: no managed zone of project `{}` holds {name}",
            self.project
        )))
    }

    /// The TXT RRset at `fqdn`, as Cloud DNS returned it.
    async fn rrset(&self, zone: &str, fqdn: &str) -> Result<Option<Value>, DnsError> {
        let mut url = self.url(&["managedZones", zone, "rrsets"])?;
        url.query_pairs_mut()
            .append_pair("name", fqdn)
            .append_pair("type", "TXT");
        let v = self.call(reqwest::Method::GET, url, None).await?;
        Ok(v.get("rrsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| {
                r.get("type").and_then(Value::as_str) == Some("TXT")
                    && r.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(fqdn))
            })
            .cloned())
    }

    /// Replaces `old` (if any) by an RRset holding `values` (none: deletion only).
    async fn replace(
        &self,
        zone: &str,
        fqdn: &str,
        old: Option<Value>,
        values: Vec<String>,
    ) -> Result<(), DnsError> {
        let mut change = json!({"kind": "dns#change"});
        if let Some(old) = old {
            change["deletions"] = json!([{
                "kind": "dns#resourceRecordSet",
                "name": old.get("name").cloned().unwrap_or(Value::Null),
                "type": "TXT",
                "ttl": old.get("ttl").cloned().unwrap_or(json!(TTL)),
                "rrdatas": old.get("rrdatas").cloned().unwrap_or(json!([])),
            }]);
        }
        if !values.is_empty() {
            change["additions"] = json!([{
                "kind": "dns#resourceRecordSet",
                "name": fqdn,
                "type": "TXT",
                "ttl": TTL,
                "rrdatas": values,
            }]);
        }
        self.call(
            reqwest::Method::POST,
            self.url(&["managedZones", zone, "changes"])?,
            Some(change),
        )
        .await
        .map(drop)
    }
}

fn rrdatas(set: Option<&Value>) -> Vec<String> {
    set.and_then(|s| s.get("rrdatas"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

#[async_trait::async_trait]
impl DnsProvider for Google {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let fqdn = format!("{}.", fqdn.trim_end_matches('.'));
        let _guard = self.lock.lock().await;
        let zone = self.zone(&fqdn).await?;
        let old = self.rrset(&zone, &fqdn).await?;
        let mut values = rrdatas(old.as_ref());
        if values.iter().any(|v| unquoted(v) == value) {
            return Ok(());
        }
        values.push(quoted(value));
        self.replace(&zone, &fqdn, old, values).await
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let fqdn = format!("{}.", fqdn.trim_end_matches('.'));
        let _guard = self.lock.lock().await;
        let zone = self.zone(&fqdn).await?;
        let Some(old) = self.rrset(&zone, &fqdn).await? else {
            return Ok(());
        };
        let values = rrdatas(Some(&old));
        if !values.iter().any(|v| unquoted(v) == value) {
            return Ok(());
        }
        let rest: Vec<String> = values
            .into_iter()
            .filter(|v| unquoted(v) != value)
            .collect();
        self.replace(&zone, &fqdn, Some(old), rest).await
    }
}
