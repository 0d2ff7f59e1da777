//! `route53`: Amazon Route 53's REST API (version 2013-04-01).
//!
//! `present` and `cleanup` read the TXT record set at the name (`ListResourceRecordSets`,
//! `GET /2013-04-01/hostedzone/{id}/rrset?name=…&type=TXT&maxitems=1`) and write it back with the
//! value added or removed (`ChangeResourceRecordSets`, `UPSERT`, or `DELETE` of the exact set
//! when no value is left), so other values at the name stay.
//!
//! Requests are signed with AWS Signature Version 4 by the `aws-sigv4` crate — the signer the
//! AWS SDK for Rust itself uses, published on its own — rather than by the SDK's Route 53 client,
//! which would bring a second HTTP stack, retry and config-loading machinery for two API calls.
//!
//! Config: `access_key_id`, `secret_access_key`, `region`, `hosted_zone_id` (`Z…` or
//! `/hostedzone/Z…`), `endpoint_url` (optional; default `https://route53.amazonaws.com`, or the
//! China / GovCloud endpoint for a `cn-…` / `us-gov-…` region). Route 53 is a global service:
//! requests are signed for `us-east-1` (`cn-northwest-1` in China, `us-gov-west-1` in GovCloud)
//! whatever `region` says; with `endpoint_url` set they are signed for `region` itself.

use std::fmt;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use zeroize::Zeroizing;

use crate::config::{invalid, Fields};
use crate::http::{self, Redactor};
use crate::{DnsError, DnsProvider};

pub(crate) const SECRET_KEYS: &[&str] = &["secret_access_key"];

const TTL: u32 = 60;
const NAME: &str = "route53";
const XMLNS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

pub(crate) struct Route53 {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    region: String,
    signing_region: String,
    zone_id: String,
    endpoint: String,
    client: reqwest::Client,
    redactor: Redactor,
    /// Read-modify-write of a record set: one at a time through this provider.
    lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Route53 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route53")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field("region", &self.region)
            .field("hosted_zone_id", &self.zone_id)
            .field("endpoint_url", &self.endpoint)
            .finish()
    }
}

pub(crate) fn parse(f: &mut Fields<'_>) -> Result<Box<dyn DnsProvider>, DnsError> {
    let access_key_id = f.req_str("access_key_id")?.trim().to_string();
    if !access_key_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("access_key_id", "must be letters and digits"));
    }
    let secret_access_key = Zeroizing::new(f.req_credential("secret_access_key")?.to_string());
    let region = f.req_str("region")?.trim().to_string();
    if !region
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(
            "region",
            "must be an AWS region name such as us-east-1",
        ));
    }
    let zone = f.req_str("hosted_zone_id")?.trim();
    let zone_id = zone
        .strip_prefix("/hostedzone/")
        .unwrap_or(zone)
        .to_string();
    if zone_id.is_empty() || !zone_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(
            "hosted_zone_id",
            "must be a hosted zone id such as Z0123456789ABC",
        ));
    }
    let (endpoint, signing_region) = match f.opt_url("endpoint_url")? {
        Some(url) => (url, region.clone()),
        None if region.starts_with("cn-") => (
            "https://route53.amazonaws.com.cn".to_string(),
            "cn-northwest-1".to_string(),
        ),
        None if region.starts_with("us-gov-") => (
            "https://route53.us-gov.amazonaws.com".to_string(),
            "us-gov-west-1".to_string(),
        ),
        None => (
            "https://route53.amazonaws.com".to_string(),
            "us-east-1".to_string(),
        ),
    };
    Ok(Box::new(Route53 {
        redactor: Redactor::new([secret_access_key.to_string()]),
        access_key_id,
        secret_access_key,
        region,
        signing_region,
        zone_id,
        endpoint,
        client: http::client()?,
        lock: tokio::sync::Mutex::new(()),
    }))
}

