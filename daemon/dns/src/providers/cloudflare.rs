//! `cloudflare`: Cloudflare's API v4 `dns_records` with an API token (`Authorization: Bearer`).
//!
//! The zone is `zone_id`, or else looked up by name (`GET /zones?name=…`, from the longest
//! parent of the record's name down). `present` lists the TXT records at the name
//! (`GET /zones/{zone_id}/dns_records?type=TXT&name=…`) and creates one with the value unless it
//! is there (`POST /zones/{zone_id}/dns_records`); `cleanup` deletes the records holding exactly
//! that value (`DELETE /zones/{zone_id}/dns_records/{id}`). Other records at the name stay. TXT
//! content is sent as a quoted character-string, as the API asks.
//!
//! Config: `api_token` (needs Zone:Read and DNS:Edit on the zone), `zone_id` (optional),
//! `api_base_url` (optional, default `https://api.cloudflare.com/client/v4`).

use std::fmt;

use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::config::{invalid, Fields};
use crate::http::{self, Redactor};
use crate::{DnsError, DnsProvider};

pub(crate) const SECRET_KEYS: &[&str] = &["api_token"];

const NAME: &str = "cloudflare";
const DEFAULT_BASE: &str = "https://api.cloudflare.com/client/v4";
/// Cloudflare's smallest TTL for non-Enterprise zones is 60; 120 is what its own ACME docs use.
const TTL: u64 = 120;

pub(crate) struct Cloudflare {
    base: String,
    api_token: Zeroizing<String>,
    zone_id: Option<String>,
    client: reqwest::Client,
    redactor: Redactor,
}

impl fmt::Debug for Cloudflare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cloudflare")
            .field("api_base_url", &self.base)
            .field("zone_id", &self.zone_id)
            .field("api_token", &"[redacted]")
            .finish()
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn parse(f: &mut Fields<'_>) -> Result<Box<dyn DnsProvider>, DnsError> {
    let api_token = Zeroizing::new(f.req_str("api_token")?.trim().to_string());
    if api_token
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("api_token", "must not contain whitespace"));
    }
    let zone_id = f.opt_str("zone_id")?.map(|z| z.trim().to_string());
    if let Some(z) = &zone_id {
        if !is_id(z) {
            return Err(invalid("zone_id", "must be a Cloudflare zone id (hex)"));
        }
    }
    let base = f
        .opt_url("api_base_url")?
        .unwrap_or_else(|| DEFAULT_BASE.to_string());
    Ok(Box::new(Cloudflare {
        redactor: Redactor::new([api_token.to_string()]),
        api_token,
        zone_id,
        base,
        client: http::client()?,
    }))
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

impl Cloudflare {
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, DnsError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| DnsError::Provider(format!("{NAME}: bad api_base_url: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| DnsError::Provider(format!("{NAME}: bad api_base_url")))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One API call; returns the envelope's `result`.
    async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Value>,
    ) -> Result<Value, DnsError> {
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .bearer_auth(self.api_token.as_str());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.redactor.transport(NAME, &e))?;
        let (status, bytes) = http::body(NAME, &self.redactor, resp).await?;
        let envelope: Option<Value> = serde_json::from_slice(&bytes).ok();
        let success = envelope
            .as_ref()
            .and_then(|v| v.get("success"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if status.is_success() && success {
            return Ok(envelope
                .and_then(|mut v| v.get_mut("result").map(Value::take))
                .unwrap_or(Value::Null));
        }
        let detail = envelope
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .map(|errs| {
                errs.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e.get("code").map(Value::to_string).unwrap_or_default(),
                            e.get("message").and_then(Value::as_str).unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(DnsError::Provider(format!(
            "{NAME}: {method} {} answered {status}: {}",
            url.path(),
            self.redactor.clean(&detail)
        )))
    }

    async fn zone(&self, fqdn: &str) -> Result<String, DnsError> {
        if let Some(z) = &self.zone_id {
            return Ok(z.clone());
        }
        let name = fqdn.trim_end_matches('.');
        let labels: Vec<&str> = name.split('.').collect();
        // example.com and up; the record's own name first (a zone apex record).
        for i in 0..labels.len().saturating_sub(1) {
            let candidate = labels[i..].join(".");
            let mut url = self.url(&["zones"])?;
            url.query_pairs_mut().append_pair("name", &candidate);
            let result = self.call(reqwest::Method::GET, url, None).await?;
            let id = result
                .as_array()
                .into_iter()
                .flatten()
                .find(|z| {
                    z.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(&candidate))
                })
                .and_then(|z| z.get("id").and_then(Value::as_str));
            if let Some(id) = id {
                if !is_id(id) {
                    return Err(DnsError::Provider(format!("{NAME}: odd zone id `{id}`")));
                }
                return Ok(id.to_string());
            }
        }
        Err(DnsError::Provider(format!(
            "{NAME}: no zone of this token holds {name}"
        )))
    }

    /// The (id, value) of the TXT records at `fqdn`.
    async fn records(&self, zone: &str, fqdn: &str) -> Result<Vec<(String, String)>, DnsError> {
        let mut url = self.url(&["zones", zone, "dns_records"])?;
        url.query_pairs_mut()
            .append_pair("type", "TXT")
            .append_pair("name", fqdn.trim_end_matches('.'))
            .append_pair("per_page", "100");
        let result = self.call(reqwest::Method::GET, url, None).await?;
        Ok(result
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let id = r.get("id")?.as_str()?;
                let content = r.get("content")?.as_str()?;
                is_id(id).then(|| (id.to_string(), unquoted(content)))
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl DnsProvider for Cloudflare {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let zone = self.zone(fqdn).await?;
        if self
            .records(&zone, fqdn)
            .await?
            .iter()
            .any(|(_, v)| v == value)
        {
            return Ok(());
        }
        let body = json!({
            "type": "TXT",
            "name": fqdn.trim_end_matches('.'),
            "content": quoted(value),
            "ttl": TTL,
        });
        self.call(
            reqwest::Method::POST,
            self.url(&["zones", &zone, "dns_records"])?,
            Some(body),
        )
        .await
        .map(drop)
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let zone = self.zone(fqdn).await?;
        for (id, v) in self.records(&zone, fqdn).await? {
            if v == value {
                self.call(
                    reqwest::Method::DELETE,
                    self.url(&["zones", &zone, "dns_records", &id])?,
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }
}
