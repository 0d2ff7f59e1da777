//! The hash-chained audit log.
//!
//! Record `n` stores `hash_n = SHA-256(hash_{n-1} || enc(seq, time, tenant, token, action, object,
//! outcome, request_id))`, where `enc` length-prefixes every field (absent fields are marked), and
//! `hash_0` is 64 zeros. `seq` starts at 1 and has no gaps; `audit_head` keeps the newest `(seq,
//! hash)` and is updated in the same transaction. So an edited field, a deleted row (also the
//! newest), a reordering or a duplicated row all break [`verify`].
//!
//! Records never carry secrets: callers pass identifiers and outcomes only.

use crate::db::{params, Conn, OptionalExtension, Row};
use crate::Result;
use serde::Serialize;
use sha2::{Digest, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a caller records.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// RFC 3339.
    pub time: String,
    /// Tenant, when the call had one.
    pub tenant_id: Option<String>,
    /// Token id (never the token).
    pub token_id: Option<String>,
    /// Action, e.g. `ca.create`.
    pub action: String,
    /// The object acted on.
    pub object_id: Option<String>,
    /// `success`, `started`, `denied`, or `error:<code>`.
    pub outcome: String,
    /// The request id.
    pub request_id: Option<String>,
    /// Free text for reviewers (a comment, a rejection reason); never a secret.
    pub detail: Option<String>,
}

/// A stored record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[schemars(rename = "AuditRecord")]
pub struct AuditRow {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// RFC 3339.
    pub time: String,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Token id.
    pub token_id: Option<String>,
    /// Action.
    pub action: String,
    /// Object.
    pub object_id: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Request id.
    pub request_id: Option<String>,
    /// Previous hash (hex).
    pub prev_hash: String,
    /// This record's hash (hex).
    pub hash: String,
    /// Free text (comment, reason), if any.
    pub detail: Option<String>,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    /// Records read.
    pub records: i64,
    /// The first record (by position) where the chain breaks, with the reason; `None` when intact.
    pub first_bad: Option<(i64, String)>,
}

fn field(h: &mut Sha256, v: Option<&str>) {
    match v {
        Some(s) => {
            h.update(u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(s.as_bytes());
        }
        None => h.update([0xff, 0xff, 0xff, 0xff]),
    }
}

fn hash(prev: &str, seq: i64, r: &AuditRecord) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    field(&mut h, Some(&r.time));
    field(&mut h, r.tenant_id.as_deref());
    field(&mut h, r.token_id.as_deref());
    field(&mut h, Some(&r.action));
    field(&mut h, r.object_id.as_deref());
    field(&mut h, Some(&r.outcome));
    field(&mut h, r.request_id.as_deref());
    if let Some(d) = &r.detail {
        // Hashed only when present: records written before the column existed verify unchanged.
        field(&mut h, Some(d));
    }
    hex::encode(h.finalize())
}

