//! Integration tests of the PKCS#11 backend against throwaway SoftHSM2 tokens.
//!
//! PKCS#11 is initialised once per process, so the whole binary shares one fixture: a temporary
//! token directory with its `softhsm2.conf` (exported as `SOFTHSM2_CONF` before the module is
//! loaded), three tokens made with `softhsm2-util --init-token --free`, and one [`Pkcs11Token`] on
//! the main token. Keys get unique labels so the tests can run in parallel. The module path comes
//! from `SCAIVAULT_PKCS11_MODULE` (default `/usr/lib/softhsm/libsofthsm2.so`).
#![cfg(feature = "pkcs11")]
// Test code: fixture helpers outside `#[test]` functions may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_hsm::pkcs11::{Pkcs11Config, Pkcs11Token};
use scaivault_hsm::{
    Error, KeySpec, Signer, Token, X509Signature, X509Signer, KEK_IV_LEN, KEK_TAG_LEN,
};
use sha2::Sha256;
use signature::Verifier;
use spki::DecodePublicKey;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use zeroize::Zeroizing;

const MAIN_TOKEN: &str = "hsm-test-main";
const WRONG_PIN_TOKEN: &str = "hsm-test-wrongpin";
const RECOVER_TOKEN: &str = "hsm-test-recover";
/// Backup tests log in as SO here: no `Pkcs11Token` of this token stays open.
const BACKUP_TOKEN: &str = "hsm-test-backup";
const RESTORE_TOKEN: &str = "hsm-test-restore";
const PIN: &str = "1234";
const SO_PIN: &str = "5678";

struct Fixture {
    _dir: tempfile::TempDir,
    module: PathBuf,
    token: Arc<Pkcs11Token>,
}

