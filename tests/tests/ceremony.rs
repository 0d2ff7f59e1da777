//! Key ceremonies (issue #8) end to end on two SoftHSM tokens: the offline root on token A made
//! by `scaivault ceremony`, the online daemon on its own token B. The daemon's pending
//! intermediate is signed by the ceremony, installed, and issues a leaf that `openssl verify`
//! accepts up to the offline root. The transcript verifies untouched and fails after a byte
//! changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{bin, openssl, openssl_ok, write, Daemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

fn module() -> String {
    if let Ok(m) = std::env::var("SCAIVAULT_PKCS11_MODULE") {
        return m;
    }
    MODULE_CANDIDATES
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("SoftHSM2 is not installed")
        .to_string()
}

/// A ceremony directory: its own SoftHSM2 token directory (token A), PIN files and ceremony file.
struct Offline {
    dir: tempfile::TempDir,
}

impl Offline {
    fn new(policy: &str) -> Offline {
        let dir = tempfile::Builder::new()
            .prefix("scaivault-ceremony-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("tokens")).unwrap();
        std::fs::write(
            p.join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                p.join("tokens").display()
            ),
        )
        .unwrap();
        std::fs::write(p.join("user.pin"), "user-pin-4711\n").unwrap();
        std::fs::write(p.join("so.pin"), "so-pin-0815\n").unwrap();
        std::fs::write(
            p.join("ceremony.toml"),
            format!(
                r#"[token]
module = "{module}"
label = "offline-root-a"
softhsm2_conf = "softhsm2.conf"
user_pin_file = "user.pin"
so_pin_file = "so.pin"

[people]
operator = "Alice Administrator"
witnesses = ["Bob Witness", "Carol Auditor"]

[root]
key_label = "root-2026"
key_type = "ec"
key_size = 384
common_name = "ScaiVault Offline Root 2026"
organization = "ScaiVault Test"
country = "DE"
validity_days = 7300
max_path_length = 1

[intermediate]
validity_days = 1825
max_path_length = 0
{policy}

[output]
root_certificate = "root.pem"
transcript = "transcript.jsonl"
"#,
                module = module()
            ),
        )
        .unwrap();
        Offline { dir }
    }

