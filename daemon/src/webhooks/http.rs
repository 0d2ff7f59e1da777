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
    let mut got = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    let mut closed = false;
    loop {
        match final_status(&got) {
            Status::Final(code) => return Ok(code),
            Status::Bad => return Err("the receiver's answer is not HTTP/1.x".to_owned()),
            Status::More if closed && got.is_empty() => {
                return Err("the receiver closed the connection without an answer".to_owned())
            }
            Status::More if closed || got.len() >= MAX_ANSWER_HEAD => {
                return Err("the receiver's answer is not HTTP/1.x".to_owned())
            }
            Status::More => {}
        }
        let n = s.read(&mut buf).await.map_err(io)?;
        closed = n == 0;
        got.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
}

/// Longest run of interim (`1xx`) responses and the final status line read, in bytes.
const MAX_ANSWER_HEAD: usize = MAX_STATUS_LINE + 8 * 1024;

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
enum Status {
    /// The final answer's status code.
    Final(u16),
    /// Not an HTTP/1.x answer.
    Bad,
    /// Read more.
    More,
}

/// The status of the final answer in `got`: interim `1xx` responses before it (`100 Continue`,
/// `103 Early Hints`; RFC 9110 §15.2: a client parses them, even unasked) are skipped with their
/// header fields. `101 Switching Protocols` is final (and no success).
fn final_status(got: &[u8]) -> Status {
    let mut rest = got;
    loop {
        let Some(eol) = rest.iter().position(|b| *b == b'\n') else {
            return if rest.len() >= MAX_STATUS_LINE {
                Status::Bad
            } else {
                Status::More
            };
        };
        let line = String::from_utf8_lossy(&rest[..eol]);
        let mut parts = line.split_whitespace();
        let code = match (
            parts.next(),
            parts.next().and_then(|c| c.parse::<u16>().ok()),
        ) {
            (Some(v), Some(code)) if v.starts_with("HTTP/1.") && (100..600).contains(&code) => code,
            _ => return Status::Bad,
        };
        if !(100..200).contains(&code) || code == 101 {
            return Status::Final(code);
        }
        // An interim response: its header block ends with an empty line.
        let after = &rest[eol + 1..];
        match header_block_end(after) {
            Some(n) => rest = &after[n..],
            None => return Status::More,
        }
    }
}

/// Where the header block at the start of `b` ends (just past its empty line), if it does.
fn header_block_end(b: &[u8]) -> Option<usize> {
    let mut start = 0;
    loop {
        let eol = b[start..].iter().position(|c| *c == b'\n')? + start;
        let line = &b[start..eol];
        if line.is_empty() || line == b"\r" {
            return Some(eol + 1);
        }
        start = eol + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interim_answers_are_skipped() {
        let cases: &[(&[u8], Status)] = &[
            (b"HTTP/1.1 200 OK\r\n", Status::Final(200)),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
                Status::Final(200),
            ),
            (
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n",
                Status::Final(204),
            ),
            (
                b"HTTP/1.1 100 Continue\n\nHTTP/1.0 500 Oops\n",
                Status::Final(500),
            ),
            (b"HTTP/1.1 101 Switching Protocols\r\n", Status::Final(101)),
            (b"HTTP/1.1 100 Continue\r\n", Status::More),
            (b"HTTP/1.1 100 Continue\r\n\r\n", Status::More),
            (b"HTTP/1.1 200", Status::More),
            (b"SSH-2.0-OpenSSH\r\n", Status::Bad),
            (b"HTTP/1.1 100 Continue\r\n\r\ngarbage\r\n", Status::Bad),
        ];
        for (got, want) in cases {
            assert_eq!(&final_status(got), want, "{}", String::from_utf8_lossy(got));
        }
    }

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
