//! `scaivault serve`: the daemon's life, start to stop.
//!
//! 1. Logging, process checks (same real and effective uid, `umask 077`), signal handlers.
//! 2. The token is opened and logged in, the database opened and migrated, the scheduler and the
//!    systemd watchdog started, the listener's TLS certificate loaded or issued. Any failure stops
//!    here with a sentence for the operator and a non-zero exit; systemd never sees `READY=1`.
//! 3. The HTTP listener is launched; once `GET /v1/sys/health` answers `200` through it (see
//!    `probe.rs`), `READY=1` goes to systemd.
//! 4. `SIGHUP` reloads (`reload.rs`); a certificate issued from a role is renewed two thirds into
//!    its life.
//! 5. `SIGTERM`/`SIGINT`: `STOPPING=1`; the listener stops accepting and in-flight requests get
//!    `server.shutdown_grace_secs` (+ `shutdown_mercy_secs` for their connections) to finish; the
//!    scheduler stops; every queued database write (certificates, audit records) is committed;
//!    the last references to the token go, which closes its PKCS#11 sessions. Exit 0.

use crate::app::App;
use crate::config::Config;
use crate::listener::{self, Running};
use crate::signals::{Event, Signals};
use crate::systemd::Notifier;
use crate::tls::TlsMaterial;
use scaivault_hsm::pkcs11::{Pkcs11Config, Pkcs11Token};
use scaivault_store::Store;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// A startup failure: a sentence for the operator.
#[derive(Debug)]
pub struct StartError(pub String);

/// Set when the token refused the PIN at start: the process then exits with
/// [`EXIT_LOGIN_REFUSED`], which the systemd unit does not restart on (a smart card or USB token
/// locks itself after a few wrong PINs; restarting would spend them).
pub static LOGIN_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The exit status of a start whose PIN the token refused (`RestartPreventExitStatus=` in the
/// unit); every other failed start exits 2.
pub const EXIT_LOGIN_REFUSED: u8 = 3;

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

/// Sets up logging to stderr at the configured level (see `logging.rs`).
pub fn init_logging(level: &str) {
    crate::logging::init(level);
}

/// Exports `hsm.softhsm2_conf` as `SOFTHSM2_CONF` for the module. Called before any other thread
/// runs, so nothing reads the environment concurrently.
pub fn export_softhsm_conf(cfg: &Config) {
    if let Some(conf) = &cfg.hsm.softhsm2_conf {
        std::env::set_var("SOFTHSM2_CONF", conf);
    }
}

/// `hsm.softhsm2_conf`, when set, must be a file this process can read (SoftHSM2 fails
/// `C_Initialize` with `CKR_GENERAL_ERROR` otherwise, naming nothing).
///
/// # Errors
/// A sentence naming the file and what to do.
pub fn check_softhsm_conf(cfg: &Config) -> Result<(), StartError> {
    let Some(conf) = &cfg.hsm.softhsm2_conf else {
        return Ok(());
    };
    std::fs::File::open(conf).map(drop).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            StartError(format!(
                "hsm.softhsm2_conf {} cannot be read: {e} (Debian's /etc/softhsm/softhsm2.conf is \
                 root:softhsm 0640: the daemon's user must be in group softhsm — `adduser \
                 scaivault softhsm`, or `dpkg-reconfigure scaivault` after installing softhsm2)",
                conf.display()
            ))
        } else {
            StartError(format!(
                "hsm.softhsm2_conf {} cannot be read: {e}",
                conf.display()
            ))
        }
    })
}

