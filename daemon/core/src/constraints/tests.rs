#![allow(clippy::unwrap_used)]

use super::{LeafName, NameRules, Set};
use crate::profile::{Constraints, IpRange};
use der::asn1::{Ia5String, OctetString};
use der::Encode;
use scaivault_hsm::soft::SoftToken;
use scaivault_hsm::KeySpec;
use std::net::IpAddr;
use x509_cert::ext::pkix::constraints::name::{GeneralSubtree, NameConstraints};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

fn dns(s: &str) -> GeneralName {
    GeneralName::DnsName(Ia5String::new(s).unwrap())
}

fn uri(s: &str) -> GeneralName {
    GeneralName::UniformResourceIdentifier(Ia5String::new(s).unwrap())
}

fn ip(addr: &[u8], mask: &[u8]) -> GeneralName {
    GeneralName::IpAddress(OctetString::new([addr, mask].concat()).unwrap())
}

fn subtrees(names: Vec<GeneralName>) -> Option<Vec<GeneralSubtree>> {
    (!names.is_empty()).then(|| {
        names
            .into_iter()
            .map(|base| GeneralSubtree {
                base,
                minimum: 0,
                maximum: None,
            })
            .collect()
    })
}

fn rules(permitted: Vec<GeneralName>, excluded: Vec<GeneralName>) -> NameRules {
    let nc = NameConstraints {
        permitted_subtrees: subtrees(permitted),
        excluded_subtrees: subtrees(excluded),
    };
    NameRules {
        sets: vec![Set::from_der("CN=Test CA".into(), &nc.to_der().unwrap())],
    }
}

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

fn ok(r: &NameRules, n: LeafName<'_>) -> bool {
    r.check([n]).is_ok()
}

#[test]
fn dns_subtrees_follow_rfc_5280() {
    let r = rules(vec![dns("example.com")], vec![]);
    // (name, inside)
    let table = [
        ("example.com", true),
        ("EXAMPLE.com.", true),
        ("a.example.com", true),
        ("a.b.example.com", true),
        ("*.example.com", true),
        ("badexample.com", false),
        ("example.com.evil", false),
        ("com", false),
        ("other.example", false),
    ];
    for (n, inside) in table {
        assert_eq!(ok(&r, LeafName::Dns(n)), inside, "{n}");
    }
    // A leading dot: only the names below.
    let below = rules(vec![dns(".example.com")], vec![]);
    assert!(!ok(&below, LeafName::Dns("example.com")));
    assert!(ok(&below, LeafName::Dns("a.example.com")));
    assert!(!ok(&below, LeafName::Dns("aexample.com")));
    // Permitted DNS subtrees do not constrain IPs or URIs.
    assert!(ok(&r, LeafName::Ip("10.0.0.1".parse().unwrap())));
    assert!(ok(&r, LeafName::Uri("spiffe://anything/x")));
    // Several permitted subtrees: any one will do.
    let two = rules(vec![dns("a.example"), dns("b.example")], vec![]);
    assert!(ok(&two, LeafName::Dns("x.b.example")));
    assert!(!ok(&two, LeafName::Dns("c.example")));
}

#[test]
fn excluded_subtrees_win_and_wildcards_count_for_every_name_they_cover() {
    let r = rules(
        vec![dns("example.com")],
        vec![dns("secret.example.com"), dns(".deep.example.com")],
    );
    assert!(ok(&r, LeafName::Dns("www.example.com")));
    assert!(!ok(&r, LeafName::Dns("secret.example.com")));
    assert!(!ok(&r, LeafName::Dns("a.secret.example.com")));
    assert!(!ok(&r, LeafName::Dns("*.secret.example.com")));
    // `*.example.com` stands for `secret.example.com`.
    let e = r.check([LeafName::Dns("*.example.com")]).unwrap_err();
    assert!(
        e.contains("excluded") && e.contains("secret.example.com"),
        "{e}"
    );
    // `.deep.example.com` holds only names below `deep.example.com`.
    assert!(ok(&r, LeafName::Dns("deep.example.com")));
    assert!(!ok(&r, LeafName::Dns("x.deep.example.com")));
    assert!(!ok(&r, LeafName::Dns("*.deep.example.com")));
    // A subtree deeper than one label under the wildcard's parent is not covered.
    let deeper = rules(vec![], vec![dns("a.b.example.com")]);
    assert!(ok(&deeper, LeafName::Dns("*.example.com")));
}