/// One TXT record set as Route 53 returns it.
#[derive(Debug, Default, Clone)]
struct RecordSet {
    name: String,
    rtype: String,
    ttl: Option<u32>,
    /// The values as Route 53 holds them (quoted character-strings).
    values: Vec<String>,
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A Route 53 TXT value (`"a" "b"`) as one string.
fn unquoted(value: &str) -> String {
    let mut out = String::new();
    let mut in_quotes = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            '\\' if in_quotes => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c if in_quotes => out.push(c),
            _ => {}
        }
    }
    if !value.contains('"') {
        return value.to_string();
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The text leaves of an XML document as (`/`-joined path of local names, text).
fn xml_leaves(xml: &str) -> Result<Vec<(String, String)>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut out = Vec::new();
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
                    text.push(c);
                } else {
                    match r.decode().map_err(|e| e.to_string())?.as_ref() {
                        "amp" => text.push('&'),
                        "lt" => text.push('<'),
                        "gt" => text.push('>'),
                        "quot" => text.push('"'),
                        "apos" => text.push('\''),
                        other => return Err(format!("unknown entity &{other};")),
                    }
                }
            }
            Event::End(_) => {
                out.push((path.join("/"), std::mem::take(&mut text)));
                path.pop();
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}

/// The record sets of a `ListResourceRecordSetsResponse`.
fn record_sets(xml: &str) -> Result<Vec<RecordSet>, String> {
    let mut sets = Vec::new();
    let mut cur: Option<RecordSet> = None;
    for (path, text) in xml_leaves(xml)? {
        let Some(rest) = path.strip_prefix("ListResourceRecordSetsResponse/ResourceRecordSets/")
        else {
            continue;
        };
        let set = cur.get_or_insert_with(RecordSet::default);
        match rest {
            "ResourceRecordSet/Name" => set.name = text,
            "ResourceRecordSet/Type" => set.rtype = text,
            "ResourceRecordSet/TTL" => set.ttl = text.trim().parse().ok(),
            "ResourceRecordSet/ResourceRecords/ResourceRecord/Value" => set.values.push(text),
            "ResourceRecordSet" => sets.extend(cur.take()),
            _ => {}
        }
    }
    Ok(sets)
}

/// `Code: Message` of an AWS error response.
fn aws_error(xml: &str) -> Option<String> {
    let leaves = xml_leaves(xml).ok()?;
    let find = |name: &str| {
        leaves
            .iter()
            .find(|(p, _)| p.ends_with(&format!("Error/{name}")))
            .map(|(_, t)| t.clone())
    };
    match (find("Code"), find("Message")) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (Some(c), None) => Some(c),
        (None, Some(m)) => Some(m),
        (None, None) => None,
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

impl Route53 {
    fn signing_error(&self, what: impl fmt::Display) -> DnsError {
        DnsError::Provider(format!(
            "{NAME}: cannot sign the request: {}",
            self.redactor.clean(&what.to_string())
        ))
    }

    /// Sends a SigV4-signed request and returns the response body on success.
    async fn call(
        &self,
        method: &str,
        url: reqwest::Url,
        body: Vec<u8>,
    ) -> Result<String, DnsError> {
        let identity: Identity = Credentials::new(
            self.access_key_id.clone(),
            self.secret_access_key.to_string(),
            None,
            None,
            "scaivault",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.signing_region)
            .name("route53")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| self.signing_error(e))?
            .into();
        let content_type = "application/xml";
        let headers: Vec<(&str, &str)> = if body.is_empty() {
            Vec::new()
        } else {
            vec![("content-type", content_type)]
        };
        let signable = SignableRequest::new(
            method,
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| self.signing_error(e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| self.signing_error(e))?
            .into_parts();

        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| DnsError::Provider(format!("{NAME}: bad method")))?;
        let mut req = self.client.request(m, url.clone());
        for (name, value) in &headers {
            req = req.header(*name, *value);
        }
        for (name, value) in instructions.headers() {
            req = req.header(name, value);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.redactor.transport(NAME, &e))?;
        let (status, bytes) = http::body(NAME, &self.redactor, resp).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if status.is_success() {
            return Ok(text);
        }
        let detail = aws_error(&text).unwrap_or(text);
        Err(DnsError::Provider(format!(
            "{NAME}: {method} {} answered {status}: {}",
            url.path(),
            self.redactor.clean(&detail)
        )))
    }

    fn url(&self, tail: &str) -> Result<reqwest::Url, DnsError> {
        reqwest::Url::parse(&format!(
            "{}/2013-04-01/hostedzone/{}/{tail}",
            self.endpoint, self.zone_id
        ))
        .map_err(|e| DnsError::Provider(format!("{NAME}: bad endpoint_url: {e}")))
    }

    /// The TXT record set at `fqdn`, if any.
    async fn current(&self, fqdn: &str) -> Result<Option<RecordSet>, DnsError> {
        let mut url = self.url("rrset")?;
        url.query_pairs_mut()
            .append_pair("name", fqdn)
            .append_pair("type", "TXT")
            .append_pair("maxitems", "1");
        let xml = self.call("GET", url, Vec::new()).await?;
        let sets = record_sets(&xml)
            .map_err(|e| DnsError::Provider(format!("{NAME}: unreadable response: {e}")))?;
        Ok(sets
            .into_iter()
            .find(|s| s.rtype == "TXT" && same_name(&s.name, fqdn)))
    }

    async fn change(
        &self,
        action: &str,
        fqdn: &str,
        ttl: u32,
        values: &[String],
    ) -> Result<(), DnsError> {
        let records: String = values
            .iter()
            .map(|v| {
                format!(
                    "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                    xml_escape(v)
                )
            })
            .collect();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <ChangeResourceRecordSetsRequest xmlns=\"{XMLNS}\"><ChangeBatch>\
             <Comment>ScaiVault ACME dns-01</Comment><Changes><Change>\
             <Action>{action}</Action><ResourceRecordSet><Name>{}</Name><Type>TXT</Type>\
             <TTL>{ttl}</TTL><ResourceRecords>{records}</ResourceRecords></ResourceRecordSet>\
             </Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>",
            xml_escape(fqdn)
        );
        self.call("POST", self.url("rrset/")?, body.into_bytes())
            .await
            .map(drop)
    }
}

