//! Typed operations inside one transaction.

use crate::audit::{self, AuditRecord, AuditRow, ChainCheck};
use crate::db::{params, Conn, OptionalExtension, Row};
use crate::rows::{
    CaRow, CertFilter, CertRow, CsrRow, EventRow, IssueBasis, Page, RoleRow, StoredKeyRow,
    TenantRow, TokenRow, Unfinished,
};
use crate::{Error, Result};

/// A `started` audit record as a reservation row keeps it ([`Tx::reserve_certificate`]): made by
/// the caller, off the group commit's thread.
///
/// # Errors
/// [`Error::Sql`] when it does not serialize (it always does).
pub fn started_json(rec: &AuditRecord) -> Result<String> {
    serde_json::to_string(rec).map_err(|e| Error::Sql(e.to_string()))
}

mod acme;
mod anchors;
mod ocsp;
mod webhooks;

pub use acme::{AcmeAccountRow, DnsProviderRow, DnsRecordRow, ManagedCertRow, ManagedVersionRow};
pub use ocsp::OcspResponseRow;

/// A transaction handed to [`crate::Store::read`] / [`crate::Store::write`] closures.
pub struct Tx<'a> {
    tx: Conn<'a>,
}

fn cursor_of(rowid: i64) -> String {
    format!("c{rowid}")
}

fn parse_cursor(c: Option<&str>) -> Result<i64> {
    match c {
        None | Some("") => Ok(0),
        Some(s) => s
            .strip_prefix('c')
            .and_then(|n| n.parse::<i64>().ok())
            // Row ids start at 1: a negative cursor was never handed out.
            .filter(|id| *id >= 0)
            .ok_or_else(|| Error::Conflict("invalid cursor".into())),
    }
}

fn page<T>(mut rows: Vec<(i64, T)>, limit: usize) -> Page<T> {
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|(id, _)| cursor_of(*id))
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(|(_, t)| t).collect(),
        next_cursor: next,
    }
}

/// An `INSERT … ON CONFLICT DO NOTHING` that inserted nothing hit a uniqueness rule. (Doing nothing
/// instead of failing keeps a PostgreSQL transaction usable after the conflict, as in SQLite.)
fn inserted(n: usize) -> Result<usize> {
    if n == 0 {
        Err(Error::Conflict("unique constraint".into()))
    } else {
        Ok(n)
    }
}

fn limit_plus_one(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(1000).saturating_add(1)
}

/// Maps one row to `(rowid, value)` for [`page`].
type RowMap<T> = fn(&Row<'_>) -> Result<(i64, T)>;

impl Tx<'_> {
    /// A page of tenant `tenant_id`'s rows of `table` in creation (rowid) order: `cols` are
    /// mapped by `map`, whose first element is the rowid the cursor continues from.
    ///
    /// # Errors
    /// SQL failures; [`Error::Conflict`] for a malformed cursor.
    fn tenant_page<T>(
        &self,
        table: &str,
        cols: &str,
        map: RowMap<T>,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>> {
        let after = parse_cursor(cursor)?;
        let rows = self
            .tx
            .prepare_cached(&format!(
                "SELECT {cols} FROM {table} WHERE tenant_id = ?1 AND rowid > ?2 ORDER BY rowid LIMIT ?3"
            ))?
            .query_map(params![tenant_id, after, limit_plus_one(limit)], map)?
            .collect::<Result<Vec<_>>>()?;
        Ok(page(rows, limit))
    }
}

const CA_COLS: &str = "id, tenant_id, name, common_name, ca_type, parent_ca_id, status, key_type, key_size, \
     key_label, cert_der, chain_pem, csr_pem, serial, not_before, not_after, settings, created_at, rowid";

fn ca_row(r: &Row<'_>) -> Result<(i64, CaRow)> {
    Ok((
        r.get(18)?,
        CaRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            name: r.get(2)?,
            common_name: r.get(3)?,
            ca_type: r.get(4)?,
            parent_ca_id: r.get(5)?,
            status: r.get(6)?,
            key_type: r.get(7)?,
            key_size: r.get(8)?,
            key_label: r.get(9)?,
            cert_der: r.get(10)?,
            chain_pem: r.get(11)?,
            csr_pem: r.get(12)?,
            serial: r.get(13)?,
            not_before: r.get(14)?,
            not_after: r.get(15)?,
            settings: r.get(16)?,
            created_at: r.get(17)?,
        },
    ))
}

fn token_row(r: &Row<'_>) -> Result<(i64, TokenRow)> {
    let policies: String = r.get(4)?;
    Ok((
        r.get(8)?,
        TokenRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            name: r.get(2)?,
            policies: serde_json::from_str(&policies).unwrap_or_default(),
            created_at: r.get(5)?,
            expires_at: r.get(6)?,
            revoked_at: r.get(7)?,
        },
    ))
}

const CERT_COLS: &str =
    "issuer_ca_id, serial, tenant_id, kind, subject_ca_id, role, common_name, sans, cert_der, \
     status, not_before, not_after, revoked_at, revocation_reason, created_at, rowid";
/// [`CERT_COLS`] of a `certificates` table named `c` in a join.
const CERT_COLS_C: &str =
    "c.issuer_ca_id, c.serial, c.tenant_id, c.kind, c.subject_ca_id, c.role, c.common_name, \
     c.sans, c.cert_der, c.status, c.not_before, c.not_after, c.revoked_at, c.revocation_reason, \
     c.created_at, c.rowid";

/// [`Tx::get_certificate`]: the tenant's CAs first, then the primary key (issuer_ca_id, serial)
/// of each (`CROSS JOIN` fixes that order in SQLite, whose planner would otherwise walk all the
/// tenant's certificates by `certificates_tenant`).
pub(crate) fn get_certificate_sql() -> String {
    format!(
        "SELECT {CERT_COLS_C} FROM cas CROSS JOIN certificates c \
         WHERE cas.tenant_id = ?1 AND c.issuer_ca_id = cas.id AND c.serial = ?2 \
         AND c.tenant_id = ?1 AND c.status != 'reserved' ORDER BY c.rowid LIMIT 1"
    )
}

fn cert_row(r: &Row<'_>) -> Result<(i64, CertRow)> {
    Ok((
        r.get(15)?,
        CertRow {
            issuer_ca_id: r.get(0)?,
            serial: r.get(1)?,
            tenant_id: r.get(2)?,
            kind: r.get(3)?,
            subject_ca_id: r.get(4)?,
            role: r.get(5)?,
            common_name: r.get(6)?,
            sans: r.get(7)?,
            cert_der: r.get(8)?,
            status: r.get(9)?,
            not_before: r.get(10)?,
            not_after: r.get(11)?,
            revoked_at: r.get(12)?,
            revocation_reason: r.get(13)?,
            created_at: r.get(14)?,
        },
    ))
}

const ROLE_COLS: &str = "tenant_id, name, ca_id, config, created_at, updated_at, rowid";