/// Opens the token named by the configuration.
///
/// # Errors
/// A sentence naming the module or token (never the PIN).
pub fn open_token(cfg: &Config) -> Result<Arc<Pkcs11Token>, StartError> {
    let pin = cfg.read_pin().context("hsm pin")?;
    // SoftHSM answers an unreadable configuration with a bare CKR_GENERAL_ERROR.
    check_softhsm_conf(cfg)?;
    Pkcs11Token::open(&Pkcs11Config {
        module: cfg.hsm.module.clone(),
        token_label: cfg.hsm.token_label.clone(),
        pin,
    })
    .inspect_err(|e| {
        // A PIN of a length the token cannot take is as wrong as a refused one (exit 3: a
        // restart would not fix it).
        if matches!(
            e,
            scaivault_hsm::Error::LoginRefused | scaivault_hsm::Error::PinLength { .. }
        ) {
            LOGIN_REFUSED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .context(&format!(
        "cannot use token {:?} through {}",
        cfg.hsm.token_label,
        cfg.hsm.module.display()
    ))
}

/// Opens the store named by the configuration (applying pending migrations).
///
/// # Errors
/// A sentence naming the database file.
pub fn open_store(cfg: &Config) -> Result<Arc<Store>, StartError> {
    if cfg.storage.backend == "postgres" {
        let url = cfg.storage.url.clone().unwrap_or_default();
        let password = cfg.read_db_password().context("database password")?;
        // The password joins the URL in memory only (the configured URL carries none).
        let mut with_password = url::Url::parse(&url)
            .map_err(|e| StartError(format!("storage.url is not a URL: {e}")))?;
        if let Some(pw) = &password {
            with_password
                .set_password(Some(pw.as_str()))
                .map_err(|()| StartError("storage.url cannot carry a password".into()))?;
        }
        let with_password = zeroize::Zeroizing::new(with_password.to_string());
        return Store::open_postgres(&scaivault_store::PgConfig {
            url: with_password.as_str().to_owned(),
            pool_size: cfg.storage.pool_size,
            ca_file: cfg.storage.ca_file.clone(),
            call_limit: None,
        })
        .map(Arc::new)
        .context(&format!("cannot open PostgreSQL database {url}"));
    }
    let path = cfg.db_path();
    Store::open(&path)
        .map(Arc::new)
        .context(&format!("cannot open database {}", path.display()))
}

/// With several nodes, reservations younger than this may be in flight on another node: only
/// older ones are reconciled (an issuance holds its reservation for one signature, bounded by
/// `[hsm] call_timeout`, and a commit).
pub const STALE_RESERVATION: time::Duration = time::Duration::minutes(2);

/// Revokes the serial reservations a crash left behind (the token may have signed them; nobody
/// received the certificate), each with an audit record and a `certificate.revoked` event, in one
/// transaction before the listener starts. Only the daemon does this, never a CLI command that
/// opens the database while a daemon may be issuing. With SQLite every reservation is a leftover
/// (one node, not serving yet): first the reservation journal's records that the database does not
/// hold become reservation rows (with their `started` records; an expired one only leaves its
/// audit trace), then the journal's segments go
/// once the transaction is committed; with PostgreSQL another node may be issuing, so only reservations
/// older than [`STALE_RESERVATION`] are (and the leader repeats this on every pass, for nodes that
/// died and did not come back).
///
/// # Errors
/// The database cannot be written.
pub fn reconcile_reservations(store: &Store) -> Result<usize, StartError> {
    let now_t = scaivault_core::time_util::now();
    let now = scaivault_core::time_util::rfc3339(now_t);
    let shared = store.backend() == "postgres";
    let before = scaivault_core::time_util::rfc3339(now_t - STALE_RESERVATION);
    // The reservation journal of earlier runs (SQLite): what the database does not hold is
    // stored as the reservation it stands for, with its `started` record, and revoked below.
    let (journaled, segments) = match store.journal() {
        Some(j) if !shared => j.pending().context("cannot read the reservation journal")?,
        _ => (Vec::new(), Vec::new()),
    };
    let done = store
        .write(|tx| {
            for r in &journaled {
                // A certificate past its notAfter needs no revocation, and its row may be missing
                // because a tidy removed it after it was stored (the journal of the run that
                // stored it survives a crash): no row is made. When the database does not hold
                // it, its `started` record and a reconciliation record say who asked for it.
                if r.row.not_after.as_deref().is_some_and(|t| t <= now.as_str()) {
                    match tx.get_certificate(&r.row.tenant_id, &r.row.serial) {
                        Ok(_) => {}
                        Err(scaivault_store::Error::NotFound) => {
                            tx.append_audit(&r.started)?;
                            tx.append_audit(&scaivault_store::AuditRecord {
                                time: now.clone(),
                                tenant_id: Some(r.row.tenant_id.clone()),
                                token_id: None,
                                action: "certificate.reconcile".into(),
                                object_id: Some(format!("{}:{}", r.row.issuer_ca_id, r.row.serial)),
                                outcome: "expired_unfinished".into(),
                                request_id: None,
                                detail: Some(
                                    "reserved by an earlier run, not in the database (never stored, or stored and tidied), and expired: nothing to revoke"
                                        .into(),
                                ),
                            })?;
                        }
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                match tx.reserve_certificate(&r.row, &r.tbs_der, None) {
                    Ok(()) => tx.append_audit(&r.started).map(|_| ())?,
                    // Stored (or revoked) already: the certificate's commit settled it.
                    Err(scaivault_store::Error::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            let rows = if shared {
                tx.reconcile_stale_reservations(&now, &before)?
            } else {
                tx.reconcile_reservations(&now)?
            };
            for u in &rows {
                let (tenant, ca, serial) = (&u.tenant_id, &u.issuer_ca_id, &u.serial);
                if shared {
                    // An `unknown` stored while it was reserved must not outlive the revocation.
                    tx.delete_ocsp_responses(ca, serial)?;
                }
                // The reservation row's `started` record (PostgreSQL; the journal's were
                // appended above): who asked for the certificate the token may have signed.
                if let Some(started) = &u.started {
                    tx.append_audit(started)?;
                }
                tx.append_audit(&scaivault_store::AuditRecord {
                    time: now.clone(),
                    tenant_id: Some(tenant.clone()),
                    token_id: None,
                    action: "certificate.reconcile".into(),
                    object_id: Some(format!("{ca}:{serial}")),
                    outcome: "revoked_unfinished".into(),
                    request_id: None,
                    detail: Some(
                        "reserved by an earlier run and never stored (a crash, or a request cut off at a stop): revoked (cessation_of_operation)"
                            .into(),
                    ),
                })?;
                let data = serde_json::json!({
                    "serial": scaivault_core::serial::api_form(serial), "ca_id": ca, "reason": "cessation_of_operation",
                    "revoked_at": now, "unfinished": true,
                })
                .to_string();
                tx.insert_event(tenant, "certificate.revoked", Some(serial), &now, &data)?;
            }
            Ok(rows.len())
        })
        .context("cannot reconcile unfinished serial reservations")?;
    if let Some(j) = store.journal() {
        j.forget(&segments)
            .context("cannot delete the reconciled reservation journal")?;
    }
    if done > 0 {
        tracing::warn!(
            count = done,
            "revoked serial reservations left unfinished by an earlier run (a crash, or requests cut off at a stop)"
        );
    }
    Ok(done)
}

/// Has the RSA key pool fill for the sizes the stored roles issue, so that after a restart the
/// first burst of RSA issuances finds keys ready (a failure only delays the pool until first use).
async fn want_rsa_keys(app: &App) {
    let store = app.store.clone();
    let configs = tokio::task::spawn_blocking(move || store.read(|tx| tx.all_role_configs())).await;
    let Ok(Ok(configs)) = configs else {
        tracing::warn!("cannot read the roles: the RSA key pool fills on first use");
        return;
    };
    for config in configs {
        let spec = serde_json::from_str::<crate::roles::RoleSpec>(&config);
        if let Ok(key) = spec.as_ref().map(crate::roles::RoleSpec::key_spec) {
            app.rsa_pool.want_for(key);
        }
    }
}

/// Refuses set-uid execution (the umask is set for every command in `main`).
fn process_checks() -> Result<(), StartError> {
    let (uid, euid) = (nix::unistd::getuid(), nix::unistd::geteuid());
    if uid != euid {
        return Err(StartError(format!(
            "refusing to run with real uid {uid} and effective uid {euid}: run the daemon as \
             its own user, not set-uid"
        )));
    }
    if euid.is_root() {
        tracing::warn!("running as root: the systemd unit runs the daemon as user scaivault");
    }
    Ok(())
}

/// `scaivault serve --config FILE`.
///
/// # Errors
/// Startup failures.
pub fn run_with_config(path: PathBuf) -> Result<ExitCode, StartError> {
    let cfg = match Config::load(&path).context("configuration") {
        Ok(cfg) => cfg,
        Err(e) => {
            // As for every other start failure: `systemctl status` says why.
            Notifier::from_env().status(&format!("failed: {e}"));
            return Err(e);
        }
    };
    run(cfg, &path)
}

/// Serves with a loaded configuration until `SIGTERM` or `SIGINT`.
///
/// # Errors
/// Startup failures, or the listener failing while it serves.
pub fn run(cfg: Config, path: &Path) -> Result<ExitCode, StartError> {
    run_locked(cfg, path, None)
}

/// [`run`] with the SQLite instance lock already taken ([`lock_instance`]; dev mode takes it
/// before it touches the database).
///
/// # Errors
/// As [`run`].
pub fn run_locked(
    cfg: Config,
    path: &Path,
    held: Option<InstanceLock>,
) -> Result<ExitCode, StartError> {
    init_logging(&cfg.log.level);
    let notifier = Notifier::from_env();
    let result = process_checks().and_then(|()| {
        export_softhsm_conf(&cfg);
        for w in cfg.warnings() {
            tracing::warn!("{w}");
        }
        let n = notifier.clone();
        let path = path.to_path_buf();
        rocket::execute(async move { serve(cfg, path, n, held).await })
    });
    match &result {
        Ok(_) => tracing::info!("stopped"),
        Err(e) => {
            tracing::error!(error = %e, "scaivault did not start or failed");
            notifier.status(&format!("failed: {e}"));
        }
    }
    result
}

/// Runs `fut` unless a stop signal comes first (then `None`). A reload request meanwhile is
/// logged and ignored: the configuration is being read right now.
async fn unless_stopped<T>(signals: &mut Signals, fut: impl Future<Output = T>) -> Option<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            v = &mut fut => return Some(v),
            ev = signals.next() => match ev {
                Event::Stop(_) => return None,
                Event::Reload => tracing::warn!("SIGHUP during startup: ignored"),
            },
        }
    }
}

/// A blocking startup step on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StartError> + Send + 'static,
) -> Result<T, StartError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StartError(format!("startup task failed: {e}")))?
}

fn new_app(cfg: Config, store: Arc<Store>, token: Arc<Pkcs11Token>) -> App {
    let rsa_pool = crate::leafkey::RsaPool::start(cfg.limits.rsa_key_pool);
    let limits = Arc::new(crate::limits::RateLimits::new(&cfg.limits));
    let cluster = Arc::new(crate::cluster::Cluster::new(
        crate::cluster::node_name(cfg.cluster.node_name.as_deref()),
        store.backend() == "postgres",
    ));
    // Watched from here on: the daemon's own connections are open already.
    let mut cache = crate::issuecache::IssueCache::new(store.backend() == "sqlite");
    if let Some(db) = store.path() {
        cache = cache.watching(db);
    }
    let issue_cache = Arc::new(cache);
    let signers = crate::signers::Signers::new(
        cfg.hsm
            .sign_threads
            .unwrap_or_else(crate::signers::Signers::default_size),
        cfg.hsm.call_limit(),
    );
    App {
        config: cfg,
        store,
        token,
        scheduler_beat: Arc::new(AtomicI64::new(0)),
        rsa_pool,
        issuers: Default::default(),
        crl_wake: Default::default(),
        sched_wake: Default::default(),
        acme_wake: Default::default(),
        cluster,
        ocsp: Default::default(),
        token_pace: Default::default(),
        store_refused: Default::default(),
        missing_ca_keys: Default::default(),
        unsettled: Default::default(),
        signers,
        crls: Default::default(),
        metrics: Default::default(),
        limits,
        acme: Default::default(),
        issue_cache,
    }
}

/// Background tasks that run for the daemon's life.
struct Background {
    stop: watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
    cluster: tokio::task::JoinHandle<()>,
    watchdog: tokio::task::JoinHandle<()>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Background {
    fn start(app: &App, notifier: &Notifier) -> Background {
        let (stop, rx) = watch::channel(false);
        let scheduler = tokio::spawn(crate::sched::run(
            app.clone(),
            app.scheduler_beat.clone(),
            stopped(rx.clone()),
        ));
        let cluster = tokio::spawn(crate::cluster::run(app.clone(), stopped(rx.clone())));
        let watchdog = tokio::spawn(crate::systemd::run_watchdog(
            notifier.clone(),
            app.clone(),
            crate::systemd::watchdog_interval(),
            stopped(rx),
        ));
        Background {
            stop,
            scheduler,
            cluster,
            watchdog,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.scheduler.await {
            tracing::warn!(error = %e, "scheduler task failed");
        }
        if let Err(e) = self.cluster.await {
            tracing::warn!(error = %e, "cluster task failed");
        }
        let _ = self.watchdog.await;
    }
}

/// How long a stop waits for the scheduler, and then for the queued database writes: together
/// with the listener's grace period well inside systemd's 30 s stop timeout, also when the
/// database does not answer (each of its statements may take a minute before it is given up).
const STOP_STEP_LIMIT: std::time::Duration = std::time::Duration::from_secs(8);

/// The daemon's async life: start, serve, reload, stop.
async fn serve(
    cfg: Config,
    path: PathBuf,
    notifier: Notifier,
    held: Option<InstanceLock>,
) -> Result<ExitCode, StartError> {
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    tracing::info!(config = %path.display(), listen = %cfg.server.listen, token = %cfg.hsm.token_label, "starting");
    // One daemon per SQLite database: a second one would reconcile the first one's reservation
    // journal as if it had crashed (held until the process ends).
    let _instance = match held {
        Some(lock) => Some(lock),
        None if cfg.storage.backend == "sqlite" => Some(lock_instance(&cfg.db_path())?),
        None => None,
    };

    notifier.status("starting: logging in to the HSM token");
    let c = cfg.clone();
    let Some(token) = unless_stopped(&mut signals, blocking(move || open_token(&c))).await else {
        return Ok(ExitCode::SUCCESS);
    };
    let token = token?;
    let token_alive: Weak<Pkcs11Token> = Arc::downgrade(&token);

    notifier.status("starting: opening the database and applying migrations");
    let c = cfg.clone();
    let Some(store) = unless_stopped(&mut signals, blocking(move || open_store(&c))).await else {
        return Ok(ExitCode::SUCCESS);
    };
    let store = store?;
    let s = store.clone();
    blocking(move || reconcile_reservations(&s).map(|_| ())).await?;
    if store.backend() == "sqlite" {
        let (s, db) = (store.clone(), cfg.db_path());
        blocking(move || crate::revoke::adopt_published_crls(&s, &db).map(|_| ())).await?;
    }
    let app = new_app(cfg.clone(), store, token);
    want_rsa_keys(&app).await;
    // instant-acme's default HTTPS client uses the process-wide rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let challenge_listeners = crate::acme::challenge::bind(
        cfg.acme.http_challenge_listen,
        cfg.acme.tls_challenge_listen,
    )
    .await
    .map_err(|e| StartError(format!("cannot bind an ACME challenge listener: {e}")))?;
    // Several nodes: an answer of an order the leader runs is looked up in the database.
    let shared_answers = app
        .cluster
        .is_shared()
        .then(|| crate::acme::challenge::SharedAnswers::new(app.store.clone()));
    let challenge_tasks = crate::acme::challenge::spawn(
        challenge_listeners,
        app.acme.challenges.clone(),
        shared_answers,
    );
    let public_listener = match cfg.server.public_listen {
        Some(addr) => Some(
            crate::api::public::spawn(
                crate::api::public::bind(addr).await.map_err(StartError)?,
                app.clone(),
                tokio::runtime::Handle::current(),
            )
            .map_err(StartError)?,
        ),
        None => None,
    };
    // Several nodes on one database: try for the leadership before the scheduler's first tick.
    crate::cluster::elect(&app).await;
    let background = Background::start(&app, &notifier);

    let outcome = serve_until_stopped(&app, cfg, &path, &notifier, &mut signals).await;

    if outcome.is_ok() {
        notifier.stopping("stopping: waiting for the scheduler");
    }
    // ACME orders in flight give up before their challenge answers go (they run again at the
    // next start), rather than fail on the CA's "connection refused".
    app.acme.stop();
    // A database that does not answer holds a scheduler pass for up to a statement's limit: the
    // stop does not wait for it longer than STOP_STEP_LIMIT (systemd's stop timeout is 30 s).
    if tokio::time::timeout(STOP_STEP_LIMIT, background.stop())
        .await
        .is_err()
    {
        tracing::warn!(
            limit_s = STOP_STEP_LIMIT.as_secs(),
            "the scheduler did not stop in time (waiting for the database?): stopping without it"
        );
    }
    for t in challenge_tasks {
        t.abort();
    }
    if let Some(p) = public_listener {
        p.stop();
    }
    notifier.status("stopping: committing queued database writes");
    let store = app.store.clone();
    let settle_app = app.clone();
    let flushed = tokio::time::timeout(STOP_STEP_LIMIT, async move {
        // Certificates whose commit was not confirmed and not settled yet get one more try,
        // within the same step's time (the stop stays within systemd's stop timeout).
        crate::settle::retry(&settle_app).await;
        blocking(move || {
            // The group commit runs jobs in order: once this empty job is done, every write
            // queued before it (certificates, audit records) is committed.
            store
                .write_batched(Box::new(|_| Ok(())))
                .context("database")
        })
        .await
    })
    .await
    .unwrap_or_else(|_| {
        Err(StartError(format!(
            "the database did not confirm them within {} s",
            STOP_STEP_LIMIT.as_secs()
        )))
    });
    // The serials still waiting go to the log, for an operator (nothing else will look for them).
    crate::settle::log_left(&app);
    match flushed {
        Ok(()) => {
            tracing::info!("queued database writes committed");
            crate::sched::log_audit_head(&app, "at stop").await;
            // What the reservation journal holds is settled in the database now: the next start
            // has nothing of this run to replay (but a reservation still in flight).
            if let Some(left) = app
                .store
                .journal()
                .map(scaivault_store::journal::Journal::close_resolved)
            {
                if left > 0 {
                    tracing::warn!(segments = left, "reservation journal segments with unsettled reservations are kept for the next start");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "queued database writes could not be committed"),
    }
    notifier.status("stopping: closing the PKCS#11 sessions");
    drop(app);
    close_token(&token_alive).await;
    outcome.map(|()| ExitCode::SUCCESS)
}

/// The instance lock of a SQLite database, held while the daemon serves it.
pub type InstanceLock = nix::fcntl::Flock<std::fs::File>;

/// Takes the exclusive lock of the daemon serving the SQLite database at `db` (`flock` on
/// `<db>.lock` beside the real file, released by the kernel when the process ends, however it
/// ends). Deleting that file while the daemon runs defeats it (OPERATIONS.md says not to).
///
/// # Errors
/// Another process holds it, or the file cannot be opened.
pub fn lock_instance(db: &std::path::Path) -> Result<InstanceLock, StartError> {
    // Next to the real file: a database reached through a symbolic link (of the file or of its
    // directory) is locked where every path to it leads.
    let real = std::fs::canonicalize(db).unwrap_or_else(|_| {
        match (db.parent().map(std::fs::canonicalize), db.file_name()) {
            (Some(Ok(dir)), Some(file)) => dir.join(file),
            _ => db.to_path_buf(),
        }
    });
    let mut name = real.into_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);
    lock_file(&path, &format!("database {}", db.display()), || {
        format!(
            "another scaivault daemon serves the database {} (it holds {}); stop it first",
            db.display(),
            path.display()
        )
    })
}

/// Takes an exclusive `flock` on `path` (created 0600 if missing), the lock of `what`, held until
/// the returned lock is dropped or the process ends; `busy` says who holds it when another
/// process does.
///
/// # Errors
/// Another process holds it (`busy`'s sentence), or the file cannot be opened or locked.
pub fn lock_file(
    path: &Path,
    what: &str,
    busy: impl FnOnce() -> String,
) -> Result<InstanceLock, StartError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(
            |e| match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                Some(dir) if !dir.is_dir() => StartError(format!(
                    "cannot open {what}: its directory {} does not exist",
                    dir.display()
                )),
                _ => StartError(format!(
                    "cannot open {what}: its lock file {}: {e}",
                    path.display()
                )),
            },
        )?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            StartError(busy())
        } else {
            StartError(format!("cannot lock {}: {e}", path.display()))
        }
    })
}

