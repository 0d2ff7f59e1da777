//! PKI roles: what an issuer may mint from one CA — names, key type and size, lifetimes, usages.
//! The name policy itself is `scaivault_core::role`; this module validates a role's settings,
//! stores them, and turns them into that policy.

use crate::api::schemas::{OneOf, KEY_TYPES};
use crate::app::{App, Caller};
use crate::error::ApiError;
use scaivault_core::duration;
use scaivault_core::profile::IpRange;
use scaivault_core::role::RolePolicy;
use scaivault_core::time_util;
use scaivault_hsm::KeySpec;
use scaivault_store::RoleRow;
use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// The most entries in each of a role's pattern lists.
pub const MAX_PATTERNS: usize = 1000;

/// A role's settings: the body of `POST /v1/pki/roles` (and `PUT`), and what is stored.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    // [`UNNAMED`] when the body had none (so that `POST` can say `missing_field` rather than
    // `invalid_name`); the published schema leaves that marker out.
    /// Unique per tenant; required in `POST`, optional in `PUT` (must equal the path).
    #[serde(default = "unnamed", skip_serializing_if = "String::is_empty")]
    #[schemars(transform = no_default)]
    pub name: String,
    /// The issuing CA.
    pub ca_id: String,
    /// Domain patterns (`*.svc.cluster.local`, `internal`).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Patterns also match any depth below.
    #[serde(default)]
    pub allow_subdomains: bool,
    /// Wildcard names (`*.x.y`) may be requested.
    #[serde(default)]
    pub allow_wildcard_certificates: bool,
    /// IP SANs may be requested.
    #[serde(default)]
    pub allow_ip_sans: bool,
    /// CIDRs IP SANs must lie in (empty: any).
    #[serde(default)]
    pub allowed_ip_ranges: Vec<String>,
    /// Globs URI SANs must match (SPIFFE IDs).
    #[serde(default)]
    pub allowed_uri_sans: Vec<String>,
    /// Skip domain matching (syntax is still checked).
    #[serde(default)]
    pub allow_any_name: bool,
    /// A common name is required.
    #[serde(default = "yes")]
    pub require_cn: bool,
    /// Longest lifetime (Go duration); default `720h`.
    #[serde(default = "default_max_ttl")]
    pub max_ttl: String,
    /// Lifetime when a request names none; default `72h`, capped by `max_ttl`.
    #[serde(default)]
    pub ttl: Option<String>,
    /// `ec`, `rsa`, `ed25519`; default `ec`.
    #[serde(default = "default_key_type")]
    #[schemars(transform = OneOf(KEY_TYPES))]
    pub key_type: String,
    /// Key size; default 256 for EC, 2048 for RSA.
    #[serde(default)]
    pub key_bits: Option<u32>,
    /// EKU serverAuth.
    #[serde(default = "yes")]
    pub server_flag: bool,
    /// EKU clientAuth.
    #[serde(default = "yes")]
    pub client_flag: bool,
    /// Subject O of issued certificates.
    #[serde(default)]
    pub organization: Option<String>,
    /// Keep the private keys of issued certificates, encrypted under a token-held key.
    #[serde(default)]
    pub store_private_key: bool,
}

fn default_max_ttl() -> String {
    "720h".into()
}
fn default_key_type() -> String {
    "ec".into()
}

/// Longest role `max_ttl`: 10 years.
const MAX_ROLE_TTL: u64 = 3650 * 86_400;

impl RoleSpec {
    /// The key spec issued keys get.
    ///
    /// # Errors
    /// `invalid_key_type`.
    pub fn key_spec(&self) -> Result<KeySpec, ApiError> {
        KeySpec::from_api(&self.key_type, self.key_bits).map_err(|_| {
            ApiError::bad_request(
                "invalid_key_type",
                format!(
                    "key_type {:?} with key_bits {} is not supported: ec 256|384, rsa 2048|3072|4096, ed25519",
                    self.key_type,
                    self.key_bits.map_or("default".into(), |b| b.to_string())
                ),
            )
        })
    }

    /// `max_ttl` in seconds.
    ///
    /// # Errors
    /// `invalid_duration`.
    pub fn max_ttl_secs(&self) -> Result<u64, ApiError> {
        Ok(duration::parse_seconds(&self.max_ttl)?)
    }

    /// The lifetime of a certificate requested without a ttl: the role's `ttl` (never over
    /// `max_ttl` since [`RoleSpec::validate`] checks it; a role stored before that check is then
    /// refused at issuance, not cut), else 72h capped by `max_ttl`.
    ///
    /// # Errors
    /// `invalid_duration`.
    pub fn default_ttl_secs(&self) -> Result<u64, ApiError> {
        match &self.ttl {
            Some(t) => Ok(duration::parse_seconds(t)?),
            None => Ok((72 * 3600).min(self.max_ttl_secs()?)),
        }
    }

