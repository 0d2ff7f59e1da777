//! A blocking PostgreSQL client whose every call, the connection's handshake included, has a
//! time limit.
//!
//! `postgres::Client` (the synchronous rust-postgres client this replaces) bounds only the TCP
//! connect: a server that accepts the connection and then never answers — a stopped process, a
//! proxy whose far leg hangs, a port that is no PostgreSQL — held `serve` at start forever with no
//! message, and held any store call made on a live connection to such a server just as long (TCP
//! keepalives do not help: the peer's kernel acknowledges them). This is the same client built
//! the same way — `tokio_postgres` driven on a current-thread runtime inside the calling thread —
//! with `tokio::time::timeout` around each call. A call that runs out of time leaves the
//! connection in an unknown state, so the caller treats it as a broken connection (a new one is
//! made on next use).

use std::future::Future;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Row, Socket, Statement};

/// How long one statement (or batch of statements) may go unanswered. Lock waits end at the
/// session's `lock_timeout` (15 s) well before it; migrations get [`MIGRATION_LIMIT`].
pub(crate) const CALL_LIMIT: Duration = Duration::from_secs(60);
/// Migrations may rewrite large tables.
pub(crate) const MIGRATION_LIMIT: Duration = Duration::from_secs(3600);
/// How long a closing connection may take to say goodbye to the server.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// A failed call.
#[derive(Debug)]
pub(crate) enum PgError {
    /// The driver's (or the server's) error.
    Driver(tokio_postgres::Error),
    /// No answer within the limit; the connection must not be used again.
    NoAnswer(Duration),
    /// The connection's runtime could not be made (out of threads or file descriptors).
    Local(std::io::Error),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Driver(e)
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The driver's own text is often only its kind ("db error", "error connecting to
            // server"): the causes say which (a refused password, a name that does not resolve).
            PgError::Driver(e) => {
                write!(f, "{e}")?;
                let mut last = e.to_string();
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    let text = c.to_string();
                    if !text.is_empty() && !last.contains(&text) {
                        write!(f, ": {text}")?;
                    }
                    last = text;
                    cause = c.source();
                }
                Ok(())
            }
            PgError::NoAnswer(d) => write!(f, "PostgreSQL did not answer within {} s", d.as_secs()),
            PgError::Local(e) => write!(f, "cannot start a connection to PostgreSQL: {e}"),
        }
    }
}

/// One connection.
pub(crate) struct Client {
    /// `None` only while dropping.
    client: Option<tokio_postgres::Client>,
    /// Drives the connection's socket (only while a call runs: the runtime has no threads).
    connection: JoinHandle<()>,
    rt: Runtime,
    /// The limit of each call (see [`Client::set_limit`]).
    limit: Duration,
}

impl Client {
    /// Connects (TCP, TLS, startup and authentication) within `limit`.
    pub(crate) fn connect<T>(
        config: &tokio_postgres::Config,
        tls: T,
        limit: Duration,
    ) -> Result<Client, PgError>
    where
        T: MakeTlsConnect<Socket> + 'static + Send,
        T::TlsConnect: Send,
        T::Stream: Send + 'static,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PgError::Local)?;
        let (client, connection) = rt
            .block_on(async { tokio::time::timeout(limit, config.connect(tls)).await })
            .map_err(|_| PgError::NoAnswer(limit))??;
        let connection = rt.spawn(async move {
            // Its error reaches the client as a closed connection.
            let _ = connection.await;
        });
        Ok(Client {
            client: Some(client),
            connection,
            rt,
            limit: CALL_LIMIT,
        })
    }

    /// Sets the limit of the calls that follow.
    pub(crate) fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
    }

    fn call<'a, T, F>(
        &'a self,
        f: impl FnOnce(&'a tokio_postgres::Client) -> F,
    ) -> Result<T, PgError>
    where
        F: Future<Output = Result<T, PgError>> + 'a,
    {
        let client = self
            .client
            .as_ref()
            .ok_or(PgError::NoAnswer(Duration::ZERO))?;
        let limit = self.limit;
        self.rt
            .block_on(async { tokio::time::timeout(limit, f(client)).await })
            .map_err(|_| PgError::NoAnswer(limit))?
    }

    pub(crate) fn batch_execute(&self, sql: &str) -> Result<(), PgError> {
        self.call(|c| async move { Ok(c.batch_execute(sql).await?) })
    }

    pub(crate) fn prepare(&self, sql: &str) -> Result<Statement, PgError> {
        self.call(|c| async move { Ok(c.prepare(sql).await?) })
    }

    pub(crate) fn execute(
        &self,
        st: &Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, PgError> {
        self.call(|c| async move { Ok(c.execute(st, params).await?) })
    }

    pub(crate) fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Row, PgError> {
        self.call(|c| async move { Ok(c.query_one(sql, params).await?) })
    }

    /// Runs `st` and hands each row to `f` until it returns `Ok(false)`. `f`'s own error comes
    /// back as `Ok(Err(_))`.
    pub(crate) fn query_each<E>(
        &self,
        st: &Statement,
        params: &[&dyn tokio_postgres::types::ToSql],
        f: &mut dyn FnMut(&Row) -> Result<bool, E>,
    ) -> Result<Result<(), E>, PgError> {
        use futures_util::TryStreamExt;
        self.call(|c| async move {
            let rows = c.query_raw(st, params.iter().copied()).await?;
            futures_util::pin_mut!(rows);
            while let Some(r) = rows.try_next().await? {
                match f(&r) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(Ok(()))
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
    }

    /// Whether the server answers a trivial query within `limit`.
    pub(crate) fn is_valid(&self, limit: Duration) -> bool {
        let Some(client) = self.client.as_ref() else {
            return false;
        };
        self.rt
            .block_on(async { tokio::time::timeout(limit, client.simple_query("")).await })
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for Client {
    /// Ends the session politely (the connection sends `Terminate` once the client is gone),
    /// for at most [`CLOSE_LIMIT`]; then the runtime's drop closes the socket. As with
    /// `postgres::Client`, this must not run on a thread that drives async tasks (see
    /// `Postgres`'s Drop in `lib.rs`).
    fn drop(&mut self) {
        drop(self.client.take());
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        let connection = &mut self.connection;
        let _ = self
            .rt
            .block_on(async { tokio::time::timeout(CLOSE_LIMIT, connection).await });
    }
}