#[async_trait::async_trait]
impl DnsProvider for Route53 {
    async fn present(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let _guard = self.lock.lock().await;
        let current = self.current(fqdn).await?;
        let mut values = current
            .as_ref()
            .map(|s| s.values.clone())
            .unwrap_or_default();
        if values.iter().any(|v| unquoted(v) == value) {
            return Ok(());
        }
        values.push(quoted(value));
        let ttl = current.and_then(|s| s.ttl).unwrap_or(TTL);
        self.change("UPSERT", fqdn, ttl, &values).await
    }

    async fn cleanup(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let _guard = self.lock.lock().await;
        let Some(current) = self.current(fqdn).await? else {
            return Ok(());
        };
        if !current.values.iter().any(|v| unquoted(v) == value) {
            return Ok(());
        }
        let ttl = current.ttl.unwrap_or(TTL);
        let rest: Vec<String> = current
            .values
            .iter()
            .filter(|v| unquoted(v) != value)
            .cloned()
            .collect();
        if rest.is_empty() {
            // DELETE must name the set exactly as it is.
            self.change("DELETE", fqdn, ttl, &current.values).await
        } else {
            self.change("UPSERT", fqdn, ttl, &rest).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_quoting() {
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(unquoted("\"abc\""), "abc");
        assert_eq!(unquoted("\"ab\" \"c\""), "abc");
        assert_eq!(unquoted("\"a\\\"b\""), "a\"b");
        assert_eq!(unquoted("plain"), "plain");
    }

    #[test]
    fn parses_list_and_error_responses() {
        let xml = r#"<?xml version="1.0"?>
<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">
<ResourceRecordSets><ResourceRecordSet><Name>_acme-challenge.example.com.</Name><Type>TXT</Type>
<TTL>300</TTL><ResourceRecords><ResourceRecord><Value>"a&amp;b"</Value></ResourceRecord>
<ResourceRecord><Value>"c"</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>
</ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems>
</ListResourceRecordSetsResponse>"#;
        let sets = record_sets(xml).unwrap_or_default();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].name, "_acme-challenge.example.com.");
        assert_eq!(sets[0].ttl, Some(300));
        assert_eq!(sets[0].values, ["\"a&b\"", "\"c\""]);
        let err = r#"<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>InvalidChangeBatch</Code><Message>bad &lt;batch&gt;</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
        assert_eq!(
            aws_error(err).as_deref(),
            Some("InvalidChangeBatch: bad <batch>")
        );
    }
}
