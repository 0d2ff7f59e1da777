//! Signed OCSP responses shared by the nodes of a cluster (migration 014): the leader pre-signs
//! and refreshes them, any node serves them. Only the PostgreSQL backend writes them.

use super::Tx;
use crate::db::{params, OptionalExtension};
use crate::Result;

/// One stored OCSP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspResponseRow {
    /// The CA that answered.
    pub ca_id: String,
    /// The serial asked about (canonical uppercase hex).
    pub serial: String,
    /// The `CertID` (DER) answered.
    pub cert_id: Vec<u8>,
    /// The DER `OCSPResponse`.
    pub der: Vec<u8>,
    /// What the response says: `good`, `revoked` or `unknown`.
    pub status: String,
    /// `thisUpdate` (RFC 3339).
    pub this_update: String,
    /// `nextUpdate` (RFC 3339).
    pub next_update: String,
    /// Served until then, re-signed before (RFC 3339).
    pub refresh_at: String,
}

impl Tx<'_> {
    /// Stores (or replaces with a newer one) a signed response, but only while the certificate's
    /// status still matches what the response says: `good` needs a `valid` certificate, `revoked`
    /// a revoked one, `unknown` no certificate (or only a reservation). A response signed from a
    /// status read before a revocation therefore never lands after that revocation committed (the
    /// check and the write are one statement, and writers are serialised). Returns whether it was
    /// stored.
    ///
    /// # Errors
    /// SQL failures.
    pub fn put_ocsp_response(&self, r: &OcspResponseRow) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO ocsp_responses \
                 (ca_id, serial, cert_id, der, status, this_update, next_update, refresh_at) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 \
                 WHERE CASE WHEN CAST(?5 AS TEXT) = 'unknown' \
                   THEN NOT EXISTS (SELECT 1 FROM certificates \
                        WHERE issuer_ca_id = ?1 AND serial = ?2 AND status != 'reserved') \
                   ELSE EXISTS (SELECT 1 FROM certificates WHERE issuer_ca_id = ?1 AND serial = ?2 \
                        AND status = CASE WHEN CAST(?5 AS TEXT) = 'good' THEN 'valid' ELSE 'revoked' END) \
                 END \
                 ON CONFLICT (ca_id, serial, cert_id) DO UPDATE SET der = excluded.der, \
                 status = excluded.status, this_update = excluded.this_update, \
                 next_update = excluded.next_update, refresh_at = excluded.refresh_at \
                 WHERE ocsp_responses.this_update <= excluded.this_update",
            )?
            .execute(params![
                r.ca_id,
                r.serial,
                r.cert_id,
                r.der,
                r.status,
                r.this_update,
                r.next_update,
                r.refresh_at
            ])?;
        Ok(n == 1)
    }

    /// The stored response of CA `ca_id` for `serial` and this exact `CertID`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn ocsp_response(
        &self,
        ca_id: &str,
        serial: &str,
        cert_id: &[u8],
    ) -> Result<Option<OcspResponseRow>> {
        self.tx
            .prepare_cached(
                "SELECT ca_id, serial, cert_id, der, status, this_update, next_update, refresh_at \
                 FROM ocsp_responses WHERE ca_id = ?1 AND serial = ?2 AND cert_id = ?3",
            )?
            .query_row(params![ca_id, serial, cert_id], |r| {
                Ok(OcspResponseRow {
                    ca_id: r.get(0)?,
                    serial: r.get(1)?,
                    cert_id: r.get(2)?,
                    der: r.get(3)?,
                    status: r.get(4)?,
                    this_update: r.get(5)?,
                    next_update: r.get(6)?,
                    refresh_at: r.get(7)?,
                })
            })
            .optional()
    }

    /// Drops every stored response for `serial` of CA `ca_id` (every `CertID` form): part of the
    /// revocation's transaction. Returns how many.
    ///
    /// # Errors
    /// SQL failures.
    pub fn delete_ocsp_responses(&self, ca_id: &str, serial: &str) -> Result<usize> {
        self.tx
            .prepare_cached("DELETE FROM ocsp_responses WHERE ca_id = ?1 AND serial = ?2")?
            .execute(params![ca_id, serial])
    }

    /// Up to `limit` stored responses due for re-signing (`refresh_at` at or before
    /// `before_rfc3339`), soonest first: `(ca_id, cert_id)`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn ocsp_responses_due(
        &self,
        before_rfc3339: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        self.tx
            .prepare_cached(
                "SELECT ca_id, cert_id FROM ocsp_responses WHERE refresh_at <= ?1 \
                 ORDER BY refresh_at LIMIT ?2",
            )?
            .query_map(
                params![before_rfc3339, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .collect()
    }

    /// Drops the stored responses past their `nextUpdate` at `now_rfc3339` (nobody refreshed
    /// them: the leader could not sign them). Returns how many.
    ///
    /// # Errors
    /// SQL failures.
    pub fn delete_ocsp_responses_expired(&self, now_rfc3339: &str) -> Result<usize> {
        self.tx
            .prepare_cached(
                "DELETE FROM ocsp_responses WHERE refresh_at < ?1 AND next_update < ?1",
            )?
            .execute(params![now_rfc3339])
    }
}
