//! `/v1/pki/ocsp/<ca_id>`: the OCSP responder over HTTP (RFC 6960 Appendix A, RFC 5019 §5).
//! No authentication: relying parties call it.
//!
//! - `POST /v1/pki/ocsp/<ca_id>` with the DER `OCSPRequest` as body (`application/ocsp-request`,
//!   at most 64 KiB; the content type is not enforced).
//! - `GET /v1/pki/ocsp/<ca_id>/<request>`: the request as standard base64, percent-encoded or not
//!   (RFC 6960 Appendix A.1). The raw path is used, so `/`, `+` and `=` in the base64 survive,
//!   including `//`.
//!
//! The reply is always `200 application/ocsp-response`, for error statuses too (`malformedRequest`
//! for garbage, `unauthorized` for a CA we do not serve): bad input never yields a 4xx or 5xx.
//! Successful responses carry the RFC 5019 §6.2 cache headers: `Cache-Control: max-age=<seconds
//! until nextUpdate>, public, no-transform, must-revalidate`, `Last-Modified` (thisUpdate),
//! `Expires` (nextUpdate) and `ETag` (hex SHA-256 of the response); a GET whose `If-None-Match`
//! names the current ETag gets `304`. Error statuses are sent with `Cache-Control: no-store`.

use super::guards::PublicClient;
use super::problem::{read_body, remember};
use crate::app::App;
use crate::error::ApiError;
use crate::ocsp::{self, OcspAnswer};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use rocket::data::{self, Data, FromData, ToByteUnit};
use rocket::http::uri::fmt::Path;
use rocket::http::uri::{Origin, Segments};
use rocket::http::{RawStr, Status};
use rocket::request::{self, FromRequest, Request};
use rocket::response::{self, Responder, Response};
use rocket::{get, post, routes, Route, State};
use scaivault_core::ocsp::Refusal;
use std::io::Cursor;
use std::sync::Arc;
use time::OffsetDateTime;

/// Largest request body read (RFC 5019 requests are about 100 bytes).
pub(crate) const MAX_REQUEST_BYTES: u64 = 8 * 1024;

/// RFC 9110 §5.6.7 IMF-fixdate.
const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// Base64 with the standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// Some clients use the URL-safe alphabet; accepted as well.
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn routes() -> Vec<Route> {
    routes![post_request, get_request]
}

/// `POST /v1/pki/ocsp/<ca_id>`.
#[post("/v1/pki/ocsp/<ca_id>", data = "<body>")]
async fn post_request(
    app: &State<App>,
    _client: PublicClient,
    ca_id: &str,
    body: OcspBody,
) -> OcspReply {
    OcspReply::new(ocsp::answer(app, ca_id, &body.0).await, None)
}

/// A POSTed OCSP request: at most 8 KiB (`413 body_too_large` beyond), within the body timeout.
struct OcspBody(Vec<u8>);

#[rocket::async_trait]
impl<'r> FromData<'r> for OcspBody {
    type Error = ApiError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        match read_body(req, data, MAX_REQUEST_BYTES.bytes()).await {
            Ok(b) => data::Outcome::Success(OcspBody(b)),
            Err(e) => data::Outcome::Error(remember(req, e)),
        }
    }
}

/// `GET /v1/pki/ocsp/<ca_id>/<request>`.
#[get("/v1/pki/ocsp/<ca_id>/<_request..>")]
async fn get_request(
    app: &State<App>,
    _client: PublicClient,
    ca_id: &str,
    _request: Segments<'_, Path>,
    uri: &Origin<'_>,
    if_none_match: IfNoneMatch,
) -> OcspReply {
    let Some(der) = request_from_path(uri.path().as_str()) else {
        return OcspReply::refused(Refusal::MalformedRequest);
    };
    OcspReply::new(ocsp::answer(app, ca_id, &der).await, if_none_match.0)
}

/// The DER request from the raw path `/v1/pki/ocsp/<ca_id>/<percent-encoded base64>`: everything
/// after the CA segment, percent-decoded (never `+` → space), base64-decoded.
pub(crate) fn request_from_path(raw: &str) -> Option<Vec<u8>> {
    let rest = raw.strip_prefix("/v1/pki/ocsp/")?.trim_start_matches('/');
    let (_, encoded) = rest.split_once('/')?;
    let b64 = RawStr::new(encoded).percent_decode().ok()?;
    BASE64
        .decode(b64.as_bytes())
        .or_else(|_| BASE64_URL.decode(b64.as_bytes()))
        .ok()
}

