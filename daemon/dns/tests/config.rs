//! Config checks: `validate` names the offending field, unknown keys are refused, the common
//! options parse, `secret_keys` lists each kind's secrets, and no secret shows in Debug output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use scaivault_dns::{DnsError, KINDS};
use serde_json::{json, Value};

/// A throwaway RSA key in PKCS#8 PEM (generated once per run).
fn pem() -> &'static str {
    static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PEM.get_or_init(|| {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string()
    })
}

fn good(kind: &str) -> Value {
    match kind {
        "rfc2136" => json!({"server": "ns1.example.com:53", "zone": "example.com",
            "tsig_key_name": "acme.", "tsig_algorithm": "hmac-sha256",
            "tsig_secret": "c2VjcmV0LXRzaWcta2V5LWZvci10ZXN0cw=="}),
        "powerdns" => json!({"api_url": "http://127.0.0.1:8081", "api_key": "pdns-secret-key"}),
        "route53" => json!({"access_key_id": "AKIAEXAMPLE", "secret_access_key": "r53-secret-key",
            "region": "us-east-1", "hosted_zone_id": "Z0123456789"}),
        "cloudflare" => json!({"api_token": "cf-secret-token"}),
        "google" => json!({"project": "my-project", "service_account_json": json!({
            "type": "service_account", "client_email": "a@b.iam.gserviceaccount.com",
            "private_key": pem(), "token_uri": "https://oauth2.googleapis.com/token"}).to_string()}),
        _ => unreachable!(),
    }
}

