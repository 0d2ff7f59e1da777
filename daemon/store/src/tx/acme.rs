//! The ACME client's tables (migration 011): accounts, DNS providers, managed certificates with
//! their versions and the order in flight; and the challenge answers every node of a cluster
//! serves (migration 013). Every lookup is tenant-scoped except the worker's own
//! reads by managed-certificate id (ids carry 128 random bits; the worker got the id from a row).

use super::Tx;
use crate::db::{params, OptionalExtension, Row};
use crate::rows::Page;
use crate::{Error, Result};

/// An ACME account. `creds_*` hold the encrypted instant-acme credentials (account key inside).
#[derive(Debug, Clone)]
pub struct AcmeAccountRow {
    /// `acme_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// `letsencrypt`, `zerossl`, `buypass`, `google` or `custom`.
    pub provider: String,
    /// `production` or `staging`.
    pub environment: String,
    /// The ACME directory.
    pub directory_url: String,
    /// Contact e-mail.
    pub email: Option<String>,
    /// Extra roots trusted for the directory's HTTPS.
    pub directory_ca_pem: Option<String>,
    /// The account URL at the CA.
    pub account_url: String,
    /// External account binding key id (not a secret).
    pub eab_kid: Option<String>,
    /// `valid` or `deactivated`.
    pub status: String,
    /// Data key under the token's KEK.
    pub creds_wrapped: Vec<u8>,
    /// Nonce || AES-GCM ciphertext of the credentials JSON.
    pub creds_sealed: Vec<u8>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub deactivated_at: Option<String>,
}

/// A DNS provider for dns-01. Secrets are encrypted; `config` holds the rest.
#[derive(Debug, Clone)]
pub struct DnsProviderRow {
    /// `dns_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// Provider type.
    pub kind: String,
    /// JSON config without secret keys.
    pub config: String,
    /// Data key under the KEK.
    pub secrets_wrapped: Vec<u8>,
    /// Encrypted JSON object of the secret keys.
    pub secrets_sealed: Vec<u8>,
    /// RFC 3339.
    pub created_at: String,
}

/// A dns-01 TXT record noted before it was written at a DNS provider (migration 016).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecordRow {
    /// `dnsrec_…`.
    pub id: String,
    /// The managed certificate whose order wrote it.
    pub managed_cert_id: String,
    /// The provider it was written through.
    pub dns_provider_id: String,
    /// Where (after following CNAMEs).
    pub fqdn: String,
    /// The TXT value.
    pub value: String,
    /// When it was noted (RFC 3339).
    pub created_at: String,
}

/// A managed certificate (`mc_…`) and the state of its order in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedCertRow {
    /// `mc_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The ACME account.
    pub account_id: String,
    /// JSON array of names.
    pub domains: String,
    /// `http-01`, `dns-01` or `tls-alpn-01`.
    pub challenge_type: String,
    /// For dns-01.
    pub dns_provider_id: Option<String>,
    /// `ec256`, `ec384`, `rsa2048`, …
    pub key_type: String,
    /// ACME profile.
    pub profile: Option<String>,
    /// Renew automatically.
    pub auto_renew: bool,
    /// `pending`, `valid` or `failed`.
    pub status: String,
    /// Latest version (0: none).
    pub version: i64,
    /// Last failure, the CA's detail when it gave one.
    pub last_error: Option<String>,
    /// `issue` or `renew` while an order runs.
    pub order_kind: Option<String>,
    /// The order's URL at the CA.
    pub order_url: Option<String>,
    /// When the current order (attempt) started.
    pub order_started_at: Option<String>,
    /// How many times the current order was started.
    pub order_attempts: i64,
    /// Next renewal (or retry) time.
    pub renew_at: Option<String>,
    /// Renewal failures in a row.
    pub renew_failures: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// One issued version of a managed certificate.
