//! A stub of Google's OAuth 2.0 token endpoint and the Cloud DNS API v1 (NOT the live
//! services). The token endpoint takes the JWT-bearer grant (form fields, RS256 signature verified
//! with the service account's public key, `iss`/`aud`/`scope`/`iat`/`exp` claims); the DNS API
//! serves `managedZones.list`, `rrsets.list` and `changes.create` under `/dns/v1/projects/…`
//! with `Authorization: Bearer <access token>`, checking query parameters and the JSON of a
//! `dns#change` (deletions must match the current RRset exactly, additions must not exist yet).
//! Anything else is a violation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::Verifier as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};

use super::{only_params, serve, OnChange, Server};

/// The project the service account may use.
pub const PROJECT: &str = "scaivault-test";
/// The service account.
pub const EMAIL: &str = "dns01@scaivault-test.iam.gserviceaccount.com";
/// The access token the token endpoint hands out.
pub const ACCESS_TOKEN: &str = "ya29.stub-access-token";
/// The scope the JWT must ask for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/ndev.clouddns.readwrite";

/// What the stub holds and saw.
pub struct StubState {
    public: RsaPublicKey,
    token_uri: String,
    /// `(managed zone name, dnsName)`.
    pub zones: Vec<(String, String)>,
    /// `(managed zone name, rrset JSON)`.
    pub rrsets: Vec<(String, Value)>,
    /// Requests the real APIs would not accept.
    pub violations: Vec<String>,
    /// Access tokens handed out.
    pub tokens_issued: usize,
    /// Changes applied.
    pub changes: usize,
}

/// The stub's state, shared with its handlers.
pub type Shared = Arc<Mutex<StubState>>;

#[derive(Clone)]
struct Ctx {
    state: Shared,
    on_change: Option<OnChange>,
}

fn gerr(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": reason,
                              "errors": [{"message": message, "domain": "global", "reason": reason}]}})),
    )
        .into_response()
}

