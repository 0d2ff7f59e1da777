//! Tenant isolation matrix (issue #10, point 6), generated from `GET /v1/openapi.json` (itself
//! made from the daemon's one access table, which a unit test ties to the mounted routes).
//!
//! Two tenants, A and B, each with one object of every kind. For every authenticated route, every
//! policy of tenant A, and every path-parameter variant {A's own object, B's object, an id nobody
//! has}: B's object must behave exactly like the missing one (same status, same problem code), a
//! policy that does not grant the route gets `403` on A's own object, one that grants it does not.
//! List endpoints never show B's rows. Afterwards B's objects are unchanged. A route with a path
//! parameter this test has no fixture for fails it, so a new route cannot slip past.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::pebble::{Pebble, PebbleOptions};
use scaivault_tests::{free_port, openssl_ok, Daemon};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One tenant's objects, by path-parameter kind.
#[derive(Debug, Clone)]
struct Objects {
    token: String,
    ca: String,
    role: String,
    serial: String,
    csr: String,
    csr_pem: String,
    cert_pem: String,
    api_token_id: String,
    trust_anchor: String,
    webhook: String,
    acme_account: String,
    dns_provider: String,
    managed_cert: String,
}

fn call(
    d: &Daemon,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value, String) {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let r = d.call(method, path, Some(token), bytes.as_deref());
    let text = r.text();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (r.status, v, text)
}

fn ok(d: &Daemon, method: &str, path: &str, token: &str, body: Value) -> Value {
    let (status, v, text) = call(d, method, path, token, Some(&body));
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    v
}

/// Creates one object of every kind in the tenant of `token` (an admin token).
fn populate(d: &Daemon, p: &Pebble, token: &str, tag: &str) -> Objects {
    let dir = d.dir.path();
    let ca = ok(
        d,
        "POST",
        "/v1/pki/ca",
        token,
        json!({"name": format!("root-{tag}"), "common_name": format!("Root {tag}"), "ca_type": "root", "validity_days": 30}),
    );
    let ca_id = ca["id"].as_str().unwrap().to_owned();
    let role = format!("role-{tag}");
    ok(
        d,
        "POST",
        "/v1/pki/roles",
        token,
        json!({"name": role, "ca_id": ca_id, "allowed_domains": [format!("{tag}.test")], "allow_subdomains": true, "max_ttl": "24h", "store_private_key": true}),
    );
    let leaf = ok(
        d,
        "POST",
        &format!("/v1/pki/issue/{role}"),
        token,
        json!({"common_name": format!("svc.{tag}.test")}),
    );
    let key = dir.join(format!("{tag}.key"));
    let csr_path = dir.join(format!("{tag}.csr"));
    openssl_ok(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-subj",
        &format!("/CN=csr.{tag}.test"),
        "-addext",
        &format!("subjectAltName=DNS:csr.{tag}.test"),
        "-out",
        csr_path.to_str().unwrap(),
    ]);
    let csr_pem = std::fs::read_to_string(&csr_path).unwrap();
    let csr = ok(
        d,
        "POST",
        "/v1/pki/csr/import",
        token,
        json!({"csr_pem": csr_pem}),
    );
    let tok = ok(
        d,
        "POST",
        "/v1/auth/tokens",
        token,
        json!({"policies": ["auditor"], "name": format!("spare-{tag}")}),
    );
    let ta = ok(
        d,
        "POST",
        "/v1/pki/trust-anchors",
        token,
        json!({"name": format!("ta-{tag}"), "certificate_pem": ca["certificate"]}),
    );
    let wh = ok(
        d,
        "POST",
        "/v1/webhooks",
        token,
        json!({"url": format!("http://127.0.0.1:9/{tag}"), "events": ["certificate.*"], "secret": format!("secret-{tag}-0123456789abcdef")}),
    );
    let acct = ok(
        d,
        "POST",
        "/v1/pki/acme/accounts",
        token,
        json!({"name": format!("acme-{tag}"), "provider": "custom", "directory_url": p.directory_url, "email": format!("{tag}@example.com"), "directory_ca_pem": p.tls_ca_pem}),
    );
    let dns = ok(
        d,
        "POST",
        "/v1/pki/acme/dns-providers",
        token,
        json!({"name": format!("dns-{tag}"), "type": "powerdns", "config": {"api_url": "http://127.0.0.1:9", "api_key": format!("pdns-key-{tag}"), "server_id": "localhost"}}),
    );
    let mc = ok(
        d,
        "POST",
        "/v1/pki/acme/issue",
        token,
        json!({"account_id": acct["id"], "domains": [format!("mc.{tag}.test")], "challenge_type": "http-01"}),
    );
    Objects {
        token: token.to_owned(),
        ca: ca_id,
        role,
        serial: leaf["serial_number"].as_str().unwrap().to_owned(),
        csr: csr["id"].as_str().unwrap().to_owned(),
        csr_pem,
        cert_pem: leaf["certificate"].as_str().unwrap().to_owned(),
        api_token_id: tok["id"].as_str().unwrap().to_owned(),
        trust_anchor: ta["id"].as_str().unwrap().to_owned(),
        webhook: wh["id"].as_str().unwrap().to_owned(),
        acme_account: acct["id"].as_str().unwrap().to_owned(),
        dns_provider: dns["id"].as_str().unwrap().to_owned(),
        managed_cert: mc["id"].as_str().unwrap().to_owned(),
    }
}