fn module_path() -> PathBuf {
    std::env::var_os("SCAIVAULT_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

fn init_token(conf: &Path, label: &str) {
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", conf)
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", PIN, "--so-pin", SO_PIN])
        .output()
        .expect("softhsm2-util (apt-get install softhsm2)");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token {label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(label: &str, pin: &str) -> Pkcs11Config {
    Pkcs11Config {
        module: fixture().module.clone(),
        token_label: label.to_owned(),
        pin: Zeroizing::new(pin.to_owned()),
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("softhsm-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        // All tokens exist before the module is initialised: SoftHSM reads the token directory
        // and SOFTHSM2_CONF at C_Initialize.
        for label in [
            MAIN_TOKEN,
            WRONG_PIN_TOKEN,
            RECOVER_TOKEN,
            BACKUP_TOKEN,
            RESTORE_TOKEN,
        ] {
            init_token(&conf, label);
        }
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let module = module_path();
        let token = Pkcs11Token::open(&Pkcs11Config {
            module: module.clone(),
            token_label: MAIN_TOKEN.to_owned(),
            pin: Zeroizing::new(PIN.to_owned()),
        })
        .unwrap();
        Fixture {
            _dir: dir,
            module,
            token,
        }
    })
}

fn token() -> &'static Pkcs11Token {
    &fixture().token
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::SeqCst))
}

/// A message longer than any digest, to catch a token truncating instead of hashing.
fn message(seed: u8) -> Vec<u8> {
    (0..2048u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn verify(spec: KeySpec, spki: &[u8], msg: &[u8], sig: &[u8]) {
    match spec {
        KeySpec::EcP256 => {
            let vk = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
            let sig = p256::ecdsa::Signature::from_der(sig).unwrap();
            vk.verify(msg, &sig).unwrap();
        }
        KeySpec::EcP384 => {
            let vk = p384::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
            let sig = p384::ecdsa::Signature::from_der(sig).unwrap();
            vk.verify(msg, &sig).unwrap();
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let pk = rsa::RsaPublicKey::from_public_key_der(spki).unwrap();
            assert_eq!(
                rsa::traits::PublicKeyParts::n(&pk).bits(),
                spec.bits() as usize
            );
            let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(pk);
            let sig = rsa::pkcs1v15::Signature::try_from(sig).unwrap();
            vk.verify(msg, &sig).unwrap();
        }
        KeySpec::Ed25519 => {
            let vk = ed25519_dalek::VerifyingKey::from_public_key_der(spki).unwrap();
            let sig = ed25519_dalek::Signature::from_slice(sig).unwrap();
            vk.verify(msg, &sig).unwrap();
        }
    }
}

fn sign_and_verify(signer: &dyn Signer, seed: u8) {
    let msg = message(seed);
    let sig = signer.sign(&msg).unwrap();
    verify(signer.spec(), signer.public_key_der(), &msg, &sig);
}

fn expected_algorithm(spec: KeySpec) -> Vec<u8> {
    use der::Encode;
    let (oid, null) = match spec {
        KeySpec::EcP256 => (const_oid::db::rfc5912::ECDSA_WITH_SHA_256, false),
        KeySpec::EcP384 => (const_oid::db::rfc5912::ECDSA_WITH_SHA_384, false),
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            (const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION, true)
        }
        KeySpec::Ed25519 => (const_oid::db::rfc8410::ID_ED_25519, false),
    };
    spki::AlgorithmIdentifierOwned {
        oid,
        parameters: null.then(der::asn1::Any::null),
    }
    .to_der()
    .unwrap()
}

#[test]
fn every_spec_generates_signs_and_verifies() {
    for spec in [
        KeySpec::EcP256,
        KeySpec::EcP384,
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::Ed25519,
    ] {
        let label = unique(&format!("all-{spec:?}"));
        let signer = token().generate(spec, &label).unwrap();
        assert_eq!(signer.spec(), spec);
        assert_eq!(signer.algorithm_der(), expected_algorithm(spec), "{spec:?}");
        sign_and_verify(signer.as_ref(), 1);
        sign_and_verify(signer.as_ref(), 2);

        // A fresh lookup by label finds the same key and recognises its kind.
        let found = token().find(&label).unwrap();
        assert_eq!(found.spec(), spec);
        assert_eq!(found.public_key_der(), signer.public_key_der());
        sign_and_verify(found.as_ref(), 3);
    }
}

#[test]
fn keys_have_the_attributes_of_a_ca_key() {
    for spec in [KeySpec::EcP256, KeySpec::Rsa2048, KeySpec::Ed25519] {
        let label = unique("attrs");
        token().generate(spec, &label).unwrap();
        let a = token().attributes(&label).unwrap();
        assert!(a.token && a.private && a.sign, "{spec:?}: {a:?}");
        assert!(a.sensitive && a.always_sensitive, "{spec:?}: {a:?}");
        assert!(!a.extractable && a.never_extractable, "{spec:?}: {a:?}");
        assert!(a.value_read_refused, "{spec:?}: {a:?}");
    }
}

#[test]
fn duplicate_label_is_refused() {
    let label = unique("dup");
    let first = token().generate(KeySpec::EcP256, &label).unwrap();
    let err = token().generate(KeySpec::Ed25519, &label).unwrap_err();
    assert!(
        matches!(err, Error::DuplicateLabel(ref l) if *l == label),
        "{err:?}"
    );
    // The first key is untouched.
    assert_eq!(
        token().find(&label).unwrap().public_key_der(),
        first.public_key_der()
    );
}

#[test]
fn missing_label_is_key_not_found() {
    let err = token().find("no-such-key").unwrap_err();
    assert!(matches!(err, Error::KeyNotFound { ref label } if label == "no-such-key"));
    assert!(matches!(
        token().attributes("no-such-key"),
        Err(Error::KeyNotFound { .. })
    ));
    token().destroy("no-such-key").unwrap();
}

#[test]
fn wrong_pin_is_login_refused() {
    let err = Pkcs11Token::open(&config(WRONG_PIN_TOKEN, "0000")).unwrap_err();
    assert!(matches!(err, Error::LoginRefused), "{err:?}");
    assert!(err.is_unavailable());
}

#[test]
fn unknown_token_is_token_not_found() {
    let err = Pkcs11Token::open(&config("no-such-token", PIN)).unwrap_err();
    assert!(
        matches!(err, Error::TokenNotFound(ref l) if l == "no-such-token"),
        "{err:?}"
    );
}

#[test]
fn unloadable_module_is_unavailable() {
    let err = Pkcs11Token::open(&Pkcs11Config {
        module: PathBuf::from("/nonexistent/libpkcs11.so"),
        token_label: MAIN_TOKEN.into(),
        pin: Zeroizing::new(PIN.into()),
    })
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
}

#[test]
fn eight_threads_sign_concurrently() {
    let ec = token()
        .generate(KeySpec::EcP256, &unique("conc-ec"))
        .unwrap();
    let rsa = token()
        .generate(KeySpec::Rsa2048, &unique("conc-rsa"))
        .unwrap();
    std::thread::scope(|scope| {
        for t in 0..8u8 {
            let (ec, rsa) = (Arc::clone(&ec), Arc::clone(&rsa));
            scope.spawn(move || {
                for i in 0..40u8 {
                    sign_and_verify(ec.as_ref(), t.wrapping_mul(64).wrapping_add(i));
                    if i % 8 == 0 {
                        sign_and_verify(rsa.as_ref(), i);
                    }
                }
            });
        }
    });
    token().ping().unwrap();
    assert!(token().idle_sessions_for_test() >= 1);
}

#[test]
fn signing_recovers_after_sessions_are_closed_or_logged_out() {
    // A token of its own: closing all its sessions logs this process out of it only.
    let token = Pkcs11Token::open(&config(RECOVER_TOKEN, PIN)).unwrap();
    let label = unique("recover");
    let signer = token.generate(KeySpec::EcP256, &label).unwrap();
    let rsa = token
        .generate(KeySpec::Rsa2048, &unique("recover-rsa"))
        .unwrap();
    sign_and_verify(signer.as_ref(), 1);

    // Every session closed, keeper included: the login is gone.
    token.drop_sessions_for_test();
    assert_eq!(token.idle_sessions_for_test(), 0);
    sign_and_verify(signer.as_ref(), 2);
    sign_and_verify(rsa.as_ref(), 2);
    token.ping().unwrap();

    // Logged out behind the pool's back: pooled sessions are valid but public.
    token.logout_for_test().unwrap();
    sign_and_verify(signer.as_ref(), 3);
    token.logout_for_test().unwrap();
    token.ping().unwrap();
    token.logout_for_test().unwrap();
    assert_eq!(
        token.find(&label).unwrap().public_key_der(),
        signer.public_key_der()
    );
    token.logout_for_test().unwrap();
    assert!(token.attributes(&label).unwrap().never_extractable);

    // Both at once, then many threads.
    token.logout_for_test().unwrap();
    token.drop_sessions_for_test();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let signer = Arc::clone(&signer);
            scope.spawn(move || sign_and_verify(signer.as_ref(), t));
        }
    });
    // The copies of the lost sessions are gone; one fresh copy signs.
    let expected = usize::from(token.session_copies_enabled());
    assert_eq!(
        token.session_copies_for_test(&label).unwrap().len(),
        expected
    );

    // The KEK works across a lost login too.
    let kek = unique("recover-kek");
    token.ensure_kek(&kek).unwrap();
    let sealed = token.kek_encrypt(&kek, &[3; 32]).unwrap();
    token.logout_for_test().unwrap();
    assert_eq!(token.kek_decrypt(&kek, &sealed).unwrap(), [3; 32]);
    token.drop_sessions_for_test();
    let again = token.kek_encrypt(&kek, &[4; 32]).unwrap();
    token.logout_for_test().unwrap();
    token.ensure_kek(&kek).unwrap();
    assert_eq!(token.token_objects_for_test(&kek).unwrap(), 1);
    assert_eq!(token.kek_decrypt(&kek, &again).unwrap(), [4; 32]);
    sign_and_verify(signer.as_ref(), 9);
    assert_eq!(
        token.session_copies_for_test(&label).unwrap().len(),
        expected
    );

    // After each logout the copy is made again, and SoftHSM's `C_CopyObject` shows it as a token
    // object for a moment: threads looking the key up by label meanwhile must not conclude that
    // two keys share it. Without the retry in `find_one` about 1 signature in 40 here failed with
    // `DuplicateLabel`.
    for round in 0..300u16 {
        token.logout_for_test().unwrap();
        token.drop_sessions_for_test();
        std::thread::scope(|scope| {
            for t in 0..4u8 {
                let signer = Arc::clone(&signer);
                scope.spawn(move || {
                    let msg = message(t);
                    let sig = signer
                        .sign(&msg)
                        .unwrap_or_else(|e| panic!("round {round}, thread {t}: {e}"));
                    verify(signer.spec(), signer.public_key_der(), &msg, &sig);
                });
            }
        });
    }
}

