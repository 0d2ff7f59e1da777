//! route53 against moto's server (a local Route 53 API). With IAM authentication on, moto
//! recomputes each request's SigV4 signature (botocore) and refuses a wrong one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Moto;
use scaivault_dns::DnsError;

#[tokio::test]
async fn two_values_at_one_name_then_cleanup_one() {
    let moto = Moto::start("example.test", None).await;
    let p = scaivault_dns::build("route53", &moto.config()).unwrap();
    let name = "_acme-challenge.www.example.test.";
    p.present(name, "value-one").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    p.present(name, "value-two").await.unwrap();
    assert_eq!(moto.txt_values(name).await, ["value-one", "value-two"]);
    p.cleanup(name, "value-one").await.unwrap();
    assert_eq!(moto.txt_values(name).await, ["value-two"]);
    p.cleanup(name, "value-one").await.unwrap();
    assert_eq!(moto.txt_values(name).await, ["value-two"]);
    p.cleanup(name, "value-two").await.unwrap();
    assert!(moto.txt_values(name).await.is_empty());

    // The hosted zone id may be given with its /hostedzone/ prefix.
    let mut cfg = moto.config();
    cfg["hosted_zone_id"] = format!("/hostedzone/{}", moto.zone_id).into();
    let p2 = scaivault_dns::build("route53", &cfg).unwrap();
    p2.present("_acme-challenge.example.test.", "apex")
        .await
        .unwrap();
    assert_eq!(
        moto.txt_values("_acme-challenge.example.test.").await,
        ["apex"]
    );
    p2.cleanup("_acme-challenge.example.test.", "apex")
        .await
        .unwrap();
    assert!(moto
        .txt_values("_acme-challenge.example.test.")
        .await
        .is_empty());

    // A zone that does not exist is the provider's error.
    let mut cfg = moto.config();
    cfg["hosted_zone_id"] = "ZNOSUCHZONE".into();
    let bad = scaivault_dns::build("route53", &cfg).unwrap();
    assert!(matches!(
        bad.present(name, "v").await.unwrap_err(),
        DnsError::Provider(_)
    ));
}

#[tokio::test]
async fn signatures_are_checked_and_bad_credentials_refused() {
    // One free action: present's read; its signed UPSERT is then checked by moto.
    let moto = Moto::start("example.test", Some(1)).await;
    let p = scaivault_dns::build("route53", &moto.config()).unwrap();
    let name = "_acme-challenge.www.example.test.";
    p.present(name, "signed").await.unwrap();

    // A wrong secret: moto recomputes the signature and refuses it.
    let wrong = "wrongSecretAccessKeyThatMustNotLeak0000000";
    let mut cfg = moto.config();
    cfg["secret_access_key"] = wrong.into();
    let bad = scaivault_dns::build("route53", &cfg).unwrap();
    let err = bad.present(name, "v").await.unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    assert_eq!(err.code(), "dns_provider_error");
    let text = err.to_string();
    assert!(
        text.contains("403") && text.contains("SignatureDoesNotMatch"),
        "{text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(&moto.secret_access_key),
        "{text}"
    );
    assert!(!format!("{bad:?}").contains(wrong));

    // An access key moto never issued.
    let mut cfg = moto.config();
    cfg["access_key_id"] = "AKIAUNKNOWNKEY000000".into();
    let bad = scaivault_dns::build("route53", &cfg).unwrap();
    let err = bad.present(name, "v").await.unwrap_err();
    assert!(matches!(err, DnsError::Provider(_)), "{err:?}");
    assert!(err.to_string().contains("InvalidClientTokenId"), "{err}");
    assert!(!err.to_string().contains(&moto.secret_access_key));
}
