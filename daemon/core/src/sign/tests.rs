use super::*;
use crate::name::DnFields;
use crate::profile::{ca_tbs, CaTemplate, Constraints, IpRange};
use crate::serial::Serial;
use scaivault_hsm::soft::SoftToken;
use scaivault_hsm::{KeySpec, Token};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts the signatures it is asked for.
#[derive(Debug)]
struct Counting(Arc<dyn Signer>, AtomicUsize);

impl Signer for Counting {
    fn spec(&self) -> KeySpec {
        self.0.spec()
    }
    fn public_key_der(&self) -> &[u8] {
        self.0.public_key_der()
    }
    fn algorithm_der(&self) -> Vec<u8> {
        self.0.algorithm_der()
    }
    fn sign(&self, message: &[u8]) -> scaivault_hsm::Result<Vec<u8>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.sign(message)
    }
}
use time::Duration;

fn template(cn: &str, spki: &[u8], years: i64) -> CaTemplate {
    let now = time_util::now();
    CaTemplate {
        subject: DnFields {
            common_name: cn.into(),
            ..Default::default()
        }
        .to_name()
        .unwrap(),
        spki_der: spki.to_vec(),
        serial: Serial::fresh(),
        not_before: now,
        not_after: now + Duration::days(365 * years),
        max_path_length: None,
        constraints: Constraints::default(),
        issuer_urls: None,
    }
}

