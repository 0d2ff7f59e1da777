//! The signals `serve` acts on, as a stream of [`Event`]s.
//!
//! - `SIGTERM` (systemd's stop) and `SIGINT` (Ctrl-C): graceful shutdown. New connections are
//!   refused, in-flight requests get `server.shutdown_grace_secs` to finish, queued database
//!   writes (certificates, audit records) are committed, and the PKCS#11 sessions are closed.
//! - `SIGHUP` (`systemctl reload`): re-read the configuration and apply what can change without a
//!   restart (see `reload.rs`).
//!
//! Rocket's own signal handling is switched off (`shutdown.ctrlc = false`, no `signals`), so
//! these handlers are the only ones. They are installed before the token is opened; a `SIGHUP`
//! that arrives during startup is logged and otherwise ignored.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Stop gracefully (the signal that asked).
    Stop(Signal),
    /// Reload the configuration.
    Reload,
}

/// The installed handlers.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside the runtime).
    ///
    /// # Errors
    /// When the runtime cannot register a handler.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancel-safe: a signal is never lost by dropping this future.
    pub async fn next(&mut self) -> Event {
        let event = tokio::select! {
            Some(()) = self.term.recv() => Event::Stop(Signal::SIGTERM),
            Some(()) = self.int.recv() => Event::Stop(Signal::SIGINT),
            Some(()) = self.hup.recv() => Event::Reload,
            else => std::future::pending().await,
        };
        match event {
            Event::Stop(s) => tracing::info!(signal = s.as_str(), "shutdown requested"),
            Event::Reload => tracing::info!(signal = Signal::SIGHUP.as_str(), "reload requested"),
        }
        event
    }
}