    /// Rewrites the ceremony file.
    fn edit(&self, f: impl Fn(String) -> String) {
        let text = std::fs::read_to_string(self.path("ceremony.toml")).unwrap();
        std::fs::write(self.path("ceremony.toml"), f(text)).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("ceremony")
            .arg("--file")
            .arg(self.path("ceremony.toml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ceremony {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "ceremony {args:?} should fail");
        assert!(err.contains(needle), "ceremony {args:?}: {err}");
    }

    fn transcript_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("transcript.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn offline_root_signs_the_daemons_intermediate_and_the_leaf_verifies() {
    let off = Offline::new(
        r#"permitted_dns_domains = ["svc.cluster.local"]
min_rsa_bits = 3072
min_ec_bits = 256"#,
    );
    let root = s(&off.path("root.pem"));

    // Token A: initialise, generate the root, list the keys.
    let out = off.ok(&["init-token"]);
    assert!(out.contains("offline-root-a"), "{out}");
    off.ok(&["generate-root"]);
    let text = openssl_ok(&["x509", "-in", &root, "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:1"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("secp384r1"), "{text}");
    openssl_ok(&["verify", "-CAfile", &root, &root]);
    // A user PIN of a length the token cannot take: refused before any login attempt.
    let good_pin = std::fs::read_to_string(off.path("user.pin")).unwrap();
    std::fs::write(off.path("user.pin"), "123\n").unwrap();
    off.fails(&["list-keys"], "PIN must be 4 to 255 bytes long");
    std::fs::write(off.path("user.pin"), &good_pin).unwrap();
    let listing = off.ok(&["list-keys"]);
    let line = listing
        .lines()
        .find(|l| l.starts_with("root-2026\tCKO_PRIVATE_KEY"))
        .unwrap_or_else(|| panic!("{listing}"));
    for flag in [
        "SENSITIVE=1",
        "EXTRACTABLE=0",
        "NEVER_EXTRACTABLE=1",
        "PRIVATE=1",
        "SIGN=1",
        // Nobody with the user PIN can copy it, relabel it or widen its usage.
        "MODIFIABLE=0",
        "COPYABLE=0",
    ] {
        assert!(line.contains(flag), "{flag}: {line}");
    }
    // A second root on the same label is refused and leaves the certificate alone.
    std::fs::rename(off.path("root.pem"), off.path("root.keep")).unwrap();
    off.fails(&["generate-root"], "exists already");
    std::fs::rename(off.path("root.keep"), off.path("root.pem")).unwrap();

    // Token B: the daemon's pending intermediate.
    let d = Daemon::start();
    let tmp = d.dir.path();
    let r = d.post(
        "/v1/pki/ca",
        &json!({"name": "issuing", "common_name": "ScaiVault Issuing CA", "ca_type": "intermediate", "key_type": "ec", "key_size": 256, "validity_days": 365}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let ca = r.json();
    assert_eq!(ca["status"], "pending_signature");
    let id = ca["id"].as_str().unwrap();
    let csr = write(tmp, "issuing.csr", ca["csr"].as_str().unwrap());

    // Refusals first: a weak key and a request whose signature does not verify.
    let weak_key = s(&tmp.join("weak.key"));
    let weak = s(&tmp.join("weak.csr"));
    openssl_ok(&[
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &weak_key, "-subj", "/CN=Weak",
        "-out", &weak,
    ]);
    off.fails(
        &[
            "sign-intermediate",
            "--csr",
            &weak,
            "--out",
            &s(&tmp.join("w.pem")),
        ],
        "weaker than the ceremony policy",
    );
    let der = tmp.join("issuing.der");
    openssl_ok(&["req", "-in", &csr, "-outform", "DER", "-out", &s(&der)]);
    let mut bytes = std::fs::read(&der).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(tmp.join("bad.der"), &bytes).unwrap();
    let bad = s(&tmp.join("bad.csr"));
    openssl_ok(&[
        "req",
        "-inform",
        "DER",
        "-in",
        &s(&tmp.join("bad.der")),
        "-out",
        &bad,
    ]);
    off.fails(
        &[
            "sign-intermediate",
            "--csr",
            &bad,
            "--out",
            &s(&tmp.join("b.pem")),
        ],
        "signature",
    );
    assert!(!tmp.join("w.pem").exists() && !tmp.join("b.pem").exists());
    // An --out whose directory does not exist is refused before the root signs anything.
    off.fails(
        &[
            "sign-intermediate",
            "--csr",
            &csr,
            "--out",
            &s(&tmp.join("nodir/issuing.pem")),
        ],
        "the directory of the intermediate certificate",
    );

    // The ceremony signs the real CSR.
    let signed = s(&tmp.join("issuing.pem"));
    off.ok(&["sign-intermediate", "--csr", &csr, "--out", &signed]);
    let text = openssl_ok(&["x509", "-in", &signed, "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Permitted:"), "{text}");
    assert!(text.contains("DNS:svc.cluster.local"), "{text}");
    assert!(text.contains("ScaiVault Issuing CA"), "{text}");
    openssl_ok(&["verify", "-CAfile", &root, &signed]);

    // The daemon installs it and issues a leaf.
    let root_pem = std::fs::read_to_string(&root).unwrap();
    let ok = d.post(
        &format!("/v1/pki/ca/{id}/signed-certificate"),
        &json!({"certificate_pem": std::fs::read_to_string(&signed).unwrap(), "chain_pem": root_pem}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["status"], "active");
    let role = d.post(
        "/v1/pki/roles",
        &json!({"name": "svc", "ca_id": id, "allowed_domains": ["*.svc.cluster.local"], "allow_subdomains": true, "max_ttl": "720h", "key_type": "ec", "key_bits": 256}),
    );
    assert_eq!(role.status, 201, "{}", role.text());
    let issued = d.post(
        "/v1/pki/issue/svc",
        &json!({"common_name": "billing.svc.cluster.local", "ttl": "168h"}),
    );
    assert_eq!(issued.status, 200, "{}", issued.text());
    let leaf = write(
        tmp,
        "leaf.pem",
        issued.json()["certificate"].as_str().unwrap(),
    );
    let out = openssl(&["verify", "-CAfile", &root, "-untrusted", &signed, &leaf]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The transcript: every step, the people, the token, hashes, and a signature at the end.
    let lines = off.transcript_lines();
    let steps: Vec<&str> = lines.iter().map(|l| l["step"].as_str().unwrap()).collect();
    assert_eq!(
        steps,
        [
            "init-token",
            "generate-root",
            "transcript-signature",
            "list-keys",
            "transcript-signature",
            "sign-intermediate",
            "transcript-signature"
        ]
    );
    let sign_step = &lines[5];
    assert_eq!(sign_step["operator"], "Alice Administrator");
    assert_eq!(
        sign_step["witnesses"],
        json!(["Bob Witness", "Carol Auditor"])
    );
    assert_eq!(sign_step["token"]["label"], "offline-root-a");
    assert!(!sign_step["token"]["serial"].as_str().unwrap().is_empty());
    let csr_hash = openssl_ok(&["dgst", "-sha256", "-r", &csr]);
    assert_eq!(
        sign_step["inputs"]["csr"].as_str().unwrap(),
        csr_hash.split_whitespace().next().unwrap()
    );
    let cert_hash = openssl_ok(&["dgst", "-sha256", "-r", &signed]);
    assert_eq!(
        sign_step["outputs"]["certificate_pem"].as_str().unwrap(),
        cert_hash.split_whitespace().next().unwrap()
    );
    assert_eq!(sign_step["keys"][0]["role"], "root");
    assert_eq!(sign_step["keys"][1]["role"], "intermediate");
    let whole = std::fs::read_to_string(off.path("transcript.jsonl")).unwrap();
    for secret in ["user-pin-4711", "so-pin-0815"] {
        assert!(!whole.contains(secret), "a PIN is in the transcript");
    }

    let out = off.ok(&["verify-transcript"]);
    assert!(out.contains("7 lines, 3 signatures"), "{out}");
    // Any changed byte fails: first, middle, inside the last signature, the final newline.
    let original = std::fs::read(off.path("transcript.jsonl")).unwrap();
    let n = original.len();
    for i in [0, n / 3, n / 2, n - 20, n - 1] {
        let mut bad = original.clone();
        bad[i] ^= 0x01;
        std::fs::write(off.path("transcript.jsonl"), &bad).unwrap();
        let out = off.run(&["verify-transcript"]);
        assert_eq!(out.status.code(), Some(1), "byte {i} went unnoticed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("FAILED"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(off.path("transcript.jsonl"), &original).unwrap();
    off.ok(&["verify-transcript"]);
    // Against another root's key it fails.
    let other_key = s(&tmp.join("other.key"));
    let other = s(&tmp.join("other.pem"));
    openssl_ok(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        &other_key,
        "-subj",
        "/CN=Other Root",
        "-days",
        "1",
        "-out",
        &other,
    ]);
    let out = off.run(&["verify-transcript", "--root-certificate", &other]);
    assert_eq!(out.status.code(), Some(1));

    // The daemon publishes the offline root's CRLs: the root is imported by certificate only.
    let int_serial = ok.json()["serial_number"].as_str().unwrap().to_owned();
    let imp = d.post(
        "/v1/pki/ca/import",
        &json!({"name": "offline-root", "certificate_pem": root_pem}),
    );
    assert_eq!(imp.status, 201, "{}", imp.text());
    let rca = imp.json();
    assert_eq!(rca["offline"], true);
    assert_eq!(rca["ca_type"], "root");
    assert_eq!(rca["key_type"], "ec");
    assert_eq!(rca["key_size"], 384);
    let rid = rca["id"].as_str().unwrap().to_owned();
    // Imported again under another name: refused, one certificate is one CA (two would make a
    // CRL import, and the retirement of the root's children, ambiguous).
    let again = d
        .post(
            "/v1/pki/ca/import",
            &json!({"name": "offline-root-2", "certificate_pem": root_pem}),
        )
        .problem(409, "ca_conflict");
    assert!(again["detail"].as_str().unwrap().contains(&rid), "{again}");
    assert_eq!(d.get(&format!("/v1/pki/ca/{id}")).json()["offline"], false);
    // It signs nothing here.
    let r = d.post(
        "/v1/pki/roles",
        &json!({"name": "r2", "ca_id": rid, "allowed_domains": ["x.test"], "max_ttl": "24h"}),
    );
    r.problem(400, "ca_offline");
    let r = d.post(
        "/v1/pki/ca",
        &json!({"name": "int2", "common_name": "Int 2", "ca_type": "intermediate", "parent_ca_id": rid, "validity_days": 30}),
    );
    r.problem(400, "parent_ca_offline");
    d.post(&format!("/v1/pki/ca/{rid}/crl"), &json!({}))
        .problem(409, "ca_offline");
    d.get(&format!("/v1/pki/ca/{rid}/crl"))
        .problem(404, "crl_not_found");
    let (_, ocsp_out) = {
        let o = openssl(&[
            "ocsp",
            "-issuer",
            &root,
            "-cert",
            &signed,
            "-url",
            &format!("{}/v1/pki/ocsp/{rid}", d.base),
            "-noverify",
        ]);
        (
            o.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    assert!(ocsp_out.contains("unauthorized"), "{ocsp_out}");

    // CRL 1 from the ceremony: published byte for byte, verified by openssl against the root.
    let crl1 = s(&tmp.join("root-crl1.pem"));
    off.ok(&["sign-crl", "--out", &crl1]);
    let crl1_pem = std::fs::read_to_string(&crl1).unwrap();
    let import = |ca: &str, pem: &str| {
        d.post(
            &format!("/v1/pki/ca/{ca}/crl/import"),
            &json!({ "crl_pem": pem }),
        )
    };
    let r = import(&rid, &crl1_pem);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["crl_number"], 1);
    assert_eq!(r.json()["entries"], 0);
    assert_eq!(r.json()["retired_cas"], json!([]));
    let served = d.get(&format!("/v1/pki/ca/{rid}/crl"));
    assert_eq!(served.status, 200);
    assert_eq!(served.content_type, "application/pkix-crl");
    let crl1_der = tmp.join("root-crl1.der");
    openssl_ok(&[
        "crl",
        "-in",
        &crl1,
        "-outform",
        "DER",
        "-out",
        &s(&crl1_der),
    ]);
    assert_eq!(served.bytes, std::fs::read(&crl1_der).unwrap());
    let served_path = write(
        tmp,
        "served.pem",
        &d.get(&format!("/v1/pki/ca/{rid}/crl?format=pem")).text(),
    );
    let v = openssl(&["crl", "-in", &served_path, "-CAfile", &root, "-noout"]);
    assert!(
        String::from_utf8_lossy(&v.stderr).contains("verify OK"),
        "{}",
        String::from_utf8_lossy(&v.stderr)
    );
    // Refusals: the same number again, an online CA, another CA's CRL, garbage, no body field.
    import(&rid, &crl1_pem).problem(409, "crl_number_not_increasing");
    import(id, &crl1_pem).problem(409, "ca_not_offline");
    let int_crl = d.get(&format!("/v1/pki/ca/{id}/crl?format=pem")).text();
    import(&rid, &int_crl).problem(400, "crl_issuer_mismatch");
    import(
        &rid,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .problem(400, "invalid_crl");
    import(&rid, "bm90IGEgQ1JM").problem(400, "invalid_crl");
    import("ca_00000000000000000000000000000000", &crl1_pem).problem(404, "ca_not_found");
    d.post(&format!("/v1/pki/ca/{rid}/crl/import"), &json!({}))
        .problem(400, "missing_field");

    // CRL 2 revokes the intermediate: the daemon retires it, and it stops issuing.
    let crl2 = s(&tmp.join("root-crl2.pem"));
    off.ok(&[
        "sign-crl",
        "--out",
        &crl2,
        "--revoke",
        &format!("{int_serial}:ca_compromise"),
    ]);
    let r = import(&rid, &std::fs::read_to_string(&crl2).unwrap());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["crl_number"], 2);
    assert_eq!(r.json()["entries"], 1);
    assert_eq!(r.json()["retired_cas"], json!([id]));
    assert_eq!(
        d.get(&format!("/v1/pki/ca/{id}")).json()["status"],
        "retired"
    );
    d.post(
        "/v1/pki/issue/svc",
        &json!({"common_name": "late.svc.cluster.local"}),
    )
    .problem(409, "ca_not_active");
    let served = d.get(&format!("/v1/pki/ca/{rid}/crl?format=pem")).text();
    assert_eq!(
        served.trim(),
        std::fs::read_to_string(&crl2).unwrap().trim()
    );
    // Recorded: one event per import, and audit records without the CRL body.
    let events = d.get("/v1/events?limit=1000").json();
    let imported: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "crl.generated" && e["object_id"] == rid.as_str())
        .collect();
    assert_eq!(imported.len(), 2, "{events}");
    assert_eq!(imported[1]["data"]["source"], "import");
    let audit = d.get("/v1/audit?limit=1000").text();
    assert!(audit.contains("crl.import"), "{audit}");
}

#[test]
fn ceremony_refuses_pins_on_the_command_line_and_bad_files() {
    let off = Offline::new("");
    // There is no PIN option at all.
    let out = off.run(&["init-token", "--pin", "1234"]);
    assert!(!out.status.success());
    // A ceremony file with an unknown key is refused before anything touches a token.
    let text = std::fs::read_to_string(off.path("ceremony.toml")).unwrap();
    std::fs::write(
        off.path("ceremony.toml"),
        text.replace("[people]", "user_pin = \"1234\"\n\n[people]"),
    )
    .unwrap();
    off.fails(&["init-token"], "unknown field");
    // A ceremony without a witness is no ceremony.
    std::fs::write(
        off.path("ceremony.toml"),
        text.replace(
            "witnesses = [\"Bob Witness\", \"Carol Auditor\"]",
            "witnesses = []",
        ),
    )
    .unwrap();
    off.fails(&["init-token"], "people.witnesses is empty");
    assert!(!off.path("transcript.jsonl").exists());
}

#[test]
fn offline_root_signs_crls_with_increasing_numbers() {
    let off = Offline::new("");
    let root = s(&off.path("root.pem"));
    off.ok(&["init-token"]);
    off.ok(&["generate-root"]);
    let crl = |n: u32| s(&off.path(&format!("crl{n}.pem")));
    let check = |path: &str| -> String {
        let out = openssl(&["crl", "-in", path, "-CAfile", &root, "-noout"]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stderr).contains("verify OK"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        openssl_ok(&["crl", "-in", path, "-noout", "-text"])
    };

    off.ok(&["sign-crl", "--out", &crl(1)]);
    let text = check(&crl(1));
    assert!(
        text.contains("X509v3 CRL Number: \n                1\n"),
        "{text}"
    );
    assert!(text.contains("No Revoked Certificates"), "{text}");

    off.ok(&[
        "sign-crl",
        "--out",
        &crl(2),
        "--revoke",
        "0a1b2c3d4e5f6071:key_compromise",
    ]);
    let text = check(&crl(2));
    assert!(
        text.contains("X509v3 CRL Number: \n                2\n"),
        "{text}"
    );
    assert!(text.contains("0A1B2C3D4E5F6071"), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");

    off.ok(&[
        "sign-crl",
        "--out",
        &crl(3),
        "--revoke",
        "11:22:33:44:55:66:77:88",
    ]);
    let text = check(&crl(3));
    assert!(
        text.contains("X509v3 CRL Number: \n                3\n"),
        "{text}"
    );
    assert!(
        text.contains("0A1B2C3D4E5F6071") && text.contains("1122334455667788"),
        "{text}"
    );

    off.fails(
        &["sign-crl", "--out", &crl(4), "--revoke", "1122334455667788"],
        "revoked already",
    );
    // An edited transcript is not trusted as the CRL's memory.
    let original = std::fs::read(off.path("transcript.jsonl")).unwrap();
    let edited = String::from_utf8(original.clone())
        .unwrap()
        .replace("0A1B2C3D4E5F6071", "0A1B2C3D4E5F6072");
    std::fs::write(off.path("transcript.jsonl"), edited).unwrap();
    off.fails(&["sign-crl", "--out", &crl(4)], "does not verify");
    // An --out whose directory does not exist is refused before the root signs anything (the
    // transcript is still the edited one: the refusal comes before it is read).
    off.fails(
        &["sign-crl", "--out", &s(&off.path("nodir/crl4.pem"))],
        "the directory of the CRL",
    );
    assert!(!off.path("crl4.pem").exists());
    std::fs::write(off.path("transcript.jsonl"), &original).unwrap();
    let out = off.ok(&["verify-transcript"]);
    assert!(out.contains("4 signatures"), "{out}");
}

const BACKUP: &str = "\n[backup]\nshares = 5\nthreshold = 3\ndirectory = \"backup\"\n";

fn objects(off: &Offline) -> String {
    let listing = off.ok(&["list-keys"]);
    listing.lines().next().unwrap().to_owned()
}

#[test]
fn backup_3_of_5_restores_into_a_third_token() {
    // Token A: a root made for backup, backed up 3-of-5.
    let a = Offline::new("");
    a.edit(|t| {
        t.replace(
            "validity_days = 7300\n",
            "validity_days = 7300\nbackup = true\n",
        ) + BACKUP
    });
    a.ok(&["init-token"]);
    a.ok(&["generate-root"]);
    let listing = a.ok(&["list-keys"]);
    let line = listing
        .lines()
        .find(|l| l.starts_with("root-2026\tCKO_PRIVATE_KEY"))
        .unwrap_or_else(|| panic!("{listing}"));
    for flag in [
        "SENSITIVE=1",
        "EXTRACTABLE=1",
        "WRAP_WITH_TRUSTED=1",
        "COPYABLE=0",
        "MODIFIABLE=0",
    ] {
        assert!(line.contains(flag), "{flag}: {line}");
    }
    // A revocation before the backup: the restored root must still know it.
    a.ok(&[
        "sign-crl",
        "--out",
        &s(&a.path("crl-a.pem")),
        "--revoke",
        "0a1b2c3d4e5f6071:key_compromise",
    ]);
    // A backup directory that does not exist is refused, not made (removable media not mounted
    // would put the wrapped key and every share on this disk).
    a.fails(&["backup"], "does not exist (is the medium mounted?)");
    assert!(!a.path("backup").exists());
    // A backup directory holding a file of the backup it would write is refused whole.
    std::fs::create_dir_all(a.path("backup")).unwrap();
    std::fs::write(a.path("backup/share-3-of-5.json"), "old").unwrap();
    a.fails(&["backup"], "exists already");
    assert!(!a.path("backup/root-backup.json").exists());
    assert!(!a.path("backup/share-1-of-5.json").exists());
    std::fs::remove_file(a.path("backup/share-3-of-5.json")).unwrap();
    let out = a.ok(&["backup"]);
    assert!(out.contains("5 shares (3 needed)"), "{out}");
    let share = |i: u32| s(&a.path(&format!("backup/share-{i}-of-5.json")));
    let blob = s(&a.path("backup/root-backup.json"));
    for i in 1..=5 {
        assert!(Path::new(&share(i)).exists());
    }
    let whole = std::fs::read_to_string(a.path("transcript.jsonl")).unwrap();
    for i in 1..=5 {
        let text = std::fs::read_to_string(share(i)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            !whole.contains(v["share"].as_str().unwrap()),
            "a share is in the transcript"
        );
    }
    a.ok(&["verify-transcript"]);

    // Token C: a third token with the same root certificate.
    let c = Offline::new("");
    let root_a = s(&a.path("root.pem"));
    c.edit(|t| {
        t.replace("offline-root-a", "restore-c").replace(
            "root_certificate = \"root.pem\"",
            &format!("root_certificate = \"{root_a}\""),
        )
    });
    c.ok(&["init-token"]);
    let empty = objects(&c);
    assert!(empty.ends_with(": 0 objects"), "{empty}");
    // This token's fresh transcript is not the root's history: a restore into it would restart
    // the CRL numbering and forget the revocation, so it is refused.
    let args = [
        "restore",
        "--backup",
        &blob,
        "--share",
        &share(5),
        "--share",
        &share(1),
        "--share",
        &share(3),
    ];
    c.fails(&args, "generate-root");
    assert_eq!(objects(&c), empty);
    // The root's own transcript goes on here, followed by this token's init-token line.
    let own = std::fs::read(c.path("transcript.jsonl")).unwrap();
    let mut history = std::fs::read(a.path("transcript.jsonl")).unwrap();
    history.extend_from_slice(&own);
    std::fs::write(c.path("transcript.jsonl"), history).unwrap();

    // Two shares are not enough; a corrupted share is refused; the token stays empty.
    let restore = |shares: &[String]| {
        let mut args = vec!["restore".to_owned(), "--backup".to_owned(), blob.clone()];
        for sh in shares {
            args.push("--share".into());
            args.push(sh.clone());
        }
        c.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = restore(&[share(1), share(4)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs 3 of its 5"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(objects(&c), empty);
    let text = std::fs::read_to_string(share(2)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut hexed = v["share"].as_str().unwrap().to_owned();
    let flipped = if &hexed[6..7] == "0" { "1" } else { "0" };
    hexed.replace_range(6..7, flipped);
    v["share"] = json!(hexed);
    let corrupted = s(&c.path("share-2-corrupted.json"));
    std::fs::write(&corrupted, serde_json::to_string(&v).unwrap()).unwrap();
    let out = restore(&[share(1), corrupted, share(5)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(objects(&c), empty);

    // Any three shares restore the key, which then signs under the original root's key.
    let out = restore(&[share(5), share(1), share(3)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = c.ok(&["list-keys"]);
    let line = listing
        .lines()
        .find(|l| l.starts_with("root-2026\tCKO_PRIVATE_KEY"))
        .unwrap_or_else(|| panic!("{listing}"));
    for flag in ["SENSITIVE=1", "PRIVATE=1", "SIGN=1", "WRAP_WITH_TRUSTED=1"] {
        assert!(line.contains(flag), "{flag}: {line}");
    }
    let crl = s(&c.path("crl.pem"));
    c.ok(&["sign-crl", "--out", &crl]);
    let out = openssl(&["crl", "-in", &crl, "-CAfile", &root_a, "-noout"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("verify OK"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It continues A's CRLs: the next number, the earlier revocation.
    let text = openssl_ok(&["crl", "-in", &crl, "-noout", "-text"]);
    let number = text
        .lines()
        .skip_while(|l| !l.contains("CRL Number"))
        .nth(1)
        .map(str::trim);
    assert_eq!(number, Some("2"), "{text}");
    assert!(text.contains("0A1B2C3D4E5F6071"), "{text}");
    // Restoring again onto the same token is refused (the label exists).
    let out = restore(&[share(2), share(3), share(4)]);
    assert!(!out.status.success());
    c.ok(&["verify-transcript"]);
}

#[test]
fn a_key_made_without_backup_cannot_be_wrapped() {
    let off = Offline::new("");
    off.edit(|t| t + BACKUP);
    off.ok(&["init-token"]);
    off.ok(&["generate-root"]);
    // Refused before the SO PIN is read (its file is gone: reading it would fail otherwise).
    std::fs::remove_file(off.path("so.pin")).unwrap();
    std::fs::create_dir_all(off.path("backup")).unwrap();
    off.fails(&["backup"], "generated with backup = false");
    assert!(!off.path("backup/root-backup.json").exists());
    assert!(!off.path("backup/share-1-of-5.json").exists());
}

/// A step that fails leaves the token so that the same step can simply run again: bad input is
/// refused before the token is touched (a PIN the token cannot take, a missing output directory,
/// a validity past the year 9999), and a root key whose certificate could not be written is
/// taken off the token again. Intermediates with an empty subject or the root's own name (which
/// would escape the root's path length limit) are refused.
#[test]
fn failed_steps_can_be_run_again_and_self_issued_intermediates_are_refused() {
    let off = Offline::new("");
    // init-token: a user PIN too short for the token is refused before C_InitToken.
    std::fs::write(off.path("user.pin"), "abc\n").unwrap();
    off.fails(&["init-token"], "PIN must be");
    std::fs::write(off.path("user.pin"), "user-pin-4711\n").unwrap();
    // A transcript in a directory that does not exist: refused before the token is touched.
    off.edit(|t| {
        t.replace(
            "transcript = \"transcript.jsonl\"",
            "transcript = \"tdir/transcript.jsonl\"",
        )
    });
    off.fails(&["init-token"], "does not exist");
    std::fs::create_dir(off.path("tdir")).unwrap();
    off.ok(&["init-token"]);
    // A ceremony file asking for a root past any representable date is refused as a whole.
    off.edit(|t| t.replace("validity_days = 7300", "validity_days = 3000000"));
    off.fails(
        &["generate-root"],
        "root.validity_days must be between 1 and 36525",
    );
    off.edit(|t| t.replace("validity_days = 3000000", "validity_days = 7300"));
    off.edit(|t| t + "\n[crl]\nnext_update_days = 4000000\n");
    off.fails(
        &["generate-root"],
        "crl.next_update_days must be between 1 and 3650",
    );
    off.edit(|t| t.replace("next_update_days = 4000000", "next_update_days = 30"));
    // A root certificate in a missing directory: refused before the key is made.
    off.edit(|t| {
        t.replace(
            "root_certificate = \"root.pem\"",
            "root_certificate = \"nodir/root.pem\"",
        )
    });
    off.fails(&["generate-root"], "does not exist");
    assert!(!off.ok(&["list-keys"]).contains("root-2026"));
    std::fs::create_dir(off.path("nodir")).unwrap();
    off.ok(&["generate-root"]);
    assert!(off.path("nodir/root.pem").exists());

    // Intermediates: an empty subject, and the root's own name, are refused.
    let csr = |name: &str, subj: &str| {
        let path = s(&off.path(&format!("{name}.csr")));
        openssl_ok(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &s(&off.path(&format!("{name}.key"))),
            "-subj",
            subj,
            "-out",
            &path,
        ]);
        path
    };
    let same = csr(
        "same",
        "/C=DE/O=ScaiVault Test/CN=ScaiVault Offline Root 2026",
    );
    off.fails(
        &[
            "sign-intermediate",
            "--csr",
            &same,
            "--out",
            &s(&off.path("same.pem")),
        ],
        "the root's own name",
    );
    let empty = csr("empty", "/");
    off.fails(
        &[
            "sign-intermediate",
            "--csr",
            &empty,
            "--out",
            &s(&off.path("empty.pem")),
        ],
        "subject is empty",
    );
    assert!(!off.path("same.pem").exists() && !off.path("empty.pem").exists());
    let good = csr("good", "/O=ScaiVault Test/CN=ScaiVault Issuing CA 1");
    off.ok(&[
        "sign-intermediate",
        "--csr",
        &good,
        "--out",
        &s(&off.path("good.pem")),
    ]);
    off.ok(&["verify-transcript"]);
}