/// The newest record's `(seq, hash)` as `audit_head` keeps it; `None` before the first record.
pub(crate) fn head(tx: &Conn<'_>) -> Result<Option<(i64, String)>> {
    tx.prepare_cached("SELECT seq, hash FROM audit_head WHERE id = 1")?
        .query_row(params![], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

/// Record `seq`'s hash; `None` when there is no such record.
pub(crate) fn hash_at(tx: &Conn<'_>, seq: i64) -> Result<Option<String>> {
    tx.prepare_cached("SELECT hash FROM audit WHERE seq = ?1")?
        .query_row(params![seq], |row| row.get(0))
        .optional()
}

pub(crate) fn append(tx: &Conn<'_>, r: &AuditRecord) -> Result<i64> {
    let (prev_seq, prev_hash) = head(tx)?.unwrap_or((0, GENESIS.to_owned()));
    let seq = prev_seq + 1;
    let h = hash(&prev_hash, seq, r);
    tx.prepare_cached("INSERT INTO audit (seq, time, tenant_id, token_id, action, object_id, outcome, request_id, prev_hash, hash, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")?.execute(params![seq, r.time, r.tenant_id, r.token_id, r.action, r.object_id, r.outcome, r.request_id, prev_hash, h, r.detail],
    )?;
    tx.prepare_cached(
        "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2) \
         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )?
    .execute(params![seq, h])?;
    Ok(seq)
}

fn row(r: &Row<'_>) -> Result<AuditRow> {
    Ok(AuditRow {
        seq: r.get(0)?,
        time: r.get(1)?,
        tenant_id: r.get(2)?,
        token_id: r.get(3)?,
        action: r.get(4)?,
        object_id: r.get(5)?,
        outcome: r.get(6)?,
        request_id: r.get(7)?,
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
        detail: r.get(10)?,
    })
}

const COLS: &str =
    "seq, time, tenant_id, token_id, action, object_id, outcome, request_id, prev_hash, hash, detail";

pub(crate) fn list(
    tx: &Conn<'_>,
    tenant_id: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditRow>> {
    let mut st = tx.prepare(&format!(
        "SELECT {COLS} FROM audit WHERE (CAST(?1 AS TEXT) IS NULL OR tenant_id = ?1) AND seq > ?2 ORDER BY seq LIMIT ?3"
    ))?;
    let rows = st.query_map(params![tenant_id, after, limit], row)?;
    rows.collect::<Result<Vec<_>>>()
}

pub(crate) fn verify(tx: &Conn<'_>) -> Result<ChainCheck> {
    // In SQLite `seq` is the rowid: this is the physical order there too.
    let mut expected_seq = 1i64;
    let mut prev = GENESIS.to_owned();
    let mut count = 0i64;
    let mut first_bad: Option<(i64, String)> = None;
    tx.exec().query_each(
        &format!("SELECT {COLS} FROM audit ORDER BY seq"),
        &[],
        &mut |r| {
            let a = row(r)?;
            count += 1;
            let problem = if a.seq > expected_seq {
                Some((expected_seq, "record missing (deleted)".to_owned()))
            } else if a.seq != expected_seq {
                Some((
                    a.seq,
                    format!("expected record {expected_seq} here (moved or duplicated record)"),
                ))
            } else if a.prev_hash != prev {
                Some((
                    a.seq,
                    "prev_hash does not match the previous record".to_owned(),
                ))
            } else {
                let rec = AuditRecord {
                    time: a.time.clone(),
                    tenant_id: a.tenant_id.clone(),
                    token_id: a.token_id.clone(),
                    action: a.action.clone(),
                    object_id: a.object_id.clone(),
                    outcome: a.outcome.clone(),
                    request_id: a.request_id.clone(),
                    detail: a.detail.clone(),
                };
                if hash(&prev, a.seq, &rec) != a.hash {
                    Some((
                        a.seq,
                        "record content does not match its hash (edited)".to_owned(),
                    ))
                } else {
                    None
                }
            };
            if let Some(p) = problem {
                first_bad = Some(p);
                return Ok(false);
            }
            prev = a.hash;
            expected_seq += 1;
            Ok(true)
        },
    )?;
    if first_bad.is_some() {
        return Ok(ChainCheck {
            records: count,
            first_bad,
        });
    }
    let bad = |seq: i64, why: &str, count: i64| ChainCheck {
        records: count,
        first_bad: Some((seq, why.to_owned())),
    };
    let last = expected_seq - 1;
    match head(tx)? {
        None if last == 0 => {}
        Some((s, h)) if s == last && h == prev => {}
        Some((s, _)) if s > last => {
            return Ok(bad(
                last + 1,
                "records at the end of the chain were removed",
                count,
            ))
        }
        _ => {
            return Ok(bad(
                last,
                "the chain head does not match the newest record",
                count,
            ))
        }
    }
    Ok(ChainCheck {
        records: count,
        first_bad: None,
    })
}
