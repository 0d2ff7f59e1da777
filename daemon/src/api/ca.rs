//! `/v1/pki/ca`: create, list, get, certificate (PEM/DER), chain, signed-certificate, import,
//! retire.

use super::problem::Body;
use crate::api::schemas::{OneOf, CA_STATES, CA_TYPES, KEY_TYPES, OCSP_SIGNERS};
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::ca::{self, CaSettings, ImportCa, NewCa};
use crate::error::ApiError;
use rocket::http::{ContentType, Status};
use rocket::serde::json::Json;
use rocket::{delete, get, post, routes, Route, State};
use scaivault_core::name::DnFields;
use scaivault_core::pem;
use scaivault_hsm::KeySpec;
use scaivault_store::CaRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<CreateCaRequest>("POST", "/v1/pki/ca");
    b.answer::<CaResponse>("POST", "/v1/pki/ca");
    b.answer::<ListResponse<CaResponse>>("GET", "/v1/pki/ca");
    b.answer::<CaResponse>("GET", "/v1/pki/ca/{id}");
    b.request::<SignedCertificateRequest>("POST", "/v1/pki/ca/{id}/signed-certificate");
    b.answer::<CaResponse>("POST", "/v1/pki/ca/{id}/signed-certificate");
    b.request::<ImportRequest>("POST", "/v1/pki/ca/import");
    b.answer::<CaResponse>("POST", "/v1/pki/ca/import");
    b.answer::<CaResponse>("DELETE", "/v1/pki/ca/{id}");
}

pub fn routes() -> Vec<Route> {
    routes![
        create,
        list,
        get_one,
        certificate,
        chain,
        signed_certificate,
        import,
        retire
    ]
}

/// `POST /v1/pki/ca`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCaRequest {
    name: String,
    common_name: String,
    #[schemars(transform = OneOf(CA_TYPES))]
    ca_type: String,
    #[serde(default)]
    #[schemars(transform = OneOf(KEY_TYPES))]
    key_type: Option<String>,
    #[serde(default)]
    key_size: Option<u32>,
    validity_days: i64,
    #[serde(default)]
    parent_ca_id: Option<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    organizational_unit: Option<String>,
    #[serde(default)]
    country: Option<String>,
    #[serde(default)]
    locality: Option<String>,
    #[serde(default)]
    province: Option<String>,
    #[serde(default)]
    max_path_length: Option<u8>,
    #[serde(default)]
    permitted_dns_domains: Vec<String>,
    #[serde(default)]
    excluded_dns_domains: Vec<String>,
    #[serde(default)]
    permitted_ip_ranges: Vec<String>,
    #[serde(default)]
    crl_interval: Option<String>,
    #[serde(default)]
    ocsp_validity: Option<String>,
    #[serde(default)]
    #[schemars(transform = OneOf(OCSP_SIGNERS))]
    ocsp_signer: Option<String>,
    #[serde(default)]
    ocsp_signer_lifetime: Option<String>,
}

/// A CA as the API shows it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Ca")]
pub struct CaResponse {
    id: String,
    name: String,
    common_name: String,
    #[schemars(transform = OneOf(CA_TYPES))]
    ca_type: String,
    parent_ca_id: Option<String>,
    #[schemars(transform = OneOf(CA_STATES))]
    status: String,
    #[schemars(transform = OneOf(KEY_TYPES))]
    key_type: String,
    key_size: u32,
    certificate: Option<String>,
    serial_number: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    csr: Option<String>,
    crl_interval: String,
    ocsp_validity: String,
    #[schemars(transform = OneOf(OCSP_SIGNERS))]
    ocsp_signer: String,
    ocsp_signer_lifetime: String,
    /// The key is not on this daemon's token: the CA signs nothing here, its CRL is imported.
    offline: bool,
}

impl CaResponse {
    fn from_row(r: CaRow) -> Result<Self, ApiError> {
        let settings = ca::settings(&r);
        let certificate = r.cert_der.as_deref().map(pem::certificate).transpose()?;
        let serial_number = r
            .serial
            .as_deref()
            .map(scaivault_core::serial::Serial::parse)
            .transpose()?
            .map(|s| s.to_string());
        let offline = r.is_offline();
        Ok(CaResponse {
            id: r.id,
            name: r.name,
            common_name: r.common_name,
            ca_type: r.ca_type,
            parent_ca_id: r.parent_ca_id,
            status: r.status,
            key_type: r.key_type,
            key_size: r.key_size,
            certificate,
            serial_number,
            not_before: r.not_before,
            not_after: r.not_after,
            created_at: r.created_at,
            csr: r.csr_pem,
            crl_interval: settings.crl_interval,
            ocsp_validity: settings.ocsp_validity,
            ocsp_signer: settings.ocsp_signer,
            ocsp_signer_lifetime: settings.ocsp_signer_lifetime,
            offline,
        })
    }
}

