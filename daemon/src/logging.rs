//! Logging to stderr (the journal under systemd), with a level that `SIGHUP` can change.
//!
//! The filter is `[log] level` (less any directive for the capped targets) plus caps on Rocket
//! (`warn`) and `tokio_postgres` (`info`), unless
//! the environment has a valid `RUST_LOG` (treated the same way),
//! which then wins for the life of the process (a reload says so and leaves it alone). Secrets
//! are never logged by any target.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static HANDLE: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static FROM_ENV: AtomicBool = AtomicBool::new(false);

/// Targets whose lower levels would log secrets, and the most they may log: Rocket's `debug`
/// dump of each request prints every header, the bearer token included; `tokio_postgres`'s
/// `debug` lines carry every statement's parameters (token hashes, sealed keys, webhook URLs,
/// audit rows).
const CAPPED: [(&str, &str); 3] = [
    ("rocket", "warn"),
    ("rocket::server", "warn"),
    ("tokio_postgres", "info"),
];

/// `level` plus what no level may change ([`CAPPED`]), added last so that it wins over the same
/// targets in `level`.
fn filter_for(level: &str) -> EnvFilter {
    let caps: Vec<String> = CAPPED.iter().map(|(t, l)| format!("{t}={l}")).collect();
    EnvFilter::new(format!(
        "{},{},_=off",
        without_capped(level),
        caps.join(",")
    ))
}

/// `level` without its directives for the capped targets: in `EnvFilter` the most specific
/// target wins, so `rocket::server::_=trace` would lift the cap on `rocket::server`.
fn without_capped(level: &str) -> String {
    level
        .split(',')
        .filter(|d| {
            let target = d.split('=').next().unwrap_or("").trim();
            !CAPPED.iter().any(|(t, _)| {
                target == *t
                    || target.starts_with(&format!("{t}::"))
                    || target.starts_with(&format!("{t}["))
            })
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Installs the process's subscriber (once; later calls do nothing). A `RUST_LOG` that is a valid
/// filter (by the rules of `[log] level`) replaces `level`; one that is not is ignored with a
/// warning (`verbose` would be read as a target name and silence every line).
pub fn init(level: &str) {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, from_env, ignored) = match env {
        Some(v) if crate::config::log_level_ok(&v) => (filter_for(&v), true, None),
        Some(v) => (filter_for(level), false, Some(v)),
        None => (filter_for(level), false, None),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = HANDLE.set(handle);
        FROM_ENV.store(from_env, Ordering::Relaxed);
    }
    if let Some(v) = ignored {
        let shown: String = v.chars().take(80).collect();
        tracing::warn!(rust_log = %shown, "RUST_LOG is not a level or a filter of target=level directives: ignored, [log] level applies");
    }
}

/// Replaces the filter with `level` (as in `[log] level`).
///
/// # Errors
/// A sentence when `RUST_LOG` governs the filter or the subscriber is not ours.
pub fn set_level(level: &str) -> Result<(), String> {
    if FROM_ENV.load(Ordering::Relaxed) {
        return Err("RUST_LOG is set and takes precedence over [log] level".into());
    }
    let handle = HANDLE
        .get()
        .ok_or_else(|| "logging was set up by someone else".to_owned())?;
    handle
        .reload(filter_for(level))
        .map_err(|e| format!("cannot change the log filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::without_capped;

    #[test]
    fn directives_cannot_lift_the_caps() {
        assert_eq!(without_capped("info"), "info");
        assert_eq!(
            without_capped("info,rocket::server=trace,scaivault=debug,rocket=debug"),
            "info,scaivault=debug"
        );
        assert_eq!(without_capped("rocketry=debug"), "rocketry=debug");
        assert_eq!(
            without_capped("debug,tokio_postgres::query=trace,tokio_postgres=debug"),
            "debug"
        );
    }
}
