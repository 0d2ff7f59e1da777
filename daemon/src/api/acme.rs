//! `/v1/pki/acme/…`: accounts, DNS providers, issuance and managed certificates.
//!
//! Policies: `admin` or `acme-operator` manage accounts and DNS providers and request
//! certificates (`AcmeWrite`) and read them (`AcmeRead`). The private key of a managed
//! certificate version is included in `GET …/versions/{n}` only for tokens that may read stored
//! private keys (`KeyRead`: `admin`), and that read is audited (`acme.certificate.key_read`).

use super::ca::page_limit;
use super::problem::Body;
use crate::acme::{accounts, certs, providers, worker};
use crate::api::schemas::{
    OneOf, ACME_ACCOUNT_STATES, ACME_CERT_STATES, ACME_ENVIRONMENTS, ACME_KEY_TYPES,
    ACME_PROVIDERS, CHALLENGE_TYPES,
};
use crate::app::{App, Caller};
use crate::auth::{self, Perm};
use crate::error::ApiError;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{delete, get, post, routes, Route, State};
use scaivault_store::{AcmeAccountRow, DnsProviderRow, ManagedCertRow, ManagedVersionRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<AccountRequest>("POST", "/v1/pki/acme/accounts");
    b.answer::<AccountResponse>("POST", "/v1/pki/acme/accounts");
    b.answer::<List<AccountResponse>>("GET", "/v1/pki/acme/accounts");
    b.answer::<AccountResponse>("GET", "/v1/pki/acme/accounts/{id}");
    b.request::<ProviderRequest>("POST", "/v1/pki/acme/dns-providers");
    b.answer::<ProviderResponse>("POST", "/v1/pki/acme/dns-providers");
    b.answer::<List<ProviderResponse>>("GET", "/v1/pki/acme/dns-providers");
    b.answer::<ProviderResponse>("GET", "/v1/pki/acme/dns-providers/{id}");
    b.request::<IssueRequest>("POST", "/v1/pki/acme/issue");
    b.answer::<IssueResponse>("POST", "/v1/pki/acme/issue");
    b.answer::<List<CertificateResponse>>("GET", "/v1/pki/acme/certificates");
    b.answer::<CertificateResponse>("GET", "/v1/pki/acme/certificates/{id}");
    b.answer::<List<VersionResponse>>("GET", "/v1/pki/acme/certificates/{id}/versions");
    b.answer::<VersionResponse>("GET", "/v1/pki/acme/certificates/{id}/versions/{n}");
}

pub fn routes() -> Vec<Route> {
    routes![
        create_account,
        list_accounts,
        get_account,
        delete_account,
        create_provider,
        list_providers,
        get_provider,
        delete_provider,
        issue,
        list_certificates,
        get_certificate,
        delete_certificate,
        list_versions,
        get_version
    ]
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "{T}List")]
struct List<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

// ---- accounts ----------------------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
#[schemars(rename = "AcmeAccountRequest")]
#[serde(deny_unknown_fields)]
struct AccountRequest {
    name: String,
    #[schemars(transform = OneOf(ACME_PROVIDERS))]
    provider: String,
    #[serde(default)]
    #[schemars(transform = OneOf(ACME_ENVIRONMENTS))]
    environment: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    directory_url: Option<String>,
    #[serde(default)]
    eab_kid: Option<String>,
    #[serde(default)]
    eab_hmac_key: Option<String>,
    #[serde(default)]
    directory_ca_pem: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "AcmeAccount")]
struct AccountResponse {
    id: String,
    name: String,
    #[schemars(transform = OneOf(ACME_PROVIDERS))]
    provider: String,
    #[schemars(transform = OneOf(ACME_ENVIRONMENTS))]
    environment: String,
    directory_url: String,
    email: Option<String>,
    account_url: String,
    eab_kid: Option<String>,
    directory_ca_pem: Option<String>,
    #[schemars(transform = OneOf(ACME_ACCOUNT_STATES))]
    status: String,
    created_at: String,
    deactivated_at: Option<String>,
}

