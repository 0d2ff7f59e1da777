//! Logging to stderr (the journal under systemd), with a level that `SIGHUP` can change.
//!
//! The filter is `[log] level` plus `rocket=warn`, unless the environment has a valid `RUST_LOG`,
//! which then wins for the life of the process (a reload says so and leaves it alone). Secrets
//! are never logged by any target.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

static HANDLE: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static FROM_ENV: AtomicBool = AtomicBool::new(false);

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::new(format!("{level},rocket=warn,_=off"))
}

/// Installs the process's subscriber (once; later calls do nothing).
pub fn init(level: &str) {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (filter_for(level), false),
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