fn settings_from(
    crl_interval: Option<String>,
    ocsp_validity: Option<String>,
    max_path_length: Option<u8>,
    permitted_dns_domains: Vec<String>,
    excluded_dns_domains: Vec<String>,
    permitted_ip_ranges: Vec<String>,
) -> Result<CaSettings, ApiError> {
    let crl_interval = crl_interval.unwrap_or_else(|| "1h".into());
    let ocsp_validity = ocsp_validity.unwrap_or_else(|| "12h".into());
    let crl = scaivault_core::duration::parse_seconds(&crl_interval)?;
    if !(60..=31 * 86_400).contains(&crl) {
        return Err(ApiError::bad_request(
            "invalid_duration",
            "crl_interval must be between 1m and 31d",
        ));
    }
    let ocsp = scaivault_core::duration::parse_seconds(&ocsp_validity)?;
    if !(60..=7 * 86_400).contains(&ocsp) {
        return Err(ApiError::bad_request(
            "invalid_duration",
            "ocsp_validity must be between 1m and 7d",
        ));
    }
    Ok(CaSettings {
        max_path_length,
        permitted_dns_domains,
        excluded_dns_domains,
        permitted_ip_ranges,
        crl_interval: scaivault_core::duration::portable(&crl_interval)?,
        ocsp_validity: scaivault_core::duration::portable(&ocsp_validity)?,
        ocsp_signer: "ca".into(),
        ocsp_signer_lifetime: ca::default_ocsp_signer_lifetime(),
    })
}

fn new_ca(b: CreateCaRequest) -> Result<NewCa, ApiError> {
    let key_type = b.key_type.as_deref().unwrap_or("ec");
    let key = KeySpec::from_api(key_type, b.key_size).map_err(|_| {
        ApiError::bad_request(
            "invalid_key_type",
            format!(
                "key type {key_type:?} with size {} is not supported: ec 256|384, rsa 2048|3072|4096, ed25519",
                b.key_size.map_or("default".into(), |s| s.to_string())
            ),
        )
    })?;
    Ok(NewCa {
        name: b.name,
        subject: DnFields {
            common_name: b.common_name,
            organization: b.organization,
            organizational_unit: b.organizational_unit,
            country: b.country,
            locality: b.locality,
            province: b.province,
        },
        ca_type: b.ca_type,
        key,
        validity_days: b.validity_days,
        parent_ca_id: b.parent_ca_id,
        settings: {
            let mut st = settings_from(
                b.crl_interval,
                b.ocsp_validity,
                b.max_path_length,
                b.permitted_dns_domains,
                b.excluded_dns_domains,
                b.permitted_ip_ranges,
            )?;
            st.ocsp_signer = match b.ocsp_signer.as_deref() {
                None | Some("ca") => "ca".into(),
                Some("delegated") => "delegated".into(),
                Some(other) => {
                    return Err(ApiError::bad_request(
                        "invalid_ocsp_signer",
                        format!("ocsp_signer {other:?} is not ca or delegated"),
                    ))
                }
            };
            if let Some(l) = b.ocsp_signer_lifetime {
                // Short lifetimes are allowed (tests, drills); each rotation makes a key on the
                // token, and responses never outlive the signer that made them.
                let secs = scaivault_core::duration::parse_seconds(&l)?;
                if !(60..=366 * 86_400).contains(&secs) {
                    return Err(ApiError::bad_request(
                        "invalid_duration",
                        "ocsp_signer_lifetime must be between 1m and 366d",
                    ));
                }
                st.ocsp_signer_lifetime = scaivault_core::duration::portable(&l)?;
            }
            st
        },
    })
}

#[post("/v1/pki/ca", data = "<body>")]
async fn create(
    app: &State<App>,
    caller: Caller,
    body: Body<CreateCaRequest>,
) -> Result<(Status, Json<CaResponse>), ApiError> {
    app.require(&caller, Perm::CaWrite, "ca.create", None)
        .await?;
    let res = async {
        let req = new_ca(body.0)?;
        let row = ca::create(app, &caller, req).await?;
        CaResponse::from_row(row)
    }
    .await;
    let out = app.finish(&caller, "ca.create", None, res).await?;
    Ok((Status::Created, Json(out)))
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "{T}List")]
struct ListResponse<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

/// The page size from `?limit=`: default 100, at most `limits.max_page`.
pub(super) fn page_limit(app: &App, limit: Option<&str>) -> Result<usize, ApiError> {
    let max = app.config.limits.max_page;
    let Some(text) = limit else {
        return Ok(100.min(max));
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit {text:?} is not a number between 1 and {max}"),
        )),
    }
}

