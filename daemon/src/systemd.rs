//! systemd integration without libsystemd: the `sd_notify(3)` datagram protocol and the watchdog.
//!
//! - [`Notifier`] sends `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=…` and `WATCHDOG=1` to
//!   `$NOTIFY_SOCKET`: a filesystem path, or an abstract socket written `@name`. Without
//!   `NOTIFY_SOCKET` (not started by systemd as `Type=notify`) every call does nothing.
//! - [`watchdog_interval`] reads `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, which must be this
//!   process when set), as `sd_watchdog_enabled(3)` does.
//! - [`run_watchdog`] sends `WATCHDOG=1` at a third of that interval, but only while the
//!   scheduler's heartbeat is fresh and the token answers a health check. When either fails the
//!   pings stop, and systemd restarts the service once `WatchdogSec=` has passed.
//!
//! Everything here is safe code: `std::os::unix::net::UnixDatagram` (plus Linux's abstract
//! socket addresses) and `nix` for the monotonic clock.

use crate::app::App;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long the scheduler may stay silent before the watchdog stops vouching for the daemon
/// (the same bound `GET /v1/sys/health` uses).
pub const SCHEDULER_STALE_SECS: i64 = 60;

/// The longest a token health check may take before it counts as failed.
const TOKEN_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends state changes to systemd. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<(UnixDatagram, SocketAddr)>>,
    /// Set by [`Notifier::stopping`]: background reports (the watchdog's) no longer overwrite the
    /// stopping status.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET`; a no-op one when it is unset or unusable (logged).
    pub fn from_env() -> Notifier {
        let Some(raw) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::default();
        };
        let raw = raw.to_string_lossy().into_owned();
        match Self::connect(&raw) {
            Ok(target) => Notifier {
                target: Some(Arc::new(target)),
                stopping: Arc::default(),
            },
            Err(e) => {
                tracing::warn!(socket = %raw, error = %e, "NOTIFY_SOCKET is not usable; systemd will not hear from this process");
                Notifier::default()
            }
        }
    }

    fn connect(raw: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
        let addr = if let Some(name) = raw.strip_prefix('@') {
            abstract_addr(name.as_bytes())?
        } else if raw.starts_with('/') {
            SocketAddr::from_pathname(raw)?
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an @abstract name (vsock is not supported)",
            ));
        };
        Ok((UnixDatagram::unbound()?, addr))
    }

    /// Whether systemd is listening.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message (newline-separated `KEY=VALUE` assignments). Failures are logged at
    /// debug level: notification is best effort, as with `sd_notify(3)`.
    pub fn send(&self, message: &str) {
        if let Some(t) = &self.target {
            let (sock, addr) = &**t;
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    /// `STATUS=…` (one line; newlines are replaced).
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", one_line(text)));
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` (with `MONOTONIC_USEC`, as `Type=notify-reload` requires) and a status line.
    pub fn reloading(&self, status: &str) {
        let mut msg = String::from("RELOADING=1\n");
        if let Some(usec) = monotonic_usec() {
            msg.push_str(&format!("MONOTONIC_USEC={usec}\n"));
        }
        msg.push_str(&format!("STATUS={}", one_line(status)));
        self.send(&msg);
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.stopping.store(true, Ordering::Relaxed);
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// Whether [`Notifier::stopping`] was sent.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds.
fn monotonic_usec() -> Option<u64> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u64::try_from(ts.tv_nsec()).ok()?;
    Some(secs.saturating_mul(1_000_000).saturating_add(nanos / 1000))
}

/// The watchdog interval systemd expects (`WatchdogSec=`), if it expects pings from this
/// process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// What the last watchdog check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vitals {
    Alive,
    /// The token answers, with an error (removed, logged out, unreachable): the daemon goes on
    /// serving what is already signed and recovers by itself when the token is back, which a
    /// restart would not do sooner (it cannot even start without the token).
    TokenDown,
    /// A token call hangs, or the scheduler stopped ticking: what a restart may cure.
    Stuck {
        token: bool,
        scheduler: bool,
    },
}

/// Checks the scheduler's heartbeat and pings the token. Until its first beat (right after
/// start, within `SCHEDULER_STALE_SECS` of `started`) the scheduler counts as alive.
async fn check(app: &App, started: tokio::time::Instant) -> Vitals {
    let beat = app.scheduler_beat.load(Ordering::Relaxed);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let scheduler = if beat == 0 {
        started.elapsed() < Duration::from_secs(SCHEDULER_STALE_SECS.unsigned_abs())
    } else {
        now - beat <= SCHEDULER_STALE_SECS
    };
    let token = app.token.clone();
    let ping = tokio::task::spawn_blocking(move || token.ping().is_ok());
    // `None`: no answer in time.
    let token = match tokio::time::timeout(TOKEN_PING_TIMEOUT, ping).await {
        Ok(Ok(ok)) => Some(ok),
        Ok(Err(_)) | Err(_) => None,
    };
    match (token, scheduler) {
        (Some(true), true) => Vitals::Alive,
        (Some(false), true) => Vitals::TokenDown,
        (token, scheduler) => Vitals::Stuck {
            token: token.is_some(),
            scheduler,
        },
    }
}

/// Feeds the systemd watchdog every `interval / 3` while the scheduler ticks and the token
/// answers (an error is an answer: a removed token does not make a restart useful), until `stop`
/// fires. A no-op when systemd set no watchdog.
pub async fn run_watchdog(
    notifier: Notifier,
    app: App,
    interval: Option<Duration>,
    stop: impl std::future::Future<Output = ()>,
) {
    let Some(interval) = interval.filter(|_| notifier.enabled()) else {
        stop.await;
        return;
    };
    let period = (interval / 3).max(Duration::from_millis(100));
    tracing::info!(
        watchdog_ms = interval.as_millis() as u64,
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let started = tokio::time::Instant::now();
    let mut last = Vitals::Alive;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        // A stop does not wait for a health check stuck on a hung token.
        let vitals = tokio::select! {
            _ = &mut stop => return,
            v = check(&app, started) => v,
        };
        // Once stopping, the stop's own status lines stay (pings go on until `stop` fires).
        let report = vitals != last && !notifier.is_stopping();
        match vitals {
            Vitals::Alive => {
                notifier.watchdog();
                if report {
                    tracing::info!("token and scheduler answer again");
                    notifier.status("serving (recovered)");
                }
            }
            Vitals::TokenDown => {
                notifier.watchdog();
                if report {
                    tracing::error!("the token answers with errors: serving cached OCSP answers and published CRLs; signing resumes when it is back");
                    notifier.status("degraded: token unavailable (cached OCSP and CRLs served)");
                }
            }
            Vitals::Stuck { token, scheduler } => {
                let word = |ok: bool| if ok { "ok" } else { "not answering" };
                tracing::error!(
                    token = word(token),
                    scheduler = word(scheduler),
                    "health check failed: withholding the watchdog ping (systemd restarts the \
                     service after WatchdogSec= without one)"
                );
                if report {
                    notifier.status(&format!(
                        "degraded: token {}, scheduler {}",
                        word(token),
                        word(scheduler)
                    ));
                }
            }
        }
        last = vitals;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(Arc::new(Notifier::connect(path.to_str().unwrap()).unwrap())),
            ..Notifier::default()
        };
        n.ready("serving\non two lines");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving on two lines");
        n.reloading("reloading");
        let len = server.recv(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("scaivault-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier {
            target: Some(Arc::new(Notifier::connect(&format!("@{name}")).unwrap())),
            ..Notifier::default()
        };
        assert!(!n.is_stopping());
        n.stopping("bye");
        assert!(n.is_stopping());
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=bye");
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(Notifier::connect("relative/socket").is_err());
        assert!(!Notifier::default().enabled());
    }
}
