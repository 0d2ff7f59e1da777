//! Row types: what the store hands out and takes in.

use serde::Serialize;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRow {
    /// `tn_…`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

/// An API token (never the token itself: only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// `tok_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Optional label.
    pub name: Option<String>,
    /// Policy names.
    pub policies: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, if the token expires.
    pub expires_at: Option<String>,
    /// RFC 3339, once revoked.
    pub revoked_at: Option<String>,
}

/// A certificate authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRow {
    /// `ca_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// Subject CN.
    pub common_name: String,
    /// `root` or `intermediate`.
    pub ca_type: String,
    /// Internal parent, if any.
    pub parent_ca_id: Option<String>,
    /// `active`, `pending_signature` or `retired`.
    pub status: String,
    /// `ec`, `rsa`, `ed25519`.
    pub key_type: String,
    /// Bits.
    pub key_size: u32,
    /// Label of the key pair on the token.
    pub key_label: String,
    /// The CA certificate, once it has one.
    pub cert_der: Option<Vec<u8>>,
    /// Issuer certificates above an externally signed CA (PEM).
    pub chain_pem: Option<String>,
    /// The CSR of a pending intermediate (PEM).
    pub csr_pem: Option<String>,
    /// Serial in canonical form (uppercase hex).
    pub serial: Option<String>,
    /// RFC 3339.
    pub not_before: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    /// JSON settings (CRL interval, OCSP validity, constraints).
    pub settings: String,
    /// RFC 3339.
    pub created_at: String,
}

impl CaRow {
    /// The `key_label` prefix of a CA whose key is not on this daemon's token (an offline root
    /// imported by certificate only). Real token labels with this prefix are refused at import.
    pub const OFFLINE_LABEL_PREFIX: &'static str = "offline:";

    /// Whether the CA's key is offline: it signs nothing here, its CRL is imported.
    pub fn is_offline(&self) -> bool {
        self.key_label.starts_with(Self::OFFLINE_LABEL_PREFIX)
    }
}

/// A reservation the reconciliation revoked: nobody received its certificate, and the token may
/// or may not have signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// Tenant of the reservation.
    pub tenant_id: String,
    /// The issuing CA.
    pub issuer_ca_id: String,
    /// The reserved serial (canonical form).
    pub serial: String,
    /// The attempt's `started` audit record, when the reservation row kept it (PostgreSQL).
    pub started: Option<crate::AuditRecord>,
}

/// A signed certificate as recorded in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertRow {
    /// The CA that signed it.
    pub issuer_ca_id: String,
    /// Canonical serial.
    pub serial: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// `ca` or `leaf`.
    pub kind: String,
    /// For CA certificates, the CA it belongs to.
    pub subject_ca_id: Option<String>,
    /// Role it was issued under.
    pub role: Option<String>,
    /// Subject CN.
    pub common_name: Option<String>,
    /// JSON array of SANs.
    pub sans: Option<String>,
    /// DER.
    pub cert_der: Option<Vec<u8>>,
    /// `reserved`, `valid`, `revoked`.
    pub status: String,
    /// RFC 3339.
    pub not_before: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    /// RFC 3339.
    pub revoked_at: Option<String>,
    /// RFC 5280 reason name.
    pub revocation_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A PKI role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRow {
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// The issuing CA.
    pub ca_id: String,
    /// JSON of the role's fields.
    pub config: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// What an issuance decided on before its serial was reserved, read from the daemon's cache: the
/// token, the role and the role's CA as they were then. [`crate::Tx::check_issue_basis`] checks,
/// inside the reservation's transaction, that all three still hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueBasis {
    /// The caller's token (must be unrevoked and of `tenant_id`).
    pub token_id: String,
    /// The caller's tenant.
    pub tenant_id: String,
    /// The role's name.
    pub role: String,
    /// The role's CA (the role must still name it; it must still be active).
    pub ca_id: String,
    /// The role's settings as read (JSON, compared byte for byte).
    pub role_config: String,
    /// The CA certificate's serial as read.
    pub ca_serial: String,
    /// The CA's key label as read (an offline CA's label differs).
    pub ca_key_label: String,
}

/// A sealed leaf private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKeyRow {
    /// Issuer of the certificate.
    pub issuer_ca_id: String,
    /// Canonical serial.
    pub serial: String,
    /// The data key, encrypted by the token's KEK.
    pub wrapped_key: Vec<u8>,
    /// Nonce and AES-256-GCM ciphertext of the key.
    pub sealed: Vec<u8>,
}

/// Filters of the certificate inventory.
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    /// Only certificates of this issuer.
    pub ca_id: Option<String>,
    /// Only certificates issued under this role.
    pub role: Option<String>,
    /// `valid`, `revoked` or `expired` (expired: valid status, not_after before `now`).
    pub status: Option<String>,
    /// Only certificates whose not_after is before this time (RFC 3339) and after `now`.
    pub expiring_before: Option<String>,
    /// The current time (RFC 3339), for `expired` and `expiring_before`.
    pub now: String,
}

/// A submitted certificate request under review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrRow {
    /// `csr_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// `pending`, `approved`, `rejected`, `signing`, `signed`.
    pub status: String,
    /// The request, DER.
    pub csr_der: Vec<u8>,
    /// JSON summary for reviewers.
    pub summary: String,
    /// The requester's note.
    pub note: Option<String>,
    /// Token id of the importer.
    pub requested_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// Token id of the approver or rejecter.
    pub decided_by: Option<String>,
    /// RFC 3339.
    pub decided_at: Option<String>,
    /// Approver's comment.
    pub comment: Option<String>,
    /// Rejection reason.
    pub reason: Option<String>,
    /// The CA that signed it.
    pub signed_ca_id: Option<String>,
    /// Canonical serial of the certificate.
    pub signed_serial: Option<String>,
    /// RFC 3339.
    pub signed_at: Option<String>,
}

/// An event for the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    /// Position.
    pub seq: i64,
    /// Tenant.
    pub tenant_id: String,
    /// Type, e.g. `csr.imported`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The object.
    pub object_id: Option<String>,
    /// RFC 3339.
    pub time: String,
    /// JSON payload.
    pub data: String,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items in order.
    pub items: Vec<T>,
    /// Cursor for the next page, if any.
    pub next_cursor: Option<String>,
}

/// A certificate a tenant trusts as an anchor for validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchorRow {
    /// `ta_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique per tenant.
    pub name: String,
    /// RFC 4514 subject.
    pub subject: String,
    /// Lowercase hex SHA-256 of the DER; unique per tenant.
    pub fingerprint_sha256: String,
    /// The certificate.
    pub cert_der: Vec<u8>,
    /// RFC 3339.
    pub not_after: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A webhook (migration 010).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookRow {
    /// `wh_…`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// JSON array of event types or `prefix*` patterns.
    pub events: String,
    /// The HMAC secret, encrypted under the token's key-encryption key.
    pub secret_enc: Vec<u8>,
    /// RFC 3339.
    pub created_at: String,
    /// The last `events.seq` looked at.
    pub cursor: i64,
}

impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("events", &self.events)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDeliveryRow {
    /// `whd_…` (sent as `ScaiVault-Delivery`; the same for every attempt).
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// `events.seq`.
    pub event_seq: i64,
    /// The event's type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// Unix milliseconds of the next attempt (pending only).
    pub next_attempt_ms: Option<i64>,
    /// The HTTP status of the last attempt, if the receiver answered.
    pub last_http_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}
