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

/// The longest `detail` (and `instance`) a problem document carries, in bytes: a detail that
/// quotes the offending value must not send a megabyte name back.
const MAX_ECHO: usize = 1024;

/// `text` cut at [`MAX_ECHO`] bytes (on a character boundary), saying how much was left out.
fn clipped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_ECHO {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… ({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

/// The RFC 9457 document for `e`, answering the request `request_id` for `instance` (its path).
fn problem_json(e: &ApiError, request_id: &str, instance: &str) -> String {
    serde_json::json!({
        "type": format!("urn:scaivault:problem:{}", e.code),
        "title": e.status.reason().unwrap_or("Error"),
        "status": e.status.code,
        "detail": clipped(&e.detail),
        "code": e.code,
        "request_id": request_id,
        "instance": clipped(instance),
    })
    .to_string()
}

/// The problem document answering `e` for request `request_id` at `instance`. A server error's
/// cause was logged where it happened, without the request: here the two meet, in a `request
/// failed` line (both listeners).
pub(crate) fn answer_body(e: &ApiError, request_id: &str, instance: &str) -> String {
    if e.is_server_error() {
        tracing::warn!(
            request_id = %request_id,
            status = e.status.code,
            code = e.code,
            cause = e.cause.as_deref().unwrap_or("(logged above)"),
            "request failed"
        );
    }
    problem_json(e, request_id, instance)
}

fn render(req: &Request<'_>, e: &ApiError) -> Response<'static> {
    let request_id = req.local_cache(RequestId::new).0.clone();
    let body = answer_body(e, &request_id, req.uri().path().as_str());
    let mut r = Response::build();
    r.status(e.status)
        .header(ContentType::new("application", "problem+json"))
        .sized_body(body.len(), Cursor::new(body));
    if let Some(secs) = e.retry_after {
        r.header(rocket::http::Header::new("Retry-After", secs.to_string()));
    }
    if e.status == rocket::http::Status::Unauthorized {
        // RFC 9110 §11.6.1: a 401 names the scheme it wants (RFC 6750 §3 for bearer tokens).
        r.header(rocket::http::Header::new(
            "WWW-Authenticate",
            "Bearer realm=\"scaivault\"",
        ));
    }
    r.finalize()
}

impl<'r> Responder<'r, 'static> for ApiError {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
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

/// A JSON request body: size-limited by the `json` limit (`[limits] body_bytes`), or by `MAX`
/// bytes when that is smaller and not 0; syntax errors, unknown or missing fields and wrong types
/// are `400` problems with codes `invalid_json`, `unknown_field`, `missing_field`,
/// `invalid_field`; an oversized body is `413 body_too_large`, one that does not arrive within
/// `[limits] body_timeout` is `408 request_timeout`.
pub struct Body<T, const MAX: u64 = 0>(pub T);

/// The body limit of routes that take a CSR (`/v1/pki/csr/import`, `/v1/pki/sign/{role}`).
pub const CSR_BODY_BYTES: u64 = 64 * 1024;

/// Reads a request body of at most `limit` bytes within the configured body timeout.
///
/// # Errors
/// `413 body_too_large`, `408 request_timeout`, `400 invalid_body`.
pub async fn read_body(
    req: &Request<'_>,
    data: Data<'_>,
    limit: rocket::data::ByteUnit,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            Status::PayloadTooLarge,
            "body_too_large",
            format!("the request body exceeds {limit}"),
        )
    };
    // A declared length over the limit is refused before a byte is read.
    if req
        .headers()
        .get_one("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > limit.as_u64())
    {
        return Err(too_large());
    }
    let timeout = req
        .rocket()
        .state::<crate::app::App>()
        .map_or(std::time::Duration::from_secs(30), |a| {
            a.limits.body_timeout
        });
    match tokio::time::timeout(timeout, data.open(limit).into_bytes()).await {
        Ok(Ok(b)) if b.is_complete() => Ok(b.into_inner()),
        Ok(Ok(_)) => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(
            "invalid_body",
            format!("cannot read the body: {e}"),
        )),
        Err(_) => Err(ApiError::new(
            Status::RequestTimeout,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
    }
}

#[rocket::async_trait]
impl<'r, T: DeserializeOwned, const MAX: u64> FromData<'r> for Body<T, MAX> {
    type Error = ApiError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> DataOutcome<'r, Self> {
        match read_json_body(req, data, MAX).await {
            Ok(bytes) => match decode_json(&bytes) {
                Ok(v) => DataOutcome::Success(Body(v)),
                Err(e) => DataOutcome::Error(remember(req, e)),
            },
            Err(e) => DataOutcome::Error(remember(req, e)),
        }
    }
}

/// A JSON body the route may go without: no body (or only whitespace) is `None`; anything else
/// is decoded exactly as [`Body`] decodes it, with the same limits and errors — a malformed
/// body is never taken for an absent one.
pub struct OptionalBody<T, const MAX: u64 = 0>(pub Option<T>);

#[rocket::async_trait]
impl<'r, T: DeserializeOwned, const MAX: u64> FromData<'r> for OptionalBody<T, MAX> {
    type Error = ApiError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> DataOutcome<'r, Self> {
        match read_json_body(req, data, MAX).await {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
                DataOutcome::Success(OptionalBody(None))
            }
            Ok(bytes) => match decode_json(&bytes) {
                Ok(v) => DataOutcome::Success(OptionalBody(Some(v))),
                Err(e) => DataOutcome::Error(remember(req, e)),
            },
            Err(e) => DataOutcome::Error(remember(req, e)),
        }
    }
}

/// The body under the `json` limit (or `max` when smaller and not 0).
async fn read_json_body(req: &Request<'_>, data: Data<'_>, max: u64) -> Result<Vec<u8>, ApiError> {
    let mut limit = req.limits().get("json").unwrap_or_else(|| 1.mebibytes());
    if max > 0 && max < limit.as_u64() {
        limit = max.bytes();
    }
    read_body(req, data, limit).await
}

/// Strict JSON decoding with the problem codes of [`Body`].
fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("invalid_json", "the request body is not UTF-8"))?;
    // Every body is an object: serde would otherwise take an array for a struct, field by
    // position, which no client means and the contract does not allow.
    if !text.trim_start().starts_with('{') && !text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    }
    // Syntax first: a body that is not JSON at all is `invalid_json`, whatever a typed decode
    // would have met first (`{"a":` is cut off, not an unknown field; `{} x` has trailing
    // characters, it does not lack a field).
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(ApiError::bad_request(
            "invalid_json",
            describe_json_error(&e.to_string()),
        ));
    }
    // Then the types, naming the field a wrong value is in (`alt_names[2]: invalid type: …`).
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let e = e.into_inner();
        let msg = describe_json_error(&e.to_string());
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
        if path == "." || path.is_empty() {
            return ApiError::bad_request(code, msg);
        }
        let mut field = path;
        truncate_at_char(&mut field, 100);
        ApiError::bad_request(code, format!("{field}: {msg}"))
    })
}

