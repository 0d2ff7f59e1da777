//! The PostgreSQL backend: connections, TLS, transactions, migrations and leadership.
//!
//! Every connection is a blocking [`Client`] (each drives its socket on a small runtime of its
//! own, inside the calling thread, and gives every call a time limit): the store is only ever
//! called from blocking threads, so an async pool would add a runtime hop per statement and
//! nothing else.
//!
//! Statements are prepared once per connection (the `?N` → `$N` rewrite happens then) and kept
//! in the connection's cache, keyed by the SQL text. A connection that failed at the connection
//! level (closed socket, administrator shutdown, …) is marked broken and replaced on its next use;
//! such a failure also bumps a store-wide epoch, and every other pooled connection is checked with
//! a round trip before its next use, so a database restart costs at most the one failed call.

use crate::db::{to_dollar, Exec, Param, Row, Value};
use crate::pg_client::{Client, PgError, CALL_LIMIT, MIGRATION_LIMIT};
use crate::{Error, Result};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::{NoTls, Statement};

/// Transaction-scoped advisory lock every write transaction takes first: writes are serialized
/// across all nodes sharing the database, as SQLite serializes them on one host. (The keys are
/// ASCII "SCVA" followed by a number; advisory locks are per database.)
pub(crate) const WRITE_LOCK: i64 = 0x5343_5641_0000_0001;
/// Session-level advisory lock held by the cluster's leader (scheduled jobs).
pub(crate) const LEADER_LOCK: i64 = 0x5343_5641_0000_0002;
/// Transaction-scoped advisory lock around migrations.
pub(crate) const MIGRATE_LOCK: i64 = 0x5343_5641_0000_0003;

/// How a store reaches PostgreSQL.
#[derive(Clone, Default)]
pub struct PgConfig {
    /// A libpq-style URL (`postgres://user:password@host:port/db?sslmode=…`) or key=value string.
    /// `sslmode=require`, `verify-ca` or `verify-full` turn TLS on (rustls, which always checks
    /// the server's certificate and name, so all three mean `verify-full` here); `sslrootcert`
    /// names the CA file when `ca_file` is unset.
    pub url: String,
    /// Read connections (besides the writer, the group-commit writer and the leadership one).
    pub pool_size: usize,
    /// PEM file of the CA(s) that issued the server's certificate; turns TLS on. Without it, TLS
    /// trusts the system's roots.
    pub ca_file: Option<PathBuf>,
    /// How long a statement may go unanswered before its connection is given up (a 503);
    /// `None`: 60 s. The connection's handshake has the URL's `connect_timeout` (10 s by default).
    pub call_limit: Option<Duration>,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PgConfig")
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .field("call_limit", &self.call_limit)
            .finish_non_exhaustive()
    }
}

/// How long a statement waits for a lock (`lock_timeout`): a macro so that `concat!` takes it.
macro_rules! row_lock_wait {
    () => {
        "15s"
    };
}

/// Sent on every new connection. Lock waits end (a 503) instead of hanging forever behind a node
/// that stopped mid-transaction; such a node's transaction is ended by the server after a minute;
/// the server probes idle peers with TCP keepalives so that a dead host's locks (leadership
/// included) are released within about half a minute.
const SESSION_SETUP: &str = concat!(
    "SET lock_timeout = '",
    row_lock_wait!(),
    "'; SET idle_in_transaction_session_timeout = '60s'; \
     SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"
);

const ROW_LOCK_WAIT: &str = row_lock_wait!();

/// How long a starting node waits for another node's migration (its advisory lock).
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Connection settings shared by the pool, the group-commit writer and the leader slot.
pub(crate) struct Settings {
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    epoch: AtomicU64,
    call_limit: Duration,
    /// Until when (milliseconds after `started`) new connections are not attempted, after one
    /// failed or a call went unanswered; 0: no such pause.
    pause_until_ms: AtomicU64,
    started: std::time::Instant,
}

/// How long after a connection attempt failed, or a call went unanswered, calls are refused at
/// once instead of each waiting for its own attempt (requests queued behind a database that does
/// not answer drained at about one a second, each after a 10 s connect attempt).
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// One connection and its prepared statements.
pub(crate) struct PgConn {
    client: Client,
    stmts: HashMap<String, Statement>,
    /// The settings' epoch when this connection was last known good.
    epoch: u64,
    /// A connection-level error happened on it.
    broken: bool,
    /// The server did not answer a call in time (`broken` too): not worth a retry.
    silent: bool,
    /// A transaction was begun and not ended (a panic unwound through it).
    in_tx: bool,
}