/// Ids nobody has, in each kind's format.
fn missing() -> Objects {
    Objects {
        token: String::new(),
        ca: "ca_00000000000000000000000000000000".into(),
        role: "no-such-role".into(),
        serial: "7F:00:00:00:00:00:00:00:00:01".into(),
        csr: "csr_00000000000000000000000000000000".into(),
        csr_pem: String::new(),
        cert_pem: String::new(),
        api_token_id: "tok_00000000000000000000000000000000".into(),
        trust_anchor: "ta_00000000000000000000000000000000".into(),
        webhook: "wh_00000000000000000000000000000000".into(),
        acme_account: "acct_00000000000000000000000000000000".into(),
        dns_provider: "dns_00000000000000000000000000000000".into(),
        managed_cert: "mc_00000000000000000000000000000000".into(),
    }
}

/// The object a path parameter names.
fn param(path: &str, name: &str, o: &Objects) -> String {
    let kind = |prefix: &str| path.starts_with(prefix);
    match name {
        "id" if kind("/v1/pki/ca/") => o.ca.clone(),
        "id" if kind("/v1/pki/csr/") => o.csr.clone(),
        "id" if kind("/v1/auth/tokens/") => o.api_token_id.clone(),
        "id" if kind("/v1/pki/trust-anchors/") => o.trust_anchor.clone(),
        "id" if kind("/v1/webhooks/") => o.webhook.clone(),
        "id" if kind("/v1/pki/acme/accounts/") => o.acme_account.clone(),
        "id" if kind("/v1/pki/acme/dns-providers/") => o.dns_provider.clone(),
        "id" if kind("/v1/pki/acme/certificates/") => o.managed_cert.clone(),
        "name" | "role" if kind("/v1/pki/roles/") || kind("/v1/pki/issue/") || kind("/v1/pki/sign/") => o.role.clone(),
        "serial" => o.serial.clone(),
        "n" => "1".into(),
        _ => panic!("no fixture for path parameter {{{name}}} of {path}: add one to tests/tests/isolation.rs"),
    }
}

