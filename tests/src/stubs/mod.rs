//! Local stand-ins for DNS provider APIs that cannot run here: stubs of Cloudflare's API v4
//! ([`cloudflare`]) and of Google Cloud DNS v1 with its OAuth 2.0 token endpoint ([`google`]),
//! and the moto server as a Route 53 API ([`moto`]). The stubs check every request against the
//! providers' published APIs (method, path, auth header, query, JSON shape) and record each one
//! the real API would reject as a violation; they were NOT run against the live services.
//!
//! None of these backends serves DNS. For an ACME dns-01 test the records they hold are mirrored
//! into a DNS server pebble asks: every change calls an [`OnChange`] hook with the name and its
//! TXT values now (the stubs call it before they answer; moto is polled), e.g.
//! [`crate::pebble::ChallTestSrv::mirror`].
//!
//! Each stub serves on a loopback port from its own thread and tokio runtime, so sync tests and
//! async tests use it alike; dropping it stops the server.

pub mod cloudflare;
pub mod google;
pub mod moto;

use std::sync::Arc;

/// Called after each change of the TXT records at a name: `(absolute name with the trailing dot,
/// the TXT values there now, unquoted)`; an empty list means the name has none left.
pub type OnChange = Arc<dyn Fn(&str, &[String]) + Send + Sync>;

/// A stub's HTTP server; stopped when dropped.
pub(crate) struct Server {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` on a free loopback port from a new thread; returns `http://127.0.0.1:PORT`.
pub(crate) fn serve(app: axum::Router) -> (String, Server) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    (base, Server { stop: Some(stop) })
}

/// Query parameters other than `allowed`, as an error naming the first.
pub(crate) fn only_params(
    q: &std::collections::HashMap<String, String>,
    allowed: &[&str],
) -> Result<(), String> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown query parameter `{k}`")),
        None => Ok(()),
    }
}