/// Removes `key=value` from a URL's query or a key=value connection string; returns the value.
fn take_param(conn: &mut String, key: &str) -> Option<String> {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let (base, query) = conn.split_once('?')?;
        let mut found = None;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| match kv.split_once('=') {
                Some((k, v)) if k == key => {
                    found = Some(v.to_owned());
                    false
                }
                _ => true,
            })
            .collect();
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        *conn = rebuilt;
        found
    } else {
        let mut found = None;
        let kept: Vec<&str> = conn
            .split_whitespace()
            .filter(|kv| match kv.split_once('=') {
                Some((k, v)) if k.trim() == key => {
                    found = Some(v.trim().to_owned());
                    false
                }
                _ => true,
            })
            .collect();
        let rebuilt = kept.join(" ");
        *conn = rebuilt;
        found
    }
}

fn tls_connector(ca_file: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            let certs = CertificateDer::pem_file_iter(p)
                .map_err(|e| Error::Unavailable(format!("{}: {e}", p.display())))?;
            for c in certs {
                let c = c.map_err(|e| Error::Unavailable(format!("{}: {e}", p.display())))?;
                roots
                    .add(c)
                    .map_err(|e| Error::Unavailable(format!("{}: {e}", p.display())))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    if roots.is_empty() {
        return Err(Error::Unavailable(
            "no trusted roots for TLS to PostgreSQL (set the CA file)".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Unavailable(format!("TLS to PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
}

impl Settings {
    pub(crate) fn new(cfg: &PgConfig) -> Result<Self> {
        let mut url = cfg.url.clone();
        let mode = take_param(&mut url, "sslmode");
        let root = take_param(&mut url, "sslrootcert");
        let ca_file = cfg.ca_file.clone().or(root.map(PathBuf::from));
        let tls = ca_file.is_some()
            || matches!(
                mode.as_deref(),
                Some("require") | Some("verify-ca") | Some("verify-full")
            );
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        config.ssl_mode(if tls {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
        if config.get_application_name().is_none() {
            config.application_name("scaivault");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        let tls = if tls {
            Some(tls_connector(ca_file.as_deref())?)
        } else {
            None
        };
        Ok(Settings {
            config,
            tls,
            epoch: AtomicU64::new(0),
            call_limit: cfg.call_limit.unwrap_or(CALL_LIMIT),
            pause_until_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
        })
    }

    /// Connects: TCP, TLS, startup, authentication and the session's settings, within the
    /// URL's `connect_timeout` (10 s by default) times the number of hosts it names, for all of
    /// them together (the driver bounds only each host's TCP connect: a first host that accepts
    /// and stays silent uses the whole limit).
    pub(crate) fn connect(&self) -> Result<PgConn> {
        let per_host = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let hosts = u32::try_from(self.config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
        let limit = per_host.saturating_mul(hosts);
        let client = match &self.tls {
            Some(t) => Client::connect(&self.config, t.clone(), limit),
            None => Client::connect(&self.config, NoTls, limit),
        };
        let mut client = client.map_err(|e| {
            self.pause();
            Error::Unavailable(format!("cannot connect to PostgreSQL: {e}"))
        })?;
        client.set_limit(limit);
        client.batch_execute(SESSION_SETUP).map_err(|e| match e {
            PgError::NoAnswer(_) => {
                self.pause();
                Error::Unavailable(format!("cannot connect to PostgreSQL: {e}"))
            }
            e => map_error(e),
        })?;
        self.pause_until_ms.store(0, Ordering::Release);
        client.set_limit(self.call_limit);
        Ok(PgConn {
            client,
            stmts: HashMap::new(),
            epoch: self.epoch.load(Ordering::Acquire),
            broken: false,
            silent: false,
            in_tx: false,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `Err(Unavailable)` while calls are paused after the database failed to answer (see
    /// [`PAUSE_AFTER_FAILURE`]).
    pub(crate) fn check_not_paused(&self) -> Result<()> {
        let until = self.pause_until_ms.load(Ordering::Acquire);
        if until != 0 && self.now_ms() < until {
            return Err(Error::Unavailable(format!(
                "PostgreSQL did not answer within the last {} s: not asked again yet",
                PAUSE_AFTER_FAILURE.as_secs()
            )));
        }
        Ok(())
    }

    /// The database did not answer (a connection attempt failed, or a call ran out of time).
    fn pause(&self) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(PAUSE_AFTER_FAILURE.as_millis()).unwrap_or(u64::MAX));
        self.pause_until_ms.store(until.max(1), Ordering::Release);
    }

    /// Notes a connection-level failure: every pooled connection is checked before its next use.
    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes `slot` hold a usable connection; returns whether it is a new one.
    fn ensure(&self, slot: &mut Option<PgConn>) -> Result<bool> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(c) = slot.as_mut() {
            let usable = !c.broken
                && !c.in_tx
                && !c.client.is_closed()
                && (c.epoch == epoch || c.client.is_valid(Duration::from_secs(5)));
            if usable {
                c.epoch = epoch;
                return Ok(false);
            }
            *slot = None;
        }
        self.check_not_paused()?;
        *slot = Some(self.connect()?);
        Ok(true)
    }
}

/// Whether `e` means the connection is gone (rather than the statement failed).
fn is_connection_error(e: &PgError) -> bool {
    let e = match e {
        PgError::Driver(e) => e,
        PgError::NoAnswer(_) | PgError::Local(_) => return true,
    };
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => {
            let c = c.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        }
        None => {
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                if s.is::<std::io::Error>() {
                    return true;
                }
                src = s.source();
            }
            false
        }
    }
}

/// Maps a driver error to the crate's error: unique and other constraint violations (class 23)
/// are [`Error::Conflict`] like SQLite's constraint errors; connection trouble, lock timeouts,
/// serialization failures and a server short of resources are [`Error::Unavailable`] (a 503).
pub(crate) fn map_error(e: impl Into<PgError>) -> Error {
    let e = e.into();
    let driver = match &e {
        PgError::Driver(d) => d,
        PgError::NoAnswer(_) | PgError::Local(_) => return Error::Unavailable(e.to_string()),
    };
    if let Some(db) = driver.as_db_error() {
        let code = db.code().code();
        if code.starts_with("23") {
            return Error::Conflict(db.message().to_owned());
        }
        if code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P")
            || matches!(code, "55P03" | "40001" | "40P01" | "25P03" | "57014")
        {
            return Error::Unavailable(format!("{code}: {}", db.message()));
        }
        return Error::Sql(format!("{code}: {}", db.message()));
    }
    if is_connection_error(&e) {
        return Error::Unavailable(e.to_string());
    }
    Error::Sql(e.to_string())
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let text = |t: &Type| {
            *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::BPCHAR || *t == Type::NAME
        };
        match *self {
            Param::Null => Ok(IsNull::Yes),
            Param::Int(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(i)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (i != 0).to_sql(ty, out)
                } else if text(ty) {
                    i.to_string().as_str().to_sql(ty, out)
                } else {
                    Err(format!("an integer cannot be sent as {ty}").into())
                }
            }
            Param::Text(s) => {
                if text(ty) || *ty == Type::UNKNOWN {
                    s.to_sql(ty, out)
                } else {
                    Err(format!("text cannot be sent as {ty}").into())
                }
            }
            Param::Blob(b) => {
                if *ty == Type::BYTEA {
                    b.to_sql(ty, out)
                } else {
                    Err(format!("bytes cannot be sent as {ty}").into())
                }
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::INT8 {
            Ok(Value::Int(i64::from_sql(ty, raw)?))
        } else if *ty == Type::INT4 {
            Ok(Value::Int(i64::from(i32::from_sql(ty, raw)?)))
        } else if *ty == Type::INT2 {
            Ok(Value::Int(i64::from(i16::from_sql(ty, raw)?)))
        } else if *ty == Type::BOOL {
            Ok(Value::Int(i64::from(bool::from_sql(ty, raw)?)))
        } else if *ty == Type::BYTEA {
            Ok(Value::Blob(Vec::<u8>::from_sql(ty, raw)?))
        } else {
            Ok(Value::Text(String::from_sql(ty, raw)?))
        }
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INT8
            || *ty == Type::INT4
            || *ty == Type::INT2
            || *ty == Type::BOOL
            || *ty == Type::BYTEA
            || *ty == Type::TEXT
            || *ty == Type::VARCHAR
            || *ty == Type::BPCHAR
            || *ty == Type::NAME
            || *ty == Type::UNKNOWN
    }
}

/// An open transaction on one connection.
pub(crate) struct PgTx<'c> {
    conn: RefCell<&'c mut PgConn>,
    settings: &'c Settings,
    /// A statement failed since the last savepoint rollback: PostgreSQL has aborted the
    /// transaction, so it must not be reported as committed.
    aborted: Cell<bool>,
}

impl PgTx<'_> {
    fn fail(&self, c: &mut PgConn, e: PgError) -> Error {
        self.aborted.set(true);
        if is_connection_error(&e) {
            c.broken = true;
            c.silent = matches!(e, PgError::NoAnswer(_));
            if c.silent {
                self.settings.pause();
            }
            self.settings.bump();
        }
        map_error(e)
    }

    fn statement(&self, c: &mut PgConn, sql: &str) -> Result<Statement> {
        if let Some(s) = c.stmts.get(sql) {
            return Ok(s.clone());
        }
        match c.client.prepare(&to_dollar(sql)) {
            Ok(s) => {
                c.stmts.insert(sql.to_owned(), s.clone());
                Ok(s)
            }
            Err(e) => Err(self.fail(c, e)),
        }
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut PgConn) -> Result<T>) -> Result<T> {
        let mut g = self
            .conn
            .try_borrow_mut()
            .map_err(|_| Error::Sql("a query was started while another was being read".into()))?;
        f(&mut g)
    }
}

impl Exec for PgTx<'_> {
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<usize> {
        self.with_conn(|c| {
            let st = self.statement(c, sql)?;
            let p: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            match c.client.execute(&st, &p) {
                Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(e) => Err(self.fail(c, e)),
            }
        })
    }

    fn query_each(
        &self,
        sql: &str,
        params: &[Param<'_>],
        f: &mut dyn FnMut(&Row<'_>) -> Result<bool>,
    ) -> Result<()> {
        self.with_conn(|c| {
            let st = self.statement(c, sql)?;
            let p: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
            match c.client.query_each(&st, &p, &mut |r| f(&Row::Pg(r))) {
                Ok(outcome) => outcome,
                Err(e) => Err(self.fail(c, e)),
            }
        })
    }

    fn batch(&self, sql: &str) -> Result<()> {
        self.with_conn(|c| match c.client.batch_execute(sql) {
            Ok(()) => {
                if sql.starts_with("ROLLBACK TO") {
                    self.aborted.set(false);
                }
                Ok(())
            }
            Err(e) => Err(self.fail(c, e)),
        })
    }
}

/// `BEGIN` of a read transaction: one consistent snapshot, no writes.
pub(crate) const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// `BEGIN` of a write transaction: takes the cluster-wide write lock first. `sync: false` lets
/// the commit return before the server flushed its WAL (the counterpart of SQLite's
/// `synchronous=NORMAL` for [`crate::Durability::Wal`] batches).
pub(crate) fn begin_write(sync: bool) -> String {
    let relaxed = if sync {
        ""
    } else {
        "; SET LOCAL synchronous_commit TO OFF"
    };
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITE_LOCK}){relaxed}"
    )
}

/// Runs `f` without a transaction (each statement commits on its own: one round trip per
/// statement, instead of `BEGIN` + statement + `COMMIT`), for reads whose statements need not see
/// one snapshot. A connection found dead is replaced and `f` tried once more (it only reads).
pub(crate) fn run_autocommit<T>(
    settings: &Settings,
    slot: &mut Option<PgConn>,
    f: impl Fn(&PgTx<'_>) -> Result<T>,
) -> Result<T> {
    let mut tries = 0;
    loop {
        tries += 1;
        let fresh = settings.ensure(slot)?;
        let conn = slot
            .as_mut()
            .ok_or_else(|| Error::Unavailable("no connection".into()))?;
        let tx = PgTx {
            conn: RefCell::new(conn),
            settings,
            aborted: Cell::new(false),
        };
        let out = f(&tx);
        let conn = tx.conn.into_inner();
        // A connection found closed is replaced and the read tried once more; a server that did
        // not answer is not asked again at once (that would double the caller's wait).
        let broken = conn.broken && !conn.silent;
        match out {
            Err(Error::Unavailable(_)) if broken && !fresh && tries < 2 => {
                *slot = None;
            }
            other => return other,
        }
    }
}

/// Runs `f` in a transaction begun with `begin` on the connection in `slot` (connecting or
/// reconnecting first when needed), then commits, or rolls back when `f` fails.
pub(crate) fn run<T>(
    settings: &Settings,
    slot: &mut Option<PgConn>,
    begin: &str,
    f: impl FnOnce(&PgTx<'_>) -> Result<T>,
) -> Result<T> {
    // A connection that died while idle is only noticed when used: then BEGIN fails before `f`
    // ran, and one retry on a new connection is safe.
    let mut tries = 0;
    loop {
        tries += 1;
        let fresh = settings.ensure(slot)?;
        let c = slot
            .as_mut()
            .ok_or_else(|| Error::Unavailable("no connection".into()))?;
        match c.client.batch_execute(begin) {
            Ok(()) => {
                c.in_tx = true;
                break;
            }
            Err(e) => {
                let conn_err = is_connection_error(&e);
                if matches!(e, PgError::NoAnswer(_)) {
                    settings.pause();
                }
                if conn_err {
                    settings.bump();
                    *slot = None;
                } else if c.client.batch_execute("ROLLBACK").is_err() {
                    // `begin` is several statements: when a later one failed (the write lock's
                    // wait ran into `lock_timeout`, a cancelled wait), the transaction BEGIN
                    // opened is aborted and must be ended, or every later statement on this
                    // connection fails with 25P02. A connection that cannot end it goes.
                    *slot = None;
                }
                // A server that did not answer is not asked again at once (that would double
                // the caller's wait); a connection found closed is replaced and tried once more.
                let retry = conn_err && !matches!(e, PgError::NoAnswer(_));
                if !retry || fresh || tries >= 2 {
                    return Err(map_error(e));
                }
            }
        }
    }
    let conn = slot
        .as_mut()
        .ok_or_else(|| Error::Unavailable("no connection".into()))?;
    let tx = PgTx {
        conn: RefCell::new(conn),
        settings,
        aborted: Cell::new(false),
    };
    let out = f(&tx);
    let aborted = tx.aborted.get();
    let conn = tx.conn.into_inner();
    let out = match out {
        Ok(_) if aborted => Err(Error::Sql(
            "a statement failed inside the transaction; nothing was written".into(),
        )),
        other => other,
    };
    match out {
        Ok(v) => match conn.client.batch_execute("COMMIT") {
            Ok(()) => {
                conn.in_tx = false;
                Ok(v)
            }
            Err(e) => {
                let lost = is_connection_error(&e);
                if lost {
                    conn.broken = true;
                    settings.bump();
                }
                if matches!(e, PgError::NoAnswer(_)) {
                    settings.pause();
                }
                // The server may have applied a COMMIT whose answer was lost on the way; one it
                // answered with an error (a serialization failure, say) was not applied.
                match map_error(e) {
                    Error::Unavailable(why) if lost => Err(Error::Unconfirmed(why)),
                    other => Err(other),
                }
            }
        },
        Err(e) => {
            match conn.client.batch_execute("ROLLBACK") {
                Ok(()) => conn.in_tx = false,
                Err(re) => {
                    conn.broken = true;
                    if is_connection_error(&re) {
                        settings.bump();
                    }
                }
            }
            Err(e)
        }
    }
}

/// Applies pending migrations, one node at a time (the migration lock), all in one transaction.
pub(crate) fn migrate(settings: &Settings, slot: &mut Option<PgConn>) -> Result<()> {
    // Another node may be migrating right now: its lock is waited for longer than a row lock
    // (`MIGRATION_LOCK_WAIT`, within systemd's 90 s start timeout), the statements after it get
    // the session's usual `lock_timeout` again (a DDL statement queued behind a long lock would
    // hold up every other node's reads of that table).
    let wait = MIGRATION_LOCK_WAIT.as_secs();
    let begin = format!(
        "BEGIN; SET LOCAL lock_timeout = '{wait}s'; SELECT pg_advisory_xact_lock({MIGRATE_LOCK}); \
         SET LOCAL lock_timeout = '{ROW_LOCK_WAIT}'; \
         CREATE TABLE IF NOT EXISTS schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)"
    );
    // A migration may rewrite large tables: more than a statement's usual time.
    if let Some(c) = slot.as_mut() {
        c.client.set_limit(MIGRATION_LIMIT);
    }
    let out = run(settings, slot, &begin, |tx| {
        let mut version = 0i64;
        tx.query_each(
            "SELECT version FROM schema_version WHERE id = 1",
            &[],
            &mut |r| {
                version = r.get(0)?;
                Ok(false)
            },
        )?;
        let known = i64::try_from(crate::PG_MIGRATIONS.len()).unwrap_or(i64::MAX);
        if version > known {
            return Err(Error::Corrupt(format!(
                "database schema version {version} is newer than this build ({known}): a newer \
                 scaivault wrote it; run that version, or restore the backup taken before the \
                 upgrade (docs/OPERATIONS.md §7)"
            )));
        }
        for sql in crate::PG_MIGRATIONS
            .iter()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            tx.batch(sql)?;
        }
        tx.execute(
            "INSERT INTO schema_version (id, version) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[Param::Int(known)],
        )?;
        Ok(())
    });
    if let Some(c) = slot.as_mut() {
        c.client.set_limit(settings.call_limit);
    }
    out.map_err(|e| match e {
        Error::Unavailable(why) if why.starts_with("55P03") => Error::Unavailable(format!(
            "another node held the migration lock for over {wait} s (a node migrating), or a \
             table to migrate stayed locked for over {ROW_LOCK_WAIT} (a long transaction): {why}"
        )),
        other => other,
    })
}

/// The leadership connection: holds [`LEADER_LOCK`] while `held`.
#[derive(Default)]
pub(crate) struct Leader {
    conn: Option<PgConn>,
    held: bool,
}

impl Leader {
    /// See [`crate::Store::try_lead`] and [`crate::Store::try_lead_for`].
    pub(crate) fn try_lead(&mut self, settings: &Settings, lease: Option<Duration>) -> bool {
        if self.held {
            let alive = self
                .conn
                .as_mut()
                .is_some_and(|c| c.client.batch_execute("SELECT 1").is_ok());
            if alive {
                return true;
            }
            self.step_down();
            return false;
        }
        if self.conn.is_none() {
            match settings.connect() {
                Ok(c) => {
                    if let Some(lease) = lease {
                        // The server ends this session, and so releases the lock, once it has
                        // heard nothing from it for a lease: a leader whose path to the
                        // database hangs (a proxy that keeps both legs open) cannot hold the
                        // cluster's jobs forever. PostgreSQL 14 and later; older servers refuse
                        // the setting and keep the TCP keepalives alone.
                        let _ = c.client.batch_execute(&format!(
                            "SET idle_session_timeout = {}",
                            lease.as_millis().max(1000)
                        ));
                    }
                    self.conn = Some(c);
                }
                Err(_) => return false,
            }
        }
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        match c
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .and_then(|r| Ok(r.try_get::<_, bool>(0)?))
        {
            Ok(got) => {
                self.held = got;
                got
            }
            Err(_) => {
                self.step_down();
                false
            }
        }
    }

    /// Drops the connection, which releases the lock.
    pub(crate) fn step_down(&mut self) {
        self.conn = None;
        self.held = false;
    }
}

#[cfg(test)]
mod tests {
    use super::take_param;

    #[test]
    fn ssl_parameters_are_taken_out_of_urls_and_dsns() {
        let mut u = "postgres://u:p@h/db?sslmode=verify-full&application_name=x".to_owned();
        assert_eq!(
            take_param(&mut u, "sslmode").as_deref(),
            Some("verify-full")
        );
        assert_eq!(u, "postgres://u:p@h/db?application_name=x");
        let mut u = "postgres://u:p@h/db?sslrootcert=/ca.pem".to_owned();
        assert_eq!(
            take_param(&mut u, "sslrootcert").as_deref(),
            Some("/ca.pem")
        );
        assert_eq!(u, "postgres://u:p@h/db");
        let mut d = "host=h user=u sslmode=require dbname=x".to_owned();
        assert_eq!(take_param(&mut d, "sslmode").as_deref(), Some("require"));
        assert_eq!(d, "host=h user=u dbname=x");
    }
}