fn field_of(r: Result<(), DnsError>) -> String {
    match r {
        Err(DnsError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn good_configs_validate_and_build_without_network() {
    for kind in KINDS {
        let cfg = good(kind);
        scaivault_dns::validate(kind, &cfg).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let p = scaivault_dns::build(kind, &cfg).unwrap();
        // No secret in Debug output.
        let debug = format!("{p:?}");
        for key in scaivault_dns::secret_keys(kind) {
            let secret = cfg[key].as_str().unwrap();
            let probe = if *key == "service_account_json" {
                pem().lines().nth(1).unwrap()
            } else {
                secret
            };
            assert!(!debug.contains(probe), "{kind}: {debug}");
        }
        let opts = scaivault_dns::options(&cfg).unwrap();
        assert_eq!(opts.propagation_timeout, Duration::from_secs(120));
        assert!(opts.resolvers.is_empty());
    }
}

#[test]
fn secret_keys_per_kind() {
    assert_eq!(scaivault_dns::secret_keys("rfc2136"), ["tsig_secret"]);
    assert_eq!(scaivault_dns::secret_keys("powerdns"), ["api_key"]);
    assert_eq!(scaivault_dns::secret_keys("route53"), ["secret_access_key"]);
    assert_eq!(scaivault_dns::secret_keys("cloudflare"), ["api_token"]);
    assert_eq!(
        scaivault_dns::secret_keys("google"),
        ["service_account_json"]
    );
    assert!(scaivault_dns::secret_keys("nope").is_empty());
}

#[test]
fn unknown_kind() {
    let err = scaivault_dns::validate("godaddy", &json!({})).unwrap_err();
    assert!(matches!(err, DnsError::UnknownKind(_)));
    assert_eq!(err.code(), "dns_provider_unknown_type");
    assert!(scaivault_dns::build("godaddy", &json!({})).is_err());
}

#[test]
fn each_required_field_is_named_when_missing() {
    let required: &[(&str, &[&str])] = &[
        (
            "rfc2136",
            &["server", "zone", "tsig_key_name", "tsig_secret"],
        ),
        ("powerdns", &["api_url", "api_key"]),
        (
            "route53",
            &[
                "access_key_id",
                "secret_access_key",
                "region",
                "hosted_zone_id",
            ],
        ),
        ("cloudflare", &["api_token"]),
        ("google", &["project", "service_account_json"]),
    ];
    for (kind, keys) in required {
        for key in *keys {
            let mut cfg = good(kind);
            cfg.as_object_mut().unwrap().remove(*key);
            assert_eq!(
                field_of(scaivault_dns::validate(kind, &cfg)),
                *key,
                "{kind}"
            );
            let mut cfg = good(kind);
            cfg[*key] = json!("");
            assert_eq!(
                field_of(scaivault_dns::validate(kind, &cfg)),
                *key,
                "{kind} empty"
            );
            let mut cfg = good(kind);
            cfg[*key] = json!(42);
            assert_eq!(
                field_of(scaivault_dns::validate(kind, &cfg)),
                *key,
                "{kind} number"
            );
        }
    }
}

#[test]
fn malformed_fields_are_named() {
    let cases: &[(&str, &str, Value)] = &[
        ("rfc2136", "server", json!("ns1.example.com:notaport")),
        ("rfc2136", "zone", json!("bad..zone")),
        ("rfc2136", "tsig_algorithm", json!("hmac-md5")),
        ("rfc2136", "tsig_algorithm", json!("hmac-sha1")),
        ("rfc2136", "tsig_secret", json!("not base64!")),
        ("powerdns", "api_url", json!("ftp://example.com")),
        ("powerdns", "api_url", json!("not a url")),
        ("powerdns", "server_id", json!("a/b")),
        ("route53", "region", json!("US East")),
        ("route53", "hosted_zone_id", json!("Z12/../x")),
        ("route53", "endpoint_url", json!("http://user:pw@host")),
        ("cloudflare", "zone_id", json!("not-an-id!")),
        ("cloudflare", "api_base_url", json!("file:///etc/passwd")),
        ("google", "service_account_json", json!("{not json")),
        (
            "google",
            "service_account_json",
            json!({"type": "authorized_user"}),
        ),
        (
            "google",
            "service_account_json",
            json!({"type": "service_account", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
        ),
        ("google", "api_base_url", json!("nope")),
    ];
    for (kind, key, value) in cases {
        let mut cfg = good(kind);
        cfg[*key] = value.clone();
        let err = scaivault_dns::validate(kind, &cfg).unwrap_err();
        assert_eq!(err.code(), "dns_provider_invalid_config");
        assert_eq!(field_of(Err(err.clone())), *key, "{kind} {key} {value}");
        // The error never repeats a secret value.
        for s in scaivault_dns::secret_keys(kind) {
            if let Some(secret) = cfg[*s].as_str() {
                assert!(
                    !err.to_string().contains(secret) || secret.len() < 8,
                    "{err}"
                );
            }
        }
    }
    // Optional algorithms.
    for alg in ["hmac-sha256", "hmac-sha384", "hmac-sha512", "HMAC-SHA512."] {
        let mut cfg = good("rfc2136");
        cfg["tsig_algorithm"] = json!(alg);
        scaivault_dns::validate("rfc2136", &cfg).unwrap();
    }
    let mut cfg = good("rfc2136");
    cfg.as_object_mut().unwrap().remove("tsig_algorithm");
    scaivault_dns::validate("rfc2136", &cfg).unwrap();
}

#[test]
fn unknown_keys_are_refused_and_named() {
    for kind in KINDS {
        let mut cfg = good(kind);
        cfg["tsig_secrett"] = json!("x");
        assert_eq!(
            field_of(scaivault_dns::validate(kind, &cfg)),
            "tsig_secrett"
        );
    }
    // A key of another kind is unknown here.
    let mut cfg = good("cloudflare");
    cfg["zone"] = json!("example.com");
    assert_eq!(
        field_of(scaivault_dns::validate("cloudflare", &cfg)),
        "zone"
    );
    // Not an object at all.
    assert_eq!(
        field_of(scaivault_dns::validate("cloudflare", &json!([1]))),
        "config"
    );
}

#[test]
fn common_options() {
    let mut cfg = good("powerdns");
    for (v, secs) in [
        (json!("90s"), 90),
        (json!("2m"), 120),
        (json!("1m30s"), 90),
        (json!("1h"), 3600),
        (json!("0"), 0),
        (json!(45), 45),
    ] {
        cfg["propagation_timeout"] = v;
        scaivault_dns::validate("powerdns", &cfg).unwrap();
        assert_eq!(
            scaivault_dns::options(&cfg).unwrap().propagation_timeout,
            Duration::from_secs(secs)
        );
    }
    for bad in [
        json!("soon"),
        json!("-1s"),
        json!("3h"),
        json!(1.5),
        json!(true),
    ] {
        cfg["propagation_timeout"] = bad.clone();
        assert_eq!(
            field_of(scaivault_dns::validate("powerdns", &cfg)),
            "propagation_timeout",
            "{bad}"
        );
        assert!(scaivault_dns::options(&cfg).is_err());
    }
    cfg["propagation_timeout"] = json!("30s");
    cfg["resolvers"] = json!(["127.0.0.1:5353", "::1", "192.0.2.1"]);
    let opts = scaivault_dns::options(&cfg).unwrap();
    assert_eq!(
        opts.resolvers,
        vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap()
        ]
    );
    for bad in [json!("127.0.0.1:53"), json!(["dns.google:53"]), json!([53])] {
        cfg["resolvers"] = bad.clone();
        assert_eq!(
            field_of(scaivault_dns::validate("powerdns", &cfg)),
            "resolvers",
            "{bad}"
        );
    }
}

/// Credentials that go into a header or a signature: a pasted CR/LF, NUL or space is refused at
/// creation, naming the key and not the value, instead of failing every order later.
#[test]
fn credentials_with_control_characters_are_refused_at_creation() {
    for (kind, key) in [
        ("powerdns", "api_key"),
        ("route53", "secret_access_key"),
        ("cloudflare", "api_token"),
    ] {
        for bad in ["SECRETX\r\nX-Evil: 1", "SECRETX\u{0}", "two SECRETX"] {
            let mut cfg = good(kind);
            cfg[key] = json!(bad);
            let err = scaivault_dns::validate(kind, &cfg).unwrap_err();
            assert_eq!(err.code(), "dns_provider_invalid_config", "{kind} {bad:?}");
            assert!(!err.to_string().contains("SECRETX"), "{kind}: {err}");
            assert_eq!(
                field_of(scaivault_dns::validate(kind, &cfg)),
                key,
                "{kind} {bad:?}"
            );
        }
    }
}