/// A request body naming the variant's objects, for the routes whose body refers to objects.
fn body(method: &str, path: &str, o: &Objects) -> Option<Value> {
    Some(match (method, path) {
        ("POST", "/v1/pki/ca") => {
            json!({"name": "iso-int", "common_name": "Iso", "ca_type": "intermediate", "parent_ca_id": o.ca, "validity_days": 10})
        }
        ("POST", "/v1/pki/roles") => {
            json!({"name": "iso-role", "ca_id": o.ca, "allowed_domains": ["iso.test"], "max_ttl": "1h"})
        }
        ("PUT", "/v1/pki/roles/{name}") => {
            json!({"ca_id": o.ca, "allowed_domains": ["iso.test"], "max_ttl": "1h"})
        }
        ("POST", "/v1/pki/revoke") => {
            json!({"serial_number": o.serial, "reason": "key_compromise"})
        }
        ("POST", "/v1/pki/issue/{role}") => json!({"common_name": "x.iso.test"}),
        ("POST", "/v1/pki/sign/{role}") => json!({"csr_pem": o.csr_pem}),
        ("POST", "/v1/pki/csr/{id}/sign") => json!({"ca_id": o.ca, "validity_days": 1}),
        ("POST", "/v1/pki/csr/{id}/approve" | "/v1/pki/csr/{id}/reject") => json!({}),
        ("POST", "/v1/pki/ca/{id}/signed-certificate") => {
            json!({"certificate_pem": o.cert_pem, "chain_pem": o.cert_pem})
        }
        ("POST", "/v1/pki/ca/{id}/crl/import") => json!({"crl_pem": "AAAA"}),
        ("POST", "/v1/pki/acme/issue") => {
            json!({"account_id": o.acme_account, "domains": ["iso.example.test"], "challenge_type": "dns-01", "dns_provider_id": o.dns_provider})
        }
        ("POST" | "PUT", p) if p.contains('{') => json!({}),
        _ => return None,
    })
}

fn fill(path: &str, o: &Objects) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => param(path, name, o),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Every identifying string of a tenant's objects.
fn needles(o: &Objects) -> Vec<String> {
    vec![
        o.ca.clone(),
        o.role.clone(),
        o.serial.clone(),
        o.csr.clone(),
        o.api_token_id.clone(),
        o.trust_anchor.clone(),
        o.webhook.clone(),
        o.acme_account.clone(),
        o.dns_provider.clone(),
        o.managed_cert.clone(),
    ]
}

