//! The JSON bodies of the routes, as JSON Schema (2020-12, the dialect of OpenAPI 3.1) in
//! `GET /v1/openapi.json`: derived with `schemars` from the very types the handlers decode and
//! answer, so the document cannot drift from what the daemon does.
//!
//! Request bodies are described as they are read (the `Deserialize` contract: a field with a
//! default is optional, unknown fields are refused), answers as they are written (the `Serialize`
//! contract: a field the daemon always writes is required, `null` included). Each API module
//! registers its routes' types in its `bodies` function; a unit test checks that every route with
//! a JSON body or answer has its schema.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Where the document keeps its named schemas.
const DEFINITIONS: &str = "/components/schemas";

/// A route: method and OpenAPI path.
type Route = (&'static str, &'static str);

/// The request and answer schemas of each route, by method and OpenAPI path.
pub struct Bodies {
    requests: SchemaGenerator,
    answers: SchemaGenerator,
    routes: HashMap<Route, (Option<Value>, Option<Value>)>,
}

impl Bodies {
    fn new() -> Bodies {
        let settings = SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = DEFINITIONS.into();
            s.meta_schema = None;
        });
        Bodies {
            requests: settings.clone().for_deserialize().into_generator(),
            answers: settings.for_serialize().into_generator(),
            routes: HashMap::new(),
        }
    }

    /// `method path` reads a `Req` body.
    pub fn request<Req: JsonSchema>(&mut self, method: &'static str, path: &'static str) {
        let schema = self.requests.subschema_for::<Req>().to_value();
        self.routes.entry((method, path)).or_default().0 = Some(schema);
    }

    /// `method path` reads a `Req` body in which `fields` are required although `Req` lets them
    /// be left out (a role's `name`: required by `POST`, optional in `PUT`).
    pub fn request_requiring<Req: JsonSchema>(
        &mut self,
        method: &'static str,
        path: &'static str,
        fields: &[&str],
    ) {
        let schema = self.requests.subschema_for::<Req>().to_value();
        let schema = serde_json::json!({"allOf": [schema, {"required": fields}]});
        self.routes.entry((method, path)).or_default().0 = Some(schema);
    }

    /// `method path` answers a `Resp` body on success.
    pub fn answer<Resp: JsonSchema>(&mut self, method: &'static str, path: &'static str) {
        let schema = self.answers.subschema_for::<Resp>().to_value();
        self.routes.entry((method, path)).or_default().1 = Some(schema);
    }

    /// The request and answer schemas of `method path` (either may be absent).
    pub fn of(&self, method: &'static str, path: &'static str) -> (Option<&Value>, Option<&Value>) {
        self.routes
            .get(&(method, path))
            .map_or((None, None), |(req, resp)| (req.as_ref(), resp.as_ref()))
    }

    /// The routes that have a schema.
    #[cfg(test)]
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes.keys().map(|(m, p)| (*m, *p))
    }

    /// The named schemas the routes refer to, for `components/schemas`.
    ///
    /// A type that is both read and written (a role) has two schemas when they differ (what may be
    /// left out of a request is always in the answer): the answer keeps the name, the request's
    /// becomes `<Name>Request` and the references to it are rewritten.
    pub fn into_components(mut self) -> (Map<String, Value>, Self) {
        let mut out = self.answers.take_definitions(true);
        let mut requests = self.requests.take_definitions(true);
        let renamed: Vec<(String, String)> = requests
            .iter()
            .filter(|(name, schema)| out.get(*name).is_some_and(|a| a != *schema))
            .map(|(name, _)| (name.clone(), format!("{name}Request")))
            .collect();
        for (old, new) in &renamed {
            if let Some(schema) = requests.remove(old) {
                requests.insert(new.clone(), schema);
            }
        }
        let rewrite = |v: &mut Value| {
            for (old, new) in &renamed {
                rename_ref(
                    v,
                    &format!("#{DEFINITIONS}/{old}"),
                    &format!("#{DEFINITIONS}/{new}"),
                );
            }
        };
        for schema in requests.values_mut() {
            rewrite(schema);
        }
        for (req, _) in self.routes.values_mut() {
            if let Some(req) = req {
                rewrite(req);
            }
        }
        out.extend(requests);
        (out, self)
    }
}

/// A field's schema transform (`#[schemars(transform = OneOf(VALUES))]`): the string takes one of
/// `VALUES` — and `null` too where the field may be `null` — as `enum` in the document. The lists
/// are the ones the daemon parses with or writes from where it has one (`REASONS`, `KINDS`,
/// `EVENT_TYPES`); the others are below. An answer outside its list fails the tests' contract
/// check (`tests/src/contract.rs`), and so does an accepted request.
pub struct OneOf(pub &'static [&'static str]);

impl schemars::transform::Transform for OneOf {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        let nullable = match schema.get("type") {
            Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
            _ => false,
        };
        let mut values: Vec<Value> = self.0.iter().map(|v| Value::from(*v)).collect();
        if nullable {
            values.push(Value::Null);
        }
        schema.insert("enum".into(), Value::Array(values));
    }
}

