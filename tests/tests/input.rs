//! Hostile and malformed input gets a problem document with a stable code, never a 500, and the
//! daemon keeps serving; secrets never reach the log, the process's command line or the audit
//! trail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::Daemon;
use serde_json::json;

#[test]
fn bad_requests_get_problem_documents_and_the_daemon_keeps_serving() {
    let d = Daemon::start();
    let post = |body: &[u8]| d.call("POST", "/v1/pki/ca", Some(&d.admin), Some(body));
    post(b"{not json").problem(400, "invalid_json");
    post(b"").problem(400, "invalid_json");
    // Every body is an object: an array is not read as the struct's fields by position.
    post(b"[]").problem(400, "invalid_json");
    post(br#"["a","A","root",1]"#).problem(400, "invalid_json");
    post(b" null").problem(400, "invalid_json");
    post(br#"{"name":"a","common_name":"A","ca_type":"root","validity_days":1,"bogus":true}"#)
        .problem(400, "unknown_field");
    post(br#"{"name":"a","ca_type":"root","validity_days":1}"#).problem(400, "missing_field");
    let p = post(br#"{"name":"a","common_name":"A","ca_type":"root","validity_days":"ten"}"#)
        .problem(400, "invalid_field");
    // The detail names the field the wrong value is in (the value is not echoed).
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("validity_days: invalid type: string"),
        "{detail}"
    );
    let p = post(br#"{"name":null,"common_name":"A","ca_type":"root","validity_days":1}"#)
        .problem(400, "invalid_field");
    assert!(p["detail"].as_str().unwrap().starts_with("name: "), "{p}");
    let p = post(br#"{"name":"a","common_name":"A","ca_type":"root","validity_days":1,"permitted_dns_domains":["a.example",7]}"#)
        .problem(400, "invalid_field");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .starts_with("permitted_dns_domains[1]: "),
        "{p}"
    );
    // Not JSON at all is invalid_json, whatever a field-by-field decode would have met first:
    // cut off after a field name, trailing characters, a NaN.
    for body in [
        &br#"{"a":"#[..],
        b"{} x",
        br#"{"x":NaN}"#,
        br#"{"name":"a""#,
    ] {
        let p = post(body).problem(400, "invalid_json");
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{p}");
    }
    // A large wrong-typed value is neither echoed back nor logged.
    let canary = format!("wrongtyped{}", "x".repeat(200_000));
    let p = post(
        format!(r#"{{"name":"a","common_name":"A","ca_type":"root","validity_days":"{canary}"}}"#)
            .as_bytes(),
    )
    .problem(400, "invalid_field");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.len() < 400 && !detail.contains("wrongtyped"),
        "{detail}"
    );
    assert!(
        !d.log_text().contains("wrongtyped"),
        "the value reached the log"
    );
    // A number where a string (a secret, say) belongs is not echoed either.
    let p = d
        .post(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/x", "events": ["*"], "secret": 98765432109876543u64}),
        )
        .problem(400, "invalid_field");
    let detail = p["detail"].as_str().unwrap();
    assert!(!detail.contains("98765432109876543"), "{detail}");
    assert!(
        !d.log_text().contains("98765432109876543"),
        "the value reached the log"
    );
    // A repeated query parameter is refused, not dropped (which would silently unfilter a list).
    for q in [
        "status=expired&status=expired",
        "limit=1&limit=2",
        "ca_id=a&role=r&ca_id=b",
    ] {
        let p = d
            .get(&format!("/v1/pki/certificates?{q}"))
            .problem(400, "repeated_query_parameter");
        assert!(
            p["detail"].as_str().unwrap().contains("more than once"),
            "{p}"
        );
    }
    assert_eq!(
        d.get("/v1/pki/certificates?status=valid&limit=5").status,
        200
    );
    // A misspelt filter is refused, not ignored (which would answer the whole inventory); the
    // detail names the parameters the endpoint takes. Endpoints without a query refuse any.
    let p = d
        .get("/v1/pki/certificates?stauts=revoked")
        .problem(400, "unknown_query_parameter");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("\"stauts\"") && detail.contains("status"),
        "{p}"
    );
    d.get("/v1/pki/roles?ca_id=x")
        .problem(400, "unknown_query_parameter");

    // The token is checked first (401 before 400), and the public endpoints refuse a repeated
    // `format` too instead of answering in the default format.
    d.call("GET", "/v1/pki/certificates?limit=1&limit=2", None, None)
        .problem(401, "unauthorized");
    let root = d.create_root("q", "ec", None);
    let id = root["id"].as_str().unwrap();
    let p = d
        .get(&format!("/v1/pki/ca/{id}?verbose=1"))
        .problem(400, "unknown_query_parameter");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("no query parameters"),
        "{p}"
    );
    for path in [
        format!("/v1/pki/ca/{id}/certificate?format=der&format=der"),
        format!("/v1/pki/ca/{id}/crl?format=pem&format=pem"),
    ] {
        d.call("GET", &path, None, None)
            .problem(400, "repeated_query_parameter");
    }
    // A cursor that was never handed out (row ids start at 1).
    d.get("/v1/pki/certificates?cursor=c-1")
        .problem(400, "invalid_cursor");
    // A CA id too long for a file name is no CA's (not a 503 from the file system).
    d.get(&format!("/v1/pki/ca/ca_{}/crl", "a".repeat(300)))
        .problem(404, "ca_not_found");
    post(br#"{"name":"a","common_name":"A","ca_type":"root","key_type":"dsa","validity_days":1}"#)
        .problem(400, "invalid_key_type");
    post(br#"{"name":"a","common_name":"A","ca_type":"root","key_type":"ec","key_size":521,"validity_days":1}"#).problem(400, "invalid_key_type");
    post(br#"{"name":"a","common_name":"","ca_type":"root","validity_days":1}"#)
        .problem(400, "invalid_subject");
    // The name's limit is in bytes (API.md), and the refusal says so: 50 CJK characters are 150.
    let p = post(
        format!(
            r#"{{"name":"{}","common_name":"A","ca_type":"root","validity_days":1}}"#,
            "名".repeat(50)
        )
        .as_bytes(),
    )
    .problem(400, "invalid_name");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("128 bytes of UTF-8 (this one is 150)"),
        "{p}"
    );
    post(
        format!(
            r#"{{"name":"a","common_name":"{}","ca_type":"root","validity_days":1}}"#,
            "x".repeat(65)
        )
        .as_bytes(),
    )
    .problem(400, "invalid_subject");
    post(br#"{"name":"a","common_name":"A","country":"Netherlands","ca_type":"root","validity_days":1}"#).problem(400, "invalid_subject");
    post(br#"{"name":"a","common_name":"A","ca_type":"root","validity_days":1,"crl_interval":"soon"}"#).problem(400, "invalid_duration");
    post(br#"{"name":"a","common_name":"A","ca_type":"root","validity_days":1,"permitted_ip_ranges":["10.0.0.0/33"]}"#).problem(400, "invalid_ip_range");
    let p = post(br#"{"name":"a","common_name":"A","ca_type":"root","validity_days":1,"permitted_ip_ranges":["fd00:1::/8"]}"#).problem(400, "invalid_ip_range");
    assert!(p["detail"].as_str().unwrap().contains("fd00::/8"), "{p}");
    post(
        br#"{"name":"a","common_name":"A","ca_type":"root","validity_days":99999999999999999999}"#,
    )
    .problem(400, "invalid_field");
    post(br#"{"name":"a","common_name":"A\u0000B","ca_type":"root","validity_days":1}"#)
        .problem(400, "invalid_subject");
    // Invisible characters: a zero-width space makes a look-alike, an override reverses text.
    post(br#"{"name":"a","common_name":"Pay\u200bments","ca_type":"root","validity_days":1}"#)
        .problem(400, "invalid_subject");
    post(br#"{"name":"bill\u200bing","common_name":"A","ca_type":"root","validity_days":1}"#)
        .problem(400, "invalid_name");
    post(br#"{"name":"bill\u202eing","common_name":"A","ca_type":"root","validity_days":1}"#)
        .problem(400, "invalid_name");
    // Larger than the 1 MiB default limit.
    let big = json!({"name": "x".repeat(1_100_000)}).to_string();
    post(big.as_bytes()).problem(413, "body_too_large");
    // Unknown routes and bad parameters.
    d.get("/v1/nothing-here").problem(404, "not_found");
    d.get("/v1/pki/ca?limit=0").problem(400, "invalid_limit");
    d.get("/v1/pki/ca?limit=abc").problem(400, "invalid_limit");
    d.get("/v1/pki/ca?cursor=zzz")
        .problem(400, "invalid_cursor");
    d.call("GET", "/v1/pki/ca/ca_x/certificate?format=txt", None, None)
        .problem(404, "ca_not_found");
    d.post(
        "/v1/pki/ca/ca_x/signed-certificate",
        &json!({"certificate_pem": "x", "chain_pem": "y"}),
    )
    .problem(404, "ca_not_found");
    // A client-chosen request id is echoed when plain, replaced when not.
    assert_eq!(d.call("GET", "/v1/sys/health", None, None).status, 200);
    let health = d.get("/v1/sys/health").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["token"], "ok");
    assert_eq!(health["database"], "ok");
    // Still serving real work.
    d.create_root("still-alive", "ec", None);
    let log = d.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn secrets_stay_out_of_logs_cmdline_and_audit() {
    let d = Daemon::start();
    let root = d.create_root("r", "rsa", Some(2048));
    d.post("/v1/pki/ca", &json!({"name": "i", "common_name": "I", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 30}));
    let minted = d
        .post("/v1/auth/tokens", &json!({"policies": ["auditor"]}))
        .json();
    let new_token = minted["token"].as_str().unwrap().to_owned();
    d.call("GET", "/v1/audit", Some(&new_token), None);
    d.call(
        "GET",
        "/v1/pki/ca",
        Some("svt_0123456789abcdef0123456789abcdef_wrongsecret"),
        None,
    );

    // A leaf key returned once: a line from the middle of its PEM must show up nowhere else.
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "canary", "ca_id": root["id"], "allowed_domains": ["*.canary.internal"], "key_type": "ec", "key_bits": 256}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let issued = d.post(
        "/v1/pki/issue/canary",
        &json!({"common_name": "a.canary.internal"}),
    );
    // Answers to a token's holder stay out of caches; public ones keep their own headers.
    assert_eq!(issued.cache_control.as_deref(), Some("no-store"));
    let another = d.post("/v1/auth/tokens", &json!({"policies": ["auditor"]}));
    assert_eq!(another.cache_control.as_deref(), Some("no-store"));
    let public = d.call(
        "GET",
        &format!("/v1/pki/ca/{}/certificate", root["id"].as_str().unwrap()),
        None,
        None,
    );
    assert_eq!(public.status, 200);
    assert_ne!(public.cache_control.as_deref(), Some("no-store"));
    let leaf = issued.json();
    let key_line = leaf["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(key_line.len() >= 40, "{key_line}");
    let db = d.database_bytes();
    let db = String::from_utf8_lossy(&db).into_owned();

    let pin = std::fs::read_to_string(d.data().join("hsm.pin"))
        .unwrap()
        .trim()
        .to_owned();
    let so_pin = std::fs::read_to_string(d.data().join("hsm-so.pin"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(pin.len() >= 16);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(cmdline.contains("dev"), "{cmdline}");
    let environ = std::fs::read(format!("/proc/{}/environ", d.pid())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let log = d.log_text();
    assert!(
        log.contains("request_id"),
        "the log is being written: {log}"
    );
    let audit = d.get("/v1/audit?limit=1000").text();
    for (what, text) in [
        ("cmdline", cmdline.as_ref()),
        ("environ", environ.as_ref()),
        ("log", log.as_str()),
        ("audit", audit.as_str()),
        ("database", db.as_str()),
    ] {
        assert!(
            !text.contains(&key_line),
            "an issued private key appears in the {what}"
        );
        assert!(!text.contains(&pin), "the PIN appears in the {what}");
        assert!(!text.contains(&so_pin), "the SO PIN appears in the {what}");
        assert!(!text.contains(&new_token), "a token appears in the {what}");
        assert!(
            !text.contains("wrongsecret"),
            "a presented token appears in the {what}"
        );
    }
    // Only the admin token's single first-run print reaches stdout.
    let out = std::fs::read_to_string(&d.out).unwrap();
    assert_eq!(out.matches("svt_").count(), 1, "{out}");
    assert!(!log.contains(&d.admin));
    // Secret files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in ["hsm.pin", "hsm-so.pin", "admin.token", "scaivault.toml"] {
        let mode = std::fs::metadata(d.data().join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

/// Issue #10, point 7: unique canary strings planted as DNS provider credentials, a webhook secret,
/// an EAB key and a presented token — through successful calls and through calls that fail — appear
/// in no response body, log line, audit record or database file.
#[test]
fn planted_canaries_reach_no_log_response_audit_record_or_database_file() {
    use base64::Engine as _;
    let d = Daemon::start();
    let dir = d.dir.path();
    let canary = |what: &str| format!("CANARY-{what}-7f3a9c1e5b");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // A Google service account key whose PEM body is the canary's carrier.
    let key_path = dir.join("sa.key");
    scaivault_tests::openssl_ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        key_path.to_str().unwrap(),
    ]);
    let sa_key = std::fs::read_to_string(&key_path).unwrap();
    let sa_line = sa_key.lines().nth(3).unwrap().to_owned();
    let tsig = canary("tsig");
    let planted = [
        tsig.clone(),
        b64(&tsig),
        canary("pdns"),
        canary("aws"),
        canary("cloudflare"),
        sa_line.clone(),
        canary("webhook"),
        canary("eab"),
        b64(&canary("eab")),
        canary("token"),
    ];
    let mut bodies = Vec::new();
    let mut send = |method: &str, path: &str, token: Option<&str>, body: serde_json::Value| {
        let r = d.call(
            method,
            path,
            token.or(Some(&d.admin)),
            Some(body.to_string().as_bytes()),
        );
        bodies.push(format!("{method} {path} -> {} {}", r.status, r.text()));
        r.status
    };
    let providers = [
        (
            "rfc2136",
            json!({"server": "127.0.0.1:9", "zone": "canary.test", "tsig_key_name": "k.", "tsig_algorithm": "hmac-sha256", "tsig_secret": b64(&tsig)}),
        ),
        (
            "powerdns",
            json!({"api_url": "http://127.0.0.1:9", "api_key": canary("pdns")}),
        ),
        (
            "route53",
            json!({"access_key_id": "AKIDCANARY", "secret_access_key": canary("aws"), "region": "us-east-1", "hosted_zone_id": "Z1", "endpoint_url": "http://127.0.0.1:9"}),
        ),
        (
            "cloudflare",
            json!({"api_token": canary("cloudflare"), "api_base_url": "http://127.0.0.1:9"}),
        ),
        (
            "google",
            json!({"project": "p", "service_account_json": json!({"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": sa_key, "token_uri": "http://127.0.0.1:9/token"}).to_string(), "api_base_url": "http://127.0.0.1:9"}),
        ),
    ];
    for (kind, config) in &providers {
        assert_eq!(
            send(
                "POST",
                "/v1/pki/acme/dns-providers",
                None,
                json!({"name": format!("p-{kind}"), "type": kind, "config": config})
            ),
            201,
            "{bodies:?}"
        );
        // The same secrets in requests that fail: an unknown key, a bad field.
        let mut bad = config.clone();
        bad["surplus"] = json!(1);
        assert_eq!(
            send(
                "POST",
                "/v1/pki/acme/dns-providers",
                None,
                json!({"name": format!("bad-{kind}"), "type": kind, "config": bad})
            ),
            400
        );
        assert_eq!(
            send(
                "POST",
                "/v1/pki/acme/dns-providers",
                None,
                json!({"name": format!("bad2-{kind}"), "type": "nonesuch", "config": config})
            ),
            400
        );
    }
    assert_eq!(
        send(
            "POST",
            "/v1/webhooks",
            None,
            json!({"url": "http://127.0.0.1:9/hook", "events": ["*"], "secret": canary("webhook")})
        ),
        201
    );
    assert_eq!(
        send(
            "POST",
            "/v1/webhooks",
            None,
            json!({"url": "ftp://nope", "events": ["*"], "secret": canary("webhook")})
        ),
        400
    );
    // A webhook URL may carry a credential of the receiver's: shown to API readers, never
    // logged (also not by the PostgreSQL client's statement parameters at `debug`, the level
    // the test daemons log at).
    let url_canary = canary("webhook-url");
    assert_eq!(
        send(
            "POST",
            "/v1/webhooks",
            None,
            json!({"url": format!("http://127.0.0.1:9/hook?key={url_canary}"), "events": ["*"], "secret": "s3cret-enough-0123456789"})
        ),
        201
    );
    // An ACME account whose CA cannot be reached, with an EAB key.
    let status = send(
        "POST",
        "/v1/pki/acme/accounts",
        None,
        json!({"name": "eab", "provider": "custom", "directory_url": "https://127.0.0.1:9/dir", "eab_kid": "kid", "eab_hmac_key": b64(&canary("eab"))}),
    );
    assert!(status >= 400, "{bodies:?}");
    // A presented token that does not exist.
    send(
        "GET",
        "/v1/pki/acme/dns-providers",
        Some(&format!("svt_{}", canary("token"))),
        json!({}),
    );
    // Reads of what was stored.
    for path in [
        "/v1/pki/acme/dns-providers",
        "/v1/webhooks",
        "/v1/pki/acme/accounts",
    ] {
        let r = d.get(path);
        assert_eq!(r.status, 200);
        bodies.push(format!("GET {path} -> {}", r.text()));
    }

    let db = d.database_bytes();
    assert!(
        db.windows(b"p-rfc2136".len()).any(|w| w == b"p-rfc2136"),
        "the providers are in the files searched"
    );
    let db = String::from_utf8_lossy(&db).into_owned();
    let log = d.log_text();
    let out = std::fs::read_to_string(&d.out).unwrap();
    let audit = d.get("/v1/audit?limit=1000").text();
    assert!(audit.contains("acme.dns_provider.create"), "{audit}");
    assert!(
        !log.contains(&url_canary),
        "the webhook URL appears in the log"
    );
    let responses = bodies.join("\n");
    for (what, text) in [
        ("log", log.as_str()),
        ("stdout", out.as_str()),
        ("audit", audit.as_str()),
        ("database", db.as_str()),
        ("responses", responses.as_str()),
    ] {
        for secret in &planted {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} appears in the {what}"
            );
        }
    }
}
