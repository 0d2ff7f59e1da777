//! Who may call each route: one explicit entry per route, checked against the mounted routes by a
//! unit test (a route added without an entry fails it), and published as `GET /v1/openapi.json`,
//! from which `tests/tests/isolation.rs` generates its tenant-isolation matrix.
//!
//! The handlers enforce the policy themselves (`App::require`, `App::require_issuer`); this table
//! says what they enforce, and the matrix test checks that they do.

use crate::auth::{self, Perm};
use rocket::http::ContentType;
use rocket::{get, routes, Route};
use serde_json::{json, Map, Value};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (relying parties, load balancers, Prometheus).
    Public,
    /// Any valid token of the tenant (e.g. validation against the tenant's trust store).
    AnyToken,
    /// A token whose policies grant the permission.
    Perm(Perm),
    /// `admin` or `issuer:<role>` for the role in the path.
    Issuer,
}

/// Every route: method, path (OpenAPI form, `{param}`), access, and a one-line summary.
#[rustfmt::skip]
pub const ROUTES: &[(&str, &str, Access, &str)] = &[
    ("GET", "/v1/sys/health", Access::Public, "Health of token, database and scheduler"),
    ("GET", "/metrics", Access::Public, "Prometheus metrics (aggregates only)"),
    ("GET", "/v1/openapi.json", Access::Public, "This document"),
    ("POST", "/v1/pki/ca", Access::Perm(Perm::CaWrite), "Create a root or intermediate CA"),
    ("GET", "/v1/pki/ca", Access::Perm(Perm::CaRead), "List CAs"),
    ("GET", "/v1/pki/ca/{id}", Access::Perm(Perm::CaRead), "Read a CA"),
    ("GET", "/v1/pki/ca/{id}/certificate", Access::Public, "CA certificate (PEM or DER)"),
    ("GET", "/v1/pki/ca/{id}/chain", Access::Public, "CA chain (PEM)"),
    ("POST", "/v1/pki/ca/{id}/signed-certificate", Access::Perm(Perm::CaWrite), "Install an externally signed intermediate"),
    ("POST", "/v1/pki/ca/import", Access::Perm(Perm::CaWrite), "Import a CA (key on the token, or offline)"),
    ("DELETE", "/v1/pki/ca/{id}", Access::Perm(Perm::CaWrite), "Retire a CA"),
    ("GET", "/v1/pki/ca/{id}/crl", Access::Public, "The CA's CRL"),
    ("POST", "/v1/pki/ca/{id}/crl", Access::Perm(Perm::CaWrite), "Rebuild the CA's CRL now"),
    ("POST", "/v1/pki/ca/{id}/crl/import", Access::Perm(Perm::CaWrite), "Publish an offline CA's CRL"),
    ("POST", "/v1/pki/revoke", Access::Perm(Perm::CaWrite), "Revoke a certificate"),
    ("POST", "/v1/pki/ocsp/{ca_id}", Access::Public, "OCSP over POST"),
    ("GET", "/v1/pki/ocsp/{ca_id}/{request}", Access::Public, "OCSP over GET"),
    ("POST", "/v1/pki/tidy", Access::Perm(Perm::TokenAdmin), "Remove expired certificates"),
    ("POST", "/v1/auth/tokens", Access::Perm(Perm::TokenAdmin), "Create an API token"),
    ("GET", "/v1/auth/tokens", Access::Perm(Perm::TokenAdmin), "List API tokens"),
    ("DELETE", "/v1/auth/tokens/{id}", Access::Perm(Perm::TokenAdmin), "Revoke an API token"),
    ("GET", "/v1/audit", Access::Perm(Perm::AuditRead), "The audit log"),
    ("GET", "/v1/events", Access::Perm(Perm::EventsRead), "The events feed"),
    ("POST", "/v1/pki/roles", Access::Perm(Perm::RoleWrite), "Create a role"),
    ("GET", "/v1/pki/roles", Access::Perm(Perm::InventoryRead), "List roles"),
    ("GET", "/v1/pki/roles/{name}", Access::Perm(Perm::InventoryRead), "Read a role"),
    ("PUT", "/v1/pki/roles/{name}", Access::Perm(Perm::RoleWrite), "Replace a role"),
    ("DELETE", "/v1/pki/roles/{name}", Access::Perm(Perm::RoleWrite), "Delete a role"),
    ("POST", "/v1/pki/issue/{role}", Access::Issuer, "Issue a certificate with a new key"),
    ("POST", "/v1/pki/sign/{role}", Access::Issuer, "Sign a CSR under a role"),
    ("GET", "/v1/pki/certificates", Access::Perm(Perm::InventoryRead), "The certificate inventory"),
    ("GET", "/v1/pki/certificates/{serial}", Access::Perm(Perm::InventoryRead), "Read a certificate"),
    ("GET", "/v1/pki/certificates/{serial}/private-key", Access::Perm(Perm::KeyRead), "Read a stored private key"),
    ("POST", "/v1/pki/certificates/validate", Access::AnyToken, "Validate a certificate path"),
    ("POST", "/v1/pki/csr/import", Access::Perm(Perm::CsrImport), "Submit a CSR for review"),
    ("GET", "/v1/pki/csr", Access::Perm(Perm::CsrRead), "List CSRs"),
    ("GET", "/v1/pki/csr/{id}", Access::Perm(Perm::CsrRead), "Read a CSR"),
    ("POST", "/v1/pki/csr/{id}/approve", Access::Perm(Perm::CsrReview), "Approve a CSR"),
    ("POST", "/v1/pki/csr/{id}/reject", Access::Perm(Perm::CsrReview), "Reject a CSR"),
    ("POST", "/v1/pki/csr/{id}/sign", Access::Perm(Perm::CsrSign), "Sign an approved CSR"),
    ("POST", "/v1/pki/trust-anchors", Access::Perm(Perm::CaWrite), "Add a trust anchor"),
    ("GET", "/v1/pki/trust-anchors", Access::Perm(Perm::CaRead), "List trust anchors"),
    ("GET", "/v1/pki/trust-anchors/{id}", Access::Perm(Perm::CaRead), "Read a trust anchor"),
    ("DELETE", "/v1/pki/trust-anchors/{id}", Access::Perm(Perm::CaWrite), "Delete a trust anchor"),
    ("POST", "/v1/webhooks", Access::Perm(Perm::WebhookAdmin), "Create a webhook"),
    ("GET", "/v1/webhooks", Access::Perm(Perm::WebhookAdmin), "List webhooks"),
    ("GET", "/v1/webhooks/{id}", Access::Perm(Perm::WebhookAdmin), "Read a webhook"),
    ("DELETE", "/v1/webhooks/{id}", Access::Perm(Perm::WebhookAdmin), "Delete a webhook"),
    ("GET", "/v1/webhooks/{id}/deliveries", Access::Perm(Perm::WebhookAdmin), "A webhook's recent deliveries"),
    ("POST", "/v1/pki/acme/accounts", Access::Perm(Perm::AcmeWrite), "Register an ACME account"),
    ("GET", "/v1/pki/acme/accounts", Access::Perm(Perm::AcmeRead), "List ACME accounts"),
    ("GET", "/v1/pki/acme/accounts/{id}", Access::Perm(Perm::AcmeRead), "Read an ACME account"),
    ("DELETE", "/v1/pki/acme/accounts/{id}", Access::Perm(Perm::AcmeWrite), "Deactivate an ACME account"),
    ("POST", "/v1/pki/acme/dns-providers", Access::Perm(Perm::AcmeWrite), "Add a DNS provider"),
    ("GET", "/v1/pki/acme/dns-providers", Access::Perm(Perm::AcmeRead), "List DNS providers"),
    ("GET", "/v1/pki/acme/dns-providers/{id}", Access::Perm(Perm::AcmeRead), "Read a DNS provider (no secrets)"),
    ("DELETE", "/v1/pki/acme/dns-providers/{id}", Access::Perm(Perm::AcmeWrite), "Delete a DNS provider"),
    ("POST", "/v1/pki/acme/issue", Access::Perm(Perm::AcmeWrite), "Request a managed certificate"),
    ("GET", "/v1/pki/acme/certificates", Access::Perm(Perm::AcmeRead), "List managed certificates"),
    ("GET", "/v1/pki/acme/certificates/{id}", Access::Perm(Perm::AcmeRead), "Read a managed certificate"),
    ("DELETE", "/v1/pki/acme/certificates/{id}", Access::Perm(Perm::AcmeWrite), "Delete a managed certificate (no more renewals)"),
    ("GET", "/v1/pki/acme/certificates/{id}/versions", Access::Perm(Perm::AcmeRead), "A managed certificate's versions"),
    ("GET", "/v1/pki/acme/certificates/{id}/versions/{n}", Access::Perm(Perm::AcmeRead), "One version (the private key for admin only)"),
];