#[test]
fn no_route_reads_or_writes_another_tenants_objects_under_any_policy() {
    let (http, tls) = (free_port(), free_port());
    let p = Pebble::start(&PebbleOptions::new(http, tls));
    let d = Daemon::start_with_config(&format!(
        "[acme]\nhttp_challenge_listen = \"127.0.0.1:{http}\"\ntls_challenge_listen = \"127.0.0.1:{tls}\"\n"
    ));
    // Tenant B and its admin, from the CLI.
    let out = d.cli(&["tenant", "create", "tenant-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&[
        "token", "create", "--tenant", "tenant-b", "--policy", "admin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b_admin = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let a = populate(&d, &p, &d.admin, "a");
    let b = populate(&d, &p, &b_admin, "b");
    let none = missing();

    // Tenant A's tokens, one per policy.
    let mut tokens: BTreeMap<String, String> = BTreeMap::new();
    tokens.insert("admin".into(), d.admin.clone());
    for pol in [
        "ca-admin",
        "auditor",
        "csr-approver",
        "csr-requester",
        "acme-operator",
        &format!("issuer:{}", a.role),
    ] {
        let t = ok(
            &d,
            "POST",
            "/v1/auth/tokens",
            &d.admin,
            json!({"policies": [pol]}),
        );
        tokens.insert(pol.to_owned(), t["token"].as_str().unwrap().to_owned());
    }

    let doc = d.get("/v1/openapi.json").json();
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0usize;
    let mut routes: Vec<(String, String, Value)> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .iter()
                .map(move |(m, op)| (m.to_uppercase(), path.clone(), op.clone()))
        })
        .collect();
    // Reads first, destructive calls last.
    routes.sort_by_key(|(m, ..)| match m.as_str() {
        "GET" => 0,
        "POST" | "PUT" => 1,
        _ => 2,
    });
    for (method, path, op) in &routes {
        if op["x-scaivault-access"] == "public" {
            continue; // public by design (CA certificates, CRLs, OCSP, health, metrics, this document)
        }
        let granted: Vec<&str> = op["x-scaivault-policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let has_params = path.contains('{');
        for (policy, token) in &tokens {
            let allowed = granted
                .iter()
                .any(|g| *g == policy || (*g == "issuer:{role}" && policy.starts_with("issuer:")));
            if has_params || body(method, path, &a).is_some() {
                let (s_other, v_other, t_other) = call(
                    &d,
                    method,
                    &fill(path, &b),
                    token,
                    body(method, path, &b).as_ref(),
                );
                let (s_none, v_none, t_none) = call(
                    &d,
                    method,
                    &fill(path, &none),
                    token,
                    body(method, path, &none).as_ref(),
                );
                assert!(!(200..300).contains(&s_other), "{policy}: {method} {path} with tenant B's object answered {s_other}: {t_other}");
                // The problem's `instance` echoes the request path the caller sent, and its
                // `detail` may repeat an id from it; nothing else may name B's objects.
                let mut shown = v_other.clone();
                if let Some(o) = shown.as_object_mut() {
                    o.remove("instance");
                    o.remove("detail");
                }
                let shown = shown.to_string();
                for n in needles(&b) {
                    assert!(
                        !shown.contains(&n),
                        "{policy}: {method} {path} leaked B's {n}: {t_other}"
                    );
                }
                assert_eq!(
                    (s_other, &v_other["code"]),
                    (s_none, &v_none["code"]),
                    "{policy}: {method} {path}: B's object and a missing one answer differently: {t_other} vs {t_none}"
                );
            }
            if !has_params && method == "GET" && allowed {
                // A list: never B's rows.
                let (s, _, text) = call(&d, method, path, token, None);
                assert_eq!(s, 200, "{policy}: {method} {path}: {text}");
                for n in needles(&b) {
                    assert!(
                        !text.contains(&n),
                        "{policy}: {method} {path} lists B's {n}"
                    );
                }
            }
            if method == "GET" && has_params {
                let (s, _, text) = call(&d, method, &fill(path, &a), token, None);
                if allowed {
                    assert_ne!(s, 403, "{policy} is granted {method} {path}: {text}");
                } else {
                    assert_eq!(s, 403, "{policy} is not granted {method} {path}: {text}");
                }
            } else if !allowed && has_params {
                let (s, _, text) = call(
                    &d,
                    method,
                    &fill(path, &a),
                    token,
                    body(method, path, &a).as_ref(),
                );
                assert_eq!(s, 403, "{policy} is not granted {method} {path}: {text}");
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} route × policy cells checked");

    // B's objects are all still there and unchanged.
    let get = |path: &str| call(&d, "GET", path, &b_admin, None);
    assert_eq!(get(&format!("/v1/pki/ca/{}", b.ca)).1["status"], "active");
    assert_eq!(get(&format!("/v1/pki/roles/{}", b.role)).0, 200);
    assert_eq!(
        get(&format!("/v1/pki/certificates/{}", b.serial)).1["status"],
        "valid"
    );
    assert_eq!(
        get(&format!("/v1/pki/csr/{}", b.csr)).1["status"],
        "pending"
    );
    assert_eq!(
        get(&format!("/v1/pki/trust-anchors/{}", b.trust_anchor)).0,
        200
    );
    assert_eq!(get(&format!("/v1/webhooks/{}", b.webhook)).0, 200);
    assert_eq!(
        get(&format!("/v1/pki/acme/accounts/{}", b.acme_account)).0,
        200
    );
    assert_eq!(
        get(&format!("/v1/pki/acme/dns-providers/{}", b.dns_provider)).0,
        200
    );
    assert_eq!(
        get(&format!("/v1/pki/acme/certificates/{}", b.managed_cert)).0,
        200
    );
    let toks = get("/v1/auth/tokens?limit=1000").2;
    assert!(toks.contains(&b.api_token_id), "{toks}");
    // Validation: A's trust store does not include B's CA.
    let v = ok(
        &d,
        "POST",
        "/v1/pki/certificates/validate",
        &a.token,
        json!({"certificate_pem": b.cert_pem}),
    );
    assert_eq!(v["valid"], false, "{v}");
    let v = ok(
        &d,
        "POST",
        "/v1/pki/certificates/validate",
        &a.token,
        json!({"certificate_pem": a.cert_pem}),
    );
    assert_eq!(v["valid"], true, "{v}");
    eprintln!(
        "{checked} route × policy cells checked over {} routes",
        routes.len()
    );
}