/// The client's `If-None-Match`, if any.
struct IfNoneMatch(Option<String>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for IfNoneMatch {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> request::Outcome<Self, Self::Error> {
        request::Outcome::Success(IfNoneMatch(
            req.headers().get_one("If-None-Match").map(str::to_owned),
        ))
    }
}

/// An OCSP answer on its way out.
struct OcspReply {
    answer: OcspAnswer,
    if_none_match: Option<String>,
}

impl OcspReply {
    fn new(answer: OcspAnswer, if_none_match: Option<String>) -> Self {
        OcspReply {
            answer,
            if_none_match,
        }
    }

    fn refused(r: Refusal) -> Self {
        Self::new(OcspAnswer::Refused(r), None)
    }
}

pub(crate) fn http_date(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(HTTP_DATE)
        .unwrap_or_default()
}

/// An OCSP answer as HTTP, independent of the server library: status, headers, body. Shared by
/// the Rocket routes here and the relying-party listener (`super::public`).
pub(crate) struct HttpReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// `None` for a `304`.
    pub body: Option<Arc<[u8]>>,
}

/// The HTTP form of `answer`; `if_none_match` is the client's `If-None-Match` (GET only).
pub(crate) fn http_reply(answer: OcspAnswer, if_none_match: Option<&str>) -> HttpReply {
    let mut headers = vec![("Content-Type", "application/ocsp-response".to_owned())];
    let body: Arc<[u8]> = match answer {
        OcspAnswer::Refused(r) => {
            headers.push(("Cache-Control", "no-store".to_owned()));
            r.to_der().into()
        }
        OcspAnswer::Signed(s) => {
            let now = scaivault_core::time_util::now();
            let max_age = (s.next_update - now).whole_seconds().max(0);
            let [last_modified, expires, etag] = s.http_headers.get_or_init(|| {
                [
                    http_date(s.this_update),
                    http_date(s.next_update),
                    format!("\"{}\"", s.etag),
                ]
            });
            let matches = if_none_match.is_some_and(|h| {
                h.split(',')
                    .map(|t| t.trim().trim_start_matches("W/"))
                    .any(|t| t == etag || t == "*")
            });
            headers.extend([
                (
                    "Cache-Control",
                    format!("max-age={max_age}, public, no-transform, must-revalidate"),
                ),
                ("Last-Modified", last_modified.clone()),
                ("Expires", expires.clone()),
                ("ETag", etag.clone()),
            ]);
            if matches {
                return HttpReply {
                    status: 304,
                    headers,
                    body: None,
                };
            }
            s.der.clone()
        }
    };
    HttpReply {
        status: 200,
        headers,
        body: Some(body),
    }
}

impl<'r> Responder<'r, 'static> for OcspReply {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        let reply = http_reply(self.answer, self.if_none_match.as_deref());
        let mut res = Response::build();
        res.status(Status::from_code(reply.status).unwrap_or(Status::Ok));
        for (name, value) in reply.headers {
            res.raw_header(name, value);
        }
        if let Some(body) = reply.body {
            let len = body.len();
            res.sized_body(len, Cursor::new(body));
        }
        res.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_path_keeps_slashes_plus_and_padding() {
        let der = vec![0xfb, 0xff, 0xbf, 0x3e, 0x01];
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        assert!(
            b64.contains('/') && b64.contains('+') && b64.contains('='),
            "{b64}"
        );
        let plain = format!("/v1/pki/ocsp/ca_x/{b64}");
        assert_eq!(request_from_path(&plain), Some(der.clone()));
        let encoded = format!(
            "/v1/pki/ocsp/ca_x/{}",
            b64.replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D")
        );
        assert_eq!(request_from_path(&encoded), Some(der.clone()));
        // A `//` inside the base64 (an empty segment for the router) survives.
        let slashes = vec![0xff, 0xff, 0xff];
        let b64 = base64::engine::general_purpose::STANDARD.encode(&slashes);
        assert_eq!(b64, "////");
        assert_eq!(
            request_from_path(&format!("/v1/pki/ocsp/ca_x/{b64}")),
            Some(slashes)
        );
        assert_eq!(request_from_path("/v1/pki/ocsp/ca_x/%zz"), None);
        assert_eq!(request_from_path("/v1/pki/ocsp/ca_x"), None);
    }

    #[test]
    fn http_dates_are_imf_fixdate() {
        let t = OffsetDateTime::from_unix_timestamp(784_111_777).unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