pub fn routes() -> Vec<Route> {
    routes![openapi]
}

/// The fixed policies (without `issuer:<role>`) that grant `access`.
fn policies_for(access: Access) -> Vec<String> {
    let mut out: Vec<String> = auth::KNOWN_POLICIES
        .iter()
        .filter(|p| match access {
            Access::Public | Access::AnyToken => true,
            Access::Perm(perm) => auth::allows(&[(**p).to_owned()], perm),
            Access::Issuer => **p == "admin",
        })
        .map(|p| (*p).to_owned())
        .collect();
    if matches!(access, Access::Issuer | Access::AnyToken) {
        out.push("issuer:{role}".into());
    }
    out
}

/// The status of a route's success, when it is not `200` (docs/API.md says which).
fn success_status(method: &str, path: &str) -> (u16, &'static str) {
    const CREATED: &[&str] = &[
        "/v1/pki/ca",
        "/v1/pki/ca/import",
        "/v1/pki/roles",
        "/v1/pki/csr/import",
        "/v1/auth/tokens",
        "/v1/pki/trust-anchors",
        "/v1/webhooks",
        "/v1/pki/acme/accounts",
        "/v1/pki/acme/dns-providers",
    ];
    const NO_CONTENT: &[&str] = &[
        "/v1/pki/roles/{name}",
        "/v1/pki/trust-anchors/{id}",
        "/v1/webhooks/{id}",
        "/v1/pki/acme/accounts/{id}",
        "/v1/pki/acme/dns-providers/{id}",
        "/v1/pki/acme/certificates/{id}",
    ];
    match method {
        "POST" if CREATED.contains(&path) => (201, "created"),
        "POST" if path == "/v1/pki/acme/issue" => {
            (202, "accepted: the order runs in the background")
        }
        "DELETE" if NO_CONTENT.contains(&path) => (204, "deleted"),
        _ => (200, "success"),
    }
}