fn openssl_ok(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn root_and_intermediate_for_every_key_type_verify_with_openssl() {
    let token = SoftToken::new();
    let dir = tempfile::tempdir().unwrap();
    for (i, spec) in [
        KeySpec::EcP256,
        KeySpec::EcP384,
        KeySpec::Ed25519,
        KeySpec::Rsa2048,
    ]
    .into_iter()
    .enumerate()
    {
        let root_key = token.generate(spec, &format!("root{i}")).unwrap();
        let t = template("Test Root", root_key.public_key_der(), 10);
        let tbs = ca_tbs(&t, None, &root_key.algorithm_der()).unwrap();
        let alg = root_key.algorithm_der();
        let root_der = sign_certificate(
            tbs,
            LintExpect {
                issuer: None,
                ca: true,
                algorithm_der: &alg,
            },
            root_key.as_ref(),
        )
        .unwrap();
        let root = pem::from_der(&root_der).unwrap();
        // The certificate assembled around the signed TBS bytes is the one the encoder makes.
        assert_eq!(root.to_der().unwrap(), root_der, "{spec:?}");
        let issuer = issuer_info(&root, alg.clone()).unwrap();

        let int_key = token.generate(KeySpec::EcP256, &format!("int{i}")).unwrap();
        let mut t2 = template("Test Intermediate", int_key.public_key_der(), 5);
        t2.max_path_length = Some(0);
        t2.constraints = Constraints {
            permitted_dns_domains: vec!["svc.cluster.local".into()],
            excluded_dns_domains: vec!["bad.svc.cluster.local".into()],
            permitted_ip_ranges: vec![IpRange::parse("10.0.0.0/8").unwrap()],
        };
        let tbs2 = ca_tbs(&t2, Some(&issuer), &int_key.algorithm_der()).unwrap();
        let int_der = sign_certificate(
            tbs2,
            LintExpect {
                issuer: Some(&issuer),
                ca: true,
                algorithm_der: &alg,
            },
            root_key.as_ref(),
        )
        .unwrap();

        let rp = dir.path().join(format!("root{i}.pem"));
        let ip = dir.path().join(format!("int{i}.pem"));
        std::fs::write(&rp, pem::certificate(&root_der).unwrap()).unwrap();
        std::fs::write(&ip, pem::certificate(&int_der).unwrap()).unwrap();
        let out = openssl_ok(&[
            "verify",
            "-CAfile",
            rp.to_str().unwrap(),
            ip.to_str().unwrap(),
        ]);
        assert!(out.contains(": OK"), "{out}");
        let text = openssl_ok(&["x509", "-in", ip.to_str().unwrap(), "-noout", "-text"]);
        assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
        assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
        assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
        assert!(
            text.contains("Permitted:") && text.contains("DNS:svc.cluster.local"),
            "{text}"
        );
        assert!(text.contains("IP:10.0.0.0/255.0.0.0"), "{text}");
    }
}

#[test]
fn lint_stops_a_bad_certificate_before_the_signer() {
    let token = SoftToken::new();
    let root_key = Counting(
        token.generate(KeySpec::EcP256, "r").unwrap(),
        AtomicUsize::new(0),
    );
    let alg = root_key.algorithm_der();
    let mut t = template("Root", root_key.public_key_der(), 1);
    t.not_after = t.not_before - Duration::days(1);
    let tbs = ca_tbs(&t, None, &alg).unwrap();
    let err = sign_certificate(
        tbs,
        LintExpect {
            issuer: None,
            ca: true,
            algorithm_der: &alg,
        },
        &root_key,
    )
    .unwrap_err();
    assert_eq!(err.code(), "profile_violation");
    assert_eq!(
        root_key.1.load(Ordering::SeqCst),
        0,
        "the signer must not be called"
    );

    // An intermediate outliving its issuer.
    let t = template("Root", root_key.public_key_der(), 1);
    let root_der = sign_certificate(
        ca_tbs(&t, None, &alg).unwrap(),
        LintExpect {
            issuer: None,
            ca: true,
            algorithm_der: &alg,
        },
        &root_key,
    )
    .unwrap();
    assert_eq!(root_key.1.load(Ordering::SeqCst), 1);
    let issuer = issuer_info(&pem::from_der(&root_der).unwrap(), alg.clone()).unwrap();
    let int_key = token.generate(KeySpec::EcP256, "i").unwrap();
    let t2 = template("Int", int_key.public_key_der(), 5);
    let tbs2 = ca_tbs(&t2, Some(&issuer), &alg).unwrap();
    let err = sign_certificate(
        tbs2,
        LintExpect {
            issuer: Some(&issuer),
            ca: true,
            algorithm_der: &alg,
        },
        &root_key,
    )
    .unwrap_err();
    assert!(err.to_string().contains("past the issuer"), "{err}");
    assert_eq!(
        root_key.1.load(Ordering::SeqCst),
        1,
        "the signer must not be called for the intermediate"
    );
}

#[test]
fn csr_verifies_with_openssl() {
    let token = SoftToken::new();
    let key = token.generate(KeySpec::EcP384, "csr").unwrap();
    let subject = DnFields {
        common_name: "Pending Intermediate".into(),
        ..Default::default()
    }
    .to_name()
    .unwrap();
    let csr = build_csr(&subject, key.as_ref()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.csr");
    std::fs::write(&p, csr).unwrap();
    let out = Command::new("openssl")
        .args(["req", "-in", p.to_str().unwrap(), "-noout", "-verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_leaf_that_breaks_the_profile_never_reaches_the_signer() {
    use crate::leaf::{leaf_tbs, sign_leaf, LeafNames, LeafTemplate, LeafUrls};
    use const_oid::AssociatedOid;
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    let token = SoftToken::new();
    let ca_key = Counting(
        token.generate(KeySpec::EcP256, "ca").unwrap(),
        AtomicUsize::new(0),
    );
    let alg = ca_key.algorithm_der();
    let t = template("CA", ca_key.public_key_der(), 1);
    let ca_der = sign_certificate(
        ca_tbs(&t, None, &alg).unwrap(),
        LintExpect {
            issuer: None,
            ca: true,
            algorithm_der: &alg,
        },
        &ca_key,
    )
    .unwrap();
    let issuer = issuer_info(&pem::from_der(&ca_der).unwrap(), alg.clone()).unwrap();
    let leaf_key = token.generate(KeySpec::EcP256, "leaf").unwrap();
    let now = time_util::now();
    let leaf = LeafTemplate {
        subject: DnFields {
            common_name: "a.example".into(),
            ..Default::default()
        }
        .to_name()
        .unwrap(),
        spki_der: leaf_key.public_key_der().to_vec(),
        key_type: scaivault_hsm::KeyType::Ec,
        serial: Serial::fresh(),
        not_before: now,
        not_after: now + Duration::days(7),
        names: LeafNames {
            dns: vec!["a.example".into()],
            ips: vec![],
            uris: vec![],
        },
        server_auth: true,
        client_auth: false,
        urls: LeafUrls::for_ca("http://x", "ca_1"),
    };
    // The untouched template signs once and verifies.
    let ok = sign_leaf(
        &EncodedTbs::new(leaf_tbs(&leaf, &issuer).unwrap()).unwrap(),
        &issuer,
        &ca_key,
    )
    .unwrap();
    assert!(verify::verify_certificate(&pem::from_der(&ok).unwrap(), &issuer.spki_der).is_ok());
    assert_eq!(ca_key.1.load(Ordering::SeqCst), 2);

    let inject = |f: &dyn Fn(&mut x509_cert::certificate::TbsCertificate)| {
        let mut tbs = leaf_tbs(&leaf, &issuer).unwrap();
        f(&mut tbs);
        let err = sign_leaf(&EncodedTbs::new(tbs).unwrap(), &issuer, &ca_key).unwrap_err();
        assert_eq!(err.code(), "profile_violation", "{err}");
    };
    // keyCertSign on a leaf.
    inject(&|tbs| {
        let exts = tbs.extensions.as_mut().unwrap();
        let ku = exts
            .iter_mut()
            .find(|e| e.extn_id == KeyUsage::OID)
            .unwrap();
        *ku = crate::profile::extension(
            &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyCertSign),
            true,
        )
        .unwrap();
    });
    // No subjectAltName.
    inject(&|tbs| {
        tbs.extensions
            .as_mut()
            .unwrap()
            .retain(|e| e.extn_id != x509_cert::ext::pkix::SubjectAltName::OID)
    });
    // A duplicated extension.
    inject(&|tbs| {
        let exts = tbs.extensions.as_mut().unwrap();
        let first = exts[0].clone();
        exts.push(first);
    });
    // A validity past the issuer's.
    inject(&|tbs| tbs.validity.not_after = time_util::to_x509(now + Duration::days(800)).unwrap());
    // A validity that starts before the issuer's.
    inject(&|tbs| tbs.validity.not_before = time_util::to_x509(now - Duration::days(800)).unwrap());
    // An empty subject with a non-critical subjectAltName (RFC 5280 §4.2.1.6).
    inject(&|tbs| tbs.subject = x509_cert::name::RdnSequence(Vec::new()));
    // An issuer name that is not the CA's subject.
    inject(&|tbs| {
        tbs.issuer = DnFields {
            common_name: "Other CA".into(),
            ..Default::default()
        }
        .to_name()
        .unwrap()
    });
    // A short serial.
    inject(&|tbs| {
        tbs.serial_number = x509_cert::serial_number::SerialNumber::new(&[1, 2, 3]).unwrap()
    });
    // keyEncipherment on an EC key.
    inject(&|tbs| {
        let exts = tbs.extensions.as_mut().unwrap();
        let ku = exts
            .iter_mut()
            .find(|e| e.extn_id == KeyUsage::OID)
            .unwrap();
        *ku = crate::profile::extension(
            &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
            true,
        )
        .unwrap();
    });
    // A name outside the CA's name constraints: refused before reservation
    // (`check_name_constraints`, a 400 for the caller) and again by the lint.
    let mut nc = template("CA", ca_key.public_key_der(), 1);
    nc.constraints.permitted_dns_domains = vec!["other.example".into()];
    let nc_der = sign_certificate(
        ca_tbs(&nc, None, &alg).unwrap(),
        LintExpect {
            issuer: None,
            ca: true,
            algorithm_der: &alg,
        },
        &ca_key,
    )
    .unwrap();
    let constrained = IssuerInfo {
        name_rules: issuer_info(&pem::from_der(&nc_der).unwrap(), alg.clone())
            .unwrap()
            .name_rules,
        ..issuer.clone()
    };
    let err = crate::leaf::check_name_constraints(&leaf, &constrained).unwrap_err();
    assert_eq!(err.code(), "name_constraint_violation", "{err}");
    assert!(err.to_string().contains("\"a.example\""), "{err}");
    let err = sign_leaf(
        &EncodedTbs::new(leaf_tbs(&leaf, &constrained).unwrap()).unwrap(),
        &constrained,
        &ca_key,
    )
    .unwrap_err();
    assert_eq!(err.code(), "profile_violation", "{err}");
    assert_eq!(
        ca_key.1.load(Ordering::SeqCst),
        3,
        "no violating certificate reached the signer (the constrained CA's own one did)"
    );
}