#[test]
fn destroying_one_key_leaves_the_others_signing() {
    let keep = token().generate(KeySpec::EcP384, &unique("keep")).unwrap();
    let doomed_label = unique("doomed");
    let doomed = token().generate(KeySpec::EcP256, &doomed_label).unwrap();
    sign_and_verify(keep.as_ref(), 1);
    sign_and_verify(doomed.as_ref(), 1);

    token().destroy(&doomed_label).unwrap();
    sign_and_verify(keep.as_ref(), 2);
    assert!(matches!(
        token().find(&doomed_label),
        Err(Error::KeyNotFound { .. })
    ));
    // A signer whose key was destroyed fails cleanly.
    assert!(matches!(doomed.sign(b"x"), Err(Error::KeyNotFound { .. })));
    // The label is free again.
    let again = token().generate(KeySpec::Ed25519, &doomed_label).unwrap();
    sign_and_verify(again.as_ref(), 3);
    sign_and_verify(keep.as_ref(), 3);
}

#[test]
fn softhsm_keys_make_self_signed_roots_openssl_accepts() {
    use der::{Decode, EncodePem};
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};

    for spec in [
        KeySpec::EcP256,
        KeySpec::EcP384,
        KeySpec::Rsa2048,
        KeySpec::Ed25519,
    ] {
        let signer = X509Signer(token().generate(spec, &unique("x509")).unwrap());
        let spki = spki::SubjectPublicKeyInfoOwned::from_der(signer.0.public_key_der()).unwrap();
        let builder = CertificateBuilder::new(
            Profile::Root,
            x509_cert::serial_number::SerialNumber::from(7u32),
            x509_cert::time::Validity::from_now(std::time::Duration::from_secs(86_400)).unwrap(),
            x509_cert::name::Name::from_str(&format!("CN=SoftHSM {spec:?},O=ScaiVault Test"))
                .unwrap(),
            spki,
            &signer,
        )
        .unwrap();
        let cert = builder.build::<X509Signature>().unwrap();
        let pem = cert.to_pem(der::pem::LineEnding::LF).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pem");
        std::fs::write(&path, &pem).unwrap();
        let verify = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&path)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{spec:?}: openssl verify: {}{}",
            String::from_utf8_lossy(&verify.stdout),
            String::from_utf8_lossy(&verify.stderr)
        );
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(text.status.success(), "{spec:?}: openssl x509 -text");
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("CA:TRUE"), "{spec:?}: {text}");
    }
}

