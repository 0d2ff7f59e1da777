//! cloudflare against a local stub of Cloudflare's API v4 — NOT the live service, which cannot be
//! reached from CI. The stub checks each request against the published API (method, path,
//! `Authorization: Bearer`, query parameters, the JSON body of a DNS record) and records every
//! request it does not expect as a violation, which fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use scaivault_dns::DnsError;
use serde_json::{json, Value};

const TOKEN: &str = "cf-test-token-0123456789abcdef";

#[derive(Clone, Debug)]
struct Rec {
    id: String,
    zone: String,
    name: String,
    content: String,
    ttl: u64,
}

#[derive(Default)]
struct Stub {
    zones: Vec<(String, String)>,
    records: Vec<Rec>,
    violations: Vec<String>,
    next: u64,
}

type Shared = Arc<Mutex<Stub>>;

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

fn only_params(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), String> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown query parameter `{k}`")),
        None => Ok(()),
    }
}

fn rec_json(r: &Rec, zone_name: &str) -> Value {
    json!({"id": r.id, "zone_id": r.zone, "zone_name": zone_name, "name": r.name, "type": "TXT",
           "content": r.content, "proxiable": false, "proxied": false, "ttl": r.ttl})
}

async fn list_zones(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = auth(&headers) {
        return r;
    }
    if let Err(e) = only_params(&q, &["name", "status", "page", "per_page"]) {
        return violation(&s, format!("GET /zones: {e}"));
    }
    let st = s.lock().unwrap();
    let zones: Vec<Value> = st
        .zones
        .iter()
        .filter(|(_, n)| q.get("name").is_none_or(|want| want == n))
        .map(|(id, n)| json!({"id": id, "name": n, "status": "active"}))
        .collect();
    envelope(StatusCode::OK, json!(zones))
}

fn zone_name(st: &Stub, zone: &str) -> Option<String> {
    st.zones
        .iter()
        .find(|(id, _)| id == zone)
        .map(|(_, n)| n.clone())
}