/// The routes whose JSON body may be left out (an empty body reads as `{}`).
const OPTIONAL_BODY: &[&str] = &["/v1/pki/csr/{id}/approve", "/v1/pki/tidy"];

/// The schema of query parameter `name` of `path`: typed where the handler checks a type.
fn query_schema(path: &str, name: &str) -> Value {
    match name {
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": 1000}),
        "format" if path.ends_with("/crl") => json!({"type": "string", "enum": ["der", "pem"]}),
        "format" => json!({"type": "string", "enum": ["pem", "der"]}),
        "status" if path == "/v1/pki/certificates" => {
            json!({"type": "string", "enum": ["valid", "revoked", "expired"]})
        }
        "status" if path == "/v1/pki/csr" => {
            json!({"type": "string", "enum": ["pending", "approved", "rejected", "signed"]})
        }
        "since" => json!({"type": "string", "format": "date-time"}),
        "expiring_within" => {
            json!({"type": "string", "description": "a duration: 720h, 30d, 1h30m"})
        }
        _ => json!({"type": "string"}),
    }
}

/// The media types of a route's success body, when it is not JSON.
fn success_media(path: &str) -> Option<&'static [&'static str]> {
    match path {
        "/v1/pki/ca/{id}/certificate" => Some(&["application/x-pem-file", "application/pkix-cert"]),
        "/v1/pki/ca/{id}/chain" => Some(&["application/x-pem-file"]),
        "/v1/pki/ocsp/{ca_id}" | "/v1/pki/ocsp/{ca_id}/{request}" => {
            Some(&["application/ocsp-response"])
        }
        "/metrics" => Some(&["text/plain"]),
        _ => None,
    }
}