#[test]
fn ping_answers() {
    token().ping().unwrap();
}

#[test]
fn kek_seals_a_data_key_on_the_token() {
    let label = unique("kek");
    assert!(matches!(
        token().kek_encrypt(&label, b"x"),
        Err(Error::KeyNotFound { .. })
    ));
    token().ensure_kek(&label).unwrap();
    let data_key: Vec<u8> = (0..32u8).collect();
    let a = token().kek_encrypt(&label, &data_key).unwrap();
    let b = token().kek_encrypt(&label, &data_key).unwrap();
    assert_eq!(a.len(), KEK_IV_LEN + data_key.len() + KEK_TAG_LEN);
    // A fresh IV each time, hence different ciphertexts.
    assert_ne!(a[..KEK_IV_LEN], b[..KEK_IV_LEN]);
    assert_ne!(a[KEK_IV_LEN..], b[KEK_IV_LEN..]);
    assert_eq!(token().kek_decrypt(&label, &a).unwrap(), data_key);
    assert_eq!(token().kek_decrypt(&label, &b).unwrap(), data_key);
    // Empty and longer plaintexts too.
    let empty = token().kek_encrypt(&label, &[]).unwrap();
    assert!(token().kek_decrypt(&label, &empty).unwrap().is_empty());
    let long = message(5);
    let sealed = token().kek_encrypt(&label, &long).unwrap();
    assert_eq!(token().kek_decrypt(&label, &sealed).unwrap(), long);

    // Idempotent: the same key stays, old ciphertexts still open.
    token().ensure_kek(&label).unwrap();
    assert_eq!(token().kek_decrypt(&label, &a).unwrap(), data_key);
    assert_eq!(token().token_objects_for_test(&label).unwrap(), 1);
}

