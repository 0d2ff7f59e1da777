//! `scaivault serve`: open the token and the store named by the configuration (refusing to start
//! with a clear message when either is wrong), then run the API and the scheduler until SIGINT or
//! SIGTERM.

use crate::app::App;
use crate::config::Config;
use scaivault_hsm::pkcs11::{Pkcs11Config, Pkcs11Token};
use scaivault_store::Store;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

/// A startup failure: a sentence for the operator.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Adds the operator-facing context to any displayable error.
pub trait Context<T> {
    /// Prefixes the error with `what`.
    fn context(self, what: &str) -> Result<T, StartError>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Result<T, StartError> {
        self.map_err(|e| StartError(format!("{what}: {e}")))
    }
}

/// Sets up logging to stderr at the configured level. Secrets are never logged by any target.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},rocket=warn,_=off"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
}

/// Opens the token named by the configuration.
///
/// # Errors
/// A sentence naming the module or token (never the PIN).
pub fn open_token(cfg: &Config) -> Result<Arc<Pkcs11Token>, StartError> {
    if let Some(conf) = &cfg.hsm.softhsm2_conf {
        // Read by SoftHSM when the module initializes; set before any thread that could read the
        // environment concurrently is started.
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
    let pin = cfg.read_pin().context("hsm pin")?;
    Pkcs11Token::open(&Pkcs11Config {
        module: cfg.hsm.module.clone(),
        token_label: cfg.hsm.token_label.clone(),
        pin,
    })
    .context(&format!(
        "cannot use token {:?} through {}",
        cfg.hsm.token_label,
        cfg.hsm.module.display()
    ))
}

/// Opens the store named by the configuration.
///
/// # Errors
/// A sentence naming the database file.
pub fn open_store(cfg: &Config) -> Result<Arc<Store>, StartError> {
    let path = cfg.db_path();
    Store::open(&path)
        .map(Arc::new)
        .context(&format!("cannot open database {}", path.display()))
}

/// `scaivault serve --config FILE`.
///
/// # Errors
/// Startup failures.
pub fn run_with_config(path: std::path::PathBuf) -> Result<ExitCode, StartError> {
    let cfg = Config::load(&path).context("configuration")?;
    run(cfg, &path)
}

/// Serves with a loaded configuration.
///
/// # Errors
/// Startup failures.
pub fn run(cfg: Config, path: &Path) -> Result<ExitCode, StartError> {
    init_logging(&cfg.log.level);
    let token = open_token(&cfg)?;
    let store = open_store(&cfg)?;
    tracing::info!(config = %path.display(), listen = %cfg.server.listen, token = %cfg.hsm.token_label, "starting");
    let beat = Arc::new(AtomicI64::new(0));
    let rsa_pool = crate::leafkey::RsaPool::start(cfg.limits.rsa_key_pool);
    let app = App {
        config: cfg,
        store,
        token,
        scheduler_beat: beat.clone(),
        rsa_pool,
        issuers: Default::default(),
        crl_wake: Default::default(),
        ocsp: Default::default(),
        token_pace: Default::default(),
    };
    let sched_app = app.clone();
    let rocket = crate::api::build(app);
    rocket::execute(async move {
        let ignited = rocket.ignite().await.context("http server")?;
        tokio::spawn(crate::sched::run(sched_app, beat, ignited.shutdown()));
        ignited.launch().await.map(|_| ()).context("http server")
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