/// Waits until the last reference to the token is gone (its sessions close with it).
async fn close_token(token: &Weak<Pkcs11Token>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while token.strong_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if token.strong_count() == 0 {
        tracing::info!("pkcs#11 sessions closed");
    } else {
        tracing::warn!(
            "the token is still in use by an unfinished task; its sessions close at exit"
        );
    }
}

/// What ended one listener's run.
enum Next {
    /// A stop signal.
    Stop,
    /// A listener with new settings replaces the running one.
    Relaunch {
        cfg: Box<Config>,
        tls: Option<Arc<TlsMaterial>>,
    },
}

/// The listener's TLS material for `cfg`, if `[server.tls]` is set.
async fn tls_for(app: &App, cfg: &Config) -> Result<Option<Arc<TlsMaterial>>, String> {
    match &cfg.server.tls {
        Some(s) => crate::tls::material(app, s).await.map(Some),
        None => Ok(None),
    }
}

fn describe(cfg: &Config, bound: std::net::SocketAddr, tls: Option<&TlsMaterial>) -> String {
    let scheme = if tls.is_some() { "https" } else { "http" };
    format!(
        "serving on {scheme}://{bound} (token {:?}, database {})",
        cfg.hsm.token_label,
        cfg.db_path().display()
    )
}

/// Launches the listener and keeps it serving (replacing it on reloads and renewals) until a stop
/// signal; then drains it.
async fn serve_until_stopped(
    app: &App,
    cfg: Config,
    path: &Path,
    notifier: &Notifier,
    signals: &mut Signals,
) -> Result<(), StartError> {
    if cfg.server.tls.is_some() {
        notifier.status("starting: preparing the listener's TLS certificate");
    }
    let Some(tls) = unless_stopped(signals, tls_for(app, &cfg)).await else {
        return Ok(());
    };
    let mut tls = tls.map_err(StartError)?;
    let mut cfg = cfg;
    let mut first = true;
    loop {
        notifier.status(&format!("starting: binding {}", cfg.server.listen));
        let Running {
            shutdown,
            mut server,
            bound,
        } = listener::launch(app, &cfg, tls.as_deref()).await?;
        let status = describe(&cfg, bound, tls.as_deref());
        let probe = crate::probe::wait_healthy(
            crate::probe::local_target(bound),
            tls.as_ref().map(|t| t.leaf_der.clone()),
            |s| notifier.status(s),
        );
        let ready = tokio::select! {
            r = unless_stopped(signals, probe) => r.is_some(),
            r = &mut server => {
                return Err(StartError(format!("the http listener stopped: {}", flatten(r))));
            }
        };
        if !ready {
            notifier.stopping("stopping: stop requested during startup");
            shutdown.notify();
            listener::drain(server, drain_limit(&cfg)).await;
            return Ok(());
        }
        notifier.ready(&status);
        tracing::info!(address = %bound, tls = tls.is_some(), "{}", if first { "ready" } else { "reloaded" });
        if first {
            crate::sched::log_audit_head(app, "at start").await;
        }
        first = false;

        let next = loop {
            let renew = renewal(tls.as_deref());
            tokio::select! {
                r = &mut server => {
                    return Err(StartError(format!("the http listener stopped: {}", flatten(r))));
                }
                ev = signals.next() => match ev {
                    Event::Stop(sig) => {
                        notifier.stopping(&format!("stopping ({}): draining in-flight requests", sig.as_str()));
                        break Next::Stop;
                    }
                    Event::Reload => {
                        notifier.reloading("reloading the configuration");
                        match reload(app, path, &cfg, tls.as_ref()).await {
                            Ok(r) if r.relaunch => break Next::Relaunch { cfg: Box::new(r.cfg), tls: r.tls },
                            Ok(r) => {
                                cfg = r.cfg;
                                notifier.ready(&format!("{status}; reloaded"));
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "reload failed; still running with the previous configuration");
                                notifier.ready(&format!("{status}; reload failed: {e}"));
                            }
                        }
                    }
                },
                () = renew => {
                    match tls_for(app, &cfg).await {
                        Ok(fresh) => break Next::Relaunch { cfg: Box::new(cfg.clone()), tls: fresh },
                        Err(e) => {
                            if let Some(t) = tls.as_mut() {
                                let mut later = (**t).clone();
                                let now = time::OffsetDateTime::now_utc();
                                let wait = renewal_retry(later.not_after - now);
                                tracing::error!(error = %e, retry_in_secs = wait.whole_seconds(), not_after = %later.not_after, "renewing the listener certificate failed; retrying");
                                notifier.status(&format!("{status}; listener certificate renewal failed, retrying"));
                                later.renew_at = Some(now + wait);
                                *t = Arc::new(later);
                            }
                        }
                    }
                }
            }
        };
        shutdown.notify();
        match next {
            Next::Stop => {
                listener::drain(server, drain_limit(&cfg)).await;
                return Ok(());
            }
            Next::Relaunch {
                cfg: new_cfg,
                tls: new_tls,
            } => {
                tracing::info!("restarting the http listener with the new settings");
                let limit = drain_limit(&cfg);
                tokio::spawn(listener::drain(server, limit));
                cfg = *new_cfg;
                tls = new_tls;
            }
        }
    }
}