/// The RFC 9457 problem document every error answer carries.
fn problem_schema() -> Value {
    json!({
        "type": "object",
        // Every problem document the daemon writes has every field (`api/problem.rs`).
        "required": ["type", "title", "status", "detail", "code", "request_id", "instance"],
        "properties": {
            "type": {"type": "string", "description": "urn:scaivault:problem:<code>"},
            "title": {"type": "string", "description": "the HTTP status's reason phrase"},
            "status": {"type": "integer"},
            "detail": {"type": "string", "description": "what was wrong, naming the offending value or rule"},
            "code": {"type": "string", "description": "stable, machine-readable (docs/API.md lists them per route)"},
            "request_id": {"type": "string", "description": "also the X-Request-Id header, and the key to the daemon's log lines for the request"},
            "instance": {"type": "string", "description": "the request's path"},
        },
    })
}

/// `/v1/pki/ca/<id>/crl?<format>` → `/v1/pki/ca/{id}/crl`.
fn openapi_path(rocket_path: &str) -> String {
    rocket_path
        .split('/')
        .map(|seg| {
            match seg
                .strip_prefix('<')
                .and_then(|s| s.strip_suffix('>'))
                .map(|s| s.trim_end_matches("..").trim_start_matches('_'))
            {
                Some(name) => format!("{{{name}}}"),
                None => seg.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The query parameters of each mounted route, by method and OpenAPI path: the names in its
/// query (`?<limit>&<cursor>`).
fn query_params() -> std::collections::HashMap<(String, String), Vec<String>> {
    super::all_routes()
        .iter()
        .map(|r| {
            let names = r
                .uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter_map(|p| p.strip_prefix('<').and_then(|p| p.strip_suffix('>')))
                .map(|p| p.trim_end_matches("..").to_owned())
                .collect();
            (
                (r.method.as_str().to_owned(), openapi_path(r.uri.path())),
                names,
            )
        })
        .collect()
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn document() -> Value {
    let queries = query_params();
    let (schemas, bodies) = super::schemas::all().into_components();
    let mut paths = Map::new();
    for (method, path, access, summary) in ROUTES {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let query = queries
            .get(&((*method).to_owned(), (*path).to_owned()))
            .map_or(&[][..], Vec::as_slice);
        params.extend(query.iter().map(|name| {
            json!({"name": name, "in": "query", "required": false, "schema": query_schema(path, name)})
        }));
        let (status, what) = success_status(method, path);
        let (request, answer) = bodies.of(method, path);
        let mut success = json!({"description": format!("{what} (more in docs/API.md)")});
        if status != 204 {
            let media: &[&str] = match (success_media(path), *path) {
                (Some(m), _) => m,
                (None, "/v1/pki/ca/{id}/crl") if *method == "GET" => {
                    &["application/pkix-crl", "application/x-pem-file"]
                }
                (None, _) => &["application/json"],
            };
            success["content"] = media
                .iter()
                .map(|m| {
                    let body = match answer {
                        Some(schema) if *m == "application/json" => json!({"schema": schema}),
                        _ => json!({}),
                    };
                    ((*m).to_owned(), body)
                })
                .collect::<Map<String, Value>>()
                .into();
        }
        // `post_v1_pki_ca_id_crl`: a name code generators take as it is.
        let operation_id = format!("{method}{path}")
            .to_ascii_lowercase()
            .replace(['/', '-', '.'], "_")
            .replace(['{', '}'], "");
        let mut op = json!({
            "summary": summary,
            "operationId": operation_id,
            "parameters": params,
            "responses": {
                status.to_string(): success,
                "default": {
                    "description": "an RFC 9457 problem document",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                },
            },
        });
        if *method == "POST" && path.starts_with("/v1/pki/ocsp/") {
            op["requestBody"] =
                json!({"required": true, "content": {"application/ocsp-request": {}}});
        }
        if let Some(schema) = request {
            op["requestBody"] = json!({
                "required": !OPTIONAL_BODY.contains(path),
                "content": {"application/json": {"schema": schema}},
            });
        }
        if *path == "/v1/sys/health" {
            op["responses"]["503"] = json!({"description": "not ready: the token, the database or the scheduler (the body says which)"});
        }
        if *access == Access::Public {
            op["security"] = json!([]);
            op["x-scaivault-access"] = json!("public");
        } else {
            op["x-scaivault-access"] = json!(match access {
                Access::AnyToken => "any-token".to_owned(),
                Access::Issuer => "issuer".to_owned(),
                Access::Perm(p) => format!("{p:?}"),
                Access::Public => "public".to_owned(),
            });
            op["x-scaivault-policies"] = json!(policies_for(*access));
        }
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        entry[method.to_ascii_lowercase()] = op;
    }
    let mut schemas = schemas;
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {"title": "ScaiVault PKI", "version": env!("CARGO_PKG_VERSION")},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

#[get("/v1/openapi.json")]
fn openapi() -> (ContentType, &'static str) {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        ContentType::JSON,
        DOCUMENT.get_or_init(|| document().to_string()),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_document_names_query_parameters_and_success_statuses() {
        let doc = document();
        let op = |m: &str, p: &str| doc["paths"][p][m].clone();
        let names = |v: &Value, place: &str| -> Vec<String> {
            v["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == place)
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let list = op("get", "/v1/pki/certificates");
        assert_eq!(
            names(&list, "query"),
            [
                "ca_id",
                "role",
                "status",
                "expiring_within",
                "limit",
                "cursor"
            ]
        );
        let crl = op("get", "/v1/pki/ca/{id}/crl");
        assert_eq!(names(&crl, "path"), ["id"]);
        assert_eq!(names(&crl, "query"), ["format"]);
        // Typed parameters, media types, error documents.
        assert_eq!(
            list["parameters"][4]["schema"],
            json!({"type": "integer", "minimum": 1, "maximum": 1000})
        );
        assert_eq!(
            list["parameters"][2]["schema"]["enum"],
            json!(["valid", "revoked", "expired"])
        );
        assert!(crl["responses"]["200"]["content"]["application/pkix-crl"].is_object());
        assert!(list["responses"]["200"]["content"]["application/json"].is_object());
        assert_eq!(
            list["responses"]["default"]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
        assert_eq!(list["operationId"], "get_v1_pki_certificates");
        assert!(doc["components"]["schemas"]["Problem"]["properties"]["code"].is_object());
        for (m, p, status) in [
            ("get", "/v1/sys/health", "503"),
            ("post", "/v1/pki/roles", "201"),
            ("delete", "/v1/pki/roles/{name}", "204"),
            ("post", "/v1/pki/acme/issue", "202"),
            ("post", "/v1/pki/issue/{role}", "200"),
            ("delete", "/v1/pki/ca/{id}", "200"),
        ] {
            let responses = op(m, p)["responses"].clone();
            assert!(responses[status].is_object(), "{m} {p}: {responses}");
            assert!(responses["default"].is_object(), "{m} {p}: {responses}");
        }
    }

    /// Every JSON body a route reads or writes has its schema in the document, and every schema
    /// belongs to a route of the table; the named schemas are the ones referred to, none renamed
    /// by a clash of two types' names (`IssueRequest2`).
    #[test]
    fn every_json_body_has_its_schema() {
        let doc = document();
        let bodies = crate::api::schemas::all();
        for (m, p) in bodies.routes() {
            assert!(
                ROUTES.iter().any(|(rm, rp, ..)| *rm == m && *rp == p),
                "a schema for {m} {p}, which is not in ROUTES"
            );
        }
        for (m, p, ..) in ROUTES {
            let op = &doc["paths"][p][m.to_ascii_lowercase()];
            let (status, _) = success_status(m, p);
            let json = &op["responses"][status.to_string()]["content"]["application/json"];
            // This document: an OpenAPI document, not described again.
            if !json.is_null() && *p != "/v1/openapi.json" {
                assert!(
                    json["schema"]["$ref"].is_string(),
                    "{m} {p} answers JSON without a schema"
                );
            }
            // A body is read by every POST and PUT but OCSP (DER) and a CRL rebuild (none).
            let reads = matches!(*m, "POST" | "PUT")
                && !p.starts_with("/v1/pki/ocsp/")
                && *p != "/v1/pki/ca/{id}/crl";
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            assert_eq!(schema.is_object(), reads, "{m} {p}: request body {op}");
        }
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in schemas.keys() {
            assert!(
                !name.ends_with(|c: char| c.is_ascii_digit()),
                "two types are named {name}: rename one (#[schemars(rename)])"
            );
            let reference = format!("\"#/components/schemas/{name}\"");
            assert!(
                name == "Problem" || text.contains(&reference),
                "{name} is not referred to"
            );
        }
        // Read one way, written another: two schemas; a creation needs the name a `PUT` may
        // leave out.
        assert_eq!(
            doc["paths"]["/v1/pki/roles"]["post"]["requestBody"]["content"]["application/json"]
                ["schema"],
            json!({"allOf": [{"$ref": "#/components/schemas/RoleSpecRequest"}, {"required": ["name"]}]})
        );
        assert_eq!(
            doc["paths"]["/v1/pki/roles/{name}"]["put"]["requestBody"]["content"]
                ["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/RoleSpecRequest"})
        );
        assert_eq!(
            schemas["RejectCsrRequest"]["required"],
            json!(["reason"]),
            "a rejection needs its reason: {}",
            schemas["RejectCsrRequest"]
        );
        assert_eq!(schemas["RoleSpecRequest"]["required"], json!(["ca_id"]));
        assert_eq!(
            schemas["RoleSpecRequest"]["additionalProperties"],
            json!(false)
        );
        let issue = &schemas["IssueRequest"]["properties"];
        assert!(issue["alt_names"].is_object(), "{issue}");
        assert_eq!(
            doc["paths"]["/v1/pki/tidy"]["post"]["requestBody"]["required"],
            json!(false)
        );
    }

    #[test]
    fn every_mounted_route_has_exactly_one_access_entry_and_back() {
        let mounted: Vec<(String, String)> = super::super::all_routes()
            .iter()
            .map(|r| (r.method.as_str().to_owned(), openapi_path(r.uri.path())))
            .collect();
        for (m, p) in &mounted {
            let n = ROUTES
                .iter()
                .filter(|(rm, rp, ..)| rm == m && rp == p)
                .count();
            assert_eq!(n, 1, "route {m} {p} has {n} entries in api::access::ROUTES");
        }
        for (m, p, ..) in ROUTES {
            assert!(
                mounted.iter().any(|(mm, mp)| mm == m && mp == p),
                "ROUTES names {m} {p}, which is not mounted"
            );
        }
    }

    #[test]
    fn the_document_names_the_policies_of_each_route() {
        let d = document();
        let op = &d["paths"]["/v1/audit"]["get"];
        let pols: Vec<&str> = op["x-scaivault-policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            pols.contains(&"admin") && pols.contains(&"auditor"),
            "{pols:?}"
        );
        assert!(!pols.contains(&"csr-approver"), "{pols:?}");
        assert_eq!(
            d["paths"]["/v1/pki/ca/{id}/crl"]["get"]["security"],
            json!([])
        );
        assert_eq!(
            d["paths"]["/v1/pki/issue/{role}"]["post"]["x-scaivault-policies"],
            json!(["admin", "issuer:{role}"])
        );
        // Open to every token: issuer tokens included.
        let any = d["paths"]["/v1/pki/certificates/validate"]["post"]["x-scaivault-policies"]
            .as_array()
            .unwrap()
            .clone();
        assert!(any.contains(&json!("issuer:{role}")), "{any:?}");
        assert!(any.contains(&json!("auditor")), "{any:?}");
    }
}
