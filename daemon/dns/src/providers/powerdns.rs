//! `powerdns`: the PowerDNS Authoritative Server's HTTP API (`api=yes`, `webserver=yes`).
//!
//! The zone is the longest zone of `server_id` whose name ends the record's name
//! (`GET /api/v1/servers/{server_id}/zones`). `present` and `cleanup` read the TXT RRset at the
//! name (`GET …/zones/{zone_id}`), and write it back with the value added or removed
//! (`PATCH …/zones/{zone_id}`, `changetype` `REPLACE`, or `DELETE` when no value is left), so
//! other values at the name stay. The API key goes in `X-API-Key`.
//!
//! Config: `api_url` (the webserver's base URL, e.g. `http://127.0.0.1:8081`; a trailing
//! `/api/v1` is accepted), `api_key`, `server_id` (default `localhost`).

use std::fmt;

use serde_json::{json, Value};

use crate::config::{invalid, Fields};
use crate::http::{self, Redactor};
use crate::{DnsError, DnsProvider};

pub(crate) const SECRET_KEYS: &[&str] = &["api_key"];

const TTL: u64 = 60;
const NAME: &str = "powerdns";

pub(crate) struct PowerDns {
    base: String,
    server_id: String,
    api_key: String,
    client: reqwest::Client,
    redactor: Redactor,
    /// Read-modify-write of an RRset: one at a time through this provider.
    lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for PowerDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerDns")
            .field("api_url", &self.base)
            .field("server_id", &self.server_id)
            .field("api_key", &"[redacted]")
            .finish()
    }
}

pub(crate) fn parse(f: &mut Fields<'_>) -> Result<Box<dyn DnsProvider>, DnsError> {
    let base = f
        .opt_url("api_url")?
        .ok_or_else(|| invalid("api_url", "is required"))?;
    let base = base
        .strip_suffix("/api/v1")
        .unwrap_or(&base)
        .trim_end_matches('/')
        .to_string();
    let api_key = f.req_credential("api_key")?.to_string();
    let server_id = f.opt_str("server_id")?.unwrap_or("localhost").to_string();
    if server_id.contains('/') {
        return Err(invalid("server_id", "must not contain `/`"));
    }
    Ok(Box::new(PowerDns {
        base,
        server_id,
        redactor: Redactor::new([api_key.clone()]),
        api_key,
        client: http::client()?,
        lock: tokio::sync::Mutex::new(()),
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

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

impl PowerDns {
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, DnsError> {
        let mut url = reqwest::Url::parse(&self.base)
            .map_err(|e| DnsError::Provider(format!("{NAME}: bad api_url: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| DnsError::Provider(format!("{NAME}: bad api_url")))?
            .pop_if_empty()
            .extend(["api", "v1", "servers", &self.server_id])
            .extend(segments);
        Ok(url)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: Option<Value>,
    ) -> Result<Value, DnsError> {
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .header("X-API-Key", &self.api_key)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.redactor.transport(NAME, &e))?;
        let (status, bytes) = http::body(NAME, &self.redactor, resp).await?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| DnsError::Provider(format!("{NAME}: unreadable response: {e}")));
        }
        let text = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(DnsError::Provider(format!(
            "{NAME}: {method} {} answered {status}: {}",
            url.path(),
            self.redactor.clean(&text)
        )))
    }

    /// The id of the longest zone that holds `fqdn`.
    async fn zone_for(&self, fqdn: &str) -> Result<String, DnsError> {
        let zones = self
            .call(reqwest::Method::GET, self.url(&["zones"])?, None)
            .await?;
        let fq = format!(".{}", fqdn.trim_end_matches('.').to_ascii_lowercase());
        zones
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|z| {
                let name = z.get("name")?.as_str()?;
                let id = z.get("id")?.as_str()?;
                let n = format!(".{}", name.trim_end_matches('.').to_ascii_lowercase());
                fq.ends_with(&n).then(|| (n.len(), id.to_string()))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, id)| id)
            .ok_or_else(|| {
                DnsError::Provider(format!(
                    "{NAME}: no zone on server `{}` holds {fqdn}",
                    self.server_id
                ))
            })
    }

    /// The TXT values at `fqdn` in zone `zone_id`.
    async fn values(&self, zone_id: &str, fqdn: &str) -> Result<Vec<String>, DnsError> {
        let zone = self
            .call(reqwest::Method::GET, self.url(&["zones", zone_id])?, None)
            .await?;
        Ok(zone
            .get("rrsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|r| {
                r.get("type").and_then(Value::as_str) == Some("TXT")
                    && r.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| same_name(n, fqdn))
            })
            .flat_map(|r| {
                r.get("records")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|rec| rec.get("content").and_then(Value::as_str).map(unquoted))
            .collect())
    }

    async fn write(&self, zone_id: &str, fqdn: &str, values: &[String]) -> Result<(), DnsError> {
        let name = format!("{}.", fqdn.trim_end_matches('.'));
        let rrset = if values.is_empty() {
            json!({"name": name, "type": "TXT", "changetype": "DELETE"})
        } else {
            let records: Vec<Value> = values
                .iter()
                .map(|v| json!({"content": quoted(v), "disabled": false}))
                .collect();
            json!({"name": name, "type": "TXT", "ttl": TTL, "changetype": "REPLACE", "records": records})
        };
        self.call(
            reqwest::Method::PATCH,
            self.url(&["zones", zone_id])?,
            Some(json!({ "rrsets": [rrset] })),
        )
        .await
        .map(drop)
    }
}

#[async_trait::async_trait]
impl DnsProvider for PowerDns {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let _guard = self.lock.lock().await;
        let zone_id = self.zone_for(fqdn).await?;
        let mut values = self.values(&zone_id, fqdn).await?;
        if values.iter().any(|v| v == value) {
            return Ok(());
        }
        values.push(value.to_string());
        self.write(&zone_id, fqdn, &values).await
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let _guard = self.lock.lock().await;
        let zone_id = self.zone_for(fqdn).await?;
        let values = self.values(&zone_id, fqdn).await?;
        if !values.iter().any(|v| v == value) {
            return Ok(());
        }
        let rest: Vec<String> = values.into_iter().filter(|v| v != value).collect();
        self.write(&zone_id, fqdn, &rest).await
    }
}