fn flatten(r: Result<Result<(), String>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "without an error".into(),
        Ok(Err(e)) => e,
        Err(e) => e.to_string(),
    }
}

/// When to try again after a failed renewal of the listener's certificate, `left` before it
/// expires: a tenth of that, between 5 s and 10 minutes (a certificate of a few minutes is
/// retried often enough to be replaced before it lapses).
fn renewal_retry(left: time::Duration) -> time::Duration {
    let tenth: time::Duration = left / 10_i32;
    tenth.clamp(time::Duration::seconds(5), time::Duration::minutes(10))
}

/// How long to wait for a stopped listener: Rocket's grace and mercy periods plus a second.
fn drain_limit(cfg: &Config) -> Duration {
    Duration::from_secs(
        u64::from(cfg.server.shutdown_grace_secs) + u64::from(cfg.server.shutdown_mercy_secs) + 1,
    )
}

/// Resolves when the listener's certificate is due for renewal (never for files or plain HTTP).
async fn renewal(tls: Option<&TlsMaterial>) {
    match tls.and_then(|t| t.renew_at) {
        Some(at) => {
            let wait = at - time::OffsetDateTime::now_utc();
            let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            tracing::info!("the listener certificate is two thirds through its life: renewing");
        }
        None => std::future::pending().await,
    }
}