    /// The name policy.
    ///
    /// # Errors
    /// `invalid_ip_range`.
    pub fn policy(&self) -> Result<RolePolicy, ApiError> {
        Ok(RolePolicy {
            allowed_domains: self.allowed_domains.clone(),
            allow_subdomains: self.allow_subdomains,
            allow_wildcard_certificates: self.allow_wildcard_certificates,
            allow_ip_sans: self.allow_ip_sans,
            allowed_ip_ranges: self
                .allowed_ip_ranges
                .iter()
                .map(|r| IpRange::parse(r))
                .collect::<Result<_, _>>()?,
            allowed_uri_sans: self.allowed_uri_sans.clone(),
            allow_any_name: self.allow_any_name,
            require_cn: self.require_cn,
        })
    }

    /// Checks every setting.
    ///
    /// # Errors
    /// `400` naming the setting.
    pub fn validate(&self) -> Result<(), ApiError> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 128
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            // `.` and `..` are path segments every URL library rewrites: /v1/pki/issue/.. would
            // not reach the role.
            || n == "."
            || n == ".."
        {
            return Err(ApiError::bad_request(
                "invalid_name",
                format!("role name {n:?} must be 1-128 of [A-Za-z0-9._-], and not . or .."),
            ));
        }
        self.key_spec()?;
        let max = self.max_ttl_secs()?;
        if max == 0 || max > MAX_ROLE_TTL {
            return Err(ApiError::bad_request(
                "invalid_duration",
                "max_ttl must be between 1s and 87600h",
            ));
        }
        if let Some(t) = &self.ttl {
            let secs = duration::parse_seconds(t)?;
            if secs == 0 {
                return Err(ApiError::bad_request(
                    "invalid_duration",
                    "ttl must be positive",
                ));
            }
            // The role's default lifetime is given to requests without a ttl: one over max_ttl
            // would have to be cut on every such request, and nothing is cut silently.
            if secs > max {
                return Err(ttl_over_max(secs, &self.max_ttl));
            }
        }
        // Each list is read on every issuance under the role and written into every page of the
        // role list: bounded, as a CA's name constraints are (at 100).
        for (key, n) in [
            ("allowed_domains", self.allowed_domains.len()),
            ("allowed_ip_ranges", self.allowed_ip_ranges.len()),
            ("allowed_uri_sans", self.allowed_uri_sans.len()),
        ] {
            if n > MAX_PATTERNS {
                return Err(ApiError::bad_request(
                    "invalid_role",
                    format!("{key} has {n} entries, more than {MAX_PATTERNS}"),
                ));
            }
        }
        for raw in &self.allowed_ip_ranges {
            IpRange::parse_exact(raw)?;
        }
        let policy = self.policy()?;
        for (raw, r) in self.allowed_ip_ranges.iter().zip(&policy.allowed_ip_ranges) {
            if let std::net::IpAddr::V6(v6) = r.addr {
                if r.prefix >= 96 && v6.to_ipv4_mapped().is_some() {
                    return Err(ApiError::bad_request(
                        "invalid_role",
                        format!(
                            "allowed_ip_ranges entry {raw:?} is IPv4-mapped IPv6 and can never \
                             match (such addresses are refused as invalid_ip): give the IPv4 range"
                        ),
                    ));
                }
            }
        }
        if !self.server_flag && !self.client_flag {
            return Err(ApiError::bad_request(
                "invalid_role",
                "at least one of server_flag and client_flag must be true",
            ));
        }
        if self.allowed_domains.is_empty()
            && !self.allow_any_name
            && !self.allow_ip_sans
            && self.allowed_uri_sans.is_empty()
        {
            return Err(ApiError::bad_request(
                "invalid_role",
                "the role allows no names: set allowed_domains, allow_any_name, allow_ip_sans or allowed_uri_sans",
            ));
        }
        for d in &self.allowed_domains {
            if d.trim().is_empty()
                || !d.is_ascii()
                || d.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ApiError::bad_request(
                    "invalid_role",
                    format!("allowed_domains entry {d:?} is not an ASCII domain pattern"),
                ));
            }
            if let Err(e) = scaivault_core::role::check_domain_pattern(d) {
                return Err(ApiError::bad_request(
                    "invalid_role",
                    format!("allowed_domains entry {d:?} can never match a name: {e}"),
                ));
            }
        }
        for u in &self.allowed_uri_sans {
            if u.is_empty()
                || !u.is_ascii()
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ApiError::bad_request(
                    "invalid_role",
                    format!(
                        "allowed_uri_sans entry {u:?} is not an ASCII URI glob without whitespace"
                    ),
                ));
            }
        }
        if let Some(o) = &self.organization {
            scaivault_core::name::DnFields {
                common_name: "x".into(),
                organization: Some(o.clone()),
                ..Default::default()
            }
            .to_name()?;
        }
        Ok(())
    }
}

