//! The issuance path's cache of tokens and roles (SQLite only).
//!
//! `POST /v1/pki/issue/{role}` and `POST /v1/pki/sign/{role}` need the caller's token, the role
//! and the role's CA on every request. Read from the database, that is two read transactions of
//! indexed lookups whose pages every commit of the group writer has just invalidated: ~80 µs of
//! CPU per certificate, about a tenth of an issuance (see `docs/PERFORMANCE.md`). Here they come
//! from memory, and nothing is trusted without a check before the token signs that the token is
//! still unrevoked and the role and CA unchanged ([`scaivault_store::Tx::check_issue_basis`]). A
//! revocation, role or CA change committed before that — through this daemon's API, the CLI or
//! anything else writing the file — stops the issuance before the token signs, exactly as the
//! uncached reads would have; the request is then retried once from the database
//! ([`crate::issue`]), which refuses it or issues under the new settings.
//!
//! Changes made through this daemon also drop the entries at once ([`IssueCache::clear`]), so
//! that only changes from outside cost a retry. Every other endpoint authenticates from the
//! database as before. With PostgreSQL the cache is off: the check would cost the single writer a
//! network round trip per certificate, and the reads are lookups outside a transaction already.
//!
//! **When the check is skipped.** On SQLite the reservation goes to a journal, not through the
//! writer (see [`scaivault_store::journal`]), so the check became a read of its own — and every
//! commit resets a reader's page cache, which made that read cost ~45 µs of CPU per certificate.
//! It is skipped when nothing can have changed since the caller's token was looked up
//! ([`IssueCache::unchanged_since`]): no change through this daemon (each one bumps
//! [`IssueCache::generation`] when it clears the cache) and no other process has opened the
//! database file since the daemon started ([`DbWatch`]: `inotify` `IN_OPEN`/`IN_CLOSE` on it — the
//! CLI, the `sqlite3` shell or any other writer must open the file before it can write). A
//! process that opened the file before the daemon started is not seen; for it, and for races with
//! a change in flight, the certificate's own commit checks the basis again under the write lock,
//! and a certificate signed on a basis that changed is stored revoked and never returned
//! (`crate::issue`).

use crate::app::Issuer;
use crate::roles::RoleSpec;
use scaivault_store::{IssueBasis, TokenRow};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Entries per map; a full map is emptied (tokens and roles are few, and a miss costs one read).
const MAX_ENTRIES: usize = 4096;

/// A token row and its stored hash, as read.
pub type CachedToken = Arc<(TokenRow, Vec<u8>)>;

/// A role, decoded, with its issuer and what the reservation must find unchanged.
pub struct CachedRole {
    /// The role's settings.
    pub spec: RoleSpec,
    /// Its CA, ready to sign.
    pub issuer: Arc<Issuer>,
    /// The role's settings (JSON) as stored.
    pub config: String,
    /// The CA's certificate serial as stored.
    pub ca_serial: String,
    /// The CA's key label as stored.
    pub ca_key_label: String,
}

impl CachedRole {
    /// What the reservation checks for a caller with `token_id` of `tenant_id`.
    pub fn basis(&self, token_id: &str, tenant_id: &str) -> IssueBasis {
        IssueBasis {
            token_id: token_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            role: self.spec.name.clone(),
            ca_id: self.spec.ca_id.clone(),
            role_config: self.config.clone(),
            ca_serial: self.ca_serial.clone(),
            ca_key_label: self.ca_key_label.clone(),
        }
    }
}

/// Other processes opening the database file, seen through `inotify`.
pub struct DbWatch {
    inotify: nix::sys::inotify::Inotify,
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// Opens minus closes seen (handles other processes hold now).
    open: u64,
    /// Events were lost, or the watch ended (the file was replaced): never quiet again.
    broken: bool,
}