fn violation(s: &Shared, what: String) -> Response {
    s.lock().unwrap().violations.push(what.clone());
    gerr(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        &format!("stub: {what}"),
    )
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// The token endpoint: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`.
async fn token(State(c): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let s = &c.state;
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return violation(s, "token: not a form post".into());
    }
    let form: HashMap<String, String> = serde_urlencoded_parse(&body);
    if form.len() != 2
        || form.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return violation(s, format!("token: bad form {:?}", form.keys()));
    }
    let Some(jwt) = form.get("assertion") else {
        return violation(s, "token: no assertion".into());
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts[..] else {
        return violation(s, "token: assertion is not a JWS compact".into());
    };
    let (Some(hb), Some(cb), Some(sb)) = (b64(h), b64(c), b64(sig)) else {
        return violation(s, "token: assertion is not base64url".into());
    };
    let header: Value = serde_json::from_slice(&hb).unwrap_or(Value::Null);
    let claims: Value = serde_json::from_slice(&cb).unwrap_or(Value::Null);
    if header["alg"] != "RS256" || header["typ"] != "JWT" {
        return violation(s, format!("token: header {header}"));
    }
    let st = s.lock().unwrap();
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(st.public.clone());
    let signature = match rsa::pkcs1v15::Signature::try_from(sb.as_slice()) {
        Ok(sig) => sig,
        Err(_) => return gerr(StatusCode::BAD_REQUEST, "invalid_grant", "bad signature"),
    };
    if verifier
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .is_err()
    {
        // What Google answers for a JWT not signed by the account's key.
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        )
            .into_response();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    let ok = claims["iss"] == EMAIL
        && claims["aud"] == st.token_uri.as_str()
        && claims["scope"]
            .as_str()
            .is_some_and(|sc| sc.split(' ').any(|x| x == SCOPE))
        && iat <= now + 60
        && exp > now
        && exp - iat <= 3600;
    drop(st);
    if !ok {
        return violation(s, format!("token: bad claims {claims}"));
    }
    s.lock().unwrap().tokens_issued += 1;
    Json(json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn serde_urlencoded_parse(body: &[u8]) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn auth(headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {ACCESS_TOKEN}"));
    (!ok).then(|| {
        gerr(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        )
    })
}

async fn managed_zones(
    State(c): State<Ctx>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = &c.state;
    if let Some(r) = auth(&headers) {
        return r;
    }
    if project != PROJECT {
        return gerr(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        );
    }
    if let Err(e) = only_params(&q, &["dnsName", "maxResults", "pageToken"]) {
        return violation(s, format!("managedZones.list: {e}"));
    }
    if q.get("dnsName").is_some_and(|d| !d.ends_with('.')) {
        return violation(s, "managedZones.list: dnsName must be absolute".into());
    }
    let st = s.lock().unwrap();
    let zones: Vec<Value> = st
        .zones
        .iter()
        .filter(|(_, d)| q.get("dnsName").is_none_or(|w| w == d))
        .map(|(n, d)| json!({"kind": "dns#managedZone", "name": n, "dnsName": d, "id": "1234", "visibility": "public"}))
        .collect();
    Json(json!({"kind": "dns#managedZonesListResponse", "managedZones": zones})).into_response()
}

async fn rrsets(
    State(c): State<Ctx>,
    Path((project, zone)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = &c.state;
    if let Some(r) = auth(&headers) {
        return r;
    }
    if project != PROJECT {
        return gerr(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        );
    }
    if let Err(e) = only_params(&q, &["name", "type", "maxResults", "pageToken"]) {
        return violation(s, format!("rrsets.list: {e}"));
    }
    if q.contains_key("type") && !q.contains_key("name") {
        return violation(s, "rrsets.list: type without name".into());
    }
    let st = s.lock().unwrap();
    if !st.zones.iter().any(|(n, _)| n == &zone) {
        return gerr(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The 'parameters.managedZone' resource named 'x' does not exist.",
        );
    }
    let sets: Vec<Value> = st
        .rrsets
        .iter()
        .filter(|(z, _)| z == &zone)
        .map(|(_, r)| r.clone())
        .filter(|r| q.get("name").is_none_or(|n| r["name"] == n.as_str()))
        .filter(|r| q.get("type").is_none_or(|t| r["type"] == t.as_str()))
        .collect();
    Json(json!({"kind": "dns#resourceRecordSetsListResponse", "rrsets": sets})).into_response()
}

/// A `dns#resourceRecordSet` as the API accepts it, normalised; `Err` names what is wrong.
fn check_rrset(v: &Value, zone_dns: &str) -> Result<Value, String> {
    let Value::Object(m) = v else {
        return Err("rrset is not an object".into());
    };
    let allowed = [
        "kind",
        "name",
        "type",
        "ttl",
        "rrdatas",
        "signatureRrdatas",
        "routingPolicy",
    ];
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown rrset field `{k}`"));
    }
    if m.get("kind").is_some_and(|k| k != "dns#resourceRecordSet") {
        return Err("wrong kind".into());
    }
    let name = m.get("name").and_then(Value::as_str).ok_or("no name")?;
    if !name.ends_with('.') || !(name == zone_dns || name.ends_with(&format!(".{zone_dns}"))) {
        return Err(format!("name `{name}` not absolute or not in {zone_dns}"));
    }
    if m.get("type").and_then(Value::as_str) != Some("TXT") {
        return Err("type is not TXT".into());
    }
    let ttl = m
        .get("ttl")
        .and_then(Value::as_u64)
        .ok_or("ttl is not an integer")?;
    let datas = m
        .get("rrdatas")
        .and_then(Value::as_array)
        .ok_or("no rrdatas")?;
    if datas.is_empty()
        || !datas.iter().all(|d| {
            d.as_str()
                .is_some_and(|d| d.len() >= 2 && d.starts_with('"') && d.ends_with('"'))
        })
    {
        return Err(format!("rrdatas must be quoted TXT strings: {datas:?}"));
    }
    Ok(
        json!({"kind": "dns#resourceRecordSet", "name": name, "type": "TXT", "ttl": ttl, "rrdatas": datas}),
    )
}

async fn changes(
    State(c): State<Ctx>,
    Path((project, zone)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let s = &c.state;
    if let Some(r) = auth(&headers) {
        return r;
    }
    if project != PROJECT {
        return gerr(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        );
    }
    if !q.is_empty() {
        return violation(s, "changes.create: unexpected query".into());
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return violation(
            s,
            "changes.create: Content-Type is not application/json".into(),
        );
    }
    let Ok(Value::Object(change)) = serde_json::from_slice::<Value>(&body) else {
        return violation(s, "changes.create: body is not a JSON object".into());
    };
    if let Some(k) = change
        .keys()
        .find(|k| !["kind", "additions", "deletions", "isServing"].contains(&k.as_str()))
    {
        return violation(s, format!("changes.create: unknown field `{k}`"));
    }
    if change.get("kind").is_some_and(|k| k != "dns#change") {
        return violation(s, "changes.create: wrong kind".into());
    }
    let mut st = s.lock().unwrap();
    let Some(zone_dns) = st
        .zones
        .iter()
        .find(|(n, _)| n == &zone)
        .map(|(_, d)| d.clone())
    else {
        return gerr(StatusCode::NOT_FOUND, "NOT_FOUND", "managed zone not found");
    };
    let list = |k: &str| -> Result<Vec<Value>, String> {
        match change.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().map(|r| check_rrset(r, &zone_dns)).collect(),
            Some(_) => Err(format!("{k} is not a list")),
        }
    };
    let (deletions, additions) = match (list("deletions"), list("additions")) {
        (Ok(d), Ok(a)) => (d, a),
        (Err(e), _) | (_, Err(e)) => {
            drop(st);
            return violation(s, format!("changes.create: {e}"));
        }
    };
    if deletions.is_empty() && additions.is_empty() {
        drop(st);
        return violation(s, "changes.create: empty change".into());
    }
    // Deletions must match the current RRset exactly (Cloud DNS: 412 conditionNotMet / 404).
    let mut next = st.rrsets.clone();
    for d in &deletions {
        let pos = next
            .iter()
            .position(|(z, r)| z == &zone && r["name"] == d["name"] && r["type"] == d["type"]);
        match pos {
            Some(i) if next[i].1 == *d => {
                next.remove(i);
            }
            Some(_) => {
                return gerr(
                    StatusCode::PRECONDITION_FAILED,
                    "conditionNotMet",
                    "Precondition not met for 'entity.change.deletions[0]'",
                )
            }
            None => {
                return gerr(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    "The 'entity.change.deletions[0]' resource named 'x' does not exist.",
                )
            }
        }
    }
    for a in &additions {
        if next
            .iter()
            .any(|(z, r)| z == &zone && r["name"] == a["name"] && r["type"] == a["type"])
        {
            return gerr(
                StatusCode::CONFLICT,
                "alreadyExists",
                "The resource 'entity.change.additions[0]' named 'x' already exists",
            );
        }
        next.push((zone.clone(), a.clone()));
    }
    st.rrsets = next;
    st.changes += 1;
    drop(st);
    if let Some(hook) = &c.on_change {
        let mut names: Vec<String> = deletions
            .iter()
            .chain(&additions)
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        for n in names {
            hook(&n, &values_at(s, &n));
        }
    }
    Json(json!({"kind": "dns#change", "id": "1", "status": "pending",
                "additions": additions, "deletions": deletions}))
    .into_response()
}

async fn fallback(State(c): State<Ctx>, method: Method, uri: Uri) -> Response {
    let s = &c.state;
    violation(s, format!("unexpected request {method} {uri}"))
}

fn values_at(s: &Shared, name: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lock()
        .unwrap()
        .rrsets
        .iter()
        .filter(|(_, r)| r["name"] == name)
        .flat_map(|(_, r)| r["rrdatas"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d.as_str().map(|d| d.trim_matches('"').to_string()))
        .collect();
    v.sort();
    v
}

/// A running Google stub (token endpoint and Cloud DNS API on one port).
pub struct Google {
    /// `http://127.0.0.1:PORT`: the provider's `api_base_url`; the token endpoint is `/token`.
    pub base: String,
    /// The service account's private key (PKCS#8 PEM).
    pub key_pem: String,
    /// What it holds and saw.
    pub state: Shared,
    _server: Server,
}

impl Google {
    /// Serves `zones` (`(managed zone name, dnsName with the trailing dot)`) for [`PROJECT`] to a
    /// new service account with a fresh RSA key; `on_change` is told about every record change.
    pub fn start(zones: &[(&str, &str)], on_change: Option<OnChange>) -> Google {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let key_pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let state: Shared = Arc::new(Mutex::new(StubState {
            public: RsaPublicKey::from(&key),
            token_uri: String::new(),
            zones: zones
                .iter()
                .map(|(n, d)| (n.to_string(), d.to_string()))
                .collect(),
            rrsets: Vec::new(),
            violations: Vec::new(),
            tokens_issued: 0,
            changes: 0,
        }));
        let app = Router::new()
            .route("/token", post(token))
            .route(
                "/dns/v1/projects/{project}/managedZones",
                get(managed_zones),
            )
            .route(
                "/dns/v1/projects/{project}/managedZones/{zone}/rrsets",
                get(rrsets),
            )
            .route(
                "/dns/v1/projects/{project}/managedZones/{zone}/changes",
                post(changes),
            )
            .fallback(fallback)
            .with_state(Ctx {
                state: state.clone(),
                on_change,
            });
        let (base, server) = serve(app);
        state.lock().unwrap().token_uri = format!("{base}/token");
        Google {
            base,
            key_pem,
            state,
            _server: server,
        }
    }

    /// A service-account key file (JSON) for [`EMAIL`] with `key_pem`, whose `token_uri` is this
    /// stub.
    pub fn service_account(&self, key_pem: &str) -> Value {
        json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": key_pem,
            "client_email": EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("{}/token", self.base),
        })
    }

    /// A provider config for this stub (the key file as a JSON string).
    pub fn config(&self) -> Value {
        json!({
            "project": PROJECT,
            "service_account_json": self.service_account(&self.key_pem).to_string(),
            "api_base_url": self.base,
        })
    }

    /// The TXT values (unquoted, sorted) at `name` (absolute, with the trailing dot).
    pub fn values(&self, name: &str) -> Vec<String> {
        values_at(&self.state, name)
    }

    /// Fails with every request Google's APIs would not have accepted.
    pub fn assert_no_violations(&self) {
        let v = self.state.lock().unwrap().violations.clone();
        assert!(
            v.is_empty(),
            "requests Google's APIs would not accept: {v:#?}"
        );
    }
}
