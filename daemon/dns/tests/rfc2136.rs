//! rfc2136 against a real Knot DNS server that accepts TSIG-signed dynamic updates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{rfc2136_config, txt_values, Knot, TSIG_SECRET};
use scaivault_dns::{DnsError, Options};
use std::time::Duration;

#[tokio::test]
async fn two_values_at_one_name_then_cleanup_one() {
    let knot = Knot::start("example.test", "", true).await;
    let p = scaivault_dns::build("rfc2136", &rfc2136_config(&knot)).unwrap();
    let name = "_acme-challenge.www.example.test.";
    p.present(name, "value-one").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    assert_eq!(
        txt_values(knot.addr, name).await,
        ["value-one", "value-two"]
    );
    p.cleanup(name, "value-one").await.unwrap();
    assert_eq!(txt_values(knot.addr, name).await, ["value-two"]);
    // Cleaning up a value that is not there changes nothing and is not an error.
    p.cleanup(name, "value-one").await.unwrap();
    assert_eq!(txt_values(knot.addr, name).await, ["value-two"]);
    p.cleanup(name, "value-two").await.unwrap();
    assert!(txt_values(knot.addr, name).await.is_empty());
}

#[tokio::test]
async fn a_name_outside_the_zone_is_refused_before_sending() {
    let knot = Knot::start("example.test", "", true).await;
    let p = scaivault_dns::build("rfc2136", &rfc2136_config(&knot)).unwrap();
    let err = p
        .present("_acme-challenge.other.test.", "v")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    assert!(err.to_string().contains("not in the zone"), "{err}");
}

#[tokio::test]
async fn wrong_tsig_secret_is_a_provider_error_without_the_secret() {
    let knot = Knot::start("example.test", "", true).await;
    let wrong = "d3JvbmctdHNpZy1zZWNyZXQtZm9yLXRoZS10ZXN0LXNlcnZlcg==";
    let mut cfg = rfc2136_config(&knot);
    cfg["tsig_secret"] = wrong.into();
    let p = scaivault_dns::build("rfc2136", &cfg).unwrap();
    let err = p
        .present("_acme-challenge.www.example.test.", "v")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "dns_provider_error");
    let text = err.to_string();
    assert!(text.contains("Not authorized"), "{text}");
    assert!(
        !text.contains(wrong) && !text.contains(TSIG_SECRET),
        "{text}"
    );
    let debug = format!("{p:?} {err:?}");
    assert!(!debug.contains(wrong), "{debug}");
    assert!(txt_values(knot.addr, "_acme-challenge.www.example.test.")
        .await
        .is_empty());

    // An unknown key name is refused the same way.
    let mut cfg = rfc2136_config(&knot);
    cfg["tsig_key_name"] = "nobody.".into();
    let p = scaivault_dns::build("rfc2136", &cfg).unwrap();
    let err = p
        .present("_acme-challenge.www.example.test.", "v")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    assert!(!err.to_string().contains(TSIG_SECRET));
}

#[tokio::test]
async fn updates_to_a_zone_without_an_update_acl_are_refused() {
    let knot = Knot::start("example.test", "", false).await;
    let p = scaivault_dns::build("rfc2136", &rfc2136_config(&knot)).unwrap();
    let err = p
        .present("_acme-challenge.www.example.test.", "v")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    assert!(err.to_string().contains("refused the update"), "{err}");
}

#[tokio::test]
async fn present_and_wait_then_cleanup() {
    let knot = Knot::start("example.test", "", true).await;
    let cfg = rfc2136_config(&knot);
    let p = scaivault_dns::build("rfc2136", &cfg).unwrap();
    let opts = scaivault_dns::options(&cfg).unwrap();
    let presented = scaivault_dns::present_and_wait(p.as_ref(), &opts, "www.example.test", "tok-1")
        .await
        .unwrap();
    assert_eq!(presented.fqdn, "_acme-challenge.www.example.test.");
    assert_eq!(presented.value, "tok-1");
    assert_eq!(txt_values(knot.addr, &presented.fqdn).await, ["tok-1"]);
    scaivault_dns::cleanup(p.as_ref(), &presented)
        .await
        .unwrap();
    assert!(txt_values(knot.addr, &presented.fqdn).await.is_empty());
}