/// The longest JSON error detail sent back (and logged).
const MAX_JSON_ERROR: usize = 300;

/// `serde_json`'s message without the values it quotes (`invalid type: string "…", expected a
/// sequence` becomes `invalid type: string, expected a sequence`) and at most [`MAX_JSON_ERROR`]
/// bytes: a wrong-typed field is not echoed into the answer and the log, however large it is or
/// whatever it holds. Field names (`unknown field \`x\``) stay, shortened with the rest.
pub(crate) fn describe_json_error(msg: &str) -> String {
    const QUOTED: &str = "string \"";
    let mut out = String::with_capacity(msg.len().min(MAX_JSON_ERROR));
    let mut rest = msg;
    while let Some(i) = rest.find(QUOTED) {
        out.push_str(&rest[..i]);
        out.push_str("string");
        // Skip the Debug-escaped literal up to its closing, unescaped quote.
        let lit = &rest[i + QUOTED.len()..];
        let mut escaped = false;
        let mut end = lit.len();
        for (j, c) in lit.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &lit[end..];
    }
    out.push_str(rest);
    // Only the start is kept anyway: what follows works on a bounded text (a 1-MiB unknown field
    // name made of `integer \`` would otherwise cost quadratic time). A cut inside a quoted
    // value leaves it unclosed, and an unclosed value is dropped to the end below.
    truncate_at_char(&mut out, 4 * MAX_JSON_ERROR);
    // Numbers and the like are quoted in backticks (`invalid type: integer \`12345678\``): a
    // numeric PIN or secret in a string field must not be echoed either.
    for kind in ["integer `", "floating point `", "boolean `", "character `"] {
        while let Some(i) = out.find(kind) {
            let lit = i + kind.len();
            let end = out[lit..].find('`').map_or(out.len(), |e| lit + e + 1);
            out.replace_range(i + kind.len() - 2..end, "");
        }
    }
    if out.len() > MAX_JSON_ERROR {
        truncate_at_char(&mut out, MAX_JSON_ERROR);
        out.push('…');
    }
    out
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::{clipped, describe_json_error, MAX_ECHO};

    #[test]
    fn long_details_are_clipped_on_a_character_boundary() {
        assert_eq!(clipped("short"), "short");
        let long = format!("x{}", "é".repeat(MAX_ECHO));
        let c = clipped(&long);
        assert!(c.len() < MAX_ECHO + 40, "{}", c.len());
        assert!(c.ends_with(" more bytes)"), "{c}");
        assert!(c.starts_with("xé"));
    }

    #[test]
    fn json_errors_do_not_echo_values() {
        let e = serde_json::from_str::<Vec<String>>(r#""secret \" value""#).unwrap_err();
        let d = describe_json_error(&e.to_string());
        assert!(!d.contains("secret"), "{d}");
        assert!(
            d.starts_with("invalid type: string, expected a sequence"),
            "{d}"
        );
        for (json, kind) in [
            ("12345678901234567890", "integer"),
            ("-98765432109876", "integer"),
            ("31415926535.8979", "floating point"),
            ("true", "boolean"),
        ] {
            let e = serde_json::from_str::<String>(json).unwrap_err();
            let d = describe_json_error(&e.to_string());
            let want = format!("invalid type: {kind}, expected a string at line 1");
            assert!(d.starts_with(&want), "{json}: {d}");
        }
        // A 1-MiB unknown field name made of the quoted forms (worked on in a bounded prefix).
        let field = "integer `".repeat(116_000);
        let d = describe_json_error(&format!("unknown field `{field}`, expected `a`"));
        assert!(d.len() <= 300 + '…'.len_utf8(), "{}", d.len());
        assert!(d.starts_with("unknown field `integer"), "{d}");
        let e = serde_json::from_str::<u8>("\"7\"").unwrap_err().to_string();
        assert!(describe_json_error(&e).starts_with("invalid type: string, expected u8"));
        let e = "invalid type: character `x`, expected a string";
        assert_eq!(
            describe_json_error(e),
            "invalid type: character, expected a string"
        );
        let big = format!("{{\"{}\": 1}}", "k".repeat(100_000));
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            a: Option<u8>,
        }
        let e = serde_json::from_str::<S>(&big).unwrap_err();
        let d = describe_json_error(&e.to_string());
        assert!(d.len() <= 300 + '…'.len_utf8(), "{}", d.len());
        assert!(d.starts_with("unknown field `kkk"), "{d}");
    }
}