#[test]
fn kek_refuses_tampered_ciphertext() {
    let label = unique("kek-tamper");
    token().ensure_kek(&label).unwrap();
    let sealed = token().kek_encrypt(&label, &[0x5a; 32]).unwrap();
    // A flipped bit in the IV, the ciphertext or the tag.
    for i in [
        0,
        KEK_IV_LEN - 1,
        KEK_IV_LEN,
        KEK_IV_LEN + 31,
        sealed.len() - 1,
    ] {
        let mut bad = sealed.clone();
        bad[i] ^= 0x80;
        let err = token().kek_decrypt(&label, &bad).unwrap_err();
        assert!(matches!(err, Error::Decrypt(_)), "byte {i}: {err:?}");
        assert!(!err.is_unavailable());
    }
    // Truncated, extended, too short for IV and tag.
    for bad in [
        &sealed[..sealed.len() - 1],
        &sealed[..KEK_IV_LEN + KEK_TAG_LEN],
        &sealed[..10],
    ] {
        let err = token().kek_decrypt(&label, bad).unwrap_err();
        assert!(
            matches!(err, Error::Decrypt(_)),
            "{} bytes: {err:?}",
            bad.len()
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(
        token().kek_decrypt(&label, &longer),
        Err(Error::Decrypt(_))
    ));
    // Another KEK cannot open it.
    let other = unique("kek-other");
    token().ensure_kek(&other).unwrap();
    assert!(matches!(
        token().kek_decrypt(&other, &sealed),
        Err(Error::Decrypt(_))
    ));
    // The session is still usable after the refused decryptions.
    assert_eq!(token().kek_decrypt(&label, &sealed).unwrap(), [0x5a; 32]);
}

#[test]
fn kek_is_sensitive_and_never_extractable() {
    let label = unique("kek-attrs");
    token().ensure_kek(&label).unwrap();
    let a = token().kek_attributes(&label).unwrap();
    assert!(a.token && a.private, "{a:?}");
    assert!(a.sensitive && a.always_sensitive, "{a:?}");
    assert!(!a.extractable && a.never_extractable, "{a:?}");
    assert!(!a.sign, "{a:?}");
    assert!(a.value_read_refused, "{a:?}");
    assert!(matches!(
        token().kek_attributes("no-such-kek"),
        Err(Error::KeyNotFound { .. })
    ));
}

#[test]
fn kek_and_signing_keys_do_not_share_labels() {
    let ca = unique("kek-vs-ca");
    token().generate(KeySpec::EcP256, &ca).unwrap();
    assert!(matches!(
        token().ensure_kek(&ca),
        Err(Error::DuplicateLabel(_))
    ));
    let kek = unique("kek-first");
    token().ensure_kek(&kek).unwrap();
    assert!(matches!(
        token().generate(KeySpec::EcP256, &kek),
        Err(Error::DuplicateLabel(_))
    ));
    // Destroying "the key pair" of a KEK label leaves the KEK alone.
    token().destroy(&kek).unwrap();
    let sealed = token().kek_encrypt(&kek, b"k").unwrap();
    assert_eq!(token().kek_decrypt(&kek, &sealed).unwrap(), b"k");
}

#[test]
fn concurrent_ensure_kek_creates_one_key() {
    let label = unique("kek-race");
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                barrier.wait();
                token().ensure_kek(&label).unwrap();
            });
        }
    });
    assert_eq!(token().token_objects_for_test(&label).unwrap(), 1);
    let sealed = token().kek_encrypt(&label, &[1; 32]).unwrap();
    assert_eq!(token().kek_decrypt(&label, &sealed).unwrap(), [1; 32]);
}

#[test]
fn signers_share_one_sensitive_session_copy() {
    let label = unique("copy");
    let signer = token().generate(KeySpec::EcP256, &label).unwrap();
    sign_and_verify(signer.as_ref(), 1);
    let expected = usize::from(token().session_copies_enabled());
    let copies = token().session_copies_for_test(&label).unwrap();
    assert_eq!(copies.len(), expected, "{copies:?}");
    for c in &copies {
        assert!(!c.token, "the copy must be a session object: {c:?}");
        assert!(c.private && c.sign, "{c:?}");
        assert!(c.sensitive && c.always_sensitive, "{c:?}");
        assert!(!c.extractable && c.never_extractable, "{c:?}");
        assert!(c.value_read_refused, "{c:?}");
    }
    // The copy is no token object: the token holds the key pair only.
    assert_eq!(token().token_objects_for_test(&label).unwrap(), 2);
    // The token object itself is what `attributes` describes.
    assert!(token().attributes(&label).unwrap().token);

    // Another signer of the same key and many threads reuse the one copy.
    let again = token().find(&label).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let (signer, again) = (Arc::clone(&signer), Arc::clone(&again));
            scope.spawn(move || {
                for i in 0..10u8 {
                    sign_and_verify(signer.as_ref(), t * 16 + i);
                    sign_and_verify(again.as_ref(), t * 16 + i);
                }
            });
        }
    });
    assert_eq!(
        token().session_copies_for_test(&label).unwrap().len(),
        expected
    );

    // Destroying the key destroys its copy; its signers fail cleanly.
    token().destroy(&label).unwrap();
    assert!(token().session_copies_for_test(&label).unwrap().is_empty());
    assert!(matches!(signer.sign(b"x"), Err(Error::KeyNotFound { .. })));
    assert!(matches!(again.sign(b"x"), Err(Error::KeyNotFound { .. })));
}

