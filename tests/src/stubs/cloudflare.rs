//! A stub of Cloudflare's API v4 for DNS records (NOT the live service): `GET /zones`,
//! `GET/POST /zones/{id}/dns_records`, `DELETE /zones/{id}/dns_records/{id}` under
//! `/client/v4`, with `Authorization: Bearer` [`TOKEN`]. It checks method, path, query
//! parameters, `Content-Type` and the JSON body of a TXT record as the API documents them and
//! answers in Cloudflare's envelope (`success`, `errors`, `messages`, `result`); anything else is
//! a violation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{only_params, serve, OnChange, Server};

/// The API token the stub accepts.
pub const TOKEN: &str = "cf-test-token-0123456789abcdef";

/// A DNS record held by the stub.
#[derive(Clone, Debug)]
pub struct Record {
    /// Record id.
    pub id: String,
    /// Zone id.
    pub zone: String,
    /// Name, without the trailing dot (as the API writes names).
    pub name: String,
    /// TXT content as sent (quoted).
    pub content: String,
    /// TTL (1 = automatic).
    pub ttl: u64,
}

/// What the stub holds and saw.
#[derive(Default)]
pub struct StubState {
    /// `(zone id, zone name)`.
    pub zones: Vec<(String, String)>,
    /// Current records.
    pub records: Vec<Record>,
    /// Requests the real API would not accept.
    pub violations: Vec<String>,
    /// Records created so far.
    pub created: usize,
    next: u64,
}

/// The stub's state, shared with its handlers.
pub type Shared = Arc<Mutex<StubState>>;

#[derive(Clone)]
struct Ctx {
    state: Shared,
    on_change: Option<OnChange>,
}

impl Ctx {
    /// Calls the hook with the TXT values now at `name` (lock not held).
    fn changed(&self, name: &str) {
        if let Some(hook) = &self.on_change {
            let values = values_at(&self.state, name);
            hook(&format!("{name}."), &values);
        }
    }
}

fn values_at(s: &Shared, name: &str) -> Vec<String> {
    let name = name.trim_end_matches('.');
    let mut v: Vec<String> = s
        .lock()
        .unwrap()
        .records
        .iter()
        .filter(|r| r.name == name)
        .map(|r| r.content.trim_matches('"').to_string())
        .collect();
    v.sort();
    v
}

fn envelope(status: StatusCode, result: Value) -> Response {
    (
        status,
        Json(json!({"success": true, "errors": [], "messages": [], "result": result})),
    )
        .into_response()
}

fn failure(status: StatusCode, code: u64, message: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})),
    )
        .into_response()
}

fn violation(s: &Shared, what: String) -> Response {
    s.lock().unwrap().violations.push(what.clone());
    failure(StatusCode::BAD_REQUEST, 1000, &format!("stub: {what}"))
}

/// `None` when the bearer token is right; else the 403 Cloudflare sends for a bad token.
fn auth(headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    (!ok).then(|| failure(StatusCode::FORBIDDEN, 10000, "Authentication error"))
}

fn rec_json(r: &Record, zone_name: &str) -> Value {
    json!({"id": r.id, "zone_id": r.zone, "zone_name": zone_name, "name": r.name, "type": "TXT",
           "content": r.content, "proxiable": false, "proxied": false, "ttl": r.ttl})
}

fn zone_name(st: &StubState, zone: &str) -> Option<String> {
    st.zones
        .iter()
        .find(|(id, _)| id == zone)
        .map(|(_, n)| n.clone())
}

fn no_zone() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        7003,
        "Could not route to /zones/..., perhaps your object identifier is invalid?",
    )
}

async fn list_zones(
    State(c): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = auth(&headers) {
        return r;
    }
    if let Err(e) = only_params(&q, &["name", "status", "page", "per_page"]) {
        return violation(&c.state, format!("GET /zones: {e}"));
    }
    let st = c.state.lock().unwrap();
    let zones: Vec<Value> = st
        .zones
        .iter()
        .filter(|(_, n)| q.get("name").is_none_or(|want| want == n))
        .map(|(id, n)| json!({"id": id, "name": n, "status": "active"}))
        .collect();
    envelope(StatusCode::OK, json!(zones))
}

async fn list_records(
    State(c): State<Ctx>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = auth(&headers) {
        return r;
    }
    if let Err(e) = only_params(
        &q,
        &["type", "name", "content", "page", "per_page", "match"],
    ) {
        return violation(&c.state, format!("GET dns_records: {e}"));
    }
    if q.get("type").is_some_and(|t| t != "TXT") {
        return violation(
            &c.state,
            "GET dns_records: the provider only needs TXT".into(),
        );
    }
    let st = c.state.lock().unwrap();
    let Some(zname) = zone_name(&st, &zone) else {
        return no_zone();
    };
    let recs: Vec<Value> = st
        .records
        .iter()
        .filter(|r| r.zone == zone)
        .filter(|r| q.get("name").is_none_or(|n| n == &r.name))
        .filter(|r| q.get("content").is_none_or(|c| c == &r.content))
        .map(|r| rec_json(r, &zname))
        .collect();
    envelope(StatusCode::OK, json!(recs))
}

