//! # scaivault
//!
//! The ScaiVault PKI daemon and its host CLI. Wiring only: parse the command line, load and check
//! the configuration, open the store and the token, start the scheduler and the HTTP API. The CA
//! logic lives in `scaivault-core`, SQL in `scaivault-store`, PKCS#11 in `scaivault-hsm`.
//!
//! Commands: `dev` (the embedded default: SoftHSM token, config, database, tenant and admin token
//! created under a data directory), `serve --config FILE` (production), `check-config`, and the
//! host commands `tenant`, `token`, `audit verify` and `ceremony` (key ceremonies on an
//! offline token, see the `ceremony` module).

/// Rust allocations go to mimalloc: the issuance path allocates and frees many small buffers
/// (DER, PEM, JSON) across threads, and glibc's malloc and free took ~10 % of the daemon's CPU
/// there (docs/PERFORMANCE.md). C libraries (SQLite, SoftHSM, OpenSSL) keep using glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` for the host commands' output: a reader that goes away (`scaivault token list |
/// head -1`) ends the process quietly with the status a SIGPIPE would give (141) instead of a
/// panic and its backtrace.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::say(format_args!($($arg)*))
    };
}

mod acme;
mod api;
mod app;
mod auth;
mod ca;
mod ceremony;
mod cli;
mod cluster;
mod config;
mod csrs;
mod dev;
mod error;
mod issue;
mod issuecache;
mod leafkey;
mod limits;
mod listener;
mod logging;
mod metrics;
mod ocsp;
mod probe;
mod reload;
mod revoke;
mod roles;
mod sched;
mod serve;
mod settle;
mod signals;
mod signers;
mod systemd;
mod tls;
mod trust;
mod webhooks;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// ScaiVault PKI: an internal certificate authority whose keys never leave the HSM.
#[derive(Debug, Parser)]
#[command(name = "scaivault", version)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "SCAIVAULT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Development mode: create (first run) a SoftHSM token, config, database, tenant `default`
    /// and an admin token under DIR, then serve.
    Dev {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Listen address (default 127.0.0.1:8200).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// First run only: use this PostgreSQL database instead of a SQLite file
        /// (`postgres://user:password@host:port/db`; the password goes to DIR/db.password).
        #[arg(long, env = "SCAIVAULT_DEV_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Serve the API with the given --config.
    Serve,
    /// Check the --config file and exit.
    CheckConfig,
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: cli::TenantCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: cli::TokenCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: cli::AuditCommand,
    },
    /// Key ceremonies on an offline token, without the daemon (see docs/CEREMONY.md).
    Ceremony {
        /// The ceremony file (TOML).
        #[arg(long)]
        file: PathBuf,
        #[command(subcommand)]
        command: ceremony::CeremonyCommand,
    },
}

fn main() -> ExitCode {
    if let Some(code) = hide_database_url() {
        return code;
    }
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let config_given =
        matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Some(code) = unused_config(&cli, config_given) {
        return code;
    }
    // Every file the daemon or a host command creates (the database and its WAL, dev-mode files)
    // is private to its user, whatever the caller's umask (the unit sets UMask=0077 as well).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let result = match cli.command {
        Command::Dev {
            data_dir,
            listen,
            database_url,
        } => dev::run(&data_dir, listen, database_url.as_deref()),
        Command::Serve => cli::need_config(cli.config.as_deref()).and_then(serve::run_with_config),
        Command::CheckConfig => cli::need_config(cli.config.as_deref()).and_then(cli::check_config),
        Command::Tenant { command } => {
            cli::need_config(cli.config.as_deref()).and_then(|c| cli::tenant(&c, command))
        }
        Command::Token { command } => {
            cli::need_config(cli.config.as_deref()).and_then(|c| cli::token(&c, command))
        }
        Command::Audit { command } => {
            cli::need_config(cli.config.as_deref()).and_then(|c| cli::audit(&c, command))
        }
        Command::Ceremony { file, command } => ceremony::run(&file, command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scaivault: {e:#}");
            if serve::LOGIN_REFUSED.load(std::sync::atomic::Ordering::Relaxed) {
                ExitCode::from(serve::EXIT_LOGIN_REFUSED)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// `dev` reads `DIR/scaivault.toml` and `ceremony` its `--file`: a `--config` given to either would
/// be silently ignored, so it is refused (exit 2), unless it names the very file `dev` reads. One
/// from `SCAIVAULT_CONFIG` (an operator's shell) is ignored with a note.
fn unused_config(cli: &Cli, given: bool) -> Option<ExitCode> {
    let config = cli.config.as_deref()?;
    let (command, reads) = match &cli.command {
        Command::Dev { data_dir, .. } => ("dev", data_dir.join("scaivault.toml")),
        Command::Ceremony { file, .. } => ("ceremony", file.clone()),
        _ => return None,
    };
    let same = |a: &std::path::Path, b: &std::path::Path| match (a.canonicalize(), b.canonicalize())
    {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if command == "dev" && same(config, &reads) {
        return None;
    }
    let what = match command {
        "dev" => format!("dev reads {}", reads.display()),
        _ => "a ceremony reads its --file and no daemon configuration".to_owned(),
    };
    if given {
        eprintln!(
            "scaivault: --config {} is not used: {what} (serve --config FILE runs a configuration)",
            config.display()
        );
        Some(ExitCode::from(2))
    } else {
        eprintln!("scaivault: note: SCAIVAULT_CONFIG is ignored: {what}");
        None
    }
}

/// `dev --database-url postgres://user:password@…` would leave the password in the process's
/// command line (`ps`, `/proc/PID/cmdline`: readable by every user) for the daemon's whole life:
/// the process starts itself again with the URL in `SCAIVAULT_DEV_DATABASE_URL` (which clap
/// reads for the same option) and without the argument. `None` when there is nothing to hide;
/// otherwise the exit code of a failed restart (a successful one does not return).
fn hide_database_url() -> Option<ExitCode> {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The subcommand: the first argument that is neither an option nor `--config`'s value.
    let mut rest = args.iter().skip(1);
    let mut dev = false;
    while let Some(a) = rest.next() {
        if a == "--config" {
            rest.next();
        } else if !a.to_string_lossy().starts_with('-') {
            dev = a == "dev";
            break;
        }
    }
    let mut url = None;
    let mut kept = Vec::with_capacity(args.len());
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            kept.push(a.clone());
            kept.extend(it.by_ref().cloned());
            break;
        }
        if a == "--database-url" {
            match it.next() {
                Some(v) => url = Some(v.clone()),
                // Missing value: clap says so.
                None => return None,
            }
        } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--database-url=")) {
            url = Some(v.into());
        } else {
            kept.push(a.clone());
        }
    }
    let url = url.filter(|_| dev)?;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find this program to hide --database-url from the command line: {e}; set SCAIVAULT_DEV_DATABASE_URL instead");
            return Some(ExitCode::from(2));
        }
    };
    let e = std::process::Command::new(exe)
        .arg0(&args[0])
        .args(kept)
        .env("SCAIVAULT_DEV_DATABASE_URL", url)
        .exec();
    eprintln!("error: cannot restart without --database-url on the command line: {e}; set SCAIVAULT_DEV_DATABASE_URL instead");
    Some(ExitCode::from(2))
}
