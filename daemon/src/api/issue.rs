//! `POST /v1/pki/issue/<role>` (key made by ScaiVault, returned once) and
//! `POST /v1/pki/sign/<role>` (a client's CSR). Policy `admin` or `issuer:<role>`.

use super::guards::IssuingCaller;
use super::problem::{Body, CSR_BODY_BYTES};
use crate::api::schemas::{OneOf, PRIVATE_KEY_FORMATS};
use crate::app::App;
use crate::error::ApiError;
use crate::issue::{self, IssueInput, Issued, Lookup};
use rocket::serde::json::Json;
use rocket::{post, routes, Route, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<IssueRequest>("POST", "/v1/pki/issue/{role}");
    b.answer::<IssueResponse>("POST", "/v1/pki/issue/{role}");
    b.request::<SignRequest>("POST", "/v1/pki/sign/{role}");
    b.answer::<IssueResponse>("POST", "/v1/pki/sign/{role}");
}

pub fn routes() -> Vec<Route> {
    routes![issue_cert, sign_cert]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    #[serde(default)]
    common_name: Option<String>,
    #[serde(default)]
    alt_names: Vec<String>,
    #[serde(default)]
    ip_sans: Vec<String>,
    #[serde(default)]
    uri_sans: Vec<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    #[schemars(transform = OneOf(PRIVATE_KEY_FORMATS))]
    private_key_format: Option<String>,
}

/// The response of both endpoints (`private_key` only for issue).
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "IssuedCertificate")]
struct IssueResponse {
    certificate: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    ca_chain: Vec<String>,
    serial_number: String,
    not_before: String,
    not_after: String,
    issuing_ca_id: String,
}

impl From<Issued> for IssueResponse {
    fn from(i: Issued) -> Self {
        IssueResponse {
            certificate: i.certificate,
            private_key: i.private_key.map(|k| k.as_str().to_owned()),
            ca_chain: i.ca_chain,
            serial_number: i.serial.to_string(),
            not_before: i.not_before,
            not_after: i.not_after,
            issuing_ca_id: i.issuing_ca_id,
        }
    }
}

#[post("/v1/pki/issue/<role>", data = "<body>")]
async fn issue_cert(
    app: &State<App>,
    caller: IssuingCaller,
    role: &str,
    body: Body<IssueRequest>,
) -> Result<Json<IssueResponse>, ApiError> {
    let caller = caller.0;
    app.require_issuer(&caller, role, "certificate.issue")
        .await?;
    let res = async {
        let b = body.0;
        let pkcs8 = match b.private_key_format.as_deref() {
            None | Some("der") | Some("pem") => false,
            Some("pkcs8") => true,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_private_key_format",
                    format!(
                        "private_key_format {other:?} is not one of pkcs8, der or pem (der and \
                         pem, as in Vault, give the key type's default PEM encoding)"
                    ),
                ))
            }
        };
        let input = IssueInput {
            common_name: b.common_name,
            alt_names: b.alt_names,
            ip_sans: b.ip_sans,
            uri_sans: b.uri_sans,
            ttl: b.ttl,
            pkcs8,
        };
        issue::issue(app, &caller, role, input, Lookup::Cached)
            .await
            .map(IssueResponse::from)
    }
    .await;
    Ok(Json(
        app.finish(&caller, "certificate.issue", Some(role), res)
            .await?,
    ))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "SignCsrUnderRoleRequest")]
#[serde(deny_unknown_fields)]
struct SignRequest {
    csr_pem: String,
    #[serde(default)]
    ttl: Option<String>,
}

#[post("/v1/pki/sign/<role>", data = "<body>")]
async fn sign_cert(
    app: &State<App>,
    caller: IssuingCaller,
    role: &str,
    body: Body<SignRequest, { CSR_BODY_BYTES }>,
) -> Result<Json<IssueResponse>, ApiError> {
    let caller = caller.0;
    app.require_issuer(&caller, role, "certificate.sign")
        .await?;
    let b = body.0;
    let res = issue::sign_csr(
        app,
        &caller,
        role,
        &b.csr_pem,
        b.ttl.as_deref(),
        Lookup::Cached,
    )
    .await
    .map(IssueResponse::from);
    Ok(Json(
        app.finish(&caller, "certificate.sign", Some(role), res)
            .await?,
    ))
}
