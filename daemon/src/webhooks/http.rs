//! One webhook POST: a minimal HTTP/1.1 client over tokio (plain TCP, or rustls with a CA
//! bundle), and the signature.
//!
//! It sends one request with `Connection: close`, reads the status line and closes: the answer's
//! body is not needed. Redirects are never followed (a 3xx is a failed attempt). The caller wraps
//! the whole exchange in a timeout.

use ring::hmac;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest status line read, in bytes.
const MAX_STATUS_LINE: usize = 8192;

/// `v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Builds the TLS client configuration trusting the PEM bundle at `ca_file`.
///
/// # Errors
/// The file cannot be read or holds no certificate.
pub fn tls_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("CA bundle {}: {e}", ca_file.display()))?;
    for c in certs.flatten() {
        // Bundles carry the odd certificate rustls cannot use; skip those.
        let _ = roots.add(c);
    }
    if roots.is_empty() {
        return Err(format!(
            "CA bundle {} holds no usable certificate",
            ca_file.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// POSTs `body` with `headers` to `url`; the HTTP status.
///
/// # Errors
/// A text for the delivery record (never the URL's query, which may carry a credential).
pub async fn post(
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
    tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, String>,
) -> Result<u16, String> {
    let url = url::Url::parse(url).map_err(|e| format!("invalid url: {e}"))?;
    let https = url.scheme() == "https";
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "url has no port".to_owned())?;
    let host = url.host().ok_or_else(|| "url has no host".to_owned())?;
    let (connect_host, server_name) = match &host {
        url::Host::Domain(d) => (
            (*d).to_owned(),
            rustls_pki_types::ServerName::try_from((*d).to_owned()).ok(),
        ),
        url::Host::Ipv4(ip) => (
            ip.to_string(),
            Some(rustls_pki_types::ServerName::IpAddress((*ip).into())),
        ),
        url::Host::Ipv6(ip) => (
            ip.to_string(),
            Some(rustls_pki_types::ServerName::IpAddress((*ip).into())),
        ),
    };
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let mut target = url.path().to_owned();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut head = format!(
        "POST {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: ScaiVault-Webhook/1\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let tcp = TcpStream::connect((connect_host.as_str(), port))
        .await
        .map_err(|e| format!("connect to {host_header}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = server_name.ok_or_else(|| "host is not a valid TLS server name".to_owned())?;
        let stream = tokio_rustls::TlsConnector::from(tls()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host_header}: {e}"))?;
        exchange(stream, head.as_bytes(), body).await
    } else {
        exchange(tcp, head.as_bytes(), body).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    head: &[u8],
    body: &[u8],
) -> Result<u16, String> {
    let io = |e: std::io::Error| format!("i/o: {e}");
    s.write_all(head).await.map_err(io)?;
    s.write_all(body).await.map_err(io)?;
    s.flush().await.map_err(io)?;
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    while !line.contains(&b'\n') && line.len() < MAX_STATUS_LINE {
        let n = s.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&line);
    let first = text.lines().next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && (100..600).contains(&code) => Ok(code),
        _ => Err("the receiver's answer is not HTTP/1.x".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 ("Jefe"), with the message split as timestamp "." body.
        let sig = signature(b"Jefe", "what do ya want for nothing?", b"")
            .strip_prefix("v1=")
            .map(str::to_owned);
        let whole = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"Jefe"),
            b"what do ya want for nothing?.",
        );
        assert_eq!(sig, Some(hex::encode(whole.as_ref())));
        let rfc = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"Jefe"),
            b"what do ya want for nothing?",
        );
        assert_eq!(
            hex::encode(rfc.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