#[derive(Debug, Clone)]
pub struct ManagedVersionRow {
    /// `mc_…`.
    pub mc_id: String,
    /// 1, 2, …
    pub version: i64,
    /// Uppercase hex pairs with colons.
    pub serial_number: String,
    /// PEM leaf.
    pub certificate: String,
    /// PEM chain, issuer first.
    pub ca_chain: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Data key under the KEK.
    pub key_wrapped: Vec<u8>,
    /// Encrypted private key PEM.
    pub key_sealed: Vec<u8>,
    /// RFC 3339.
    pub created_at: String,
}

const ACCOUNT_COLS: &str = "id, tenant_id, name, provider, environment, directory_url, email, \
     directory_ca_pem, account_url, eab_kid, status, creds_wrapped, creds_sealed, created_at, \
     deactivated_at, rowid";

fn account_row(r: &Row<'_>) -> Result<(i64, AcmeAccountRow)> {
    Ok((
        r.get(15)?,
        AcmeAccountRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            name: r.get(2)?,
            provider: r.get(3)?,
            environment: r.get(4)?,
            directory_url: r.get(5)?,
            email: r.get(6)?,
            directory_ca_pem: r.get(7)?,
            account_url: r.get(8)?,
            eab_kid: r.get(9)?,
            status: r.get(10)?,
            creds_wrapped: r.get(11)?,
            creds_sealed: r.get(12)?,
            created_at: r.get(13)?,
            deactivated_at: r.get(14)?,
        },
    ))
}

const DNS_COLS: &str =
    "id, tenant_id, name, kind, config, secrets_wrapped, secrets_sealed, created_at, rowid";

fn dns_row(r: &Row<'_>) -> Result<(i64, DnsProviderRow)> {
    Ok((
        r.get(8)?,
        DnsProviderRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            name: r.get(2)?,
            kind: r.get(3)?,
            config: r.get(4)?,
            secrets_wrapped: r.get(5)?,
            secrets_sealed: r.get(6)?,
            created_at: r.get(7)?,
        },
    ))
}

const MC_COLS: &str = "id, tenant_id, account_id, domains, challenge_type, dns_provider_id, \
     key_type, profile, auto_renew, status, version, last_error, order_kind, order_url, \
     order_started_at, order_attempts, renew_at, renew_failures, created_at, updated_at, rowid";

fn mc_row(r: &Row<'_>) -> Result<(i64, ManagedCertRow)> {
    Ok((
        r.get(20)?,
        ManagedCertRow {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            account_id: r.get(2)?,
            domains: r.get(3)?,
            challenge_type: r.get(4)?,
            dns_provider_id: r.get(5)?,
            key_type: r.get(6)?,
            profile: r.get(7)?,
            auto_renew: r.get(8)?,
            status: r.get(9)?,
            version: r.get(10)?,
            last_error: r.get(11)?,
            order_kind: r.get(12)?,
            order_url: r.get(13)?,
            order_started_at: r.get(14)?,
            order_attempts: r.get(15)?,
            renew_at: r.get(16)?,
            renew_failures: r.get(17)?,
            created_at: r.get(18)?,
            updated_at: r.get(19)?,
        },
    ))
}

const VERSION_COLS: &str = "mc_id, version, serial_number, certificate, ca_chain, not_before, \
     not_after, key_wrapped, key_sealed, created_at";

fn version_row(r: &Row<'_>) -> Result<ManagedVersionRow> {
    Ok(ManagedVersionRow {
        mc_id: r.get(0)?,
        version: r.get(1)?,
        serial_number: r.get(2)?,
        certificate: r.get(3)?,
        ca_chain: r.get(4)?,
        not_before: r.get(5)?,
        not_after: r.get(6)?,
        key_wrapped: r.get(7)?,
        key_sealed: r.get(8)?,
        created_at: r.get(9)?,
    })
}