#[test]
fn uncopyable_key_signs_with_the_token_object() {
    let label = unique("nocopy");
    let signer = token()
        .generate_uncopyable_for_test(KeySpec::EcP256, &label)
        .unwrap();
    sign_and_verify(signer.as_ref(), 1);
    sign_and_verify(signer.as_ref(), 2);
    assert!(token().session_copies_for_test(&label).unwrap().is_empty());
    let rsa_label = unique("nocopy-rsa");
    let rsa = token()
        .generate_uncopyable_for_test(KeySpec::Rsa2048, &rsa_label)
        .unwrap();
    sign_and_verify(rsa.as_ref(), 3);
    assert!(token()
        .session_copies_for_test(&rsa_label)
        .unwrap()
        .is_empty());
}

/// Backup: only a trusted (SO-made) wrapping key wraps a backup-enabled key, a key made without
/// backup cannot be wrapped at all, and the unwrapped key signs under the original public key.
/// One test, because the steps log in as SO and user in turn on the same tokens.
#[test]
fn backup_keys_wrap_only_under_a_trusted_key_and_restore_elsewhere() {
    use scaivault_hsm::backup::{self, UnwrapTarget};
    let module = fixture().module.clone();
    let kek = [0x42u8; backup::WRAPPING_KEY_BYTES];
    let (spki, plain_label) = {
        let t = Pkcs11Token::open(&config(BACKUP_TOKEN, PIN)).unwrap();
        let key = t.generate_for_backup(KeySpec::EcP256, "bk-root").unwrap();
        t.generate(KeySpec::EcP256, "bk-plain").unwrap();
        let attrs = t.attributes("bk-root").unwrap();
        assert!(attrs.sensitive && attrs.extractable && attrs.value_read_refused);
        assert!(attrs.wrap_with_trusted, "{attrs:?}");
        assert!(!t.attributes("bk-plain").unwrap().wrap_with_trusted);
        assert!(matches!(
            t.generate_for_backup(KeySpec::Ed25519, "bk-ed"),
            Err(Error::UnsupportedKey(_))
        ));
        (key.public_key_der().to_vec(), "bk-plain")
        // `t` drops here: its sessions close and the process logs out of the token.
    };
    let untrusted =
        backup::wrap_with_untrusted_key_for_test(&module, BACKUP_TOKEN, PIN, "bk-root", &kek);
    assert!(
        matches!(&untrusted, Err(Error::Pkcs11 { rv, .. }) if rv == "CKR_KEY_NOT_WRAPPABLE"),
        "{untrusted:?}"
    );
    let plain = backup::wrap_private_key(&module, BACKUP_TOKEN, SO_PIN, PIN, plain_label, &kek);
    assert!(
        matches!(&plain, Err(Error::Pkcs11 { rv, .. }) if rv == "CKR_KEY_UNEXTRACTABLE"),
        "{plain:?}"
    );
    let wrapped =
        backup::wrap_private_key(&module, BACKUP_TOKEN, SO_PIN, PIN, "bk-root", &kek).unwrap();
    let target = UnwrapTarget {
        module: &module,
        token_label: RESTORE_TOKEN,
        user_pin: PIN,
        label: "bk-root",
        spec: KeySpec::EcP256,
        spki_der: &spki,
    };
    // A wrong wrapping key is refused and leaves nothing behind.
    let wrong = backup::unwrap_private_key(&target, &[0x43u8; 32], &wrapped);
    assert!(matches!(wrong, Err(Error::Decrypt(_))), "{wrong:?}");
    backup::unwrap_private_key(&target, &kek, &wrapped).unwrap();
    let restored = Pkcs11Token::open(&config(RESTORE_TOKEN, PIN)).unwrap();
    let key = restored.find("bk-root").unwrap();
    assert_eq!(key.public_key_der(), spki.as_slice());
    let msg = message(9);
    verify(KeySpec::EcP256, &spki, &msg, &key.sign(&msg).unwrap());
    let attrs = restored.attributes("bk-root").unwrap();
    assert!(attrs.token && attrs.private && attrs.sensitive && attrs.sign);
    assert!(attrs.value_read_refused);
}
