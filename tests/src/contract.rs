//! The daemon's OpenAPI document as a contract every test checks: each answer [`crate::Daemon::call`]
//! gets is held against `GET /v1/openapi.json` of the same binary.
//!
//! - A success answer with a JSON body must have the status the document names for the route,
//!   and its body must satisfy the route's answer schema.
//! - A request body the daemon accepted (a success) must satisfy the route's request schema: a
//!   schema stricter than the daemon would mislead a client generated from it.
//! - An `application/problem+json` answer must satisfy `components/schemas/Problem`.
//!
//! The document is fetched once per test process (every daemon of a process runs the same
//! binary) and each schema compiled once.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The document and the validators compiled from it so far.
pub struct Contract {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

static CONTRACT: OnceLock<Contract> = OnceLock::new();

/// The contract of this process's daemon binary, fetched with `fetch` until a fetch succeeds (a
/// daemon on its way down may not answer; the next exchange tries again).
pub fn get(fetch: impl FnOnce() -> Option<Value>) -> Option<&'static Contract> {
    if let Some(c) = CONTRACT.get() {
        return Some(c);
    }
    let doc = fetch()?;
    Some(CONTRACT.get_or_init(|| Contract {
        doc,
        validators: Mutex::new(HashMap::new()),
    }))
}

/// With `SCAIVAULT_TEST_CONTRACT_LOG=FILE`, each checked success is appended to FILE as
/// `METHOD template status`: which routes a run of the suite held against the document
/// (`sort -u FILE`).
fn record(method: &str, template: &str, status: u16) {
    use std::io::Write;
    let Some(file) = std::env::var_os("SCAIVAULT_TEST_CONTRACT_LOG") else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        // One write per line: lines of concurrent test processes do not interleave.
        let _ = f.write_all(format!("{method} {template} {status}\n").as_bytes());
    }
}

/// One exchange, as [`Contract::check`] reads it.
pub struct Exchange<'a> {
    pub method: &'a str,
    /// As sent, query included.
    pub path: &'a str,
    pub request: Option<&'a [u8]>,
    pub status: u16,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

impl Contract {
    /// The document's path template for `method path` (`/v1/pki/ca/import` before
    /// `/v1/pki/ca/{id}`: the template with the fewest parameters wins).
    pub fn template(&self, method: &str, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let segs: Vec<&str> = path.split('/').collect();
        let method = method.to_ascii_lowercase();
        self.doc["paths"]
            .as_object()?
            .iter()
            .filter(|(_, ops)| ops.get(&method).is_some())
            .filter_map(|(template, _)| {
                let t: Vec<&str> = template.split('/').collect();
                let params = t.iter().filter(|s| s.starts_with('{')).count();
                let fits = t.len() == segs.len()
                    && t.iter().zip(&segs).all(|(t, s)| {
                        if t.starts_with('{') {
                            !s.is_empty()
                        } else {
                            t == s
                        }
                    });
                fits.then_some((params, template.clone()))
            })
            .min()
            .map(|(_, t)| t)
    }

    /// A validator of `schema` (a `$ref` into the document, or inline), compiled once per key.
    fn validator(&self, key: &str, schema: &Value) -> Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(key) {
            return v.clone();
        }
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": self.doc["components"],
        });
        let v =
            Arc::new(jsonschema::draft202012::new(&root).unwrap_or_else(|e| {
                panic!("the document's schema for {key} does not compile: {e}")
            }));
        cache.insert(key.to_owned(), v.clone());
        v
    }

    fn require(&self, what: &str, schema: &Value, instance: &Value) {
        let v = self.validator(what, schema);
        let errors: Vec<String> = v
            .iter_errors(instance)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what} does not satisfy GET /v1/openapi.json: {}\n{instance}",
            errors.join("; ")
        );
    }

    /// Panics, naming the route and the rule, when `x` breaks the contract.
    pub fn check(&self, x: &Exchange<'_>) {
        let mime = x.content_type.split(';').next().unwrap_or("").trim();
        if mime == "application/problem+json" {
            if let Ok(body) = serde_json::from_slice::<Value>(x.body) {
                let problem = json!({"$ref": "#/components/schemas/Problem"});
                self.require("a problem document", &problem, &body);
                assert_eq!(
                    body["status"].as_u64(),
                    Some(u64::from(x.status)),
                    "{} {}: the problem's status is not the answer's: {body}",
                    x.method,
                    x.path
                );
            }
            return;
        }
        if !(200..300).contains(&x.status) {
            return;
        }
        let Some(template) = self.template(x.method, x.path) else {
            return;
        };
        record(x.method, &template, x.status);
        let op = &self.doc["paths"][&template][x.method.to_ascii_lowercase()];
        let responses = &op["responses"];
        assert!(
            responses.get(x.status.to_string()).is_some(),
            "{} {template} answered {}, the document names {:?}",
            x.method,
            x.status,
            responses.as_object().map(|r| r.keys().collect::<Vec<_>>())
        );
        let answer = &responses[x.status.to_string()]["content"]["application/json"]["schema"];
        if mime == "application/json" && answer.is_object() {
            let body: Value = serde_json::from_slice(x.body).unwrap_or_else(|e| {
                panic!("{} {}: JSON that does not parse: {e}", x.method, x.path)
            });
            let what = format!("the answer of {} {template}", x.method);
            self.require(&what, answer, &body);
        }
        let request = &op["requestBody"]["content"]["application/json"]["schema"];
        if let (Some(sent), true) = (x.request, request.is_object()) {
            if let Ok(sent) = serde_json::from_slice::<Value>(sent) {
                let what = format!("the accepted request of {} {template}", x.method);
                self.require(&what, request, &sent);
            }
        }
    }
}