impl Tx<'_> {
    // ---- accounts --------------------------------------------------------------------------

    /// Adds an ACME account.
    ///
    /// # Errors
    /// [`Error::Conflict`] `"name"` when the tenant has an account of that name.
    pub fn insert_acme_account(&self, a: &AcmeAccountRow) -> Result<()> {
        let taken = self
            .tx
            .prepare_cached("SELECT 1 FROM acme_accounts WHERE tenant_id = ?1 AND name = ?2")?
            .query_row(params![a.tenant_id, a.name], |_| Ok(()))
            .optional()?
            .is_some();
        if taken {
            return Err(Error::Conflict("name".into()));
        }
        self.tx
            .prepare_cached(&format!(
                "INSERT INTO acme_accounts ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
                 ?11, ?12, ?13, ?14, ?15)",
                ACCOUNT_COLS.trim_end_matches(", rowid")
            ))?
            .execute(params![
                a.id,
                a.tenant_id,
                a.name,
                a.provider,
                a.environment,
                a.directory_url,
                a.email,
                a.directory_ca_pem,
                a.account_url,
                a.eab_kid,
                a.status,
                a.creds_wrapped,
                a.creds_sealed,
                a.created_at,
                a.deactivated_at
            ])?;
        Ok(())
    }

    /// Whether the tenant has an account named `name`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn acme_account_name_taken(&self, tenant_id: &str, name: &str) -> Result<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT 1 FROM acme_accounts WHERE tenant_id = ?1 AND name = ?2")?
            .query_row(params![tenant_id, name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The tenant's account `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`], also for another tenant's account.
    pub fn get_acme_account(&self, tenant_id: &str, id: &str) -> Result<AcmeAccountRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLS} FROM acme_accounts WHERE tenant_id = ?1 AND id = ?2"
            ))?
            .query_row(params![tenant_id, id], account_row)
            .map(|(_, a)| a)
    }

    /// A page of the tenant's accounts, oldest first.
    ///
    /// # Errors
    /// [`Error::Conflict`] for a malformed cursor.
    pub fn list_acme_accounts(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AcmeAccountRow>> {
        self.tenant_page(
            "acme_accounts",
            ACCOUNT_COLS,
            account_row,
            tenant_id,
            cursor,
            limit,
        )
    }

    /// Marks the tenant's account `id` deactivated, and stops the renewals of its managed
    /// certificates (a deactivated account cannot order: each renewal would fail, again and
    /// again, until the certificate expired): `auto_renew` off, no `renew_at`, `last_error` says
    /// why. Returns how many certificates it stopped.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`] when it is deactivated already.
    pub fn deactivate_acme_account(&self, tenant_id: &str, id: &str, at: &str) -> Result<usize> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE acme_accounts SET status = 'deactivated', deactivated_at = ?3 \
                 WHERE tenant_id = ?1 AND id = ?2 AND status <> 'deactivated'",
            )?
            .execute(params![tenant_id, id, at])?;
        if n == 0 {
            // Gone, or deactivated by a concurrent call since the caller read it.
            self.get_acme_account(tenant_id, id)?;
            return Err(Error::Conflict(format!(
                "ACME account {id} is already deactivated"
            )));
        }
        let note = format!("renewals stopped: ACME account {id} was deleted (deactivated)");
        let stopped = self
            .tx
            .prepare_cached(
                "UPDATE acme_certificates SET auto_renew = 0, renew_at = NULL, last_error = ?3, \
                 updated_at = ?4 WHERE tenant_id = ?1 AND account_id = ?2 AND auto_renew = 1",
            )?
            .execute(params![tenant_id, id, note, at])?;
        Ok(stopped)
    }

    // ---- DNS providers ---------------------------------------------------------------------

    /// Adds a DNS provider.
    ///
    /// # Errors
    /// [`Error::Conflict`] `"name"` when the name is taken in the tenant.
    pub fn insert_dns_provider(&self, p: &DnsProviderRow) -> Result<()> {
        let taken = self
            .tx
            .prepare_cached("SELECT 1 FROM acme_dns_providers WHERE tenant_id = ?1 AND name = ?2")?
            .query_row(params![p.tenant_id, p.name], |_| Ok(()))
            .optional()?
            .is_some();
        if taken {
            return Err(Error::Conflict("name".into()));
        }
        self.tx
            .prepare_cached(
                "INSERT INTO acme_dns_providers (id, tenant_id, name, kind, config, \
                 secrets_wrapped, secrets_sealed, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                p.id,
                p.tenant_id,
                p.name,
                p.kind,
                p.config,
                p.secrets_wrapped,
                p.secrets_sealed,
                p.created_at
            ])?;
        Ok(())
    }

    /// The tenant's DNS provider `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_dns_provider(&self, tenant_id: &str, id: &str) -> Result<DnsProviderRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {DNS_COLS} FROM acme_dns_providers WHERE tenant_id = ?1 AND id = ?2"
            ))?
            .query_row(params![tenant_id, id], dns_row)
            .map(|(_, a)| a)
    }

    /// A page of the tenant's DNS providers.
    ///
    /// # Errors
    /// [`Error::Conflict`] for a malformed cursor.
    pub fn list_dns_providers(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<DnsProviderRow>> {
        self.tenant_page(
            "acme_dns_providers",
            DNS_COLS,
            dns_row,
            tenant_id,
            cursor,
            limit,
        )
    }

    /// Deletes the tenant's DNS provider `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`] `"in_use"` while a managed certificate uses it.
    pub fn delete_dns_provider(&self, tenant_id: &str, id: &str) -> Result<()> {
        let used = self
            .tx
            .prepare_cached("SELECT 1 FROM acme_certificates WHERE dns_provider_id = ?1 LIMIT 1")?
            .query_row(params![id], |_| Ok(()))
            .optional()?
            .is_some();
        self.get_dns_provider(tenant_id, id)?;
        if used {
            return Err(Error::Conflict("in_use".into()));
        }
        self.tx
            .prepare_cached("DELETE FROM acme_dns_providers WHERE tenant_id = ?1 AND id = ?2")?
            .execute(params![tenant_id, id])?;
        Ok(())
    }

    // ---- managed certificates --------------------------------------------------------------

    /// Adds a managed certificate.
    ///
    /// # Errors
    /// SQL failures.
    pub fn insert_managed_cert(&self, m: &ManagedCertRow) -> Result<()> {
        self.tx
            .prepare_cached(&format!(
                "INSERT INTO acme_certificates ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                 ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
                MC_COLS.trim_end_matches(", rowid")
            ))?
            .execute(params![
                m.id,
                m.tenant_id,
                m.account_id,
                m.domains,
                m.challenge_type,
                m.dns_provider_id,
                m.key_type,
                m.profile,
                m.auto_renew,
                m.status,
                m.version,
                m.last_error,
                m.order_kind,
                m.order_url,
                m.order_started_at,
                m.order_attempts,
                m.renew_at,
                m.renew_failures,
                m.created_at,
                m.updated_at
            ])?;
        Ok(())
    }

    /// Replaces the mutable state of managed certificate `m.id` (status, version, error, order
    /// and renewal fields).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn update_managed_cert(&self, m: &ManagedCertRow) -> Result<()> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE acme_certificates SET status = ?2, version = ?3, last_error = ?4, \
                 order_kind = ?5, order_url = ?6, order_started_at = ?7, order_attempts = ?8, \
                 renew_at = ?9, renew_failures = ?10, updated_at = ?11 WHERE id = ?1",
            )?
            .execute(params![
                m.id,
                m.status,
                m.version,
                m.last_error,
                m.order_kind,
                m.order_url,
                m.order_started_at,
                m.order_attempts,
                m.renew_at,
                m.renew_failures,
                m.updated_at
            ])?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Starts an order of `kind` (`issue` or `renew`) on managed certificate `id`, only if none
    /// is in flight (one conditional UPDATE: of two nodes starting the same renewal, one wins).
    /// Resets the attempt count. Returns whether this call started it.
    ///
    /// # Errors
    /// SQL failures.
    pub fn claim_managed_order(&self, id: &str, kind: &str, at: &str) -> Result<bool> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE acme_certificates SET order_kind = ?2, order_attempts = 0, updated_at = ?3 \
                 WHERE id = ?1 AND order_kind IS NULL",
            )?
            .execute(params![id, kind, at])?;
        Ok(n == 1)
    }

    /// The tenant's managed certificate `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_managed_cert(&self, tenant_id: &str, id: &str) -> Result<ManagedCertRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {MC_COLS} FROM acme_certificates WHERE tenant_id = ?1 AND id = ?2"
            ))?
            .query_row(params![tenant_id, id], mc_row)
            .map(|(_, a)| a)
    }

    /// Managed certificate `id` whatever its tenant (the order worker's read).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_managed_cert_any_tenant(&self, id: &str) -> Result<ManagedCertRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {MC_COLS} FROM acme_certificates WHERE id = ?1"
            ))?
            .query_row(params![id], mc_row)
            .map(|(_, a)| a)
    }

    /// A page of the tenant's managed certificates.
    ///
    /// # Errors
    /// [`Error::Conflict`] for a malformed cursor.
    pub fn list_managed_certs(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ManagedCertRow>> {
        self.tenant_page(
            "acme_certificates",
            MC_COLS,
            mc_row,
            tenant_id,
            cursor,
            limit,
        )
    }

    /// Ids of managed certificates with an order in flight (all tenants): after a restart the
    /// worker picks them up again.
    ///
    /// # Errors
    /// SQL failures.
    pub fn managed_certs_in_flight(&self) -> Result<Vec<String>> {
        let ids = self
            .tx
            .prepare_cached("SELECT id FROM acme_certificates WHERE order_kind IS NOT NULL")?
            .query_map(params![], |r| r.get(0))?
            .collect::<Result<Vec<String>>>()?;
        Ok(ids)
    }

    /// Ids of managed certificates whose renewal is due at `now` (RFC 3339) and that have no
    /// order in flight (all tenants).
    ///
    /// # Errors
    /// SQL failures.
    pub fn managed_certs_due(&self, now: &str) -> Result<Vec<String>> {
        let ids = self
            .tx
            .prepare_cached(
                "SELECT id FROM acme_certificates WHERE renew_at IS NOT NULL AND renew_at <= ?1 \
                 AND order_kind IS NULL AND auto_renew = 1 AND status = 'valid'",
            )?
            .query_map(params![now], |r| r.get(0))?
            .collect::<Result<Vec<String>>>()?;
        Ok(ids)
    }

    /// Valid managed certificates whose latest version ends at or before `horizon` and for which
    /// `certificate.expiring` was not fired yet: `(id, tenant, version, serial, not_after)`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn managed_certs_expiring(&self, horizon: &str) -> Result<Vec<ExpiringCert>> {
        let rows = self
            .tx
            .prepare_cached(
                "SELECT c.id, c.tenant_id, c.version, v.serial_number, v.not_after \
                 FROM acme_certificates c JOIN acme_certificate_versions v \
                 ON v.mc_id = c.id AND v.version = c.version \
                 WHERE c.status = 'valid' AND c.version > 0 AND c.expiring_notified < c.version \
                 AND v.not_after <= ?1",
            )?
            .query_map(params![horizon], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Valid auto-renewing managed certificates with no order in flight whose renewal information
    /// (RFC 9773) is due to be asked for: a new version, or `ari_next_check` reached.
    /// `(id, tenant, account_id, version, certificate PEM, renew_at)`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn managed_certs_ari_due(&self, now: &str) -> Result<Vec<AriDue>> {
        let rows = self
            .tx
            .prepare_cached(
                "SELECT c.id, c.tenant_id, c.account_id, c.version, v.certificate, c.renew_at \
                 FROM acme_certificates c JOIN acme_certificate_versions v \
                 ON v.mc_id = c.id AND v.version = c.version \
                 WHERE c.status = 'valid' AND c.auto_renew = 1 AND c.order_kind IS NULL \
                 AND c.version > 0 AND (c.ari_version < c.version OR c.ari_next_check IS NULL \
                 OR c.ari_next_check <= ?1)",
            )?
            .query_map(params![now], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Records an ARI answer for `version` of `id`: the next check, and `renew_at` when the CA's
    /// window moves the renewal earlier (only while that version is still the latest).
    ///
    /// # Errors
    /// SQL failures.
    pub fn set_managed_cert_ari(
        &self,
        id: &str,
        version: i64,
        next_check: &str,
        renew_at: Option<&str>,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE acme_certificates SET ari_version = ?2, ari_next_check = ?3, \
                 renew_at = COALESCE(?4, renew_at) WHERE id = ?1 AND version = ?2",
            )?
            .execute(params![id, version, next_check, renew_at])?;
        Ok(())
    }

    /// Records that `certificate.expiring` was fired for `version` of `id`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn mark_managed_cert_expiring(&self, id: &str, version: i64) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE acme_certificates SET expiring_notified = ?2 WHERE id = ?1")?
            .execute(params![id, version])?;
        Ok(())
    }

    /// Adds a version.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the version exists.
    pub fn insert_managed_version(&self, v: &ManagedVersionRow) -> Result<()> {
        self.tx
            .prepare_cached(&format!(
                "INSERT INTO acme_certificate_versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, \
                 ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?
            .execute(params![
                v.mc_id,
                v.version,
                v.serial_number,
                v.certificate,
                v.ca_chain,
                v.not_before,
                v.not_after,
                v.key_wrapped,
                v.key_sealed,
                v.created_at
            ])?;
        Ok(())
    }

    /// Deletes the tenant's managed certificate `id` with its versions (their keys included) and
    /// whatever dns-01 record notes it still has, when no order of it is in flight.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`] while an order is in flight.
    pub fn delete_managed_cert(&self, tenant_id: &str, id: &str) -> Result<()> {
        let mc = self.get_managed_cert(tenant_id, id)?;
        if mc.order_kind.is_some() {
            return Err(Error::Conflict(format!(
                "an order of managed certificate {id} is in flight"
            )));
        }
        self.tx
            .prepare_cached("DELETE FROM acme_certificate_versions WHERE mc_id = ?1")?
            .execute(params![id])?;
        self.tx
            .prepare_cached("DELETE FROM acme_dns_records WHERE managed_cert_id = ?1")?
            .execute(params![id])?;
        // Conditional: a renewal the scheduler claimed since the read above keeps it.
        let n = self
            .tx
            .prepare_cached(
                "DELETE FROM acme_certificates WHERE tenant_id = ?1 AND id = ?2 \
                 AND order_kind IS NULL",
            )?
            .execute(params![tenant_id, id])?;
        if n == 0 {
            return Err(Error::Conflict(format!(
                "an order of managed certificate {id} is in flight"
            )));
        }
        Ok(())
    }

    /// The managed certificate of the tenant one of whose versions has `serial_number` (the API
    /// form, `1A:2B`), if any. A scan of the versions: only asked about a serial that is none of
    /// the tenant's own certificates.
    ///
    /// # Errors
    /// Database failures.
    pub fn managed_cert_of_serial(
        &self,
        tenant_id: &str,
        serial_number: &str,
    ) -> Result<Option<String>> {
        self.tx
            .prepare_cached(
                "SELECT v.mc_id FROM acme_certificate_versions v \
                 JOIN acme_certificates c ON c.id = v.mc_id \
                 WHERE c.tenant_id = ?1 AND v.serial_number = ?2 LIMIT 1",
            )?
            .query_row(params![tenant_id, serial_number], |r| r.get(0))
            .optional()
    }

    /// Version `version` of managed certificate `mc_id`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn get_managed_version(&self, mc_id: &str, version: i64) -> Result<ManagedVersionRow> {
        self.tx
            .prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM acme_certificate_versions WHERE mc_id = ?1 AND version = ?2"
            ))?
            .query_row(params![mc_id, version], version_row)
    }

    /// Stores (or replaces) a challenge answer that every node of a cluster serves: `kind`
    /// `http-01` (`name` the token, `value` the key authorization) or `tls-alpn-01` (`name` the
    /// lowercase DNS name, `value` the hex SHA-256 of the key authorization).
    ///
    /// # Errors
    /// SQL failures (a `kind` outside the two is refused by the table's CHECK).
    pub fn put_challenge_answer(
        &self,
        kind: &str,
        name: &str,
        value: &str,
        at: &str,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO acme_challenge_answers (kind, name, value, created_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (kind, name) \
                 DO UPDATE SET value = excluded.value, created_at = excluded.created_at",
            )?
            .execute(params![kind, name, value, at])?;
        Ok(())
    }

    /// Notes a dns-01 record about to be written at provider `provider_id` for managed
    /// certificate `mc_id` (see migration 016).
    ///
    /// # Errors
    /// SQL failures.
    pub fn insert_dns_record(&self, r: &DnsRecordRow) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO acme_dns_records (id, managed_cert_id, dns_provider_id, fqdn, value, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                r.id,
                r.managed_cert_id,
                r.dns_provider_id,
                r.fqdn,
                r.value,
                r.created_at
            ])?;
        Ok(())
    }

    /// Forgets a dns-01 record once it is withdrawn (nothing when there is none).
    ///
    /// # Errors
    /// SQL failures.
    pub fn delete_dns_record(&self, id: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM acme_dns_records WHERE id = ?1")?
            .execute(params![id])?;
        Ok(())
    }

    /// The dns-01 records noted for managed certificate `mc_id` and not yet withdrawn, oldest
    /// first.
    ///
    /// # Errors
    /// SQL failures.
    pub fn dns_records_of(&self, mc_id: &str) -> Result<Vec<DnsRecordRow>> {
        let mut st = self.tx.prepare_cached(
            "SELECT id, managed_cert_id, dns_provider_id, fqdn, value, created_at \
             FROM acme_dns_records WHERE managed_cert_id = ?1 ORDER BY created_at, id",
        )?;
        let rows = st
            .query_map(params![mc_id], |r| {
                Ok(DnsRecordRow {
                    id: r.get(0)?,
                    managed_cert_id: r.get(1)?,
                    dns_provider_id: r.get(2)?,
                    fqdn: r.get(3)?,
                    value: r.get(4)?,
                    created_at: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Removes a challenge answer (nothing when there is none).
    ///
    /// # Errors
    /// SQL failures.
    pub fn delete_challenge_answer(&self, kind: &str, name: &str) -> Result<()> {
        self.tx
            .prepare_cached("DELETE FROM acme_challenge_answers WHERE kind = ?1 AND name = ?2")?
            .execute(params![kind, name])?;
        Ok(())
    }

    /// The stored answer of challenge `kind` for `name`.
    ///
    /// # Errors
    /// SQL failures.
    pub fn challenge_answer(&self, kind: &str, name: &str) -> Result<Option<String>> {
        self.tx
            .prepare_cached(
                "SELECT value FROM acme_challenge_answers WHERE kind = ?1 AND name = ?2",
            )?
            .query_row(params![kind, name], |r| r.get(0))
            .optional()
    }

    /// Removes the answers stored before `at` (RFC 3339): leftovers of a node that died during an
    /// order. Returns how many went.
    ///
    /// # Errors
    /// SQL failures.
    pub fn delete_challenge_answers_before(&self, at: &str) -> Result<usize> {
        self.tx
            .prepare_cached("DELETE FROM acme_challenge_answers WHERE created_at < ?1")?
            .execute(params![at])
    }

    /// All versions of `mc_id`, oldest first.
    ///
    /// # Errors
    /// SQL failures.
    pub fn list_managed_versions(&self, mc_id: &str) -> Result<Vec<ManagedVersionRow>> {
        let rows = self
            .tx
            .prepare_cached(&format!(
                "SELECT {VERSION_COLS} FROM acme_certificate_versions WHERE mc_id = ?1 ORDER BY version"
            ))?
            .query_map(params![mc_id], version_row)?
            .collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// A managed certificate about to expire: `(id, tenant, version, serial, not_after)`.
pub type ExpiringCert = (String, String, i64, String, String);

/// A managed certificate whose ARI is due: `(id, tenant, account_id, version, certificate PEM,
/// renew_at)`.
pub type AriDue = (String, String, String, i64, String, Option<String>);