fn role_row(r: &Row<'_>) -> Result<(i64, RoleRow)> {
    Ok((
        r.get(6)?,
        RoleRow {
            tenant_id: r.get(0)?,
            name: r.get(1)?,
            ca_id: r.get(2)?,
            config: r.get(3)?,
            created_at: r.get(4)?,
            updated_at: r.get(5)?,
        },
    ))
}

/// What [`Tx::settle_unconfirmed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No certificate was stored (a reservation left, if any, is gone).
    NotStored,
    /// It was stored `valid`: revoked now.
    Revoked,
    /// It was stored and is revoked already (by the stale-reservation sweep, an operator, an
    /// earlier settling).
    AlreadyRevoked,
}

/// A certificate's revocation status: `(status, revoked_at, reason)`.
pub type CertStatus = (String, Option<String>, Option<String>);
/// A CRL entry as read in chunks: `(rowid, serial, revoked_at, reason)`.
pub type RevokedRow = (i64, String, String, Option<String>);
/// A revocation as polled by other nodes: `(issuer_ca_id, serial, revoked_at)`.
pub type Revocation = (String, String, String);
/// A CA's CRL state: `(number, this_update, next_update, dirty)`.
pub type CrlState = (i64, Option<String>, Option<String>, bool);

const CSR_COLS: &str = "id, tenant_id, status, csr_der, summary, note, requested_by, created_at, decided_by, decided_at, \
     comment, reason, signed_ca_id, signed_serial, signed_at, rowid";

fn csr_row(r: &Row<'_>) -> Result<(i64, CsrRow)> {
    Ok((
        r.get(15)?,
        CsrRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            status: r.get(2)?,
            csr_der: r.get(3)?,
            summary: r.get(4)?,
            note: r.get(5)?,
            requested_by: r.get(6)?,
            created_at: r.get(7)?,
            decided_by: r.get(8)?,
            decided_at: r.get(9)?,
            comment: r.get(10)?,
            reason: r.get(11)?,
            signed_ca_id: r.get(12)?,
            signed_serial: r.get(13)?,
            signed_at: r.get(14)?,
        },
    ))
}

const TOKEN_COLS: &str =
    "id, tenant_id, name, hash, policies, created_at, expires_at, revoked_at, rowid";

