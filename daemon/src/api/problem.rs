//! RFC 9457 problem documents: the single `Responder` for [`ApiError`], the catchers that make
//! Rocket's own errors (404, 422, 413, 500, …) problem documents too, and the JSON body guard that
//! turns bad JSON into a `400` with a stable code instead of Rocket's plain 422.

use super::guards::RequestId;
use crate::error::ApiError;
use rocket::data::{Data, FromData, Outcome as DataOutcome, ToByteUnit};
use rocket::http::{ContentType, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use rocket::{catch, catchers, Catcher};
use serde::de::DeserializeOwned;
use std::io::Cursor;
use std::sync::OnceLock;

/// An error a guard failed with, kept so the catcher can render it with its code.
struct GuardError(OnceLock<ApiError>);

/// Fails a guard with `err`: remembered for the catcher, which renders it.
pub fn remember(req: &Request<'_>, err: ApiError) -> (Status, ApiError) {
    let slot = req.local_cache(|| GuardError(OnceLock::new()));
    let status = err.status;
    let _ = slot.0.set(err.clone());
    (status, err)
}

fn render(req: &Request<'_>, e: &ApiError) -> Response<'static> {
    let request_id = req.local_cache(RequestId::new).0.clone();
    let body = serde_json::json!({
        "type": format!("urn:scaivault:problem:{}", e.code),
        "title": e.status.reason().unwrap_or("Error"),
        "status": e.status.code,
        "detail": e.detail,
        "code": e.code,
        "request_id": request_id,
        "instance": req.uri().path().to_string(),
    })
    .to_string();
    Response::build()
        .status(e.status)
        .header(ContentType::new("application", "problem+json"))
        .sized_body(body.len(), Cursor::new(body))
        .finalize()
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        if self.is_server_error() {
            tracing::warn!(
                status = self.status.code,
                code = self.code,
                "request failed"
            );
        }
        Ok(render(req, &self))
    }
}

#[catch(default)]
fn default_catcher(status: Status, req: &Request<'_>) -> ApiError {
    if let Some(e) = req.local_cache(|| GuardError(OnceLock::new())).0.get() {
        if e.status == status {
            return e.clone();
        }
    }
    let e = match status.code {
        400 => ApiError::bad_request("bad_request", "the request could not be understood"),
        401 => ApiError::unauthorized("a valid bearer token is required"),
        403 => ApiError::forbidden("forbidden"),
        404 => ApiError::new(
            status,
            "not_found",
            format!("no route for {} {}", req.method(), req.uri().path()),
        ),
        413 => ApiError::new(
            status,
            "body_too_large",
            "the request body exceeds the configured limit",
        ),
        415 => ApiError::new(
            status,
            "unsupported_media_type",
            "expected application/json",
        ),
        422 => ApiError::new(
            Status::BadRequest,
            "invalid_body",
            "the request body is not valid for this endpoint",
        ),
        500..=599 => ApiError::new(
            status,
            "internal_error",
            "internal error; see the server log",
        ),
        _ => ApiError::new(status, "error", status.reason().unwrap_or("error")),
    };
    e
}

/// The catchers to register at `/`.
pub fn catchers() -> Vec<Catcher> {
    catchers![default_catcher]
}

/// A JSON request body: size-limited by the `json` limit; syntax errors, unknown or missing
/// fields and wrong types are `400` problems with codes `invalid_json`, `unknown_field`,
/// `missing_field`, `invalid_field`; an oversized body is `413 body_too_large`.
pub struct Body<T>(pub T);

#[rocket::async_trait]
impl<'r, T: DeserializeOwned> FromData<'r> for Body<T> {
    type Error = ApiError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> DataOutcome<'r, Self> {
        let limit = req.limits().get("json").unwrap_or_else(|| 1.mebibytes());
        let text = match data.open(limit).into_string().await {
            Ok(s) if s.is_complete() => s.into_inner(),
            Ok(_) => {
                return DataOutcome::Error(remember(
                    req,
                    ApiError::new(
                        Status::PayloadTooLarge,
                        "body_too_large",
                        format!("the request body exceeds {limit}"),
                    ),
                ))
            }
            Err(e) => {
                return DataOutcome::Error(remember(
                    req,
                    ApiError::bad_request("invalid_body", format!("cannot read the body: {e}")),
                ))
            }
        };
        match serde_json::from_str::<T>(&text) {
            Ok(v) => DataOutcome::Success(Body(v)),
            Err(e) => {
                let msg = e.to_string();
                let code = match e.classify() {
                    serde_json::error::Category::Data if msg.starts_with("unknown field") => {
                        "unknown_field"
                    }
                    serde_json::error::Category::Data if msg.starts_with("missing field") => {
                        "missing_field"
                    }
                    serde_json::error::Category::Data => "invalid_field",
                    _ => "invalid_json",
                };
                DataOutcome::Error(remember(req, ApiError::bad_request(code, msg)))
            }
        }
    }
}