#[get("/v1/pki/ca?<limit>&<cursor>")]
async fn list(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<ListResponse<CaResponse>>, ApiError> {
    app.require(&caller, Perm::CaRead, "ca.list", None).await?;
    let limit = page_limit(app, limit)?;
    let tenant = caller.tenant_id.clone();
    let page = app
        .db(move |s| {
            s.read(|tx| tx.list_cas(&tenant, cursor.as_deref(), limit))
                .map_err(|e| match e {
                    scaivault_store::Error::Conflict(_) => {
                        ApiError::bad_request("invalid_cursor", "cursor is not valid")
                    }
                    other => ApiError::from(other),
                })
        })
        .await?;
    Ok(Json(ListResponse {
        items: page
            .items
            .into_iter()
            .map(CaResponse::from_row)
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    }))
}

#[get("/v1/pki/ca/<id>", rank = 2)]
async fn get_one(app: &State<App>, caller: Caller, id: &str) -> Result<Json<CaResponse>, ApiError> {
    app.require(&caller, Perm::CaRead, "ca.read", Some(id))
        .await?;
    Ok(Json(CaResponse::from_row(
        ca::get(app, &caller.tenant_id, id).await?,
    )?))
}

/// `GET /v1/pki/ca/<id>/certificate[?format=der]` — public, like Vault's `/pki/ca`.
#[get("/v1/pki/ca/<id>/certificate?<format>")]
async fn certificate(
    app: &State<App>,
    _single: super::guards::SingleQuery,
    id: &str,
    format: Option<&str>,
) -> Result<(ContentType, Vec<u8>), ApiError> {
    certificate_body(app, id, format).await.map(super::typed)
}

/// The CA's certificate as `format` (`pem`, the default, or `der`): media type and bytes. Shared
/// with the relying-party listener (`super::public`).
pub(crate) async fn certificate_body(
    app: &App,
    id: &str,
    format: Option<&str>,
) -> Result<(&'static str, Vec<u8>), ApiError> {
    let row = ca::get_public(app, id).await?;
    let der = row.cert_der.ok_or_else(|| {
        ApiError::conflict(
            "ca_pending_signature",
            format!("CA {id} has no certificate yet"),
        )
    })?;
    match format.unwrap_or("pem") {
        "pem" => Ok((
            "application/x-pem-file",
            pem::certificate(&der)?.into_bytes(),
        )),
        "der" => Ok(("application/pkix-cert", der)),
        other => Err(ApiError::bad_request(
            "invalid_format",
            format!("format {other:?} is not pem or der"),
        )),
    }
}

/// `GET /v1/pki/ca/<id>/chain` — public; this CA up to its root, PEM.
#[get("/v1/pki/ca/<id>/chain")]
async fn chain(app: &State<App>, id: &str) -> Result<(ContentType, String), ApiError> {
    let row = ca::get_public(app, id).await?;
    Ok((
        ContentType::new("application", "x-pem-file"),
        ca::chain_pem(app, &row).await?,
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SignedCertificateRequest {
    certificate_pem: String,
    chain_pem: String,
}

#[post("/v1/pki/ca/<id>/signed-certificate", data = "<body>")]
async fn signed_certificate(
    app: &State<App>,
    caller: Caller,
    id: &str,
    body: Body<SignedCertificateRequest>,
) -> Result<Json<CaResponse>, ApiError> {
    app.require(&caller, Perm::CaWrite, "ca.install_certificate", Some(id))
        .await?;
    let res = async {
        let row = ca::install_signed(app, &caller, id, &body.0.certificate_pem, &body.0.chain_pem)
            .await?;
        CaResponse::from_row(row)
    }
    .await;
    Ok(Json(
        app.finish(&caller, "ca.install_certificate", Some(id), res)
            .await?,
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "ImportCaRequest")]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    name: String,
    /// Absent for an offline CA (certificate only).
    #[serde(default)]
    key_label: Option<String>,
    certificate_pem: String,
    #[serde(default)]
    chain_pem: Option<String>,
    #[serde(default)]
    parent_ca_id: Option<String>,
    #[serde(default)]
    crl_interval: Option<String>,
    #[serde(default)]
    ocsp_validity: Option<String>,
}

#[post("/v1/pki/ca/import", data = "<body>")]
async fn import(
    app: &State<App>,
    caller: Caller,
    body: Body<ImportRequest>,
) -> Result<(Status, Json<CaResponse>), ApiError> {
    app.require(&caller, Perm::CaWrite, "ca.import", None)
        .await?;
    let res = async {
        let b = body.0;
        let req = ImportCa {
            name: b.name,
            key_label: b.key_label,
            certificate_pem: b.certificate_pem,
            chain_pem: b.chain_pem,
            parent_ca_id: b.parent_ca_id,
            settings: settings_from(
                b.crl_interval,
                b.ocsp_validity,
                None,
                vec![],
                vec![],
                vec![],
            )?,
        };
        CaResponse::from_row(ca::import(app, &caller, req).await?)
    }
    .await;
    let out = app.finish(&caller, "ca.import", None, res).await?;
    Ok((Status::Created, Json(out)))
}

#[delete("/v1/pki/ca/<id>")]
async fn retire(app: &State<App>, caller: Caller, id: &str) -> Result<Json<CaResponse>, ApiError> {
    app.require(&caller, Perm::CaWrite, "ca.retire", Some(id))
        .await?;
    let res = async { CaResponse::from_row(ca::retire(app, &caller, id).await?) }.await;
    Ok(Json(app.finish(&caller, "ca.retire", Some(id), res).await?))
}
