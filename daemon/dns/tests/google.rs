//! google against local stubs of Google's OAuth 2.0 token endpoint and the Cloud DNS API v1 —
//! NOT the live services, which cannot be reached from CI. The stubs (the system-test kit's
//! `scaivault_tests::stubs::google`, shared with the ACME dns-01 test) check each request against
//! the published APIs: the JWT-bearer grant (form fields, RS256 signature verified with the
//! service account's public key, `iss`/`aud`/`scope`/`iat`/`exp` claims), then method, path,
//! `Authorization: Bearer <access token>`, query parameters and the JSON of a `dns#change`
//! (deletions must match the current RRset exactly, additions must not exist yet). Any request
//! they do not expect is recorded as a violation, which fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::RsaPrivateKey;
use scaivault_dns::DnsError;
use scaivault_tests::stubs::google::Google;

#[tokio::test]
async fn two_values_at_one_name_then_cleanup_one() {
    let g = Google::start(
        &[
            ("example-test", "example.test."),
            ("sub", "sub.example.test."),
        ],
        None,
    );
    let p = scaivault_dns::build("google", &g.config()).unwrap();
    let name = "_acme-challenge.www.example.test.";
    p.present(name, "value-one").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    assert_eq!(g.values(name), ["value-one", "value-two"]);
    p.cleanup(name, "value-one").await.unwrap();
    assert_eq!(g.values(name), ["value-two"]);
    p.cleanup(name, "value-one").await.unwrap();
    p.cleanup(name, "value-two").await.unwrap();
    assert!(g.values(name).is_empty());
    assert!(g.state.lock().unwrap().rrsets.is_empty());

    // The longest managed zone wins.
    p.present("_acme-challenge.sub.example.test.", "in-sub")
        .await
        .unwrap();
    assert_eq!(g.state.lock().unwrap().rrsets[0].0, "sub");
    p.cleanup("_acme-challenge.sub.example.test.", "in-sub")
        .await
        .unwrap();

    // One access token served all of it.
    assert_eq!(g.state.lock().unwrap().tokens_issued, 1);
    g.assert_no_violations();

    // The key file may also be given as a JSON object.
    let mut cfg = g.config();
    cfg["service_account_json"] = g.service_account(&g.key_pem);
    let p = scaivault_dns::build("google", &cfg).unwrap();
    p.present(name, "as-object").await.unwrap();
    assert_eq!(g.values(name), ["as-object"]);
    g.assert_no_violations();
}

#[tokio::test]
async fn a_key_the_account_does_not_have_is_a_provider_error_without_the_key() {
    let g = Google::start(&[("example-test", "example.test.")], None);
    let other = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let other_pem = other.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let mut cfg = g.config();
    cfg["service_account_json"] = g.service_account(&other_pem).to_string().into();
    let p = scaivault_dns::build("google", &cfg).unwrap();
    let err = p
        .present("_acme-challenge.www.example.test.", "v")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("invalid_grant"), "{text}");
    let body = other_pem.lines().nth(1).unwrap().to_string();
    assert!(!text.contains(&body), "{text}");
    assert!(!format!("{p:?} {err:?}").contains(&body));
    assert!(g.state.lock().unwrap().rrsets.is_empty());

    // A project the account may not use.
    let mut cfg = g.config();
    cfg["project"] = "someone-else".into();
    let p = scaivault_dns::build("google", &cfg).unwrap();
    let err = p
        .present("_acme-challenge.www.example.test.", "v")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    g.assert_no_violations();
}
