//! DNS providers for dns-01. The config is checked by `scaivault_dns::validate`; the keys that
//! `scaivault_dns::secret_keys` names are split off, stored encrypted, and never returned.

use super::{check_name, seal_text, unseal_text};
use crate::app::{App, Caller};
use crate::error::ApiError;
use scaivault_core::{ids, time_util};
use scaivault_store::{DnsProviderRow, Page};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

fn not_found() -> ApiError {
    ApiError::not_found("dns_provider_not_found", "DNS provider")
}

/// Splits `config` into (public part, secret part).
fn split(kind: &str, config: Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    let secret = scaivault_dns::secret_keys(kind);
    config
        .into_iter()
        .partition(|(k, _)| !secret.contains(&k.as_str()))
}

/// Checks and stores a provider.
///
/// # Errors
/// `400 invalid_name`, `dns_provider_unknown_type`, `dns_provider_invalid_config`; `409
/// dns_provider_name_taken`.
pub async fn create(
    app: &App,
    caller: &Caller,
    name: &str,
    kind: &str,
    config: Value,
) -> Result<DnsProviderRow, ApiError> {
    check_name(name)?;
    let Value::Object(map) = config else {
        return Err(ApiError::bad_request(
            "dns_provider_invalid_config",
            "config must be a JSON object",
        ));
    };
    scaivault_dns::validate(kind, &Value::Object(map.clone()))?;
    let (public, secret) = split(kind, map);
    let secret_json = Zeroizing::new(Value::Object(secret).to_string());
    let (secrets_wrapped, secrets_sealed) = seal_text(app, &secret_json).await?;
    let row = DnsProviderRow {
        id: ids::new_id("dns"),
        tenant_id: caller.tenant_id.clone(),
        name: name.to_owned(),
        kind: kind.to_owned(),
        config: Value::Object(public).to_string(),
        secrets_wrapped,
        secrets_sealed,
        created_at: time_util::rfc3339(time_util::now()),
    };
    let rec = caller.record("acme.dns_provider.create", Some(&row.id), "success");
    let stored = row.clone();
    app.db(move |s| {
        s.write(|tx| {
            tx.insert_dns_provider(&stored)?;
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::Conflict(_) => ApiError::conflict(
                "dns_provider_name_taken",
                format!("a DNS provider named {:?} exists", stored.name),
            ),
            other => ApiError::from(other),
        })
    })
    .await?;
    Ok(row)
}

/// The tenant's provider `id`.
///
/// # Errors
/// `404 dns_provider_not_found`.
pub async fn get(app: &App, tenant_id: &str, id: &str) -> Result<DnsProviderRow, ApiError> {
    let (t, i) = (tenant_id.to_owned(), id.to_owned());
    app.db(move |s| {
        s.read(|tx| tx.get_dns_provider(&t, &i))
            .map_err(|e| match e {
                scaivault_store::Error::NotFound => not_found(),
                other => ApiError::from(other),
            })
    })
    .await
}

/// A page of the tenant's providers.
///
/// # Errors
/// `400 invalid_cursor`.
pub async fn list(
    app: &App,
    tenant_id: &str,
    cursor: Option<String>,
    limit: usize,
) -> Result<Page<DnsProviderRow>, ApiError> {
    let t = tenant_id.to_owned();
    app.db(move |s| {
        s.read(|tx| tx.list_dns_providers(&t, cursor.as_deref(), limit))
            .map_err(super::accounts::cursor_error)
    })
    .await
}

/// Deletes the tenant's provider `id`.
///
/// # Errors
/// `404 dns_provider_not_found`; `409 dns_provider_in_use`.
pub async fn delete(app: &App, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let rec = caller.record("acme.dns_provider.delete", Some(id), "success");
    let (t, i) = (caller.tenant_id.clone(), id.to_owned());
    app.db(move |s| {
        s.write(|tx| {
            tx.delete_dns_provider(&t, &i)?;
            tx.append_audit(&rec)
        })
        .map_err(|e| match e {
            scaivault_store::Error::NotFound => not_found(),
            scaivault_store::Error::Conflict(_) => ApiError::conflict(
                "dns_provider_in_use",
                "a managed certificate uses this DNS provider",
            ),
            other => ApiError::from(other),
        })
    })
    .await?;
    Ok(())
}

/// The full config (public part plus decrypted secrets) for building the provider.
///
/// # Errors
/// Decryption failures.
pub async fn full_config(app: &App, row: &DnsProviderRow) -> Result<Value, ApiError> {
    let secrets = unseal_text(app, row.secrets_wrapped.clone(), row.secrets_sealed.clone()).await?;
    let mut public: Map<String, Value> =
        serde_json::from_str(&row.config).map_err(ApiError::internal)?;
    let secret: Map<String, Value> = serde_json::from_str(&secrets).map_err(ApiError::internal)?;
    public.extend(secret);
    Ok(Value::Object(public))
}