impl DbWatch {
    /// Watches `db` for opens and closes.
    ///
    /// # Errors
    /// The `inotify` error (no watch: every issuance then checks its basis by a read).
    pub fn new(db: &std::path::Path) -> nix::Result<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(db, AddWatchFlags::IN_OPEN | AddWatchFlags::IN_CLOSE)?;
        Ok(DbWatch {
            inotify,
            state: Mutex::new(WatchState::default()),
        })
    }

    /// Takes the events waiting: whether any came, and whether no other process holds the file
    /// open now.
    fn poll(&self) -> (bool, bool) {
        use nix::sys::inotify::AddWatchFlags as F;
        let Ok(mut st) = self.state.lock() else {
            return (true, false);
        };
        let mut any = false;
        loop {
            match self.inotify.read_events() {
                Ok(events) if !events.is_empty() => {
                    any = true;
                    for e in events {
                        if e.mask.contains(F::IN_OPEN) {
                            st.open += 1;
                        }
                        if e.mask.intersects(F::IN_CLOSE) {
                            st.open = st.open.saturating_sub(1);
                        }
                        if e.mask.intersects(F::IN_Q_OVERFLOW | F::IN_IGNORED) {
                            st.broken = true;
                        }
                    }
                }
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => break,
                Err(_) => {
                    st.broken = true;
                    break;
                }
            }
        }
        (any, !st.broken && st.open == 0)
    }
}

/// Tokens by id and roles by (tenant, name).
#[derive(Default)]
pub struct IssueCache {
    enabled: bool,
    tokens: RwLock<HashMap<String, CachedToken>>,
    roles: RwLock<HashMap<(String, String), Arc<CachedRole>>>,
    /// Bumped by every [`IssueCache::clear`].
    generation: AtomicU64,
    /// Other processes opening the database (SQLite), if watched.
    watch: Option<DbWatch>,
}

impl IssueCache {
    /// A cache that is used only when `enabled` (the SQLite store).
    pub fn new(enabled: bool) -> Self {
        IssueCache {
            enabled,
            ..Default::default()
        }
    }

    /// The cache with other processes' opens of `db` watched (see [`DbWatch`]); without a watch
    /// (it could not be set up) every issuance checks its basis by a read.
    pub fn watching(mut self, db: &std::path::Path) -> Self {
        match DbWatch::new(db) {
            Ok(w) => self.watch = Some(w),
            Err(e) => {
                tracing::warn!(path = %db.display(), error = %e, "cannot watch the database file: every issuance reads its basis before signing");
            }
        }
        self
    }

    /// Counts the changes made through this daemon (and seen from outside) to tokens, roles and
    /// CAs.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether nothing the cache holds can have changed since [`IssueCache::generation`] was
    /// `seen`: no change through this daemon since, no other process opened the database file
    /// since the last call, and none holds it open. Opens seen here clear the cache.
    pub fn unchanged_since(&self, seen: u64) -> bool {
        let Some(w) = &self.watch else { return false };
        let (opened, quiet) = w.poll();
        if opened {
            self.clear();
        }
        quiet && !opened && self.generation() == seen
    }

    /// Whether the issuance path uses the cache (and its reservations check the basis).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The token with row id `id`, if cached.
    pub fn token(&self, id: &str) -> Option<CachedToken> {
        if !self.enabled {
            return None;
        }
        self.tokens.read().ok()?.get(id).cloned()
    }

    /// Remembers a token row read from the database after [`IssueCache::generation`] was `seen`
    /// — unless the cache was cleared since (the row may predate that change).
    pub fn put_token(&self, row: TokenRow, hash: Vec<u8>, seen: u64) {
        if !self.enabled {
            return;
        }
        if let Ok(mut m) = self.tokens.write() {
            if self.generation() != seen {
                return;
            }
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert(row.id.clone(), Arc::new((row, hash)));
        }
    }

