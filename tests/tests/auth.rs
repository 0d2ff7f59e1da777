//! Authentication, policies and tenant isolation over HTTP, with tenants and tokens made by the
//! host CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::Daemon;
use serde_json::json;

fn cli_ok(d: &Daemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(
        out.status.success(),
        "scaivault {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn tenants_are_isolated_and_policies_deny_by_default() {
    let d = Daemon::start();
    let root = d.create_root("a-root", "ec", None);
    let id = root["id"].as_str().unwrap();

    let tid = cli_ok(&d, &["tenant", "create", "tenant-b"]);
    assert!(tid.starts_with("tn_"), "{tid}");
    // Names are unique without regard to case: `Tenant-B` would be taken for `tenant-b`.
    let out = d.cli(&["tenant", "create", "Tenant-B"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tenant \"tenant-b\" exists") && err.contains(&tid),
        "{err}"
    );
    let list = cli_ok(&d, &["tenant", "list"]);
    assert!(
        list.contains("default") && list.contains("tenant-b"),
        "{list}"
    );
    let b_admin = cli_ok(
        &d,
        &[
            "token", "create", "--tenant", "tenant-b", "--policy", "admin",
        ],
    );
    assert!(
        b_admin.starts_with("svt_") && !b_admin.contains('\n'),
        "token create prints only the token: {b_admin}"
    );
    let auditor = cli_ok(
        &d,
        &[
            "token", "create", "--tenant", "default", "--policy", "auditor", "--ttl", "1h",
        ],
    );

    // Tenant B cannot see tenant A's CA: 404, exactly like a missing one.
    let theirs = d.call("GET", &format!("/v1/pki/ca/{id}"), Some(&b_admin), None);
    let missing = d.call(
        "GET",
        "/v1/pki/ca/ca_0123456789abcdef0123456789abcdef",
        Some(&b_admin),
        None,
    );
    let a = theirs.problem(404, "ca_not_found");
    let b = missing.problem(404, "ca_not_found");
    assert_eq!(a["detail"], b["detail"]);
    let blist = d.call("GET", "/v1/pki/ca", Some(&b_admin), None).json();
    assert_eq!(blist["items"].as_array().unwrap().len(), 0);
    // …nor use it as a parent.
    d.call("POST", "/v1/pki/ca", Some(&b_admin), Some(json!({"name": "x", "common_name": "X", "ca_type": "intermediate", "parent_ca_id": id, "validity_days": 10}).to_string().as_bytes()))
        .problem(400, "parent_ca_not_found");

    // No token, a malformed token, an unknown token: 401, naming the scheme (RFC 9110 §11.6.1).
    d.call("GET", "/v1/pki/ca", None, None)
        .problem(401, "unauthorized");
    let raw = reqwest::blocking::get(format!("{}/v1/pki/ca", d.base)).unwrap();
    assert_eq!(raw.status().as_u16(), 401);
    assert_eq!(
        raw.headers()["www-authenticate"],
        "Bearer realm=\"scaivault\""
    );
    d.call("GET", "/v1/pki/ca", Some("nonsense"), None)
        .problem(401, "unauthorized");
    let forged = format!("{}x", &d.admin);
    d.call("GET", "/v1/pki/ca", Some(&forged), None)
        .problem(401, "unauthorized");
    // Two Authorization headers, in either order: neither counts (a proxy may read the last).
    for pair in [[&d.admin, &forged], [&forged, &d.admin]] {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}/v1/pki/ca", d.base))
            .header("Authorization", format!("Bearer {}", pair[0]))
            .header("Authorization", format!("Bearer {}", pair[1]))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        let p: serde_json::Value = r.json().unwrap();
        assert_eq!(p["code"], "unauthorized", "{p}");
        assert!(
            p["detail"].as_str().unwrap().contains("more than once"),
            "{p}"
        );
    }

    // The auditor reads but cannot create a CA or mint tokens.
    assert_eq!(
        d.call("GET", "/v1/pki/ca", Some(&auditor), None).status,
        200
    );
    assert_eq!(d.call("GET", "/v1/audit", Some(&auditor), None).status, 200);
    d.call(
        "POST",
        "/v1/pki/ca",
        Some(&auditor),
        Some(
            json!({"name": "n", "common_name": "N", "ca_type": "root", "validity_days": 10})
                .to_string()
                .as_bytes(),
        ),
    )
    .problem(403, "forbidden");
    d.call(
        "POST",
        "/v1/auth/tokens",
        Some(&auditor),
        Some(br#"{"policies":["admin"]}"#),
    )
    .problem(403, "forbidden");
    // The denial is audited.
    let audit = d
        .call("GET", "/v1/audit?limit=1000", Some(&auditor), None)
        .json();
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "ca.create" && r["outcome"] == "denied"),
        "{audit}"
    );

    // A ca-admin creates CAs but cannot read the audit log.
    let ca_admin = d.post(
        "/v1/auth/tokens",
        &json!({"policies": ["ca-admin"], "ttl": "1h", "name": "ops"}),
    );
    assert_eq!(ca_admin.status, 201, "{}", ca_admin.text());
    let ca_admin = ca_admin.json();
    assert!(ca_admin["expires_at"].is_string());
    // Names are unique among the tenant's live tokens, 1 to 128 bytes without control characters.
    d.post(
        "/v1/auth/tokens",
        &json!({"policies": ["auditor"], "name": "ops"}),
    )
    .problem(409, "token_name_taken");
    for bad in [
        String::new(),
        "x".repeat(129),
        "a\u{0}b".into(),
        "two\nlines".into(),
    ] {
        d.post(
            "/v1/auth/tokens",
            &json!({"policies": ["auditor"], "name": bad}),
        )
        .problem(400, "invalid_name");
    }
    let t = ca_admin["token"].as_str().unwrap();
    let made = d.call("POST", "/v1/pki/ca", Some(t), Some(json!({"name": "by-ops", "common_name": "Ops Root", "ca_type": "root", "validity_days": 10}).to_string().as_bytes()));
    assert_eq!(made.status, 201, "{}", made.text());
    d.call("GET", "/v1/audit", Some(t), None)
        .problem(403, "forbidden");
    d.post("/v1/auth/tokens", &json!({"policies": ["root"]}))
        .problem(400, "unknown_policy");
    d.post(
        "/v1/auth/tokens",
        &json!({"policies": ["auditor"], "ttl": "10000000000h"}),
    )
    .problem(400, "invalid_duration");
    d.post("/v1/auth/tokens", &json!({"policies": []}))
        .problem(400, "invalid_policies");

    // Token listing never shows secrets; revocation takes effect at once.
    let toks = d.get("/v1/auth/tokens").text();
    assert!(!toks.contains("svt_"), "{toks}");
    let tok_id = ca_admin["id"].as_str().unwrap();
    // The token itself where its id belongs is refused, and its secret reaches neither the
    // audit trail nor the log; elsewhere (a role's name) it is redacted the same way.
    d.call(
        "DELETE",
        &format!("/v1/auth/tokens/{t}"),
        Some(&d.admin),
        None,
    )
    .problem(400, "token_given_as_id");
    d.call(
        "DELETE",
        &format!("/v1/pki/roles/{t}"),
        Some(&d.admin),
        None,
    )
    .problem(404, "role_not_found");
    // Where no route matches (Rocket's own line), percent-encoded, or behind something
    // token-like.
    d.call("GET", &format!("/v1/auth/tokens/{t}"), Some(&d.admin), None);
    d.call(
        "GET",
        &format!("/v1/nothing?token={t}"),
        Some(&d.admin),
        None,
    );
    d.call(
        "DELETE",
        &format!("/v1/auth/tokens/{}", t.replace('_', "%5F")),
        Some(&d.admin),
        None,
    )
    .problem(400, "token_given_as_id");
    d.call(
        "DELETE",
        &format!("/v1/pki/roles/svt_{t}"),
        Some(&d.admin),
        None,
    )
    .problem(404, "role_not_found");
    let secret = &t[4 + 32 + 1..];
    let audit = d.get("/v1/audit?limit=1000").text();
    assert!(!audit.contains(secret), "{audit}");
    let redacted = format!("{}_[redacted]", &t[..4 + 32]);
    assert!(audit.contains(&redacted), "{audit}");
    let log = d.log_text();
    assert!(!log.contains(secret), "{log}");
    assert!(log.contains(&redacted), "{log}");
    d.call("GET", "/v1/pki/ca", Some(t), None).json();
    let rev = d.call(
        "DELETE",
        &format!("/v1/auth/tokens/{tok_id}"),
        Some(&d.admin),
        None,
    );
    assert_eq!(rev.status, 200, "{}", rev.text());
    d.call("GET", "/v1/pki/ca", Some(t), None)
        .problem(401, "unauthorized");
    // Tenant B cannot revoke tenant A's tokens.
    let admin_id = d.get("/v1/auth/tokens").json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    d.call(
        "DELETE",
        &format!("/v1/auth/tokens/{admin_id}"),
        Some(&b_admin),
        None,
    )
    .problem(404, "token_not_found");

    // The CLI revokes too.
    let b_id = cli_ok(&d, &["token", "list"])
        .lines()
        .find(|l| l.contains(&tid))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let b_auditor = d.call(
        "POST",
        "/v1/auth/tokens",
        Some(&b_admin),
        Some(br#"{"policies":["auditor"]}"#),
    );
    assert_eq!(b_auditor.status, 201, "{}", b_auditor.text());
    let b_auditor = b_auditor.json()["token"].as_str().unwrap().to_owned();
    // The token pasted where its id belongs: refused, and not repeated on stderr.
    let out = d.cli(&["token", "revoke", &b_admin]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a token id"), "{err}");
    let secret = scaivault_tests::token_secret(&b_admin);
    assert!(!err.contains(secret), "{err}");
    cli_ok(&d, &["token", "revoke", &b_id]);
    // Twice: the token is there, revoked; said so (it is not "not found").
    let out = d.cli(&["token", "revoke", &b_id]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("revoked already, at "), "{err}");
    // A new token whose one showing cannot happen is not left behind: refused before it is made
    // when stdout is /dev/null (or closed: Rust's runtime points it there), revoked again when
    // the write fails.
    let run = |name: &str, stdout: std::fs::File| {
        std::process::Command::new(scaivault_tests::bin())
            .arg("--config")
            .arg(d.config())
            .args([
                "token", "create", "--tenant", "tenant-b", "--policy", "admin",
            ])
            .args(["--name", name])
            .stdout(stdout)
            .output()
            .unwrap()
    };
    let out = run("to-null", std::fs::File::create("/dev/null").unwrap());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("would be lost (none was made)"));
    let out = run("to-full", std::fs::File::create("/dev/full").unwrap());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was revoked again"),
        "{out:?}"
    );
    let listed = cli_ok(&d, &["token", "list"]);
    assert!(!listed.contains("name=to-null"), "{listed}");
    let full = listed.lines().find(|l| l.contains("name=to-full")).unwrap();
    assert!(!full.contains("revoked=-"), "{full}");
    d.call("GET", "/v1/pki/ca", Some(&b_admin), None)
        .problem(401, "unauthorized");
    // Tenant B's audit log shows the revocation of its token.
    let log = d
        .call("GET", "/v1/audit?limit=1000", Some(&b_auditor), None)
        .json();
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "token.revoke"
                && r["object_id"] == b_id.as_str()
                && r["token_id"] == "cli"),
        "{log}"
    );
}

#[test]
fn expired_tokens_are_refused() {
    let d = Daemon::start();
    let short = d
        .post(
            "/v1/auth/tokens",
            &json!({"policies": ["auditor"], "ttl": "1s"}),
        )
        .json();
    let t = short["token"].as_str().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = d.call("GET", "/v1/audit", Some(t), None);
    let p = r.problem(401, "unauthorized");
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
}