/// `400 ttl_exceeds_role_max`: a lifetime of `secs` over the role's `max_ttl`.
pub fn ttl_over_max(secs: u64, max_ttl: &str) -> ApiError {
    ApiError::bad_request(
        "ttl_exceeds_role_max",
        format!(
            "ttl {} exceeds the role's max_ttl {max_ttl}",
            duration::format_seconds(secs)
        ),
    )
}

/// Loads and decodes a role.
///
/// # Errors
/// `404 role_not_found`.
pub async fn get(app: &App, tenant_id: &str, name: &str) -> Result<(RoleRow, RoleSpec), ApiError> {
    let (t, n) = (tenant_id.to_owned(), name.to_owned());
    let row = app
        .db(move |s| {
            s.read(|tx| tx.get_role(&t, &n)).map_err(|e| match e {
                scaivault_store::Error::NotFound => ApiError::not_found("role_not_found", "role"),
                other => ApiError::from(other),
            })
        })
        .await?;
    let spec = decode(&row)?;
    Ok((row, spec))
}

/// The name of a role body that names none (a NUL: never a valid name).
pub const UNNAMED: &str = "\u{0}";

/// A field's schema without its `default` (an internal marker).
fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

fn unnamed() -> String {
    UNNAMED.to_owned()
}

/// The stored settings of a role.
///
/// # Errors
/// Internal when the stored JSON is damaged.
pub fn decode(row: &RoleRow) -> Result<RoleSpec, ApiError> {
    let mut spec: RoleSpec = serde_json::from_str(&row.config).map_err(ApiError::internal)?;
    spec.name = row.name.clone();
    spec.ca_id = row.ca_id.clone();
    Ok(spec)
}

/// Creates (`existing == false`) or replaces a role, after checking its CA belongs to the tenant
/// and is active.
///
/// # Errors
/// `400` for bad settings or an unusable CA; `409 role_name_taken`; `404` on update of a missing
/// role.
pub async fn save(
    app: &App,
    caller: &Caller,
    spec: RoleSpec,
    existing: bool,
) -> Result<RoleSpec, ApiError> {
    spec.validate()?;
    // Stored in the form every version reads (see `duration::portable`).
    let mut spec = spec;
    spec.max_ttl = duration::portable(&spec.max_ttl)?;
    spec.ttl = spec.ttl.as_deref().map(duration::portable).transpose()?;
    let ca = crate::ca::get(app, &caller.tenant_id, &spec.ca_id)
        .await
        .map_err(|e| {
            if e.code == "ca_not_found" {
                ApiError::bad_request("ca_not_found", format!("CA {:?} not found", spec.ca_id))
            } else {
                e
            }
        })?;
    if ca.status != "active" {
        return Err(ApiError::conflict(
            "ca_not_active",
            format!("CA {} is {}", ca.id, ca.status),
        ));
    }
    if ca.is_offline() {
        return Err(ApiError::bad_request(
            "ca_offline",
            format!("CA {} is offline and cannot issue", ca.id),
        ));
    }
    let now = time_util::rfc3339(time_util::now());
    let mut stored = spec.clone();
    stored.name = String::new();
    let row = RoleRow {
        tenant_id: caller.tenant_id.clone(),
        name: spec.name.clone(),
        ca_id: spec.ca_id.clone(),
        config: serde_json::to_string(&stored).map_err(ApiError::internal)?,
        created_at: now.clone(),
        updated_at: now,
    };
    app.rsa_pool.want_for(spec.key_spec());
    let action = if existing {
        "role.update"
    } else {
        "role.create"
    };
    let rec = caller.record(action, Some(&spec.name), "success");
    app.db(move |s| {
        s.write(|tx| {
            if existing {
                tx.update_role(&row)?;
            } else {
                tx.insert_role(&row)?;
            }
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::Conflict(w) => ApiError::conflict("role_name_taken", w),
            scaivault_store::Error::NotFound => ApiError::not_found("role_not_found", "role"),
            other => ApiError::from(other),
        })
    })
    .await?;
    app.issue_cache.clear();
    Ok(spec)
}

/// Deletes a role (certificates issued under it stay in the inventory).
///
/// # Errors
/// `404 role_not_found`.
pub async fn delete(app: &App, caller: &Caller, name: &str) -> Result<(), ApiError> {
    let rec = caller.record("role.delete", Some(name), "success");
    let (t, n) = (caller.tenant_id.clone(), name.to_owned());
    app.db(move |s| {
        s.write(|tx| {
            tx.delete_role(&t, &n)?;
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::NotFound => ApiError::not_found("role_not_found", "role"),
            other => ApiError::from(other),
        })
    })
    .await?;
    app.issue_cache.clear();
    Ok(())
}