/// The outcome of a reload.
struct Reloaded {
    /// The configuration now in force.
    cfg: Config,
    /// The listener's TLS material for `cfg`.
    tls: Option<Arc<TlsMaterial>>,
    /// Whether the listener must be replaced to apply `cfg` and `tls`.
    relaunch: bool,
}

/// Handles `SIGHUP`: reads the configuration again, applies the log level, and says whether the
/// listener must be replaced.
///
/// # Errors
/// The new configuration or TLS material is not usable; nothing was changed then.
async fn reload(
    app: &App,
    path: &Path,
    running: &Config,
    tls: Option<&Arc<TlsMaterial>>,
) -> Result<Reloaded, String> {
    let p = path.to_path_buf();
    let new = tokio::task::spawn_blocking(move || Config::load(&p))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("configuration: {e}"))?;
    let plan = crate::reload::plan(running, new);
    // TLS first: a bad certificate leaves everything as it was.
    let new_tls = match (&plan.config.server.tls, tls) {
        (None, _) => None,
        // The same role settings: keep the certificate (it is renewed on its own schedule).
        (Some(s), Some(t)) if s.role.is_some() && Some(s) == running.server.tls.as_ref() => {
            Some(t.clone())
        }
        (Some(_), _) => tls_for(app, &plan.config).await?,
    };
    let tls_changed = match (&new_tls, tls) {
        (Some(a), Some(b)) => !a.same_as(b),
        (None, None) => false,
        _ => true,
    };
    for line in &plan.not_applied {
        tracing::warn!("{line}");
    }
    if plan.log_level_changed {
        match crate::logging::set_level(&plan.config.log.level) {
            Ok(()) => tracing::info!(level = %plan.config.log.level, "log level changed"),
            Err(e) => tracing::warn!(error = %e, "log level not changed"),
        }
    }
    let relaunch = tls_changed || plan.listener_changed;
    if relaunch {
        tracing::info!(
            tls_changed,
            listener_settings_changed = plan.listener_changed,
            "reload applies new listener settings"
        );
    } else {
        tracing::info!("reload: the listener's settings are unchanged");
    }
    Ok(Reloaded {
        cfg: plan.config,
        tls: new_tls,
        relaunch,
    })
}

#[cfg(test)]
mod tests {
    use super::renewal_retry;
    use time::Duration as D;

    #[test]
    fn renewal_retry_is_a_tenth_of_the_time_left_within_bounds() {
        assert_eq!(renewal_retry(D::seconds(20)), D::seconds(5));
        assert_eq!(renewal_retry(D::minutes(5)), D::seconds(30));
        assert_eq!(renewal_retry(D::days(30)), D::minutes(10));
        assert_eq!(renewal_retry(D::seconds(-3)), D::seconds(5));
    }
}