#[test]
fn ip_subtrees_match_by_mask_and_family() {
    let r = rules(
        vec![
            ip(&[10, 0, 0, 0], &[255, 0, 0, 0]),
            ip(&[0xfd; 16], &[[0xff; 8], [0; 8]].concat()),
        ],
        vec![ip(&[10, 9, 0, 0], &[255, 255, 0, 0])],
    );
    let ip_ok = |s: &str| ok(&r, LeafName::Ip(s.parse::<IpAddr>().unwrap()));
    assert!(ip_ok("10.1.2.3"));
    assert!(!ip_ok("10.9.1.1"), "excluded");
    assert!(!ip_ok("11.0.0.1"));
    assert!(ip_ok("fdfd:fdfd:fdfd:fdfd::1"));
    assert!(!ip_ok("fe80::1"));
    // An IPv4-mapped IPv6 address is a 16-octet name: the IPv4 subtree does not hold it.
    assert!(!ip_ok("::ffff:10.1.2.3"));
    // IP subtrees do not constrain DNS names.
    assert!(ok(&r, LeafName::Dns("anything.example")));
}

#[test]
fn uri_subtrees_constrain_the_host() {
    let r = rules(
        vec![uri("prod.example"), uri(".svc.example")],
        vec![uri("bad.svc.example")],
    );
    let u = |s: &str| ok(&r, LeafName::Uri(s));
    assert!(u("spiffe://prod.example/ns/billing"));
    assert!(u("https://PROD.example:8443/x"));
    // OpenSSL's reading of the host (up to the first `:`, else `/`): a user part, a query right
    // after the host, a trailing dot or a `:` in the path give hosts no constraint holds.
    assert!(!u("https://user@prod.example/x"));
    assert!(!u("https://prod.example?x=1"));
    assert!(!u("https://prod.example./x"));
    assert!(!u("spiffe://prod.example/ns/a:b"));
    assert!(
        !u("spiffe://a.prod.example/x"),
        "no leading dot: exact host"
    );
    assert!(u("https://api.svc.example/"));
    assert!(!u("https://svc.example/"));
    assert!(!u("https://bad.svc.example/"), "excluded");
    assert!(!u("https://10.0.0.1/"), "an IP literal is no host name");
    assert!(!u("https://[::1]/"));
    assert!(!u("urn:uuid:1234"), "no host");
}

#[test]
fn directory_subtrees_constrain_a_non_empty_subject() {
    let r = rules(
        vec![GeneralName::DirectoryName(name("O=Example,C=DE"))],
        vec![],
    );
    // RFC 4514 strings: the most significant RDN last.
    assert!(ok(&r, LeafName::Subject(&name("CN=a,O=Example,C=DE"))));
    assert!(!ok(&r, LeafName::Subject(&name("CN=a,O=Other,C=DE"))));
    assert!(!ok(&r, LeafName::Subject(&name("O=Example,C=DE,CN=a"))));
    // RFC 5280 §7.1, as OpenSSL compares: case and runs of spaces do not matter.
    assert!(ok(&r, LeafName::Subject(&name("CN=a,O=EXAMPLE,C=de"))));
    assert!(ok(&r, LeafName::Subject(&name("CN=a,O=  Example ,C=DE"))));
    let excluded = rules(vec![], vec![GeneralName::DirectoryName(name("O=Evil"))]);
    assert!(!ok(&excluded, LeafName::Subject(&name("CN=a,O=evil"))));
    assert!(ok(&excluded, LeafName::Subject(&name("CN=a,O=Good"))));
    assert!(!ok(&r, LeafName::Subject(&name("CN=a"))));
    assert!(ok(&r, LeafName::Subject(&Name::default())), "empty subject");
}

#[test]
fn subject_mailboxes_meet_rfc822_subtrees() {
    let m = |s: &str| GeneralName::Rfc822Name(Ia5String::new(s).unwrap());
    let r = rules(
        vec![m("example.org"), m(".corp.example")],
        vec![m("bad@example.org")],
    );
    let subject = |mail: &str| -> Name {
        let mut n = name("CN=a.example.org");
        let atv = x509_cert::attr::AttributeTypeAndValue {
            oid: super::EMAIL_ADDRESS,
            value: der::asn1::Any::encode_from(&Ia5String::new(mail).unwrap()).unwrap(),
        };
        n.0.push(x509_cert::name::RelativeDistinguishedName(
            der::asn1::SetOfVec::try_from(vec![atv]).unwrap(),
        ));
        n
    };
    let check = |mail: &str| r.check_leaf(&subject(mail), &["a.example.org"], &[], &[]);
    assert!(check("x@example.org").is_ok());
    assert!(check("x@EXAMPLE.ORG").is_ok());
    assert!(check("x@mail.corp.example").is_ok());
    assert!(
        check("x@corp.example").is_err(),
        ".corp.example: below only"
    );
    assert!(check("x@sub.example.org").is_err(), "host, not below");
    assert!(check("x@evil.com").unwrap_err().contains("emailAddress"));
    assert!(check("bad@EXAMPLE.org").unwrap_err().contains("excluded"));
    assert!(check("BAD@example.org").is_ok(), "the local part is exact");
}