async fn list_records(
    State(s): State<Shared>,
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
        return violation(&s, format!("GET dns_records: {e}"));
    }
    if q.get("type").is_some_and(|t| t != "TXT") {
        return violation(&s, "GET dns_records: the provider only needs TXT".into());
    }
    let st = s.lock().unwrap();
    let Some(zname) = zone_name(&st, &zone) else {
        return failure(
            StatusCode::NOT_FOUND,
            7003,
            "Could not route to /zones/..., perhaps your object identifier is invalid?",
        );
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
    State(s): State<Shared>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = auth(&headers) {
        return r;
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return violation(
            &s,
            "POST dns_records: Content-Type is not application/json".into(),
        );
    }
    let Ok(Value::Object(b)) = serde_json::from_slice::<Value>(&body) else {
        return violation(&s, "POST dns_records: body is not a JSON object".into());
    };
    let allowed = [
        "type", "name", "content", "ttl", "proxied", "comment", "tags",
    ];
    if let Some(k) = b.keys().find(|k| !allowed.contains(&k.as_str())) {
        return violation(&s, format!("POST dns_records: unknown field `{k}`"));
    }
    let (Some("TXT"), Some(name), Some(content)) = (
        b.get("type").and_then(Value::as_str),
        b.get("name").and_then(Value::as_str),
        b.get("content").and_then(Value::as_str),
    ) else {
        return violation(
            &s,
            format!("POST dns_records: type/name/content missing or wrong: {b:?}"),
        );
    };
    let ttl = match b.get("ttl") {
        None => 1,
        Some(t) => match t.as_u64() {
            Some(t) if t == 1 || (60..=86400).contains(&t) => t,
            _ => return violation(&s, format!("POST dns_records: bad ttl {t}")),
        },
    };
    // TXT content: quoted character-strings (RFC 1035), as the API documents.
    if !(content.len() >= 2 && content.starts_with('"') && content.ends_with('"')) {
        return violation(
            &s,
            format!("POST dns_records: TXT content not quoted: {content}"),
        );
    }
    let mut st = s.lock().unwrap();
    let Some(zname) = zone_name(&st, &zone) else {
        return failure(
            StatusCode::NOT_FOUND,
            7003,
            "Could not route to /zones/..., perhaps your object identifier is invalid?",
        );
    };
    if name.ends_with('.') || !(name == zname || name.ends_with(&format!(".{zname}"))) {
        drop(st);
        return violation(
            &s,
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
    let rec = Rec {
        id: format!("{:032x}", st.next),
        zone,
        name: name.to_string(),
        content: content.to_string(),
        ttl,
    };
    st.records.push(rec.clone());
    envelope(StatusCode::OK, rec_json(&rec, &zname))
}

async fn delete_record(
    State(s): State<Shared>,
    Path((zone, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = auth(&headers) {
        return r;
    }
    if !body.is_empty() {
        return violation(&s, "DELETE dns_records: unexpected body".into());
    }
    let mut st = s.lock().unwrap();
    let before = st.records.len();
    st.records.retain(|r| !(r.zone == zone && r.id == id));
    if st.records.len() == before {
        return failure(StatusCode::NOT_FOUND, 81044, "Record does not exist.");
    }
    envelope(StatusCode::OK, json!({"id": id}))
}

async fn fallback(State(s): State<Shared>, method: Method, uri: Uri) -> Response {
    let r = violation(&s, format!("unexpected request {method} {uri}"));
    (StatusCode::NOT_FOUND, r).into_response()
}

/// Starts the stub with `zones` (id, name); returns its API base URL.
async fn start(zones: &[(&str, &str)]) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Stub {
        zones: zones
            .iter()
            .map(|(i, n)| (i.to_string(), n.to_string()))
            .collect(),
        ..Stub::default()
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
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/client/v4"), state)
}

fn values(s: &Shared, name: &str) -> Vec<String> {
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

fn no_violations(s: &Shared) {
    let v = s.lock().unwrap().violations.clone();
    assert!(
        v.is_empty(),
        "requests the Cloudflare API would not accept: {v:#?}"
    );
}

const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const SUB_ZONE_ID: &str = "9a7806061c88ada191ed06f989cc3dac";

#[tokio::test]
async fn two_values_at_one_name_then_cleanup_one_with_zone_lookup() {
    let (base, s) = start(&[(ZONE_ID, "example.test"), (SUB_ZONE_ID, "sub.example.test")]).await;
    let cfg = json!({"api_token": TOKEN, "api_base_url": base});
    let p = scaivault_dns::build("cloudflare", &cfg).unwrap();
    let name = "_acme-challenge.www.example.test.";
    p.present(name, "value-one").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    assert_eq!(
        values(&s, "_acme-challenge.www.example.test"),
        ["value-one", "value-two"]
    );
    assert!(s.lock().unwrap().records.iter().all(|r| r.zone == ZONE_ID));
    p.cleanup(name, "value-one").await.unwrap();
    assert_eq!(
        values(&s, "_acme-challenge.www.example.test"),
        ["value-two"]
    );
    p.cleanup(name, "value-one").await.unwrap();
    p.cleanup(name, "value-two").await.unwrap();
    assert!(values(&s, "_acme-challenge.www.example.test").is_empty());

    // The longest zone wins: a name under sub.example.test goes to that zone.
    p.present("_acme-challenge.sub.example.test.", "in-sub")
        .await
        .unwrap();
    assert_eq!(
        s.lock()
            .unwrap()
            .records
            .iter()
            .map(|r| r.zone.clone())
            .collect::<Vec<_>>(),
        [SUB_ZONE_ID]
    );
    p.cleanup("_acme-challenge.sub.example.test.", "in-sub")
        .await
        .unwrap();
    no_violations(&s);
}

#[tokio::test]
async fn with_zone_id_and_default_config_checks() {
    let (base, s) = start(&[(ZONE_ID, "example.test")]).await;
    let cfg = json!({"api_token": TOKEN, "zone_id": ZONE_ID, "api_base_url": base});
    let p = scaivault_dns::build("cloudflare", &cfg).unwrap();
    p.present("_acme-challenge.example.test.", "apex")
        .await
        .unwrap();
    assert_eq!(values(&s, "_acme-challenge.example.test"), ["apex"]);
    p.cleanup("_acme-challenge.example.test.", "apex")
        .await
        .unwrap();
    assert!(values(&s, "_acme-challenge.example.test").is_empty());
    no_violations(&s);

    // A name in no zone of the token.
    let cfg = json!({"api_token": TOKEN, "api_base_url": base});
    let p = scaivault_dns::build("cloudflare", &cfg).unwrap();
    let err = p
        .present("_acme-challenge.other.test.", "v")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    no_violations(&s);
}

#[tokio::test]
async fn bad_token_is_a_provider_error_without_the_token() {
    let (base, s) = start(&[(ZONE_ID, "example.test")]).await;
    let wrong = "wrong-cloudflare-token-that-must-not-leak";
    for cfg in [
        json!({"api_token": wrong, "api_base_url": base}),
        json!({"api_token": wrong, "zone_id": ZONE_ID, "api_base_url": base}),
    ] {
        let p = scaivault_dns::build("cloudflare", &cfg).unwrap();
        let err = p
            .present("_acme-challenge.www.example.test.", "v")
            .await
            .unwrap_err();
        assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("403") && text.contains("Authentication error"),
            "{text}"
        );
        assert!(!text.contains(wrong), "{text}");
        assert!(!format!("{p:?} {err:?}").contains(wrong));
    }
    assert!(s.lock().unwrap().records.is_empty());
    no_violations(&s);
}
