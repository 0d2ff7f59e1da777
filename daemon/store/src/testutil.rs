//! Test fixtures: the same test body runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL tests need `SCAIVAULT_TEST_PG`, an admin URL whose role may create databases (e.g.
//! the one `ci/postgres.sh` prints); each test gets a fresh database `sv_<random>`, dropped at the
//! end. Without the variable they are skipped, except under `CI`, where they fail.

use crate::{PgConfig, Store};
use std::path::PathBuf;

/// Which backend a test body runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
}

/// Runs `body` once per backend, as two `#[test]`s in a module named after it.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::testutil::Kind::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name($crate::testutil::Kind::Postgres)
            }
        }
    )+};
}
pub(crate) use both_backends;

/// A throwaway PostgreSQL database.
pub(crate) struct PgDb {
    admin: String,
    name: String,
    pub(crate) url: String,
}

impl PgDb {
    fn create(admin: &str) -> PgDb {
        let name = format!("sv_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut c = postgres::Client::connect(admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let base = admin.split('?').next().unwrap_or(admin);
        let cut = base.rfind('/').unwrap();
        let url = format!("{}/{name}", &base[..cut]);
        PgDb {
            admin: admin.to_owned(),
            name,
            url,
        }
    }

    /// A client on the test database.
    pub(crate) fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    pub(crate) fn config(&self) -> PgConfig {
        PgConfig {
            url: self.url.clone(),
            pool_size: 2,
            ca_file: None,
            call_limit: None,
        }
    }

    /// Ends every other session on the test database (a database restart, as clients see it).
    pub(crate) fn terminate_sessions(&self) -> i64 {
        let mut c = self.client();
        let row = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .unwrap();
        row.get(0)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A store on a fresh database, and what is needed to open it again.
pub(crate) struct Fixture {
    // Dropped in this order: the store before its database.
    pub(crate) store: Store,
    pub(crate) pg: Option<PgDb>,
    dir: Option<tempfile::TempDir>,
}

/// The admin URL for PostgreSQL tests, or `None` (skip) outside CI.
pub(crate) fn pg_admin() -> Option<String> {
    match std::env::var("SCAIVAULT_TEST_PG") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "SCAIVAULT_TEST_PG is not set: the PostgreSQL store tests must run in CI"
            );
            eprintln!("SCAIVAULT_TEST_PG is not set: PostgreSQL variant skipped");
            None
        }
    }
}

/// A fresh store of `kind`, or `None` when PostgreSQL tests are skipped.
pub(crate) fn fixture(kind: Kind) -> Option<Fixture> {
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
            Some(Fixture {
                store,
                pg: None,
                dir: Some(dir),
            })
        }
        Kind::Postgres => {
            let db = PgDb::create(&pg_admin()?);
            let store = Store::open_postgres(&db.config()).unwrap();
            Some(Fixture {
                store,
                pg: Some(db),
                dir: None,
            })
        }
    }
}

impl Fixture {
    pub(crate) fn sqlite_path(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().join("db.sqlite")
    }

    /// Another store on the same database.
    pub(crate) fn open_again(&self) -> Store {
        match &self.pg {
            Some(db) => Store::open_postgres(&db.config()).unwrap(),
            None => Store::open(&self.sqlite_path()).unwrap(),
        }
    }

    /// Replaces the store with a new one on the same database.
    pub(crate) fn reopen(&mut self) {
        self.store = self.open_again();
    }

    /// Runs SQL behind the store's back.
    pub(crate) fn raw(&self, sql: &str) {
        match &self.pg {
            Some(db) => db.client().batch_execute(sql).unwrap(),
            None => rusqlite::Connection::open(self.sqlite_path())
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
        }
    }
}

/// A valid leaf certificate row of tenant `tn_1`.
pub(crate) fn cert_row(ca_id: &str, serial: &str) -> crate::CertRow {
    crate::CertRow {
        issuer_ca_id: ca_id.into(),
        serial: serial.into(),
        tenant_id: "tn_1".into(),
        kind: "leaf".into(),
        subject_ca_id: None,
        role: None,
        common_name: Some("x".into()),
        sans: None,
        cert_der: Some(vec![4, 5, 6]),
        status: "valid".into(),
        not_before: Some("2026-01-01T00:00:00Z".into()),
        not_after: Some("2027-01-01T00:00:00Z".into()),
        revoked_at: None,
        revocation_reason: None,
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}