fn account_view(r: AcmeAccountRow) -> AccountResponse {
    AccountResponse {
        id: r.id,
        name: r.name,
        provider: r.provider,
        environment: r.environment,
        directory_url: r.directory_url,
        email: r.email,
        account_url: r.account_url,
        eab_kid: r.eab_kid,
        directory_ca_pem: r.directory_ca_pem,
        status: r.status,
        created_at: r.created_at,
        deactivated_at: r.deactivated_at,
    }
}

#[post("/v1/pki/acme/accounts", data = "<body>")]
async fn create_account(
    app: &State<App>,
    caller: Caller,
    body: Body<AccountRequest>,
) -> Result<(Status, Json<AccountResponse>), ApiError> {
    app.require(&caller, Perm::AcmeWrite, "acme.account.create", None)
        .await?;
    let b = body.0;
    let input = accounts::NewAccountInput {
        name: b.name,
        provider: b.provider,
        environment: b.environment,
        email: b.email,
        directory_url: b.directory_url,
        eab_kid: b.eab_kid,
        eab_hmac_key: b.eab_hmac_key.map(Zeroizing::new),
        directory_ca_pem: b.directory_ca_pem,
    };
    let res = accounts::create(app, &caller, input).await;
    let row = app
        .finish(&caller, "acme.account.create", None, res)
        .await?;
    Ok((Status::Created, Json(account_view(row))))
}