#[tokio::test]
async fn cname_at_the_challenge_name_is_followed() {
    // _acme-challenge.a -> x (in the zone), _acme-challenge.b -> c -> y (a chain).
    let records = "_acme-challenge.a CNAME x\n_acme-challenge.b CNAME c\nc CNAME y\n\
                   _acme-challenge.loop CNAME l2\nl2 CNAME _acme-challenge.loop\n";
    let knot = Knot::start("example.test", records, true).await;
    let cfg = rfc2136_config(&knot);
    let p = scaivault_dns::build("rfc2136", &cfg).unwrap();
    let opts = scaivault_dns::options(&cfg).unwrap();

    let presented =
        scaivault_dns::present_and_wait(p.as_ref(), &opts, "a.example.test", "via-cname")
            .await
            .unwrap();
    assert_eq!(presented.fqdn, "x.example.test.");
    assert_eq!(
        txt_values(knot.addr, "x.example.test.").await,
        ["via-cname"]
    );
    scaivault_dns::cleanup(p.as_ref(), &presented)
        .await
        .unwrap();
    assert!(txt_values(knot.addr, "x.example.test.").await.is_empty());

    let presented = scaivault_dns::present_and_wait(p.as_ref(), &opts, "b.example.test", "chain")
        .await
        .unwrap();
    assert_eq!(presented.fqdn, "y.example.test.");
    assert_eq!(txt_values(knot.addr, "y.example.test.").await, ["chain"]);
    scaivault_dns::cleanup(p.as_ref(), &presented)
        .await
        .unwrap();

    let err = scaivault_dns::present_and_wait(p.as_ref(), &opts, "loop.example.test", "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CNAME loop"), "{err}");
}

#[tokio::test]
async fn propagation_timeout_when_the_checked_server_never_serves_it() {
    // The provider updates `primary`; the check asks `stale`, which serves the same zone from a
    // file and never gets the update.
    let primary = Knot::start("example.test", "", true).await;
    let stale = Knot::start("example.test", "", false).await;
    let mut cfg = rfc2136_config(&primary);
    cfg["resolvers"] = serde_json::json!([stale.addr.to_string()]);
    cfg["propagation_timeout"] = "2s".into();
    let p = scaivault_dns::build("rfc2136", &cfg).unwrap();
    let opts = scaivault_dns::options(&cfg).unwrap();
    assert_eq!(
        opts,
        Options {
            propagation_timeout: Duration::from_secs(2),
            resolvers: vec![stale.addr],
        }
    );
    let started = std::time::Instant::now();
    let err = scaivault_dns::present_and_wait(p.as_ref(), &opts, "www.example.test", "never")
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, DnsError::PropagationTimeout { secs: 2, .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), "dns_propagation_timeout");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // It was written on the primary and removed again after the timeout.
    assert!(
        txt_values(primary.addr, "_acme-challenge.www.example.test.")
            .await
            .is_empty()
    );

    // With propagation_timeout 0 there is no wait: it returns once the primary took it.
    cfg["propagation_timeout"] = "0s".into();
    let opts = scaivault_dns::options(&cfg).unwrap();
    let presented = scaivault_dns::present_and_wait(p.as_ref(), &opts, "www.example.test", "now")
        .await
        .unwrap();
    assert_eq!(txt_values(primary.addr, &presented.fqdn).await, ["now"]);
    scaivault_dns::cleanup(p.as_ref(), &presented)
        .await
        .unwrap();
}

#[tokio::test]
async fn hmac_sha512_keys_work_too() {
    let knot = Knot::start_with_algorithm("example.test", "hmac-sha512").await;
    let mut cfg = rfc2136_config(&knot);
    cfg["tsig_algorithm"] = "hmac-sha512".into();
    let p = scaivault_dns::build("rfc2136", &cfg).unwrap();
    p.present("_acme-challenge.www.example.test.", "sha512")
        .await
        .unwrap();
    assert_eq!(
        txt_values(knot.addr, "_acme-challenge.www.example.test.").await,
        ["sha512"]
    );
    // The same key with the wrong algorithm is refused.
    cfg["tsig_algorithm"] = "hmac-sha256".into();
    let p = scaivault_dns::build("rfc2136", &cfg).unwrap();
    assert!(p
        .present("_acme-challenge.www.example.test.", "x")
        .await
        .is_err());
}
