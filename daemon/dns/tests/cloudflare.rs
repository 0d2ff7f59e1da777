//! cloudflare against a local stub of Cloudflare's API v4 — NOT the live service, which cannot be
//! reached from CI. The stub (the system-test kit's `scaivault_tests::stubs::cloudflare`, shared
//! with the ACME dns-01 test) checks each request against the published API (method, path,
//! `Authorization: Bearer`, query parameters, the JSON body of a DNS record) and records every
//! request it does not expect as a violation, which fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_dns::DnsError;
use scaivault_tests::stubs::cloudflare::{Cloudflare, TOKEN};
use serde_json::json;

const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const SUB_ZONE_ID: &str = "9a7806061c88ada191ed06f989cc3dac";

#[tokio::test]
async fn two_values_at_one_name_then_cleanup_one_with_zone_lookup() {
    let cf = Cloudflare::start(
        &[(ZONE_ID, "example.test"), (SUB_ZONE_ID, "sub.example.test")],
        None,
    );
    let (base, s) = (&cf.base_url, &cf.state);
    let cfg = json!({"api_token": TOKEN, "api_base_url": base});
    let p = scaivault_dns::build("cloudflare", &cfg).unwrap();
    let name = "_acme-challenge.www.example.test.";
    p.present(name, "value-one").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    assert_eq!(
        cf.values("_acme-challenge.www.example.test"),
        ["value-one", "value-two"]
    );
    assert!(s.lock().unwrap().records.iter().all(|r| r.zone == ZONE_ID));
    p.cleanup(name, "value-one").await.unwrap();
    assert_eq!(cf.values("_acme-challenge.www.example.test"), ["value-two"]);
    p.cleanup(name, "value-one").await.unwrap();
    p.cleanup(name, "value-two").await.unwrap();
    assert!(cf.values("_acme-challenge.www.example.test").is_empty());

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
    cf.assert_no_violations();
}

#[tokio::test]
async fn with_zone_id_and_default_config_checks() {
    let cf = Cloudflare::start(&[(ZONE_ID, "example.test")], None);
    let base = &cf.base_url;
    let cfg = json!({"api_token": TOKEN, "zone_id": ZONE_ID, "api_base_url": base});
    let p = scaivault_dns::build("cloudflare", &cfg).unwrap();
    p.present("_acme-challenge.example.test.", "apex")
        .await
        .unwrap();
    assert_eq!(cf.values("_acme-challenge.example.test"), ["apex"]);
    p.cleanup("_acme-challenge.example.test.", "apex")
        .await
        .unwrap();
    assert!(cf.values("_acme-challenge.example.test").is_empty());
    cf.assert_no_violations();

    // A name in no zone of the token.
    let cfg = json!({"api_token": TOKEN, "api_base_url": base});
    let p = scaivault_dns::build("cloudflare", &cfg).unwrap();
    let err = p
        .present("_acme-challenge.other.test.", "v")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    cf.assert_no_violations();
}

#[tokio::test]
async fn bad_token_is_a_provider_error_without_the_token() {
    let cf = Cloudflare::start(&[(ZONE_ID, "example.test")], None);
    let (base, s) = (&cf.base_url, &cf.state);
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
    cf.assert_no_violations();
}