/// OpenSSL checks a common name that reads as a host name against DNS subtrees when the SAN has
/// no DNS name — an IP address written as the CN included.
#[test]
fn a_host_like_common_name_meets_dns_subtrees_without_dns_sans() {
    let r = rules(vec![dns("example.com")], vec![]);
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let e = r
        .check_leaf(&name("CN=10.1.2.3"), &[], &[ip], &[])
        .unwrap_err();
    assert!(e.contains("common name \"10.1.2.3\""), "{e}");
    assert!(r.check_leaf(&name("CN=Device"), &[], &[ip], &[]).is_ok());
    assert!(r
        .check_leaf(&name("CN=a.example.com"), &[], &[ip], &[])
        .is_ok());
    assert!(r.check_leaf(&Name::default(), &[], &[ip], &[]).is_ok());
    // With a DNS name in the SAN, the CN is not looked at (OpenSSL does the same).
    assert!(r
        .check_leaf(&name("CN=10.1.2.3"), &["a.example.com"], &[ip], &[])
        .is_ok());
    assert!(r.constrains_dns());
    assert!(!rules(vec![], vec![]).constrains_dns());
    for (cn, host) in [
        ("10.1.2.3", true),
        ("a.b", true),
        ("a_b.c", true),
        ("Device", false),
        ("a..b", false),
        (".a.b", false),
        ("a-.b", false),
        ("a b.c", false),
    ] {
        assert_eq!(super::reads_as_host_name(cn), host, "{cn}");
    }
}

#[test]
fn a_malformed_extension_permits_nothing() {
    let r = NameRules {
        sets: vec![Set::from_der("CN=Broken".into(), &[0x30, 0x03, 0xff])],
    };
    assert!(!ok(&r, LeafName::Dns("example.com")));
    assert!(!ok(&r, LeafName::Ip("10.0.0.1".parse().unwrap())));
    assert!(!ok(&r, LeafName::Uri("https://example.com/")));
    assert!(ok(&r, LeafName::Subject(&Name::default())));
}

/// The rules come out of real CA certificates: the issuing CA's and its ancestors', each
/// binding on its own, and the refusal names the CA and the permitted subtrees.
#[test]
fn rules_collect_from_a_chain_of_certificates() {
    let token = SoftToken::new();
    let cert = |cn: &str, constraints: Constraints| {
        crate::testca::self_signed_constrained(&token, KeySpec::EcP256, cn, cn, constraints).cert
    };
    let upper = cert(
        "Upper",
        Constraints {
            permitted_dns_domains: vec!["example.com".into()],
            ..Default::default()
        },
    );
    let lower = cert(
        "Lower",
        Constraints {
            permitted_dns_domains: vec!["a.example.com".into(), "other.example".into()],
            excluded_dns_domains: vec!["x.a.example.com".into()],
            permitted_ip_ranges: vec![IpRange {
                addr: "192.0.2.0".parse().unwrap(),
                prefix: 24,
            }],
        },
    );
    let plain = cert("Plain", Constraints::default());
    assert!(NameRules::from_certs([&plain]).is_empty());
    let r = NameRules::from_certs([&lower, &upper, &plain]);
    assert!(r.check([LeafName::Dns("w.a.example.com")]).is_ok());
    // Lower permits it, Upper does not.
    let e = r.check([LeafName::Dns("w.other.example")]).unwrap_err();
    assert!(e.contains("CN=Upper") && e.contains("example.com"), "{e}");
    let e = r.check([LeafName::Dns("x.a.example.com")]).unwrap_err();
    assert!(e.contains("CN=Lower") && e.contains("excluded"), "{e}");
    assert!(r
        .check([LeafName::Ip("192.0.2.7".parse().unwrap())])
        .is_ok());
    let e = r
        .check([
            LeafName::Dns("ok.a.example.com"),
            LeafName::Ip("198.51.100.1".parse().unwrap()),
        ])
        .unwrap_err();
    assert!(
        e.contains("IP address 198.51.100.1") && e.contains("192.0.2.0/24"),
        "{e}"
    );
}