async fn create_record(
    State(c): State<Ctx>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &c.state;
    if let Some(r) = auth(&headers) {
        return r;
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return violation(
            s,
            "POST dns_records: Content-Type is not application/json".into(),
        );
    }
    let Ok(Value::Object(b)) = serde_json::from_slice::<Value>(&body) else {
        return violation(s, "POST dns_records: body is not a JSON object".into());
    };
    let allowed = [
        "type", "name", "content", "ttl", "proxied", "comment", "tags",
    ];
    if let Some(k) = b.keys().find(|k| !allowed.contains(&k.as_str())) {
        return violation(s, format!("POST dns_records: unknown field `{k}`"));
    }
    let (Some("TXT"), Some(name), Some(content)) = (
        b.get("type").and_then(Value::as_str),
        b.get("name").and_then(Value::as_str),
        b.get("content").and_then(Value::as_str),
    ) else {
        return violation(
            s,
            format!("POST dns_records: type/name/content missing or wrong: {b:?}"),
        );
    };
    let ttl = match b.get("ttl") {
        None => 1,
        Some(t) => match t.as_u64() {
            Some(t) if t == 1 || (60..=86400).contains(&t) => t,
            _ => return violation(s, format!("POST dns_records: bad ttl {t}")),
        },
    };
    // TXT content: quoted character-strings (RFC 1035), as the API documents.
    if !(content.len() >= 2 && content.starts_with('"') && content.ends_with('"')) {
        return violation(
            s,
            format!("POST dns_records: TXT content not quoted: {content}"),
        );
    }
    let mut st = s.lock().unwrap();
    let Some(zname) = zone_name(&st, &zone) else {
        return no_zone();
    };
    if name.ends_with('.') || !(name == zname || name.ends_with(&format!(".{zname}"))) {
        drop(st);
        return violation(
            s,
            format!("POST dns_records: name `{name}` not in zone {zname}"),
        );
    }
    if st
        .records
        .iter()
        .any(|r| r.zone == zone && r.name == name && r.content == content)
    {
        return failure(
            StatusCode::BAD_REQUEST,
            81058,
            "An identical record already exists.",
        );
    }
    st.next += 1;
    st.created += 1;
    let rec = Record {
        id: format!("{:032x}", st.next),
        zone,
        name: name.to_string(),
        content: content.to_string(),
        ttl,
    };
    st.records.push(rec.clone());
    drop(st);
    c.changed(&rec.name);
    envelope(StatusCode::OK, rec_json(&rec, &zname))
}

async fn delete_record(
    State(c): State<Ctx>,
    Path((zone, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = auth(&headers) {
        return r;
    }
    if !body.is_empty() {
        return violation(&c.state, "DELETE dns_records: unexpected body".into());
    }
    let mut st = c.state.lock().unwrap();
    let Some(pos) = st.records.iter().position(|r| r.zone == zone && r.id == id) else {
        return failure(StatusCode::NOT_FOUND, 81044, "Record does not exist.");
    };
    let gone = st.records.remove(pos);
    drop(st);
    c.changed(&gone.name);
    envelope(StatusCode::OK, json!({"id": id}))
}

async fn fallback(State(c): State<Ctx>, method: Method, uri: Uri) -> Response {
    let r = violation(&c.state, format!("unexpected request {method} {uri}"));
    (StatusCode::NOT_FOUND, r).into_response()
}

/// A running Cloudflare stub.
pub struct Cloudflare {
    /// The API base URL (`http://127.0.0.1:PORT/client/v4`), the provider's `api_base_url`.
    pub base_url: String,
    /// What it holds and saw.
    pub state: Shared,
    _server: Server,
}

impl Cloudflare {
    /// Serves `zones` (`(zone id, zone name)`); `on_change` is told about every record change.
    pub fn start(zones: &[(&str, &str)], on_change: Option<OnChange>) -> Cloudflare {
        let state: Shared = Arc::new(Mutex::new(StubState {
            zones: zones
                .iter()
                .map(|(i, n)| (i.to_string(), n.to_string()))
                .collect(),
            ..StubState::default()
        }));
        let app = Router::new()
            .route("/client/v4/zones", get(list_zones))
            .route(
                "/client/v4/zones/{zone}/dns_records",
                get(list_records).post(create_record),
            )
            .route(
                "/client/v4/zones/{zone}/dns_records/{id}",
                delete(delete_record),
            )
            .fallback(fallback)
            .with_state(Ctx {
                state: state.clone(),
                on_change,
            });
        let (base, server) = serve(app);
        Cloudflare {
            base_url: format!("{base}/client/v4"),
            state,
            _server: server,
        }
    }

    /// A provider config for this stub (token [`TOKEN`]).
    pub fn config(&self) -> Value {
        json!({"api_token": TOKEN, "api_base_url": self.base_url})
    }

    /// The TXT values (unquoted, sorted) at `name` (with or without the trailing dot).
    pub fn values(&self, name: &str) -> Vec<String> {
        values_at(&self.state, name)
    }

    /// Fails with every request the Cloudflare API would not have accepted.
    pub fn assert_no_violations(&self) {
        let v = self.state.lock().unwrap().violations.clone();
        assert!(
            v.is_empty(),
            "requests the Cloudflare API would not accept: {v:#?}"
        );
    }
}