/// Key types of CAs, roles and CSRs.
pub const KEY_TYPES: &[&str] = &["ec", "rsa", "ed25519"];
/// Key types of ACME certificates (`acme::order::key_spec`).
pub const ACME_KEY_TYPES: &[&str] = &["ec256", "ec384", "rsa2048", "rsa3072", "rsa4096"];
/// ACME challenge types.
pub const CHALLENGE_TYPES: &[&str] = &["http-01", "dns-01", "tls-alpn-01"];
/// States of a managed ACME certificate.
pub const ACME_CERT_STATES: &[&str] = &["pending", "valid", "failed"];
/// ACME providers (`acme::accounts`).
pub const ACME_PROVIDERS: &[&str] = &["letsencrypt", "zerossl", "buypass", "google", "custom"];
/// ACME directory environments.
pub const ACME_ENVIRONMENTS: &[&str] = &["production", "staging"];
/// States of an ACME account.
pub const ACME_ACCOUNT_STATES: &[&str] = &["valid", "deactivated"];
/// `root` or `intermediate`.
pub const CA_TYPES: &[&str] = &["root", "intermediate"];
/// States of a CA.
pub const CA_STATES: &[&str] = &["active", "pending_signature", "retired"];
/// Who signs a CA's OCSP responses.
pub const OCSP_SIGNERS: &[&str] = &["ca", "delegated"];
/// What a certificate in the inventory is.
pub const CERT_KINDS: &[&str] = &["ca", "leaf"];
/// States of a certificate in the inventory (`expired`: `valid` and past `not_after`).
pub const CERT_STATES: &[&str] = &["valid", "revoked", "expired"];
/// States of a CSR in the approval queue.
pub const CSR_STATES: &[&str] = &["pending", "approved", "rejected", "signing", "signed"];
/// What a certificate signed from an approved CSR is for.
pub const CSR_USAGES: &[&str] = &["server", "client", "both"];
/// How an issued private key is encoded (`der` and `pem`, as in Vault: the key type's default).
pub const PRIVATE_KEY_FORMATS: &[&str] = &["pkcs8", "der", "pem"];
/// A health component.
pub const HEALTH: &[&str] = &["ok", "unavailable"];
/// The scheduler's health.
pub const SCHEDULER_HEALTH: &[&str] = &["starting", "ok", "stalled"];
/// Storage backends.
pub const BACKENDS: &[&str] = &["sqlite", "postgres"];
/// What a certificate is validated for.
pub const PURPOSES: &[&str] = &["server_auth", "client_auth", "any"];
/// Where the trust anchor of a validated path comes from.
pub const ANCHOR_KINDS: &[&str] = &["trust_anchor", "internal_ca"];
/// States of a webhook delivery.
pub const DELIVERY_STATES: &[&str] = &["pending", "delivered", "failed"];

/// Rewrites every `"$ref": from` in `v` to `to`.
fn rename_ref(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "$ref" && child.as_str() == Some(from) {
                    *child = Value::String(to.to_owned());
                } else {
                    rename_ref(child, from, to);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| rename_ref(c, from, to)),
        _ => {}
    }
}

/// Every route's body schemas, from the API modules.
pub fn all() -> Bodies {
    let mut b = Bodies::new();
    super::acme::bodies(&mut b);
    super::audit::bodies(&mut b);
    super::ca::bodies(&mut b);
    super::certs::bodies(&mut b);
    super::csr::bodies(&mut b);
    super::health::bodies(&mut b);
    super::issue::bodies(&mut b);
    super::revoke::bodies(&mut b);
    super::roles::bodies(&mut b);
    super::tidy::bodies(&mut b);
    super::tokens::bodies(&mut b);
    super::trust::bodies(&mut b);
    super::webhooks::bodies(&mut b);
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_type_read_and_written_differently_gets_two_names_and_references_follow() {
        /// Both ways.
        #[derive(JsonSchema, serde::Serialize, serde::Deserialize)]
        struct Thing {
            #[serde(default)]
            maybe: Option<String>,
        }
        let mut b = Bodies::new();
        b.request::<Thing>("PUT", "/x");
        b.answer::<Thing>("PUT", "/x");
        let (components, b) = b.into_components();
        let (req, resp) = b.of("PUT", "/x");
        assert_eq!(
            req.unwrap(),
            &json!({"$ref": "#/components/schemas/ThingRequest"})
        );
        assert_eq!(
            resp.unwrap(),
            &json!({"$ref": "#/components/schemas/Thing"})
        );
        // Written always (null included), read optionally.
        assert_eq!(components["Thing"]["required"], json!(["maybe"]));
        assert!(components["ThingRequest"].get("required").is_none());
    }

    #[test]
    fn fields_with_a_fixed_set_of_values_carry_it_as_an_enum() {
        let (c, _) = all().into_components();
        let field = |schema: &str, f: &str| c[schema]["properties"][f].clone();
        assert_eq!(
            field("Ca", "status")["enum"],
            json!(["active", "pending_signature", "retired"])
        );
        // A field that may be left out or `null` keeps `null` among its values.
        assert_eq!(
            field("CreateCaRequest", "key_type")["enum"],
            json!(["ec", "rsa", "ed25519", null])
        );
        assert_eq!(field("RoleSpec", "key_type")["enum"], json!(KEY_TYPES));
        assert_eq!(
            field("Revoked", "reason")["enum"],
            json!(scaivault_core::crl::REASONS)
        );
        assert_eq!(
            field("ValidationError", "code")["enum"]
                .as_array()
                .map(Vec::len),
            Some(scaivault_core::validate::Code::ALL.len())
        );
    }
}