impl<'a> Tx<'a> {
    pub(crate) fn new(db: &'a (dyn crate::db::Exec + 'a)) -> Self {
        Tx { tx: Conn::new(db) }
    }

    pub(crate) fn ping(&self) -> Result<()> {
        self.tx
            .prepare_cached("SELECT 1")?
            .query_row(params![], |_| Ok(()))?;
        Ok(())
    }

    /// Whether this connection is encrypted (PostgreSQL; tests of TLS).
    #[cfg(test)]
    pub(crate) fn pg_ssl_in_use(&self) -> Result<bool> {
        self.tx
            .prepare_cached("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")?
            .query_row(params![], |r| r.get(0))
    }

    // ---- tenants -------------------------------------------------------------------------

    /// Inserts a tenant.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the name is taken.
    pub fn insert_tenant(&self, t: &TenantRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?
            .execute(params![t.id, t.name, t.created_at])
            .and_then(inserted)
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!("tenant {:?} exists", t.name)),
                other => other,
            })?;
        Ok(())
    }

    /// All tenants by name.
    ///
    /// # Errors
    /// SQL failures.
    pub fn list_tenants(&self) -> Result<Vec<TenantRow>> {
        let mut st = self
            .tx
            .prepare("SELECT id, name, created_at FROM tenants ORDER BY name")?;
        let rows = st.query_map(params![], |r| {
            Ok(TenantRow {
                id: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?;
        rows.collect::<Result<Vec<_>>>()
    }

    /// The tenant with `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn tenant_by_name(&self, name: &str) -> Result<TenantRow> {
        self.tx
            .prepare_cached("SELECT id, name, created_at FROM tenants WHERE name = ?1")?
            .query_row(params![name], |r| {
                Ok(TenantRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })
    }

    // ---- tokens --------------------------------------------------------------------------

    /// Inserts a token with the SHA-256 `hash` of its secret.
    ///
    /// # Errors
    /// SQL failures.
    pub fn insert_token(&self, t: &TokenRow, hash: &[u8]) -> Result<()> {
        // Names are unique per tenant among tokens in use (a revoked token's name is free again).
        if let Some(name) = &t.name {
            let taken: i64 = self
                .tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM tokens WHERE tenant_id = ?1 AND name = ?2 \
                     AND revoked_at IS NULL",
                )?
                .query_row(params![t.tenant_id, name], |r| r.get(0))?;
            if taken > 0 {
                return Err(Error::Conflict(format!("a token named {name:?} exists")));
            }
        }
        let policies = serde_json::to_string(&t.policies).map_err(|e| Error::Sql(e.to_string()))?;
        self.tx
            .prepare_cached(
                "INSERT INTO tokens (id, tenant_id, name, hash, policies, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                t.id,
                t.tenant_id,
                t.name,
                hash,
                policies,
                t.created_at,
                t.expires_at
            ])?;
        Ok(())
    }

    /// The token `id` and the stored SHA-256 hash of its secret (revoked and expired ones
    /// included: the caller decides).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn token_by_id(&self, id: &str) -> Result<(TokenRow, Vec<u8>)> {
        self.tx
            .prepare_cached(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?1"))?
            .query_row(params![id], |r| {
                let (_, t) = token_row(r)?;
                let h: Vec<u8> = r.get(3)?;
                Ok((t, h))
            })
    }

    /// Tokens, optionally of one tenant.
    ///
    /// # Errors
    /// SQL failures.
    pub fn list_tokens(
        &self,
        tenant_id: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<TokenRow>> {
        let after = parse_cursor(cursor)?;
        let mut st = self.tx.prepare(&format!(
            "SELECT {TOKEN_COLS} FROM tokens WHERE (CAST(?1 AS TEXT) IS NULL OR tenant_id = ?1) AND rowid > ?2 ORDER BY rowid LIMIT ?3"
        ))?;
        let rows = st
            .query_map(params![tenant_id, after, limit_plus_one(limit)], token_row)?
            .collect::<Result<Vec<_>>>()?;
        Ok(page(rows, limit))
    }

    /// Marks a token revoked. With `tenant_id` set, only a token of that tenant.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is no such (unrevoked) token.
    pub fn revoke_token(&self, id: &str, tenant_id: Option<&str>, at: &str) -> Result<()> {
        let n = self.tx.prepare_cached("UPDATE tokens SET revoked_at = ?3 WHERE id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR tenant_id = ?2) AND revoked_at IS NULL")?.execute(params![id, tenant_id, at],
        )?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    // ---- certificate authorities -----------------------------------------------------------

    /// Inserts a CA.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the tenant has a CA of that name.
    pub fn insert_ca(&self, c: &CaRow) -> Result<()> {
        self.tx
            .prepare_cached("INSERT INTO cas (id, tenant_id, name, common_name, ca_type, parent_ca_id, status, key_type, \
                 key_size, key_label, cert_der, chain_pem, csr_pem, serial, not_before, not_after, settings, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
                 ON CONFLICT DO NOTHING")?
            .execute(params![
                    c.id, c.tenant_id, c.name, c.common_name, c.ca_type, c.parent_ca_id, c.status, c.key_type,
                    c.key_size, c.key_label, c.cert_der, c.chain_pem, c.csr_pem, c.serial, c.not_before,
                    c.not_after, c.settings, c.created_at
                ],
            )
            .and_then(inserted)
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!(
                    "a CA named {:?} exists, or its key {:?} is another CA's",
                    c.name, c.key_label
                )),
                other => other,
            })?;
        Ok(())
    }

    /// Replaces the mutable fields of a CA (status, certificate, chain, CSR, serial, validity).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn update_ca(&self, c: &CaRow) -> Result<()> {
        let n = self.tx.prepare_cached("UPDATE cas SET status = ?2, cert_der = ?3, chain_pem = ?4, csr_pem = ?5, serial = ?6, \
             not_before = ?7, not_after = ?8 WHERE id = ?1")?.execute(params![c.id, c.status, c.cert_der, c.chain_pem, c.csr_pem, c.serial, c.not_before, c.not_after],
        )?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Whether the tenant has a CA called `name`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn ca_name_taken(&self, tenant_id: &str, name: &str) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT 1 FROM cas WHERE tenant_id = ?1 AND name = ?2")?
            .query_row(params![tenant_id, name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The id and name of the tenant's CA whose certificate is `cert_der`, if any.
    ///
    /// # Errors
    /// SQL failures.
    pub fn ca_with_certificate(
        &self,
        tenant_id: &str,
        cert_der: &[u8],
    ) -> Result<Option<(String, String)>> {
        self.tx
            .prepare_cached("SELECT id, name FROM cas WHERE tenant_id = ?1 AND cert_der = ?2")?
            .query_row(params![tenant_id, cert_der], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }

    /// The CA `id` of `tenant_id`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when missing or another tenant's.
    pub fn get_ca(&self, tenant_id: &str, id: &str) -> Result<CaRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {CA_COLS} FROM cas WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row(params![id, tenant_id], ca_row)
            .map(|(_, c)| c)
    }

    /// The CA `id`, whatever its tenant (for unauthenticated CRL/OCSP/AIA endpoints).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_ca_any_tenant(&self, id: &str) -> Result<CaRow> {
        self.tx
            .prepare_cached(&format!("SELECT {CA_COLS} FROM cas WHERE id = ?1"))?
            .query_row(params![id], ca_row)
            .map(|(_, c)| c)
    }

    /// A page of the tenant's CAs in creation order.
    ///
    /// # Errors
    /// SQL failures; [`Error::Conflict`] for a malformed cursor.
    pub fn list_cas(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CaRow>> {
        self.tenant_page("cas", CA_COLS, ca_row, tenant_id, cursor, limit)
    }

    // ---- certificates ----------------------------------------------------------------------

    /// Records a signed (or reserved, when `cert_der` is `None`) certificate.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the issuer already used the serial.
    pub fn insert_certificate(&self, c: &CertRow) -> Result<()> {
        self.insert_certificate_with(c, None, None)
    }

    /// Reserves `c.serial` (status `reserved`) together with the to-be-signed certificate the token
    /// is about to sign, so that a crash between signing and storing leaves the intent on record.
    /// `started` is the attempt's `started` audit record (JSON, see [`started_json`]) when the
    /// reservation is this row (no reservation journal holds it): the reconciliation appends it
    /// to the chain should a crash leave the issuance unfinished (see
    /// [`Tx::reconcile_reservations`]).
    ///
    /// # Errors
    /// [`Error::Conflict`] for a serial the issuer used already; SQL failures.
    pub fn reserve_certificate(
        &self,
        c: &CertRow,
        tbs_der: &[u8],
        started: Option<&str>,
    ) -> Result<()> {
        self.insert_certificate_with(c, Some(tbs_der), started)
    }

    fn insert_certificate_with(
        &self,
        c: &CertRow,
        tbs_der: Option<&[u8]>,
        started: Option<&str>,
    ) -> Result<()> {
        self.tx
            .prepare_cached("INSERT INTO certificates (issuer_ca_id, serial, tenant_id, kind, subject_ca_id, role, common_name, \
                 sans, cert_der, status, not_before, not_after, revoked_at, revocation_reason, created_at, tbs_der, started_audit) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
                 ON CONFLICT DO NOTHING")?
            .execute(params![
                    c.issuer_ca_id, c.serial, c.tenant_id, c.kind, c.subject_ca_id, c.role, c.common_name, c.sans,
                    c.cert_der, c.status, c.not_before, c.not_after, c.revoked_at, c.revocation_reason, c.created_at,
                    tbs_der, started
                ],
            )
            .and_then(inserted)
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!("serial {} already used by this issuer", c.serial)),
                other => other,
            })?;
        Ok(())
    }

    /// Fills in a reserved serial with the signed certificate (status `valid`).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the serial was not reserved.
    pub fn complete_certificate(&self, c: &CertRow) -> Result<()> {
        let n = self.tx.prepare_cached("UPDATE certificates SET cert_der = ?3, status = 'valid', tbs_der = NULL, started_audit = NULL, common_name = ?4, sans = ?5, \
             not_before = ?6, not_after = ?7 WHERE issuer_ca_id = ?1 AND serial = ?2 AND status = 'reserved'")?.execute(params![c.issuer_ca_id, c.serial, c.cert_der, c.common_name, c.sans, c.not_before, c.not_after],
        )?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Drops a reservation that was never signed.
    ///
    /// # Errors
    /// SQL failures.
    pub fn release_serial(&self, issuer_ca_id: &str, serial: &str) -> Result<()> {
        self.tx.prepare_cached("DELETE FROM certificates WHERE issuer_ca_id = ?1 AND serial = ?2 AND status = 'reserved'")?.execute(params![issuer_ca_id, serial],
        )?;
        Ok(())
    }

    /// Settles a signed certificate whose commit was not confirmed: the connection failed or
    /// went silent around `COMMIT`, so the commit may have been applied (perhaps later, by a
    /// server that was stalled) although the caller was told nothing was issued. A reservation
    /// row left is deleted, as by [`Tx::release_serial`]; a certificate found stored `valid` —
    /// never returned to the caller — is revoked (`cessation_of_operation` at `at`), its
    /// issuer's CRL marked dirty, and a CSR that commit marked `signed` with it goes back to
    /// `approved` (it can be signed again). While the unconfirmed transaction still holds the
    /// cluster's write lock (PostgreSQL), this waits for it like any write, up to `lock_timeout`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn settle_unconfirmed(
        &self,
        issuer_ca_id: &str,
        serial: &str,
        at: &str,
    ) -> Result<Settled> {
        self.release_serial(issuer_ca_id, serial)?;
        let n = self
            .tx
            .prepare_cached(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?3, \
                 revocation_reason = 'cessation_of_operation' \
                 WHERE issuer_ca_id = ?1 AND serial = ?2 AND status = 'valid'",
            )?
            .execute(params![issuer_ca_id, serial, at])?;
        if n == 0 {
            let revoked = self
                .certificate_status(issuer_ca_id, serial)?
                .is_some_and(|s| s.0 == "revoked");
            return Ok(if revoked {
                Settled::AlreadyRevoked
            } else {
                Settled::NotStored
            });
        }
        self.mark_crl_dirty(issuer_ca_id)?;
        self.tx
            .prepare_cached(
                "UPDATE csrs SET status = 'approved', signed_ca_id = NULL, signed_serial = NULL, \
                 signed_at = NULL WHERE signed_ca_id = ?1 AND signed_serial = ?2 AND status = 'signed'",
            )?
            .execute(params![issuer_ca_id, serial])?;
        Ok(Settled::Revoked)
    }

    /// Revokes every reservation left unfinished (status `reserved`: the token may or may not have
    /// signed it, and nobody received the certificate), with reason `cessation_of_operation` at
    /// `now`, and marks the issuers' CRLs dirty. Run at startup, before any request is served:
    /// then no reservation is in flight.
    ///
    /// # Errors
    /// SQL failures.
    pub fn reconcile_reservations(&self, now: &str) -> Result<Vec<Unfinished>> {
        self.reconcile_reserved(now, None)
    }

    /// [`Tx::reconcile_reservations`] for several nodes on one database: only reservations
    /// created before `created_before` (RFC 3339, as stored) are revoked, so that a node starting
    /// up does not revoke the reservations another node has in flight right now.
    ///
    /// # Errors
    /// SQL failures.
    pub fn reconcile_stale_reservations(
        &self,
        now: &str,
        created_before: &str,
    ) -> Result<Vec<Unfinished>> {
        self.reconcile_reserved(now, Some(created_before))
    }

    fn reconcile_reserved(
        &self,
        now: &str,
        created_before: Option<&str>,
    ) -> Result<Vec<Unfinished>> {
        let rows = self
            .tx
            .prepare(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?1, \
                 revocation_reason = 'cessation_of_operation' \
                 WHERE status = 'reserved' AND (CAST(?2 AS TEXT) IS NULL OR created_at < ?2) \
                 RETURNING tenant_id, issuer_ca_id, serial, started_audit",
            )?
            .query_map(params![now, created_before], |r| {
                let started: Option<String> = r.get(3)?;
                Ok(Unfinished {
                    tenant_id: r.get(0)?,
                    issuer_ca_id: r.get(1)?,
                    serial: r.get(2)?,
                    // A record that does not parse (written by hand?) is not a reason to keep
                    // the reservation: the reconciliation's own record still names the serial.
                    started: started.and_then(|s| serde_json::from_str(&s).ok()),
                })
            })?
            .collect::<Result<Vec<Unfinished>>>()?;
        for u in &rows {
            self.mark_crl_dirty(&u.issuer_ca_id)?;
            if u.started.is_some() {
                // (`RETURNING` gives the row as updated, so the record is cleared afterwards.)
                self.tx
                    .prepare_cached("UPDATE certificates SET started_audit = NULL WHERE issuer_ca_id = ?1 AND serial = ?2")?
                    .execute(params![u.issuer_ca_id, u.serial])?;
            }
        }
        Ok(rows)
    }

    /// Stores a sealed leaf key.
    ///
    /// # Errors
    /// SQL failures.
    pub fn insert_stored_key(&self, k: &StoredKeyRow) -> Result<()> {
        self.tx.prepare_cached("INSERT INTO stored_keys (issuer_ca_id, serial, wrapped_key, sealed) VALUES (?1, ?2, ?3, ?4)")?.execute(params![k.issuer_ca_id, k.serial, k.wrapped_key, k.sealed],
        )?;
        Ok(())
    }

    /// The sealed key of a certificate.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_stored_key(&self, issuer_ca_id: &str, serial: &str) -> Result<StoredKeyRow> {
        self.tx
            .prepare_cached("SELECT issuer_ca_id, serial, wrapped_key, sealed FROM stored_keys WHERE issuer_ca_id = ?1 AND serial = ?2")?
            .query_row(params![issuer_ca_id, serial],
                |r| {
                    Ok(StoredKeyRow {
                        issuer_ca_id: r.get(0)?,
                        serial: r.get(1)?,
                        wrapped_key: r.get(2)?,
                        sealed: r.get(3)?,
                    })
                },
            )
    }

    /// The tenant's issued certificate with `serial` (canonical form), of any issuer.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_certificate(&self, tenant_id: &str, serial: &str) -> Result<CertRow> {
        self.tx
            .prepare_cached(&get_certificate_sql())?
            .query_row(params![tenant_id, serial], cert_row)
            .map(|(_, c)| c)
    }

    /// A page of the tenant's certificates, newest last, filtered.
    ///
    /// # Errors
    /// SQL failures; [`Error::Conflict`] for a malformed cursor.
    pub fn list_certificates(
        &self,
        tenant_id: &str,
        f: &CertFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CertRow>> {
        let after = parse_cursor(cursor)?;
        let mut st = self.tx.prepare(&format!(
            "SELECT {CERT_COLS} FROM certificates WHERE tenant_id = ?1 AND rowid > ?2 AND status != 'reserved' \
             AND (CAST(?3 AS TEXT) IS NULL OR issuer_ca_id = ?3) AND (CAST(?4 AS TEXT) IS NULL OR role = ?4) \
             AND (CAST(?5 AS TEXT) IS NULL OR (?5 = 'revoked' AND status = 'revoked') \
                  OR (?5 = 'valid' AND status = 'valid' AND not_after > ?6) \
                  OR (?5 = 'expired' AND status = 'valid' AND not_after <= ?6)) \
             AND (CAST(?7 AS TEXT) IS NULL OR (status = 'valid' AND not_after > ?6 AND not_after <= ?7)) \
             ORDER BY rowid LIMIT ?8"
        ))?;
        let rows = st
            .query_map(
                params![
                    tenant_id,
                    after,
                    f.ca_id,
                    f.role,
                    f.status,
                    f.now,
                    f.expiring_before,
                    limit_plus_one(limit)
                ],
                cert_row,
            )?
            .collect::<Result<Vec<_>>>()?;
        Ok(page(rows, limit))
    }

    // ---- roles -----------------------------------------------------------------------------

    /// Inserts a role.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the tenant has a role of that name.
    pub fn insert_role(&self, r: &RoleRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO roles (tenant_id, name, ca_id, config, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                r.tenant_id,
                r.name,
                r.ca_id,
                r.config,
                r.created_at,
                r.updated_at
            ])
            .and_then(inserted)
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!("a role named {:?} exists", r.name)),
                other => other,
            })?;
        Ok(())
    }

    /// Replaces a role's CA and fields.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn update_role(&self, r: &RoleRow) -> Result<()> {
        let n = self.tx.prepare_cached("UPDATE roles SET ca_id = ?3, config = ?4, updated_at = ?5 WHERE tenant_id = ?1 AND name = ?2")?.execute(params![r.tenant_id, r.name, r.ca_id, r.config, r.updated_at],
        )?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Deletes a role.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn delete_role(&self, tenant_id: &str, name: &str) -> Result<()> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM roles WHERE tenant_id = ?1 AND name = ?2")?
            .execute(params![tenant_id, name])?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Checks that what an issuance was decided on still holds: the token is unrevoked and of
    /// the tenant, the role still has the same settings and CA, and that CA is still active with
    /// the same certificate and key. One statement of three indexed lookups; in the group commit
    /// the writer's pages are in its cache, so it costs microseconds. (Expiry is checked by the
    /// caller against the clock.)
    ///
    /// # Errors
    /// [`Error::Changed`] naming the first thing that changed; SQL failures.
    pub fn check_issue_basis(&self, b: &IssueBasis) -> Result<()> {
        let (token, role, ca): (i64, i64, i64) = self
            .tx
            .prepare_cached(
                "SELECT \
                 (SELECT COUNT(*) FROM tokens WHERE id = ?1 AND tenant_id = ?2 AND revoked_at IS NULL), \
                 (SELECT COUNT(*) FROM roles WHERE tenant_id = ?2 AND name = ?3 AND ca_id = ?4 AND config = ?5), \
                 (SELECT COUNT(*) FROM cas WHERE id = ?4 AND tenant_id = ?2 AND status = 'active' AND serial = ?6 AND key_label = ?7)",
            )?
            .query_row(
                params![
                    b.token_id,
                    b.tenant_id,
                    b.role,
                    b.ca_id,
                    b.role_config,
                    b.ca_serial,
                    b.ca_key_label
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        match (token, role, ca) {
            (0, _, _) => Err(Error::Changed("token".into())),
            (_, 0, _) => Err(Error::Changed("role".into())),
            (_, _, 0) => Err(Error::Changed("ca".into())),
            _ => Ok(()),
        }
    }

    /// The tenant's role `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_role(&self, tenant_id: &str, name: &str) -> Result<RoleRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {ROLE_COLS} FROM roles WHERE tenant_id = ?1 AND name = ?2"
            ))?
            .query_row(params![tenant_id, name], role_row)
            .map(|(_, r)| r)
    }

    /// A page of the tenant's roles.
    ///
    /// # Errors
    /// SQL failures.
    pub fn list_roles(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoleRow>> {
        self.tenant_page("roles", ROLE_COLS, role_row, tenant_id, cursor, limit)
    }

    /// The stored settings (JSON) of every role of every tenant: read once at startup, e.g. to
    /// know which RSA sizes the key pool should keep ready.
    ///
    /// # Errors
    /// SQL failures.
    pub fn all_role_configs(&self) -> Result<Vec<String>> {
        let mut st = self.tx.prepare("SELECT config FROM roles")?;
        let rows = st.query_map(params![], |r| r.get(0))?;
        rows.collect::<Result<Vec<String>>>()
    }

    // ---- CSR workflow ----------------------------------------------------------------------

    /// Inserts a CSR.
    ///
    /// # Errors
    /// SQL failures.
    pub fn insert_csr(&self, c: &CsrRow) -> Result<()> {
        self.tx.prepare_cached(
            "INSERT INTO csrs (id, tenant_id, status, csr_der, summary, note, requested_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![c.id, c.tenant_id, c.status, c.csr_der, c.summary, c.note, c.requested_by, c.created_at])?;
        Ok(())
    }

    /// The tenant's CSR `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_csr(&self, tenant_id: &str, id: &str) -> Result<CsrRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {CSR_COLS} FROM csrs WHERE id = ?1 AND tenant_id = ?2"
            ))?
            .query_row(params![id, tenant_id], csr_row)
            .map(|(_, c)| c)
    }

    /// A page of the tenant's CSRs, optionally of one status.
    ///
    /// # Errors
    /// SQL failures; [`Error::Conflict`] for a malformed cursor.
    pub fn list_csrs(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CsrRow>> {
        let after = parse_cursor(cursor)?;
        let mut st = self.tx.prepare_cached(&format!(
            "SELECT {CSR_COLS} FROM csrs WHERE tenant_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR status = ?2) AND rowid > ?3 ORDER BY rowid LIMIT ?4"
        ))?;
        let rows = st
            .query_map(
                params![tenant_id, status, after, limit_plus_one(limit)],
                csr_row,
            )?
            .collect::<Result<Vec<_>>>()?;
        Ok(page(rows, limit))
    }

    /// Moves a CSR from `from` to `to` (one conditional UPDATE, so two concurrent transitions
    /// cannot both succeed), recording who decided and why.
    ///
    /// # Errors
    /// [`Error::NotFound`] when missing; [`Error::Conflict`] naming the current status when it is
    /// not `from`.
    #[allow(clippy::too_many_arguments)] // one row's decision fields
    pub fn transition_csr(
        &self,
        tenant_id: &str,
        id: &str,
        from: &str,
        to: &str,
        by: Option<&str>,
        at: &str,
        comment: Option<&str>,
        reason: Option<&str>,
    ) -> Result<()> {
        let n = self.tx.prepare_cached(
            "UPDATE csrs SET status = ?4, decided_by = COALESCE(?5, decided_by), decided_at = CASE WHEN ?5 IS NULL THEN decided_at ELSE ?6 END, \
             comment = COALESCE(?7, comment), reason = COALESCE(?8, reason) \
             WHERE id = ?1 AND tenant_id = ?2 AND status = ?3",
        )?
        .execute(params![id, tenant_id, from, to, by, at, comment, reason])?;
        if n == 1 {
            return Ok(());
        }
        let current = self.get_csr(tenant_id, id)?;
        Err(Error::Conflict(current.status))
    }

    /// Marks a CSR in `signing` as `signed` by `ca_id` with `serial`.
    ///
    /// # Errors
    /// [`Error::Conflict`] when it is not in `signing`.
    pub fn finish_csr(
        &self,
        tenant_id: &str,
        id: &str,
        ca_id: &str,
        serial: &str,
        at: &str,
    ) -> Result<()> {
        let n = self.tx.prepare_cached(
            "UPDATE csrs SET status = 'signed', signed_ca_id = ?3, signed_serial = ?4, signed_at = ?5 \
             WHERE id = ?1 AND tenant_id = ?2 AND status = 'signing'",
        )?
        .execute(params![id, tenant_id, ca_id, serial, at])?;
        if n == 1 {
            Ok(())
        } else {
            Err(Error::Conflict("not signing".into()))
        }
    }

    /// The tenant's separation-of-duties setting for CSRs (`None`: the configuration decides).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn tenant_csr_distinct_approver(&self, tenant_id: &str) -> Result<Option<bool>> {
        self.tx
            .prepare_cached("SELECT csr_distinct_approver FROM tenants WHERE id = ?1")?
            .query_row(params![tenant_id], |r| r.get::<_, Option<bool>>(0))
    }

    /// Sets (or with `None` clears) the tenant's separation-of-duties setting.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn set_tenant_csr_distinct_approver(
        &self,
        tenant_name: &str,
        value: Option<bool>,
    ) -> Result<()> {
        let n = self
            .tx
            .prepare_cached("UPDATE tenants SET csr_distinct_approver = ?2 WHERE name = ?1")?
            .execute(params![tenant_name, value])?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    // ---- events ----------------------------------------------------------------------------

    /// Records an event for the feed.
    ///
    /// # Errors
    /// SQL failures.
    pub fn insert_event(
        &self,
        tenant_id: &str,
        kind: &str,
        object_id: Option<&str>,
        time: &str,
        data: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached("INSERT INTO events (tenant_id, type, object_id, time, data) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![tenant_id, kind, object_id, time, data])?;
        Ok(())
    }

    /// A page of the tenant's events, oldest first.
    ///
    /// # Errors
    /// SQL failures.
    pub fn list_events(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<EventRow>> {
        self.list_events_filtered(tenant_id, cursor, limit, None, None)
    }

    /// A page of the tenant's events, oldest first, of type `kind` (exact, or a prefix when it
    /// ends with `*`) and at or after `since` (RFC 3339, as stored), when given.
    ///
    /// # Errors
    /// SQL failures; [`Error::Conflict`] for a malformed cursor.
    pub fn list_events_filtered(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
        kind: Option<&str>,
        since: Option<&str>,
    ) -> Result<Page<EventRow>> {
        let after = parse_cursor(cursor)?;
        let (exact, prefix) = match kind {
            Some(k) => match k.strip_suffix('*') {
                Some(p) => (None, Some(p)),
                None => (Some(k), None),
            },
            None => (None, None),
        };
        let mut st = self.tx.prepare_cached(
            "SELECT seq, tenant_id, type, object_id, time, data FROM events WHERE tenant_id = ?1 AND seq > ?2 \
             AND (CAST(?4 AS TEXT) IS NULL OR type = ?4) AND (CAST(?5 AS TEXT) IS NULL OR substr(type, 1, length(?5)) = ?5) \
             AND (CAST(?6 AS TEXT) IS NULL OR time >= ?6) ORDER BY seq LIMIT ?3",
        )?;
        let rows = st
            .query_map(
                params![
                    tenant_id,
                    after,
                    limit_plus_one(limit),
                    exact,
                    prefix,
                    since
                ],
                |r| {
                    Ok((
                        r.get(0)?,
                        EventRow {
                            seq: r.get(0)?,
                            tenant_id: r.get(1)?,
                            kind: r.get(2)?,
                            object_id: r.get(3)?,
                            time: r.get(4)?,
                            data: r.get(5)?,
                        },
                    ))
                },
            )?
            .collect::<Result<Vec<_>>>()?;
        Ok(page(rows, limit))
    }

    // ---- revocation ------------------------------------------------------------------------

    /// Revokes the tenant's certificate with canonical `serial` (any issuer) and marks its
    /// issuer's CRL dirty. Returns the row as it was before.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`] when it is already revoked.
    pub fn revoke_certificate(
        &self,
        tenant_id: &str,
        serial: &str,
        at: &str,
        reason: &str,
    ) -> Result<CertRow> {
        let row = self.get_certificate(tenant_id, serial)?;
        if row.status == "revoked" {
            return Err(Error::Conflict("already revoked".into()));
        }
        let n = self
            .tx
            .prepare_cached(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?3, revocation_reason = ?4 \
                 WHERE issuer_ca_id = ?1 AND serial = ?2 AND status = 'valid'",
            )?
            .execute(params![row.issuer_ca_id, row.serial, at, reason])?;
        if n == 0 {
            // Revoked (or changed) by a concurrent transaction since it was read.
            return Err(Error::Conflict("already revoked".into()));
        }
        self.mark_crl_dirty(&row.issuer_ca_id)?;
        Ok(row)
    }

    /// After a database restore: a CRL numbered `number` was published for `ca_id` (its file is
    /// newer than the database). Raises the stored number to it, so that the next CRL is numbered
    /// above every one relying parties may hold, and marks the CRL out of date. Returns whether
    /// the stored number was lower.
    ///
    /// # Errors
    /// SQL failures.
    pub fn adopt_crl_number(&self, ca_id: &str, number: i64) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO crl_state (ca_id, crl_number, dirty) VALUES (?1, ?2, 1) \
                 ON CONFLICT(ca_id) DO UPDATE SET crl_number = excluded.crl_number, dirty = 1 \
                 WHERE crl_state.crl_number < excluded.crl_number",
            )?
            .execute(params![ca_id, number])?;
        Ok(n == 1)
    }

    /// After a database restore: serial `serial` of `issuer_ca_id` is on a CRL published after
    /// the backup. A certificate the database holds as valid (or reserved) is revoked with the
    /// CRL's time and reason; one it does not hold (issued after the backup) is recorded as a
    /// revoked serial without a certificate, kept on the CRL until `not_after` (the issuer's end:
    /// the certificate cannot outlive it). Returns whether anything changed.
    ///
    /// # Errors
    /// SQL failures.
    pub fn adopt_revocation(
        &self,
        issuer_ca_id: &str,
        tenant_id: &str,
        serial: &str,
        at: &str,
        reason: &str,
        not_after: &str,
    ) -> Result<bool> {
        let changed = self
            .tx
            .prepare_cached(
                "UPDATE certificates SET status = 'revoked', revoked_at = ?3, \
                 revocation_reason = ?4 WHERE issuer_ca_id = ?1 AND serial = ?2 \
                 AND status IN ('valid', 'reserved')",
            )?
            .execute(params![issuer_ca_id, serial, at, reason])?;
        if changed > 0 {
            return Ok(true);
        }
        let stub = CertRow {
            issuer_ca_id: issuer_ca_id.to_owned(),
            serial: serial.to_owned(),
            tenant_id: tenant_id.to_owned(),
            kind: "leaf".into(),
            subject_ca_id: None,
            role: None,
            common_name: None,
            sans: None,
            cert_der: None,
            status: "revoked".into(),
            not_before: None,
            not_after: Some(not_after.to_owned()),
            revoked_at: Some(at.to_owned()),
            revocation_reason: Some(reason.to_owned()),
            created_at: at.to_owned(),
        };
        match self.insert_certificate(&stub) {
            Ok(()) => Ok(true),
            // Held already, revoked: nothing to do.
            Err(Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Notes that `ca_id`'s CRL is out of date.
    ///
    /// # Errors
    /// SQL failures.
    pub fn mark_crl_dirty(&self, ca_id: &str) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO crl_state (ca_id, crl_number, dirty) VALUES (?1, 0, 1) \
                 ON CONFLICT(ca_id) DO UPDATE SET dirty = 1",
            )?
            .execute(params![ca_id])?;
        Ok(())
    }

    /// The status of serial `serial` of issuer `ca_id`: `(status, revoked_at, reason)`, or `None`
    /// when the issuer never signed it (reserved serials count as never signed).
    ///
    /// # Errors
    /// SQL failures.
    pub fn certificate_status(&self, ca_id: &str, serial: &str) -> Result<Option<CertStatus>> {
        self.tx
            .prepare_cached(
                "SELECT status, revoked_at, revocation_reason FROM certificates \
                 WHERE issuer_ca_id = ?1 AND serial = ?2 AND status != 'reserved'",
            )?
            .query_row(params![ca_id, serial], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
    }

    /// Up to `limit` revoked certificates of `ca_id` after `after_rowid` whose `not_after` is not
    /// before `keep_after`: `(rowid, serial, revoked_at, reason)`. For building CRLs in chunks, so no
    /// transaction is held for a whole build.
    ///
    /// # Errors
    /// SQL failures.
    pub fn revoked_chunk(
        &self,
        ca_id: &str,
        keep_after: &str,
        after_rowid: i64,
        limit: usize,
    ) -> Result<Vec<RevokedRow>> {
        let mut st = self.tx.prepare_cached(
            "SELECT rowid, serial, revoked_at, revocation_reason FROM certificates \
             WHERE issuer_ca_id = ?1 AND status = 'revoked' AND not_after >= ?2 AND rowid > ?3 ORDER BY rowid LIMIT ?4",
        )?;
        let rows = st
            .query_map(
                params![
                    ca_id,
                    keep_after,
                    after_rowid,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                        r.get(3)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Reserves the next CRL number of `ca_id` (persisted before the CRL is published, so numbers
    /// strictly increase across restarts) and clears the dirty mark.
    ///
    /// # Errors
    /// SQL failures.
    pub fn next_crl_number(&self, ca_id: &str) -> Result<i64> {
        self.tx
            .prepare_cached(
                "INSERT INTO crl_state (ca_id, crl_number, dirty) VALUES (?1, 1, 0) \
                 ON CONFLICT(ca_id) DO UPDATE SET crl_number = crl_state.crl_number + 1, dirty = 0 \
                 RETURNING crl_number",
            )?
            .query_row(params![ca_id], |r| r.get(0))
    }

    /// Records that the CRL numbered `number` was published (its DER lives in a file next to the
    /// database, not in this row: every revocation updates the row's `dirty` mark, and SQLite
    /// rewrites a whole row, blob included, on any update). Clears a CRL stored inline by older
    /// versions. Nothing happens when a newer number was reserved meanwhile.
    ///
    /// # Errors
    /// SQL failures.
    pub fn publish_crl(
        &self,
        ca_id: &str,
        number: i64,
        this_update: &str,
        next_update: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE crl_state SET this_update = ?3, next_update = ?4, der = NULL \
                 WHERE ca_id = ?1 AND crl_number = ?2",
            )?
            .execute(params![ca_id, number, this_update, next_update])?;
        Ok(())
    }

    /// Records an imported CRL numbered `number` (signed elsewhere) as published, only when
    /// `number` is above the stored one; returns whether it was.
    ///
    /// # Errors
    /// SQL failures.
    pub fn import_crl(
        &self,
        ca_id: &str,
        number: i64,
        this_update: &str,
        next_update: &str,
    ) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO crl_state (ca_id, crl_number, this_update, next_update, dirty) \
                 VALUES (?1, ?2, ?3, ?4, 0) \
                 ON CONFLICT(ca_id) DO UPDATE SET crl_number = excluded.crl_number, \
                 this_update = excluded.this_update, next_update = excluded.next_update, \
                 der = NULL, dirty = 0 WHERE crl_state.crl_number < excluded.crl_number",
            )?
            .execute(params![ca_id, number, this_update, next_update])?;
        Ok(n == 1)
    }

    /// Stores the DER of CRL `number` of `ca_id` where every node finds it, unless a CRL with the
    /// same or a higher number is stored already (two nodes publishing at once cannot move it
    /// back); returns whether it was stored.
    ///
    /// # Errors
    /// SQL failures.
    pub fn store_crl_der(&self, ca_id: &str, number: i64, der: &[u8]) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO crl_blobs (ca_id, crl_number, der) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(ca_id) DO UPDATE SET crl_number = excluded.crl_number, der = excluded.der \
                 WHERE crl_blobs.crl_number < excluded.crl_number",
            )?
            .execute(params![ca_id, number, der])?;
        Ok(n == 1)
    }

    /// The number of the newest stored CRL of `ca_id`, without its DER (to check a cached copy).
    ///
    /// # Errors
    /// SQL failures.
    pub fn crl_number_stored(&self, ca_id: &str) -> Result<Option<i64>> {
        self.tx
            .prepare_cached("SELECT crl_number FROM crl_blobs WHERE ca_id = ?1")?
            .query_row(params![ca_id], |r| r.get(0))
            .optional()
    }

    /// The newest stored CRL of `ca_id`: `(number, DER)`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn crl_der(&self, ca_id: &str) -> Result<Option<(i64, Vec<u8>)>> {
        self.tx
            .prepare_cached("SELECT crl_number, der FROM crl_blobs WHERE ca_id = ?1")?
            .query_row(params![ca_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }

    /// Revoked certificates (every tenant) whose `revoked_at` is at or after `since_rfc3339`
    /// (stored as `YYYY-MM-DDTHH:MM:SSZ`, so text order is time order), oldest first, at most
    /// `limit`: `(issuer_ca_id, serial, revoked_at)`. For other nodes' OCSP caches: poll with the
    /// newest `revoked_at` seen (records of that second come again; skip the known ones).
    ///
    /// # Errors
    /// SQL failures.
    pub fn revocations_since(&self, since_rfc3339: &str, limit: usize) -> Result<Vec<Revocation>> {
        self.tx
            .prepare_cached(
                "SELECT issuer_ca_id, serial, revoked_at FROM certificates \
                 WHERE status = 'revoked' AND revoked_at >= ?1 \
                 ORDER BY revoked_at, issuer_ca_id, serial LIMIT ?2",
            )?
            .query_map(
                params![since_rfc3339, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect()
    }

    /// The CRL state of `ca_id`: `(number, this_update, next_update, dirty)`; `this_update` is
    /// `None` until a CRL was published.
    ///
    /// # Errors
    /// SQL failures.
    pub fn published_crl(&self, ca_id: &str) -> Result<Option<CrlState>> {
        self
            .tx
            .prepare_cached(
                "SELECT crl_number, this_update, next_update, dirty FROM crl_state WHERE ca_id = ?1",
            )?
            .query_row(params![ca_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? != 0))
            })
            .optional()
    }

    /// For health: `(CAs with a published CRL, CAs whose CRL is dirty, earliest next_update)`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn crl_summary(&self) -> Result<(i64, i64, Option<String>)> {
        self
            .tx
            .prepare_cached(
                "SELECT COUNT(this_update), CAST(COALESCE(SUM(dirty), 0) AS BIGINT), MIN(next_update) \
                 FROM crl_state",
            )?
            .query_row(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
    }

    /// `(id, key_label)` of every active CA whose key is on the token (not offline), all tenants.
    ///
    /// # Errors
    /// SQL failures.
    pub fn active_ca_keys(&self) -> Result<Vec<(String, String)>> {
        let mut st = self.tx.prepare_cached(
            "SELECT id, key_label FROM cas WHERE status = 'active' AND cert_der IS NOT NULL \
             AND key_label NOT LIKE 'offline:%' ORDER BY id",
        )?;
        let rows = st
            .query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<(String, String)>>>()?;
        Ok(rows)
    }

    /// Ids of active or retired CAs with a certificate whose CRL is dirty or due before `due`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn cas_needing_crl(&self, due: &str) -> Result<Vec<String>> {
        let mut st = self.tx.prepare_cached(
            "SELECT c.id FROM cas c LEFT JOIN crl_state s ON s.ca_id = c.id \
             WHERE c.cert_der IS NOT NULL AND c.status != 'pending_signature' \
             AND c.key_label NOT LIKE 'offline:%' \
             AND (s.ca_id IS NULL OR s.dirty = 1 OR s.this_update IS NULL OR s.next_update IS NULL OR s.next_update <= ?1)",
        )?;
        let rows = st
            .query_map(params![due], |r| r.get(0))?
            .collect::<Result<Vec<String>>>()?;
        Ok(rows)
    }

    // ---- delegated OCSP signers ----------------------------------------------------------------

    /// The delegated OCSP signer of `ca_id`: `(key_label, cert_der, not_after)`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn ocsp_signer(&self, ca_id: &str) -> Result<Option<(String, Vec<u8>, String)>> {
        self.tx
            .prepare_cached(
                "SELECT key_label, cert_der, not_after FROM ocsp_signers WHERE ca_id = ?1",
            )?
            .query_row(params![ca_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
    }

    /// Installs (or replaces, on rotation) the delegated OCSP signer of `ca_id`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn put_ocsp_signer(
        &self,
        ca_id: &str,
        key_label: &str,
        cert_der: &[u8],
        not_after: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO ocsp_signers (ca_id, key_label, cert_der, not_after) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(ca_id) DO UPDATE SET key_label = excluded.key_label, cert_der = excluded.cert_der, \
                 not_after = excluded.not_after",
            )?
            .execute(params![ca_id, key_label, cert_der, not_after])?;
        Ok(())
    }

    // ---- tidy ------------------------------------------------------------------------------

    /// Leaf certificates of the tenant that expired before `cutoff` (revoked ones: before
    /// `revoked_cutoff` too, so that they stay on their CRL for its grace after expiry): how many,
    /// how many of them revoked, and the issuers concerned. With `apply`, they (and any stored
    /// keys) are deleted and the issuers' CRLs marked dirty.
    ///
    /// # Errors
    /// SQL failures.
    pub fn tidy_certificates(
        &self,
        tenant_id: &str,
        cutoff: &str,
        revoked_cutoff: &str,
        apply: bool,
    ) -> Result<(u64, u64, Vec<String>)> {
        let (total, revoked): (i64, i64) = self
            .tx
            .prepare_cached(
                "SELECT count(*), CAST(COALESCE(SUM(CASE WHEN status = 'revoked' THEN 1 ELSE 0 END), 0) AS BIGINT) FROM certificates \
                 WHERE tenant_id = ?1 AND kind = 'leaf' AND status != 'reserved' AND not_after < ?2 AND (status != 'revoked' OR not_after < ?3)",
            )?
            .query_row(params![tenant_id, cutoff, revoked_cutoff], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let mut st = self.tx.prepare_cached(
            "SELECT DISTINCT issuer_ca_id FROM certificates \
             WHERE tenant_id = ?1 AND kind = 'leaf' AND status = 'revoked' AND not_after < ?2 AND not_after < ?3",
        )?;
        let cas = st
            .query_map(params![tenant_id, cutoff, revoked_cutoff], |r| r.get(0))?
            .collect::<Result<Vec<String>>>()?;
        if apply {
            self.tx
                .prepare_cached(
                    "DELETE FROM stored_keys WHERE (issuer_ca_id, serial) IN (SELECT issuer_ca_id, serial FROM certificates \
                     WHERE tenant_id = ?1 AND kind = 'leaf' AND status != 'reserved' AND not_after < ?2 AND (status != 'revoked' OR not_after < ?3))",
                )?
                .execute(params![tenant_id, cutoff, revoked_cutoff])?;
            self.tx
                .prepare_cached(
                    "DELETE FROM certificates WHERE tenant_id = ?1 AND kind = 'leaf' AND status != 'reserved' AND not_after < ?2 AND (status != 'revoked' OR not_after < ?3)",
                )?
                .execute(params![tenant_id, cutoff, revoked_cutoff])?;
            for ca in &cas {
                self.mark_crl_dirty(ca)?;
            }
        }
        Ok((
            u64::try_from(total).unwrap_or(0),
            u64::try_from(revoked).unwrap_or(0),
            cas,
        ))
    }

    // ---- audit -----------------------------------------------------------------------------

    /// Appends an audit record to the chain and returns its sequence number.
    ///
    /// # Errors
    /// SQL failures (the caller's whole transaction then fails).
    pub fn append_audit(&self, rec: &AuditRecord) -> Result<i64> {
        audit::append(&self.tx, rec)
    }

    /// Whether `rec` could be appended to the chain: appended under a savepoint that is then
    /// rolled back, so nothing of it stays. For a caller about to do something it can only record
    /// later (an issuance whose `success` record is written after the token signed).
    ///
    /// # Errors
    /// What appending would fail with.
    pub fn probe_audit(&self, rec: &AuditRecord) -> Result<()> {
        let db = self.tx.exec();
        db.repeat("SAVEPOINT audit_probe")?;
        let appended = audit::append(&self.tx, rec);
        db.batch("ROLLBACK TO audit_probe; RELEASE audit_probe")?;
        appended.map(|_| ())
    }

    /// A page of audit records, oldest first, optionally of one tenant.
    ///
    /// # Errors
    /// SQL failures.
    pub fn list_audit(
        &self,
        tenant_id: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditRow>> {
        let after = parse_cursor(cursor)?;
        let rows = audit::list(&self.tx, tenant_id, after, limit_plus_one(limit))?;
        Ok(page(rows.into_iter().map(|r| (r.seq, r)).collect(), limit))
    }

    /// Walks the whole chain.
    ///
    /// # Errors
    /// SQL failures (a broken chain is a [`ChainCheck`], not an error).
    pub fn verify_audit(&self) -> Result<ChainCheck> {
        audit::verify(&self.tx)
    }

    /// The newest audit record's `(seq, hash)` (`None` before the first record): what an
    /// operator records off the host, to show later that the chain still holds it.
    ///
    /// # Errors
    /// SQL failures.
    pub fn audit_head(&self) -> Result<Option<(i64, String)>> {
        audit::head(&self.tx)
    }

    /// Audit record `seq`'s hash, `None` when there is no such record.
    ///
    /// # Errors
    /// SQL failures.
    pub fn audit_hash_at(&self, seq: i64) -> Result<Option<String>> {
        audit::hash_at(&self.tx, seq)
    }
}
