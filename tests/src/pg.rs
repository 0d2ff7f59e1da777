//! The PostgreSQL backend in system tests.
//!
//! `SCAIVAULT_TEST_PG` is an admin URL of a server whose role may create databases (`ci/postgres.sh`
//! starts Debian's PostgreSQL on loopback and prints one). With `SCAIVAULT_TEST_BACKEND=postgres`
//! every [`crate::Daemon`] gets a database of its own, dropped with its data directory, and
//! the whole suite runs against PostgreSQL; the cluster tests need the URL alone.
//! Databases are made and dropped with `psql` (Debian's `postgresql-client`).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The file in a daemon's temporary directory naming its database.
pub const DATABASE_FILE: &str = "pg.database";

/// The admin URL, when set.
pub fn admin_url() -> Option<String> {
    std::env::var("SCAIVAULT_TEST_PG")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Whether daemons of this test run use PostgreSQL.
pub fn enabled() -> bool {
    std::env::var("SCAIVAULT_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The admin URL; panics with instructions when unset.
pub fn require() -> String {
    admin_url().unwrap_or_else(|| {
        panic!("SCAIVAULT_TEST_PG is not set: export SCAIVAULT_TEST_PG=$(bash ci/postgres.sh)")
    })
}

/// A fresh database.
pub struct Database {
    /// Its name.
    pub name: String,
    /// Its URL (with the admin URL's credentials).
    pub url: String,
}

fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

fn psql(sql: &str) -> std::process::Output {
    Command::new("psql")
        .arg(require())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("psql on PATH (postgresql-client)")
}

/// Creates an empty database.
pub fn create_database() -> Database {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "sv_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let out = psql(&format!("CREATE DATABASE {name}"));
    assert!(
        out.status.success(),
        "CREATE DATABASE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Database {
        url: with_database(&require(), &name),
        name,
    }
}

/// Drops database `name` (closing its connections).
pub fn drop_database(name: &str) {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return;
    }
    let _ = psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

/// A `pg_dump` of database `name`, followed by every `\x...` (bytea) value decoded.
pub fn dump(name: &str) -> Vec<u8> {
    let out = Command::new("pg_dump")
        .arg(with_database(&require(), name))
        .args(["--data-only", "--no-owner"])
        .output()
        .expect("pg_dump on PATH (postgresql-client)");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bytes = out.stdout.clone();
    let text = String::from_utf8_lossy(&out.stdout);
    for (i, _) in text.match_indices("\\x") {
        let hex: String = text[i + 2..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        if let Ok(raw) = hex::decode(&hex[..hex.len() / 2 * 2]) {
            bytes.extend(raw);
            bytes.push(b'\n');
        }
    }
    bytes
}

/// Runs one SQL statement on database `name`; its unaligned output.
pub fn query(name: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(with_database(&require(), name))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-At", "-c", sql])
        .output()
        .expect("psql on PATH");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "sv_1"),
            "postgres://u:p@127.0.0.1:5432/sv_1"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }
}
