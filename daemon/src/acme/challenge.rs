//! The challenge responders.
//!
//! - http-01 (RFC 8555 §8.3): a small plain-HTTP/1.1 server on `[acme] http_challenge_listen`
//!   answering `GET /.well-known/acme-challenge/{token}` with the key authorization; anything
//!   else is `404`. One request per connection, 8 KiB and 10 s at most per request.
//! - tls-alpn-01 (RFC 8737): a TLS server on `[acme] tls_challenge_listen` that offers only the
//!   ALPN protocol `acme-tls/1` and presents, for the SNI name, a self-signed certificate whose
//!   only SAN is that name and that carries the critical acmeIdentifier extension
//!   (1.3.6.1.5.5.7.1.31) with the SHA-256 of the key authorization. Handshakes without
//!   `acme-tls/1` or for an unknown name are refused.
//!
//! The order worker adds answers before it tells the CA a challenge is ready and removes them
//! when the order ends.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The ALPN protocol of RFC 8737.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
const HTTP_PREFIX: &str = "/.well-known/acme-challenge/";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers currently served.
#[derive(Debug, Default)]
pub struct Responses {
    http: RwLock<HashMap<String, String>>,
    tls: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// One tls-alpn-01 certificate can be presented per name at a time: orders that validate the
    /// same name with tls-alpn-01 take turns (see [`Responses::reserve_tls`]).
    tls_turns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while an order may present tls-alpn-01 certificates for its names.
#[derive(Debug)]
pub struct TlsTurn(#[allow(dead_code)] Vec<tokio::sync::OwnedMutexGuard<()>>);

impl Responses {
    /// Waits until no other order validates any of `names` with tls-alpn-01 and reserves them
    /// until the returned value is dropped. Names are taken in sorted order, so two orders with
    /// overlapping names cannot wait for each other.
    pub async fn reserve_tls(&self, names: &[String]) -> TlsTurn {
        let mut sorted: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        sorted.sort();
        sorted.dedup();
        let mut guards = Vec::with_capacity(sorted.len());
        for n in sorted {
            let lock = match self.tls_turns.lock() {
                Ok(mut m) => m.entry(n).or_default().clone(),
                Err(_) => continue,
            };
            guards.push(lock.lock_owned().await);
        }
        TlsTurn(guards)
    }

    /// Serves `key_authorization` for http-01 `token`.
    pub fn add_http(&self, token: &str, key_authorization: &str) {
        if let Ok(mut m) = self.http.write() {
            m.insert(token.to_owned(), key_authorization.to_owned());
        }
    }

    /// Stops serving http-01 `token`.
    pub fn remove_http(&self, token: &str) {
        if let Ok(mut m) = self.http.write() {
            m.remove(token);
        }
    }

    fn http(&self, token: &str) -> Option<String> {
        self.http.read().ok()?.get(token).cloned()
    }

    /// Serves a tls-alpn-01 certificate for `name` proving `digest` (SHA-256 of the key
    /// authorization).
    ///
    /// # Errors
    /// Certificate generation failures (as text).
    pub fn add_tls(&self, name: &str, digest: &[u8]) -> Result<(), String> {
        let key = tls_alpn_certificate(name, digest)?;
        if let Ok(mut m) = self.tls.write() {
            m.insert(name.to_ascii_lowercase(), Arc::new(key));
        }
        Ok(())
    }

    /// Stops serving `name`.
    pub fn remove_tls(&self, name: &str) {
        if let Ok(mut m) = self.tls.write() {
            m.remove(&name.to_ascii_lowercase());
        }
    }

    fn tls(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls
            .read()
            .ok()?
            .get(&name.to_ascii_lowercase())
            .cloned()
    }
}

/// The RFC 8737 §3 certificate: self-signed, SAN = `name` only, critical acmeIdentifier.
fn tls_alpn_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    if digest.len() != 32 {
        return Err("the acmeIdentifier digest must be 32 bytes".into());
    }
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(
        rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
    );
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

#[derive(Debug)]
struct AlpnResolver(Arc<Responses>);

impl ResolvesServerCert for AlpnResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if !acme {
            return None;
        }
        self.0.tls(hello.server_name()?)
    }
}

/// Bound challenge listeners, ready to serve.
#[derive(Debug, Default)]
pub struct Listeners {
    http: Option<TcpListener>,
    tls: Option<TcpListener>,
}

/// Binds the configured listeners (none when not configured).
///
/// # Errors
/// The address cannot be bound (naming it).
pub async fn bind(http: Option<SocketAddr>, tls: Option<SocketAddr>) -> Result<Listeners, String> {
    let bind = |a: SocketAddr, key: &'static str| async move {
        TcpListener::bind(a)
            .await
            .map_err(|e| format!("acme.{key} {a}: {e}"))
    };
    Ok(Listeners {
        http: match http {
            Some(a) => Some(bind(a, "http_challenge_listen").await?),
            None => None,
        },
        tls: match tls {
            Some(a) => Some(bind(a, "tls_challenge_listen").await?),
            None => None,
        },
    })
}

/// Serves the bound listeners until the returned tasks are aborted.
pub fn spawn(listeners: Listeners, responses: Arc<Responses>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(l) = listeners.http {
        tracing::info!(addr = ?l.local_addr().ok(), "ACME http-01 challenge listener");
        tasks.push(tokio::spawn(serve_http(l, responses.clone())));
    }
    if let Some(l) = listeners.tls {
        tracing::info!(addr = ?l.local_addr().ok(), "ACME tls-alpn-01 challenge listener");
        tasks.push(tokio::spawn(serve_tls(l, responses)));
    }
    tasks
}

async fn serve_http(listener: TcpListener, responses: Arc<Responses>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let r = responses.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(IO_TIMEOUT, answer_http(stream, &r)).await {
                tracing::debug!(%peer, error = %e, "http-01 request timed out");
            }
        });
    }
}

async fn answer_http(mut stream: tokio::net::TcpStream, responses: &Responses) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let answer = match (method, target.strip_prefix(HTTP_PREFIX)) {
        ("GET" | "HEAD", Some(token)) => responses.http(token),
        _ => None,
    };
    tracing::debug!(target_path = %target, found = answer.is_some(), "http-01 request");
    let (status, body) = match answer {
        Some(a) => ("200 OK", a),
        None => ("404 Not Found", "not found\n".to_owned()),
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve_tls(listener: TcpListener, responses: Arc<Responses>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => {
            let mut c = b
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(AlpnResolver(responses)));
            c.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
            c
        }
        Err(e) => {
            tracing::error!(error = %e, "tls-alpn-01 listener cannot start");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(IO_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(mut tls)) => {
                    tracing::debug!(%peer, "tls-alpn-01 handshake done");
                    let _ = tls.shutdown().await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls-alpn-01 handshake refused"),
                Err(_) => tracing::debug!(%peer, "tls-alpn-01 handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;

    #[test]
    fn tls_alpn_certificate_has_the_critical_acme_identifier() {
        let digest = [7u8; 32];
        let key = tls_alpn_certificate("a.example.test", &digest).unwrap();
        let cert = x509_cert::Certificate::from_der(key.cert[0].as_ref()).unwrap();
        let exts = cert.tbs_certificate.extensions.unwrap();
        let acme = exts
            .iter()
            .find(|e| e.extn_id.to_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(acme.critical);
        // OCTET STRING (32 bytes) holding the digest.
        let mut want = vec![0x04, 0x20];
        want.extend_from_slice(&digest);
        assert_eq!(acme.extn_value.as_bytes(), want.as_slice());
        assert!(tls_alpn_certificate("a.example.test", &[0u8; 16]).is_err());
    }
}
