//! The HTTPS client an account talks to its CA with: the platform's trust store, or, when the
//! account has `directory_ca_pem`, exactly those roots (a private or test ACME CA; nothing is
//! added to the system trust store).

use crate::error::ApiError;
use bytes::Bytes;
use instant_acme::{Account, AccountBuilder, BodyWrapper, BytesResponse, HttpClient};
use std::sync::Arc;

/// `directory_ca_pem` as stored: its certificates only, each re-encoded, so that whatever else
/// the text held (a private key pasted by mistake, notes) is neither kept nor shown again.
///
/// # Errors
/// `400 invalid_directory_ca` for a PEM block that is not a certificate, a certificate that does
/// not decode, or no certificate at all.
pub fn normalize_directory_ca(pem: &str) -> Result<String, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_directory_ca", m);
    let other = pem
        .match_indices("-----BEGIN ")
        .filter_map(|(i, _)| pem[i + 11..].split_once("-----").map(|(label, _)| label))
        .find(|label| *label != "CERTIFICATE");
    if let Some(label) = other {
        let shown: String = label.chars().take(40).collect();
        return Err(bad(format!(
            "directory_ca_pem may hold only CERTIFICATE blocks, not a {shown:?} block"
        )));
    }
    let blocks = scaivault_core::validate::pem_blocks(pem, "CERTIFICATE").map_err(bad)?;
    if blocks.is_empty() {
        return Err(bad("directory_ca_pem holds no certificate".into()));
    }
    let mut out = String::new();
    for (i, der) in blocks.iter().enumerate() {
        scaivault_core::pem::from_der(der)
            .map_err(|e| bad(format!("certificate {} does not decode: {e}", i + 1)))?;
        out.push_str(&scaivault_core::pem::certificate(der).map_err(ApiError::internal)?);
    }
    Ok(out)
}

/// An account builder for a directory, trusting `ca_pem`'s certificates when given.
///
/// # Errors
/// `400 invalid_directory_ca` when `ca_pem` holds no usable certificate; `502` when the platform
/// trust store cannot be loaded.
pub fn account_builder(ca_pem: Option<&str>) -> Result<AccountBuilder, ApiError> {
    let Some(pem) = ca_pem else {
        // instant-acme's own default (the platform's trust store), built here so that every
        // request goes through [`RetryAfterClient`] and its time limit.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| {
                ApiError::new(
                    rocket::http::Status::BadGateway,
                    "acme_ca_unreachable",
                    "the platform's trust store cannot be loaded",
                )
                .with_cause(e.to_string())
            })?;
        return Ok(builder_on(connector));
    };
    let bad = |m: String| ApiError::bad_request("invalid_directory_ca", m);
    let blocks = scaivault_core::validate::pem_blocks(pem, "CERTIFICATE").map_err(bad)?;
    if blocks.is_empty() {
        return Err(bad("directory_ca_pem holds no certificate".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in blocks {
        roots
            .add(rustls_pki_types::CertificateDer::from(der))
            .map_err(|e| bad(format!("directory_ca_pem: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ApiError::internal)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(builder_on(
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls),
    ))
}

/// An account builder whose HTTPS client (HTTP/1, `https://` only) goes through
/// [`RetryAfterClient`] and its time limit, with `tls` deciding what it trusts.
fn builder_on(
    tls: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
) -> AccountBuilder {
    let connector = tls.https_only().enable_http1().build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, BodyWrapper<Bytes>>(connector);
    Account::builder_with_http(Box::new(RetryAfterClient(Box::new(client))))
}

/// The most one request to an ACME CA may take, its answer's body included.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A request the CA did not answer within [`REQUEST_TIMEOUT`].
#[derive(Debug)]
pub struct NoAnswer;

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer within {} s", REQUEST_TIMEOUT.as_secs())
    }
}

impl std::error::Error for NoAnswer {}

/// Whether `e` is a failure to reach the CA at all (a connection, TLS or no answer in time), as
/// opposed to an answer, or a failure on this side.
pub fn is_transport(e: &instant_acme::Error) -> bool {
    match e {
        instant_acme::Error::Hyper(_) => true,
        // The connection (hyper-util's client), the answer's body cut off (hyper), no answer.
        instant_acme::Error::Other(inner) => {
            inner.is::<NoAnswer>()
                || inner.is::<hyper_util::client::legacy::Error>()
                || inner.is::<hyper::Error>()
        }
        _ => false,
    }
}

tokio::task_local! {
    /// Where an order task collects the `Retry-After` of its CA's error answers (instant-acme
    /// turns a `rateLimited` problem into an error without its headers).
    pub static RETRY_AFTER: Arc<std::sync::Mutex<Option<std::time::SystemTime>>>;
}

/// The HTTPS client, noting the `Retry-After` of 4xx/5xx answers in [`RETRY_AFTER`] when the
/// calling task has one.
struct RetryAfterClient(Box<dyn HttpClient>);

impl HttpClient for RetryAfterClient {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>,
    > {
        let slot = RETRY_AFTER.try_with(Arc::clone).ok();
        let fut = self.0.request(req);
        Box::pin(async move {
            // The answer, body included, within the time limit: a CA that accepts the
            // connection and never answers must not hold the caller (the scheduler's renewal
            // information pass, an account's creation) for ever.
            let whole = async {
                let mut rsp = fut.await?;
                let body = rsp
                    .body
                    .into_bytes()
                    .await
                    .map_err(instant_acme::Error::Other)?;
                Ok::<_, instant_acme::Error>(BytesResponse {
                    parts: rsp.parts,
                    body: Box::new(body),
                })
            };
            let rsp = tokio::time::timeout(REQUEST_TIMEOUT, whole)
                .await
                .map_err(|_| instant_acme::Error::Other(Box::new(NoAnswer)))??;
            if let Some(slot) = slot {
                let status = rsp.parts.status;
                if status.is_client_error() || status.is_server_error() {
                    let at = rsp
                        .parts
                        .headers
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(retry_after_at);
                    if let (Some(at), Ok(mut s)) = (at, slot.lock()) {
                        *s = Some(at);
                    }
                }
            }
            Ok(rsp)
        })
    }
}

/// A `Retry-After` value (delay-seconds or an HTTP-date) as a point in time.
pub fn retry_after_at(v: &str) -> Option<std::time::SystemTime> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return std::time::SystemTime::now().checked_add(std::time::Duration::from_secs(secs));
    }
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
    Some(std::time::SystemTime::from(t))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::retry_after_at;
    use std::time::{Duration, SystemTime};

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let t = retry_after_at("120").unwrap();
        let d = t.duration_since(SystemTime::now()).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        let t = retry_after_at("Wed, 21 Oct 2099 07:28:00 GMT").unwrap();
        assert!(t > SystemTime::now() + Duration::from_secs(3600 * 24 * 365 * 50));
        assert!(retry_after_at("soon").is_none());
    }
}