    /// Role `name` of `tenant_id`, if cached.
    pub fn role(&self, tenant_id: &str, name: &str) -> Option<Arc<CachedRole>> {
        if !self.enabled {
            return None;
        }
        self.roles
            .read()
            .ok()?
            .get(&(tenant_id.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Remembers a role read from the database, with its issuer, after [`IssueCache::generation`]
    /// was `seen` — unless the cache was cleared since.
    pub fn put_role(&self, tenant_id: &str, role: Arc<CachedRole>, seen: u64) {
        if !self.enabled {
            return;
        }
        if let Ok(mut m) = self.roles.write() {
            if self.generation() != seen {
                return;
            }
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert((tenant_id.to_owned(), role.spec.name.clone()), role);
        }
    }

    /// Forgets everything: after this daemon changed a token, role or CA, and after a
    /// reservation found that something changed elsewhere.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = self.tokens.write() {
            m.clear();
        }
        if let Ok(mut m) = self.roles.write() {
            m.clear();
        }
    }

    /// `(tokens, roles)` cached.
    #[cfg(test)]
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.tokens.read().map_or(0, |m| m.len()),
            self.roles.read().map_or(0, |m| m.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str) -> TokenRow {
        TokenRow {
            id: id.into(),
            tenant_id: "tn_1".into(),
            name: None,
            policies: vec!["admin".into()],
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn off_means_nothing_is_kept() {
        let c = IssueCache::new(false);
        c.put_token(token("tok_a"), vec![1], c.generation());
        assert!(c.token("tok_a").is_none());
        assert_eq!(c.sizes(), (0, 0));
    }

    #[test]
    fn tokens_are_kept_bounded_and_cleared() {
        let c = IssueCache::new(true);
        c.put_token(token("tok_a"), vec![1], c.generation());
        let got = c.token("tok_a").expect("cached");
        assert_eq!((got.0.id.as_str(), got.1.as_slice()), ("tok_a", &[1u8][..]));
        assert!(c.token("tok_b").is_none());
        for i in 0..MAX_ENTRIES + 10 {
            c.put_token(token(&format!("tok_{i}")), vec![], c.generation());
        }
        assert!(c.sizes().0 <= MAX_ENTRIES, "{:?}", c.sizes());
        c.clear();
        assert_eq!(c.sizes(), (0, 0));
        // A row read before a clear is not kept: it may predate the change that cleared.
        let before = c.generation();
        c.clear();
        c.put_token(token("tok_a"), vec![1], before);
        assert!(c.token("tok_a").is_none());
        c.put_token(token("tok_a"), vec![1], c.generation());
        assert!(c.token("tok_a").is_some());
    }

    #[test]
    fn opens_by_others_and_changes_here_mean_check_again() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = d.path().join("x.db");
        std::fs::write(&db, b"").expect("db");
        // Without a watch nothing is ever known to be unchanged.
        let unwatched = IssueCache::new(true);
        assert!(!unwatched.unchanged_since(unwatched.generation()));

        let c = IssueCache::new(true).watching(&db);
        let g = c.generation();
        assert!(c.unchanged_since(g));
        // A change through this daemon.
        c.put_token(token("tok_a"), vec![1], g);
        c.clear();
        assert!(!c.unchanged_since(g));
        let g = c.generation();
        assert!(c.unchanged_since(g));
        // Another handle opened and closed in between: not unchanged once, and the cache is
        // emptied; quiet again after.
        c.put_token(token("tok_a"), vec![1], g);
        drop(std::fs::File::open(&db).expect("open"));
        assert!(!c.unchanged_since(g));
        assert_eq!(c.sizes(), (0, 0));
        let g = c.generation();
        assert!(c.unchanged_since(g));
        // A handle held open: never unchanged while it is.
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .expect("open");
        assert!(!c.unchanged_since(c.generation()));
        assert!(!c.unchanged_since(c.generation()));
        drop(held);
        assert!(!c.unchanged_since(c.generation()));
        assert!(c.unchanged_since(c.generation()));
        // The file replaced: the watch ends, and so does trusting it.
        std::fs::remove_file(&db).expect("rm");
        assert!(!c.unchanged_since(c.generation()));
        std::fs::write(&db, b"").expect("db");
        assert!(!c.unchanged_since(c.generation()));
    }
}
