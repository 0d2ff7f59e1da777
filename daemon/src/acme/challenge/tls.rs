//! The tls-alpn-01 responder (RFC 8737).
//!
//! The ClientHello is read first ([`LazyConfigAcceptor`]), then the certificate for its SNI name
//! is found, from this process's [`Responses`] or, on a node of a cluster, from the database
//! ([`SharedAnswers::tls`], an async read on the blocking pool), and only then does the handshake
//! go on with a configuration presenting that one certificate. rustls's certificate resolver is
//! synchronous: a database read inside it would block an async worker (`block_in_place`) for a
//! network round trip in the middle of the handshake; reading the SNI first keeps every store
//! call on the blocking pool and the handshake code free of I/O.
//!
//! A ClientHello without `acme-tls/1`, without SNI, or for a name with no answer gets a
//! handshake-failure alert (a configuration with no certificate).

use super::{Responses, SharedAnswers, ACME_TLS_ALPN, IO_TIMEOUT};
use rustls::crypto::CryptoProvider;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

/// Presents one certificate (found before the handshake), or none: the handshake fails.
#[derive(Debug)]
struct Present(Option<Arc<CertifiedKey>>);

impl ResolvesServerCert for Present {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }
}

fn config(provider: &Arc<CryptoProvider>, key: Option<Arc<CertifiedKey>>) -> Option<ServerConfig> {
    match ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => {
            let mut c = b
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(Present(key)));
            c.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
            Some(c)
        }
        Err(e) => {
            tracing::error!(error = %e, "tls-alpn-01 listener: no TLS configuration");
            None
        }
    }
}

/// Accepts connections until aborted; one task per connection, bounded by [`IO_TIMEOUT`].
pub(super) async fn serve(
    listener: TcpListener,
    responses: Arc<Responses>,
    shared: Option<SharedAnswers>,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Some(refuse) = config(&provider, None).map(Arc::new) else {
        return;
    };
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (r, s, p, refuse) = (
            responses.clone(),
            shared.clone(),
            provider.clone(),
            refuse.clone(),
        );
        tokio::spawn(async move {
            let done = handshake(stream, &r, s.as_ref(), &p, refuse);
            match tokio::time::timeout(IO_TIMEOUT, done).await {
                Ok(Ok(name)) => tracing::debug!(%peer, %name, "tls-alpn-01 handshake done"),
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls-alpn-01 handshake refused"),
                Err(_) => tracing::debug!(%peer, "tls-alpn-01 handshake timed out"),
            }
        });
    }
}

/// One connection: the name whose certificate was presented, or why the handshake failed.
async fn handshake(
    stream: TcpStream,
    responses: &Responses,
    shared: Option<&SharedAnswers>,
    provider: &Arc<CryptoProvider>,
    refuse: Arc<ServerConfig>,
) -> Result<String, String> {
    let start = LazyConfigAcceptor::new(Acceptor::default(), stream)
        .await
        .map_err(|e| e.to_string())?;
    let (acme, name) = {
        let hello = start.client_hello();
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        (acme, hello.server_name().map(str::to_ascii_lowercase))
    };
    let key = match (&name, acme) {
        (Some(n), true) => match (responses.tls(n), shared) {
            (Some(k), _) => Some(k),
            // Not an order of this node: the leader may run it (several nodes).
            (None, Some(s)) => s.tls(n).await,
            (None, None) => None,
        },
        _ => None,
    };
    let config = match key {
        Some(k) => config(provider, Some(k)).map(Arc::new).unwrap_or(refuse),
        None => refuse,
    };
    let mut tls = start
        .into_stream(config)
        .await
        .map_err(|e| format!("{}: {e}", name.as_deref().unwrap_or("(no SNI)")))?;
    let _ = tls.shutdown().await;
    Ok(name.unwrap_or_default())
}
