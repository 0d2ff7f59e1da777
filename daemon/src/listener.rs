//! One run of the HTTP listener: Rocket built for the running configuration (limits, TLS,
//! shutdown periods), launched on its own task, with a liftoff fairing that reports the address
//! it bound. `serve` launches one at start and a new one whenever a reload changes what the
//! listener holds (see `reload.rs`).

use crate::app::App;
use crate::config::Config;
use crate::serve::{Context, StartError};
use crate::tls::TlsMaterial;
use rocket::fairing::AdHoc;
use rocket::{Build, Rocket};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a new listener retries binding an address the previous one is still releasing.
const REBIND_WINDOW: Duration = Duration::from_secs(3);

/// A launched listener.
pub struct Running {
    /// Trips Rocket's graceful shutdown.
    pub shutdown: rocket::Shutdown,
    /// The server task; ends after a shutdown, or on a failure.
    pub server: JoinHandle<Result<(), String>>,
    /// The address actually bound.
    pub bound: SocketAddr,
}

fn build(
    app: App,
    cfg: &Config,
    tls: Option<&TlsMaterial>,
    bound: oneshot::Sender<SocketAddr>,
) -> Result<Rocket<Build>, StartError> {
    let rocket = crate::api::build(app);
    let mut config: rocket::Config = rocket
        .figment()
        .extract()
        .context("http server configuration")?;
    // The daemon handles SIGTERM, SIGINT and SIGHUP itself (`signals.rs`).
    config.shutdown = rocket::config::Shutdown {
        ctrlc: false,
        signals: Default::default(),
        grace: cfg.server.shutdown_grace_secs,
        mercy: cfg.server.shutdown_mercy_secs,
        force: true,
        ..Default::default()
    };
    config.tls = tls.map(TlsMaterial::rocket_config);
    // Read by our patch of Rocket (daemon/vendor/PATCHES.md): a request's head must arrive within
    // `[limits] header_timeout`, as on the relying-party listener.
    let head_secs = scaivault_core::duration::parse_seconds(&cfg.limits.header_timeout)
        .unwrap_or(10)
        .max(1);
    let provider = rocket::figment::Figment::from(config).merge(("header_read_timeout", head_secs));
    Ok(rocket
        .configure(provider)
        .attach(AdHoc::on_liftoff("bound address", move |rocket| {
            Box::pin(async move {
                let c = rocket.config();
                let _ = bound.send(SocketAddr::new(c.address, c.port));
            })
        })))
}

/// Launches a listener for `app` with `cfg` and `tls`. Retries for a moment while the address
/// is still held by the listener being replaced.
///
/// # Errors
/// Rocket refusing the configuration; the address cannot be bound.
pub async fn launch(
    app: &App,
    cfg: &Config,
    tls: Option<&TlsMaterial>,
) -> Result<Running, StartError> {
    let deadline = tokio::time::Instant::now() + REBIND_WINDOW;
    loop {
        let (tx, rx) = oneshot::channel();
        let mut http_app = app.clone();
        http_app.config = cfg.clone();
        let ignited = build(http_app, cfg, tls, tx)?
            .ignite()
            .await
            .context("http server")?;
        let shutdown = ignited.shutdown();
        let server = tokio::spawn(async move {
            ignited
                .launch()
                .await
                .map(|_| ())
                .map_err(|e| launch_error(&e))
        });
        if let Ok(bound) = rx.await {
            return Ok(Running {
                shutdown,
                server,
                bound,
            });
        }
        // The fairing's sender was dropped without a liftoff: the launch failed.
        let err = match server.await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => "stopped before it started".to_owned(),
            Err(e) => format!("the server task failed: {e}"),
        };
        if err.contains(ADDR_IN_USE) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        return Err(StartError(format!(
            "cannot serve on {}: {err}",
            cfg.server.listen
        )));
    }
}

const ADDR_IN_USE: &str = "address already in use";

/// A sentence for Rocket's launch error (inspecting it, so that Rocket does not panic on drop).
fn launch_error(e: &rocket::Error) -> String {
    match e.kind() {
        rocket::error::ErrorKind::Bind(io) if io.kind() == std::io::ErrorKind::AddrInUse => {
            ADDR_IN_USE.to_owned()
        }
        rocket::error::ErrorKind::Shutdown(_, _) => {
            "graceful shutdown did not finish within the grace and mercy periods".to_owned()
        }
        _ => e.to_string(),
    }
}

/// Waits for a stopped listener's task, at most `limit`, and logs how it ended.
pub async fn drain(server: JoinHandle<Result<(), String>>, limit: Duration) {
    match tokio::time::timeout(limit, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("http listener stopped: in-flight requests finished"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http listener stopped"),
        Ok(Err(e)) => tracing::warn!(error = %e, "http listener task failed"),
        Err(_) => tracing::warn!("http listener still draining after the grace and mercy periods"),
    }
}
