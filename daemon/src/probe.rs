//! The readiness probe: `GET /v1/sys/health` against the daemon's own listener, over the network
//! stack, exactly as a client would (plain HTTP, or HTTPS pinned to the certificate the listener
//! was given). `READY=1` goes to systemd only once this answers `200`: the token is logged in,
//! the database is migrated and answers, the scheduler ticks, and the listener accepts and
//! serves.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// One attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts.
const RETRY: Duration = Duration::from_millis(50);

/// Where to reach a listener bound to `bound` from this host (the wildcard becomes loopback).
pub fn local_target(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, bound.port())
}

/// Accepts exactly one server certificate: the listener's own (the daemon knows what it
/// serves, so no CA is needed). Signatures are still checked with the provider's algorithms.
#[derive(Debug)]
struct Pinned {
    leaf: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the listener serves a different certificate than it was given".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<u16> {
    s.write_all(
        b"GET /v1/sys/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: scaivault-readiness\r\n\
          X-Request-Id: readiness-probe\r\nConnection: close\r\n\r\n",
    )
    .await?;
    s.flush().await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}

/// One health request; the HTTP status.
async fn attempt(target: SocketAddr, pinned: Option<&[u8]>) -> std::io::Result<u16> {
    let tcp = TcpStream::connect(target).await?;
    let Some(leaf) = pinned else {
        return exchange(tcp).await;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned {
            leaf: leaf.to_vec(),
            provider,
        }))
        .with_no_client_auth();
    let name = ServerName::IpAddress(target.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    exchange(tls).await
}

/// Polls `GET /v1/sys/health` on `target` until it answers `200`. Reports each change of the
/// outcome through `progress` (for `STATUS=` lines).
pub async fn wait_healthy(target: SocketAddr, pinned: Option<Vec<u8>>, progress: impl Fn(&str)) {
    let mut last = String::new();
    loop {
        let outcome =
            match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(target, pinned.as_deref())).await {
                Ok(Ok(200)) => return,
                Ok(Ok(code)) => format!("health answers {code}"),
                Ok(Err(e)) => format!("health check failed: {e}"),
                Err(_) => "health check timed out".to_owned(),
            };
        if outcome != last {
            tracing::debug!(target = %target, outcome = %outcome, "waiting for the API");
            progress(&format!("starting: {outcome}"));
            last = outcome;
        }
        tokio::time::sleep(RETRY).await;
    }
}
