//! Trust anchors: CA certificates a tenant trusts for validation (migration 008).

use super::Tx;
use crate::db::{params, OptionalExtension, Row};
use crate::rows::{Page, TrustAnchorRow};
use crate::{Error, Result};

const COLS: &str =
    "id, tenant_id, name, subject, fingerprint_sha256, cert_der, not_after, created_at, rowid";

fn row(r: &Row<'_>) -> Result<(i64, TrustAnchorRow)> {
    Ok((
        r.get(8)?,
        TrustAnchorRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            name: r.get(2)?,
            subject: r.get(3)?,
            fingerprint_sha256: r.get(4)?,
            cert_der: r.get(5)?,
            not_after: r.get(6)?,
            created_at: r.get(7)?,
        },
    ))
}

impl Tx<'_> {
    /// Adds a trust anchor.
    ///
    /// # Errors
    /// [`Error::Conflict`] `"fingerprint"` when the tenant already trusts this certificate,
    /// `"name"` when the name is taken.
    pub fn insert_trust_anchor(&self, a: &TrustAnchorRow) -> Result<()> {
        let taken = |column: &str, value: &str| -> Result<bool> {
            Ok(self
                .tx
                .prepare_cached(&format!(
                    "SELECT 1 FROM trust_anchors WHERE tenant_id = ?1 AND {column} = ?2"
                ))?
                .query_row(params![a.tenant_id, value], |_| Ok(()))
                .optional()?
                .is_some())
        };
        if taken("fingerprint_sha256", &a.fingerprint_sha256)? {
            return Err(Error::Conflict("fingerprint".into()));
        }
        if taken("name", &a.name)? {
            return Err(Error::Conflict("name".into()));
        }
        self.tx
            .prepare_cached(
                "INSERT INTO trust_anchors (id, tenant_id, name, subject, fingerprint_sha256, \
                 cert_der, not_after, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                a.id,
                a.tenant_id,
                a.name,
                a.subject,
                a.fingerprint_sha256,
                a.cert_der,
                a.not_after,
                a.created_at
            ])?;
        Ok(())
    }

    /// The tenant's trust anchor `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`], also for another tenant's anchor.
    pub fn get_trust_anchor(&self, tenant_id: &str, id: &str) -> Result<TrustAnchorRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {COLS} FROM trust_anchors WHERE tenant_id = ?1 AND id = ?2"
            ))?
            .query_row(params![tenant_id, id], row)
            .map(|(_, a)| a)
    }

    /// A page of the tenant's trust anchors in creation order.
    ///
    /// # Errors
    /// SQL failures; [`Error::Conflict`] for a malformed cursor.
    pub fn list_trust_anchors(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<TrustAnchorRow>> {
        self.tenant_page("trust_anchors", COLS, row, tenant_id, cursor, limit)
    }

    /// Every trust anchor of the tenant (the validation trust store), at most `max`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn all_trust_anchors(&self, tenant_id: &str, max: usize) -> Result<Vec<TrustAnchorRow>> {
        let mut st = self.tx.prepare_cached(&format!(
            "SELECT {COLS} FROM trust_anchors WHERE tenant_id = ?1 ORDER BY rowid LIMIT ?2"
        ))?;
        let rows = st
            .query_map(
                params![tenant_id, i64::try_from(max).unwrap_or(i64::MAX)],
                row,
            )?
            .map(|r| r.map(|(_, a)| a))
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Removes the tenant's trust anchor `id`; returns it as it was.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn delete_trust_anchor(&self, tenant_id: &str, id: &str) -> Result<TrustAnchorRow> {
        let a = self.get_trust_anchor(tenant_id, id)?;
        self.tx
            .prepare_cached("DELETE FROM trust_anchors WHERE tenant_id = ?1 AND id = ?2")?
            .execute(params![tenant_id, id])?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{both_backends, fixture, Kind};
    use crate::{Error, TenantRow, TrustAnchorRow};

    fn anchor(tenant: &str, id: &str, name: &str, fp: &str) -> TrustAnchorRow {
        TrustAnchorRow {
            id: id.into(),
            tenant_id: tenant.into(),
            name: name.into(),
            subject: "CN=x".into(),
            fingerprint_sha256: fp.into(),
            cert_der: vec![1, 2, 3],
            not_after: "2030-01-01T00:00:00Z".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    both_backends!(anchors_are_unique_per_tenant_and_invisible_to_others);

    fn anchors_are_unique_per_tenant_and_invisible_to_others(kind: Kind) {
        let Some(f) = fixture(kind) else {
            return;
        };
        let s = &f.store;
        s.write(|tx| {
            for (id, name) in [("tn_a", "a"), ("tn_b", "b")] {
                tx.insert_tenant(&TenantRow {
                    id: id.into(),
                    name: name.into(),
                    created_at: "x".into(),
                })?;
            }
            tx.insert_trust_anchor(&anchor("tn_a", "ta_1", "one", "f1"))?;
            tx.insert_trust_anchor(&anchor("tn_a", "ta_2", "two", "f2"))?;
            // The same certificate in another tenant is fine.
            tx.insert_trust_anchor(&anchor("tn_b", "ta_3", "one", "f1"))
        })
        .unwrap();
        let err = s
            .write(|tx| tx.insert_trust_anchor(&anchor("tn_a", "ta_4", "other", "f1")))
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(w) if w == "fingerprint"));
        let err = s
            .write(|tx| tx.insert_trust_anchor(&anchor("tn_a", "ta_4", "one", "f9")))
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(w) if w == "name"));
        s.read(|tx| {
            assert!(matches!(
                tx.get_trust_anchor("tn_b", "ta_1"),
                Err(Error::NotFound)
            ));
            let page = tx.list_trust_anchors("tn_a", None, 1)?;
            assert_eq!(page.items[0].id, "ta_1");
            let next = tx.list_trust_anchors("tn_a", page.next_cursor.as_deref(), 1)?;
            assert_eq!(next.items[0].id, "ta_2");
            assert!(next.next_cursor.is_none());
            assert_eq!(tx.all_trust_anchors("tn_b", 10)?.len(), 1);
            Ok(())
        })
        .unwrap();
        assert!(matches!(
            s.write(|tx| tx.delete_trust_anchor("tn_b", "ta_1")),
            Err(Error::NotFound)
        ));
        s.write(|tx| tx.delete_trust_anchor("tn_a", "ta_1"))
            .unwrap();
        assert_eq!(
            s.read(|tx| tx.all_trust_anchors("tn_a", 10)).unwrap().len(),
            1
        );
    }
}