#[get("/v1/pki/acme/accounts?<limit>&<cursor>")]
async fn list_accounts(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<List<AccountResponse>>, ApiError> {
    app.require(&caller, Perm::AcmeRead, "acme.account.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    let page = accounts::list(app, &caller.tenant_id, cursor, limit).await?;
    Ok(Json(List {
        items: page.items.into_iter().map(account_view).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[get("/v1/pki/acme/accounts/<id>")]
async fn get_account(
    app: &State<App>,
    caller: Caller,
    id: &str,
) -> Result<Json<AccountResponse>, ApiError> {
    app.require(&caller, Perm::AcmeRead, "acme.account.read", Some(id))
        .await?;
    Ok(Json(account_view(
        accounts::get(app, &caller.tenant_id, id).await?,
    )))
}

#[delete("/v1/pki/acme/accounts/<id>")]
async fn delete_account(app: &State<App>, caller: Caller, id: &str) -> Result<Status, ApiError> {
    app.require(
        &caller,
        Perm::AcmeWrite,
        "acme.account.deactivate",
        Some(id),
    )
    .await?;
    let res = accounts::deactivate(app, &caller, id).await;
    app.finish(&caller, "acme.account.deactivate", Some(id), res)
        .await?;
    Ok(Status::NoContent)
}

// ---- DNS providers -----------------------------------------------------------------------

#[derive(Deserialize, JsonSchema)]
#[schemars(rename = "DnsProviderRequest")]
#[serde(deny_unknown_fields)]
struct ProviderRequest {
    name: String,
    #[serde(rename = "type")]
    #[schemars(transform = OneOf(scaivault_dns::KINDS))]
    kind: String,
    config: Value,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "DnsProvider")]
struct ProviderResponse {
    id: String,
    name: String,
    #[serde(rename = "type")]
    #[schemars(transform = OneOf(scaivault_dns::KINDS))]
    kind: String,
    /// The config without its secrets.
    config: Value,
    created_at: String,
}

fn provider_view(r: DnsProviderRow) -> ProviderResponse {
    ProviderResponse {
        config: serde_json::from_str(&r.config).unwrap_or(Value::Null),
        id: r.id,
        name: r.name,
        kind: r.kind,
        created_at: r.created_at,
    }
}

#[post("/v1/pki/acme/dns-providers", data = "<body>")]
async fn create_provider(
    app: &State<App>,
    caller: Caller,
    body: Body<ProviderRequest>,
) -> Result<(Status, Json<ProviderResponse>), ApiError> {
    app.require(&caller, Perm::AcmeWrite, "acme.dns_provider.create", None)
        .await?;
    let b = body.0;
    let res = providers::create(app, &caller, &b.name, &b.kind, b.config).await;
    let row = app
        .finish(&caller, "acme.dns_provider.create", None, res)
        .await?;
    Ok((Status::Created, Json(provider_view(row))))
}

#[get("/v1/pki/acme/dns-providers?<limit>&<cursor>")]
async fn list_providers(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<List<ProviderResponse>>, ApiError> {
    app.require(&caller, Perm::AcmeRead, "acme.dns_provider.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    let page = providers::list(app, &caller.tenant_id, cursor, limit).await?;
    Ok(Json(List {
        items: page.items.into_iter().map(provider_view).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[get("/v1/pki/acme/dns-providers/<id>")]
async fn get_provider(
    app: &State<App>,
    caller: Caller,
    id: &str,
) -> Result<Json<ProviderResponse>, ApiError> {
    app.require(&caller, Perm::AcmeRead, "acme.dns_provider.read", Some(id))
        .await?;
    Ok(Json(provider_view(
        providers::get(app, &caller.tenant_id, id).await?,
    )))
}

#[delete("/v1/pki/acme/dns-providers/<id>")]
async fn delete_provider(app: &State<App>, caller: Caller, id: &str) -> Result<Status, ApiError> {
    app.require(
        &caller,
        Perm::AcmeWrite,
        "acme.dns_provider.delete",
        Some(id),
    )
    .await?;
    let res = providers::delete(app, &caller, id).await;
    app.finish(&caller, "acme.dns_provider.delete", Some(id), res)
        .await?;
    Ok(Status::NoContent)
}

// ---- issuance and managed certificates ---------------------------------------------------

#[derive(Deserialize, JsonSchema)]
#[schemars(rename = "AcmeIssueRequest")]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    account_id: String,
    domains: Vec<String>,
    #[schemars(transform = OneOf(CHALLENGE_TYPES))]
    challenge_type: String,
    #[serde(default)]
    auto_renew: Option<bool>,
    #[serde(default)]
    dns_provider_id: Option<String>,
    #[serde(default)]
    #[schemars(transform = OneOf(ACME_KEY_TYPES))]
    key_type: Option<String>,
    #[serde(default)]
    profile: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "AcmeOrder")]
struct IssueResponse {
    id: String,
    #[schemars(transform = OneOf(ACME_CERT_STATES))]
    status: String,
}

#[post("/v1/pki/acme/issue", data = "<body>")]
async fn issue(
    app: &State<App>,
    caller: Caller,
    body: Body<IssueRequest>,
) -> Result<(Status, Json<IssueResponse>), ApiError> {
    app.require(&caller, Perm::AcmeWrite, "acme.certificate.request", None)
        .await?;
    let b = body.0;
    let input = certs::IssueInput {
        account_id: b.account_id,
        domains: b.domains,
        challenge_type: b.challenge_type,
        auto_renew: b.auto_renew,
        dns_provider_id: b.dns_provider_id,
        key_type: b.key_type,
        profile: b.profile,
    };
    let res = certs::create(app, &caller, input).await;
    let row = app
        .finish(&caller, "acme.certificate.request", None, res)
        .await?;
    worker::spawn(app, &row.id);
    Ok((
        Status::Accepted,
        Json(IssueResponse {
            id: row.id,
            status: row.status,
        }),
    ))
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ManagedCertificate")]
struct CertificateResponse {
    id: String,
    account_id: String,
    #[schemars(with = "Vec<String>")]
    domains: Value,
    #[schemars(transform = OneOf(CHALLENGE_TYPES))]
    challenge_type: String,
    dns_provider_id: Option<String>,
    #[schemars(transform = OneOf(ACME_KEY_TYPES))]
    key_type: String,
    profile: Option<String>,
    auto_renew: bool,
    #[schemars(transform = OneOf(ACME_CERT_STATES))]
    status: String,
    version: i64,
    certificate: Option<String>,
    ca_chain: Option<Vec<String>>,
    serial_number: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
    last_error: Option<String>,
    renewal_in_progress: bool,
    renew_at: Option<String>,
    created_at: String,
    updated_at: String,
}

fn certificate_view(mc: ManagedCertRow, v: Option<ManagedVersionRow>) -> CertificateResponse {
    CertificateResponse {
        domains: serde_json::from_str(&mc.domains).unwrap_or(Value::Null),
        renewal_in_progress: mc.order_kind.as_deref() == Some("renew"),
        id: mc.id,
        account_id: mc.account_id,
        challenge_type: mc.challenge_type,
        dns_provider_id: mc.dns_provider_id,
        key_type: mc.key_type,
        profile: mc.profile,
        auto_renew: mc.auto_renew,
        status: mc.status,
        version: mc.version,
        certificate: v.as_ref().map(|v| v.certificate.clone()),
        ca_chain: v.as_ref().map(|v| crate::app::split_pem(&v.ca_chain)),
        serial_number: v.as_ref().map(|v| v.serial_number.clone()),
        not_before: v.as_ref().map(|v| v.not_before.clone()),
        not_after: v.map(|v| v.not_after),
        last_error: mc.last_error,
        renew_at: mc.renew_at,
        created_at: mc.created_at,
        updated_at: mc.updated_at,
    }
}

#[get("/v1/pki/acme/certificates?<limit>&<cursor>")]
async fn list_certificates(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<List<CertificateResponse>>, ApiError> {
    app.require(&caller, Perm::AcmeRead, "acme.certificate.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    let page = certs::list(app, &caller.tenant_id, cursor, limit).await?;
    Ok(Json(List {
        items: page
            .items
            .into_iter()
            .map(|(mc, v)| certificate_view(mc, v))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

#[get("/v1/pki/acme/certificates/<id>")]
async fn get_certificate(
    app: &State<App>,
    caller: Caller,
    id: &str,
) -> Result<Json<CertificateResponse>, ApiError> {
    app.require(&caller, Perm::AcmeRead, "acme.certificate.read", Some(id))
        .await?;
    let (mc, v) = certs::get(app, &caller.tenant_id, id).await?;
    Ok(Json(certificate_view(mc, v)))
}

#[delete("/v1/pki/acme/certificates/<id>")]
async fn delete_certificate(
    app: &State<App>,
    caller: Caller,
    id: &str,
) -> Result<Status, ApiError> {
    app.require(
        &caller,
        Perm::AcmeWrite,
        "acme.certificate.delete",
        Some(id),
    )
    .await?;
    let res = certs::delete(app, &caller, id).await;
    app.finish(&caller, "acme.certificate.delete", Some(id), res)
        .await?;
    Ok(Status::NoContent)
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ManagedCertificateVersion")]
struct VersionResponse {
    version: i64,
    serial_number: String,
    certificate: String,
    ca_chain: Vec<String>,
    not_before: String,
    not_after: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
}

fn version_view(v: ManagedVersionRow) -> VersionResponse {
    VersionResponse {
        ca_chain: crate::app::split_pem(&v.ca_chain),
        version: v.version,
        serial_number: v.serial_number,
        certificate: v.certificate,
        not_before: v.not_before,
        not_after: v.not_after,
        created_at: v.created_at,
        private_key: None,
    }
}

#[get("/v1/pki/acme/certificates/<id>/versions")]
async fn list_versions(
    app: &State<App>,
    caller: Caller,
    id: &str,
) -> Result<Json<List<VersionResponse>>, ApiError> {
    app.require(&caller, Perm::AcmeRead, "acme.certificate.read", Some(id))
        .await?;
    let vs = certs::versions(app, &caller.tenant_id, id).await?;
    Ok(Json(List {
        items: vs.into_iter().map(version_view).collect(),
        next_cursor: None,
    }))
}

#[get("/v1/pki/acme/certificates/<id>/versions/<n>")]
async fn get_version(
    app: &State<App>,
    caller: Caller,
    id: &str,
    n: &str,
) -> Result<Json<VersionResponse>, ApiError> {
    app.require(&caller, Perm::AcmeRead, "acme.certificate.read", Some(id))
        .await?;
    let n: i64 = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_version",
            format!("version {n:?} is not a number >= 1"),
        )
    })?;
    let v = certs::version(app, &caller.tenant_id, id, n).await?;
    if !auth::allows(&caller.policies, Perm::KeyRead) {
        return Ok(Json(version_view(v)));
    }
    let res = certs::read_key(app, &caller, id, &v).await;
    let key = app
        .finish(&caller, "acme.certificate.key_read", Some(id), res)
        .await?;
    let mut out = version_view(v);
    out.private_key = Some(key.to_string());
    Ok(Json(out))
}
