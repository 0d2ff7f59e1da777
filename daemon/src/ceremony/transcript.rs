//! The ceremony transcript: one JSON object per line, appended by every step.
//!
//! A step line records the step, the time, the operator and witnesses of the ceremony file, the
//! token's label and serial, the SHA-256 of every input and output, and the key ids and public-key
//! fingerprints involved. Every step that can reach the root key ends its lines with a
//! *signature line*, made by the root key on the token, over
//!
//! ```text
//! every byte of the transcript before the signature line
//! || the signature line's own JSON with "signature" set to ""
//! ```
//!
//! so that the line's own fields (time, sizes, key id) are covered too. [`verify`] re-serialises
//! every signature line and requires the bytes to match exactly, checks each signature against the
//! root certificate's public key, and refuses lines after the last signature (unsigned tail).
//! Hence a change of any byte makes verification fail. What a signature cannot show is that lines
//! were cut off after an earlier signature: the auditor compares the last line with the copy
//! kept by the witnesses (or the signed-bytes count they wrote down).

use crate::serve::StartError;
use base64::Engine;
use der::{Decode, Encode};
use scaivault_core::{profile, time_util, verify as core_verify};
use scaivault_hsm::Signer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use std::io::Write;
use std::path::Path;

/// The `step` of a signature line.
pub const SIGNATURE_STEP: &str = "transcript-signature";

/// SHA-256 as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A key as the transcript names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    /// What the key is (`root`, `intermediate`).
    pub role: String,
    /// CKA_LABEL on the token (absent for keys that are not on this token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// CKA_ID as hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// SHA-256 of the DER SubjectPublicKeyInfo.
    pub spki_sha256: String,
    /// The SubjectKeyIdentifier (RFC 5280 §4.2.1.2 method 1), hex.
    pub key_identifier: String,
}

impl KeyRecord {
    /// Describes the public key `spki_der`.
    ///
    /// # Errors
    /// An SPKI that does not decode.
    pub fn new(role: &str, label: Option<&str>, spki_der: &[u8]) -> Result<Self, StartError> {
        Ok(KeyRecord {
            role: role.to_owned(),
            label: label.map(str::to_owned),
            id: label.map(|l| hex::encode(l.as_bytes())),
            spki_sha256: sha256_hex(spki_der),
            key_identifier: hex::encode(
                profile::key_identifier(spki_der)
                    .map_err(|e| StartError(format!("public key: {e}")))?,
            ),
        })
    }
}

/// The token a step ran on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// Token label.
    pub label: String,
    /// Token serial number.
    pub serial: String,
}

/// One step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepLine {
    /// The step (`init-token`, `generate-root`, `sign-intermediate`, `list-keys`).
    pub step: String,
    /// RFC 3339 UTC.
    pub time: String,
    /// The ceremony administrator.
    pub operator: String,
    /// The witnesses.
    pub witnesses: Vec<String>,
    /// The token.
    pub token: TokenRecord,
    /// SHA-256 of each input, by name.
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// SHA-256 of each output, by name.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Keys involved.
    pub keys: Vec<KeyRecord>,
    /// Step-specific facts (serial numbers, subjects, validity, object inventory).
    pub detail: serde_json::Value,
}

/// The signature line (fields in this order; see the module docs for what is signed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureLine {
    step: String,
    time: String,
    key_label: String,
    key_id: String,
    spki_sha256: String,
    signed_bytes: u64,
    signed_sha256: String,
    algorithm: String,
    signature: String,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StartError + '_ {
    move |e| StartError(format!("transcript {}: {e}", path.display()))
}

/// Appends `steps` to the transcript at `path` and, when `signer` is given, a signature line by
/// that key (labelled `key_label`) over everything before it.
///
/// # Errors
/// I/O failures; a transcript that does not end with a newline; token failures.
pub fn append(
    path: &Path,
    steps: &[StepLine],
    signer: Option<(&dyn Signer, &str)>,
) -> Result<(), StartError> {
    let mut whole = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(path)(e)),
    };
    if whole.last().is_some_and(|b| *b != b'\n') {
        return Err(StartError(format!(
            "transcript {} does not end with a newline: refusing to append to a damaged file",
            path.display()
        )));
    }
    let start = whole.len();
    for step in steps {
        let line =
            serde_json::to_vec(step).map_err(|e| StartError(format!("transcript line: {e}")))?;
        whole.extend_from_slice(&line);
        whole.push(b'\n');
    }
    if let Some((signer, label)) = signer {
        let line = sign_line(&whole, signer, label)?;
        whole.extend_from_slice(&line);
        whole.push(b'\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    file.write_all(&whole[start..]).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(())
}

/// The signature line over `prefix`.
fn sign_line(prefix: &[u8], signer: &dyn Signer, label: &str) -> Result<Vec<u8>, StartError> {
    let mut line = SignatureLine {
        step: SIGNATURE_STEP.to_owned(),
        time: time_util::rfc3339(time_util::now()),
        key_label: label.to_owned(),
        key_id: hex::encode(label.as_bytes()),
        spki_sha256: sha256_hex(signer.public_key_der()),
        signed_bytes: u64::try_from(prefix.len())
            .map_err(|_| StartError("transcript too large".into()))?,
        signed_sha256: sha256_hex(prefix),
        algorithm: base64::engine::general_purpose::STANDARD.encode(signer.algorithm_der()),
        signature: String::new(),
    };
    let message = signed_message(prefix, &line)?;
    let sig = signer
        .sign(&message)
        .map_err(|e| StartError(format!("signing the transcript: {e}")))?;
    // The low-S form only (see `verify`): the token draws either.
    let sig = core_verify::ecdsa_high_s_normalized(signer.public_key_der(), &sig)
        .map_err(|e| StartError(format!("the token's transcript signature: {e}")))?
        .unwrap_or(sig);
    core_verify::verify_signature(signer.public_key_der(), &algorithm(&line)?, &message, &sig)
        .map_err(|e| {
            StartError(format!(
                "the token's transcript signature does not verify: {e}"
            ))
        })?;
    line.signature = base64::engine::general_purpose::STANDARD.encode(sig);
    serde_json::to_vec(&line).map_err(|e| StartError(format!("transcript line: {e}")))
}

fn signed_message(prefix: &[u8], line: &SignatureLine) -> Result<Vec<u8>, StartError> {
    let mut unsigned = line.clone();
    unsigned.signature = String::new();
    let mut message = prefix.to_vec();
    message.extend(
        serde_json::to_vec(&unsigned).map_err(|e| StartError(format!("transcript line: {e}")))?,
    );
    Ok(message)
}

fn algorithm(line: &SignatureLine) -> Result<AlgorithmIdentifierOwned, StartError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(&line.algorithm)
        .map_err(|e| StartError(format!("signature algorithm: {e}")))?;
    AlgorithmIdentifierOwned::from_der(&der)
        .map_err(|e| StartError(format!("signature algorithm: {e}")))
}

/// The length of the transcript's part up to and including its last signature line (0 without
/// one): lines after it (an `init-token` of a new token, before a restore) are not signed yet.
pub fn signed_prefix_len(bytes: &[u8]) -> usize {
    let mut offset = 0;
    let mut end = 0;
    for raw in bytes.split_inclusive(|b| *b == b'\n') {
        offset += raw.len();
        let is_signature = serde_json::from_slice::<serde_json::Value>(raw)
            .ok()
            .is_some_and(|v| v.get("step").and_then(|s| s.as_str()) == Some(SIGNATURE_STEP));
        if is_signature && raw.ends_with(b"\n") {
            end = offset;
        }
    }
    end
}

/// What [`verify`] found in an intact transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Number of lines.
    pub lines: usize,
    /// Number of signature lines.
    pub signatures: usize,
    /// SHA-256 of the whole file.
    pub sha256: String,
}

/// Verifies a transcript against the root public key `root_spki_der`.
///
/// # Errors
/// A message naming the first line (1-based) that fails, or the reason the file is unusable.
pub fn verify(bytes: &[u8], root_spki_der: &[u8]) -> Result<Verified, String> {
    if bytes.is_empty() {
        return Err("the transcript is empty".into());
    }
    if bytes.last() != Some(&b'\n') {
        return Err("the transcript does not end with a newline".into());
    }
    let root_fingerprint = sha256_hex(root_spki_der);
    let root_spki = spki::SubjectPublicKeyInfoOwned::from_der(root_spki_der)
        .map_err(|e| format!("root public key: {e}"))?;
    let root_spki_der = root_spki
        .to_der()
        .map_err(|e| format!("root public key: {e}"))?;
    let mut offset = 0usize;
    let mut lines = 0usize;
    let mut signatures = 0usize;
    let mut last_signed_line = 0usize;
    for raw in bytes[..bytes.len() - 1].split(|b| *b == b'\n') {
        lines += 1;
        let n = lines;
        let value: serde_json::Value =
            serde_json::from_slice(raw).map_err(|e| format!("line {n}: not JSON: {e}"))?;
        if value.get("step").and_then(|s| s.as_str()) == Some(SIGNATURE_STEP) {
            let line: SignatureLine = serde_json::from_value(value)
                .map_err(|e| format!("line {n}: not a signature line: {e}"))?;
            let canonical = serde_json::to_vec(&line).map_err(|e| format!("line {n}: {e}"))?;
            if canonical != raw {
                return Err(format!("line {n}: the signature line was altered"));
            }
            let prefix = &bytes[..offset];
            if line.signed_bytes != prefix.len() as u64 || line.signed_sha256 != sha256_hex(prefix)
            {
                return Err(format!(
                    "line {n}: the signature does not cover the {} bytes before it",
                    prefix.len()
                ));
            }
            if line.spki_sha256 != root_fingerprint {
                return Err(format!(
                    "line {n}: signed by key {} (spki sha256 {}), not by the root {root_fingerprint}",
                    line.key_label, line.spki_sha256
                ));
            }
            let sig = base64::engine::general_purpose::STANDARD
                .decode(&line.signature)
                .map_err(|e| format!("line {n}: signature: {e}"))?;
            let alg = algorithm(&line).map_err(|e| format!("line {n}: {e}"))?;
            let message = signed_message(prefix, &line).map_err(|e| format!("line {n}: {e}"))?;
            core_verify::verify_signature(&root_spki_der, &alg, &message, &sig)
                .map_err(|e| format!("line {n}: the signature does not verify: {e}"))?;
            // ECDSA's (r, n − s) verifies as well as (r, s): only the low-S form is written, so
            // the other one is a changed signature.
            if core_verify::ecdsa_high_s_normalized(&root_spki_der, &sig)
                .map_err(|e| format!("line {n}: signature: {e}"))?
                .is_some()
            {
                return Err(format!(
                    "line {n}: the signature was altered (an ECDSA signature in its high-S form)"
                ));
            }
            signatures += 1;
            last_signed_line = n;
        } else {
            let _: StepLine = serde_json::from_value(value)
                .map_err(|e| format!("line {n}: not a step line: {e}"))?;
        }
        offset += raw.len() + 1;
    }
    if signatures == 0 {
        return Err("the transcript carries no signature".into());
    }
    if last_signed_line != lines {
        return Err(format!(
            "lines {}-{lines} come after the last signature (line {last_signed_line}): unsigned",
            last_signed_line + 1
        ));
    }
    Ok(Verified {
        lines,
        signatures,
        sha256: sha256_hex(bytes),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use scaivault_hsm::KeySpec;

    /// A software Ed25519 key standing in for the token's root key.
    #[derive(Debug)]
    struct SoftEd(ed25519_dalek::SigningKey, Vec<u8>);

    impl SoftEd {
        fn new(seed: u8) -> Self {
            let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
            let spki = key
                .verifying_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec();
            SoftEd(key, spki)
        }
    }

    impl Signer for SoftEd {
        fn spec(&self) -> KeySpec {
            KeySpec::Ed25519
        }
        fn public_key_der(&self) -> &[u8] {
            &self.1
        }
        fn algorithm_der(&self) -> Vec<u8> {
            vec![0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70]
        }
        fn sign(&self, message: &[u8]) -> scaivault_hsm::Result<Vec<u8>> {
            use ed25519_dalek::Signer as _;
            Ok(self.0.sign(message).to_bytes().to_vec())
        }
    }

    fn step(name: &str) -> StepLine {
        StepLine {
            step: name.into(),
            time: "2026-11-28T20:00:00Z".into(),
            operator: "Alice".into(),
            witnesses: vec!["Bob".into(), "Carol \"C\" Ünal".into()],
            token: TokenRecord {
                label: "root-a".into(),
                serial: "1234".into(),
            },
            inputs: serde_json::Map::new(),
            outputs: serde_json::Map::new(),
            keys: vec![],
            detail: serde_json::json!({"n": 1}),
        }
    }

    fn transcript(key: &SoftEd) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        append(&path, &[step("init-token")], None).unwrap();
        append(&path, &[step("generate-root")], Some((key, "root"))).unwrap();
        append(&path, &[step("sign-intermediate")], Some((key, "root"))).unwrap();
        (dir, path)
    }

    #[test]
    fn untouched_transcript_verifies() {
        let key = SoftEd::new(7);
        let (_dir, path) = transcript(&key);
        let bytes = std::fs::read(&path).unwrap();
        let v = verify(&bytes, key.public_key_der()).unwrap();
        assert_eq!(v.lines, 5);
        assert_eq!(v.signatures, 2);
    }

    #[test]
    fn any_changed_byte_fails() {
        let key = SoftEd::new(7);
        let (_dir, path) = transcript(&key);
        let bytes = std::fs::read(&path).unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= flip;
                assert!(
                    verify(&bad, key.public_key_der()).is_err(),
                    "byte {i} ^ {flip:#x} went unnoticed"
                );
            }
        }
        // Appended, removed or truncated bytes too.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"{}\n");
        assert!(verify(&longer, key.public_key_der()).is_err());
        assert!(verify(&bytes[..bytes.len() - 1], key.public_key_der()).is_err());
        assert!(verify(&bytes[1..], key.public_key_der()).is_err());
    }

    /// ECDSA: every signature is written low-S, and the same signature in its high-S form —
    /// which verifies just as well — is refused as an altered line.
    #[test]
    fn an_ecdsa_signature_in_its_other_form_fails() {
        use p256::ecdsa::Signature;
        let token = scaivault_hsm::soft::SoftToken::new();
        let key = scaivault_hsm::Token::generate(&token, KeySpec::EcP256, "root").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        for i in 0..12 {
            append(
                &path,
                &[step(&format!("s{i}"))],
                Some((key.as_ref(), "root")),
            )
            .unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        verify(&bytes, key.public_key_der()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let last = text.lines().last().unwrap();
        let mut line: serde_json::Value = serde_json::from_str(last).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let der = b64.decode(line["signature"].as_str().unwrap()).unwrap();
        let sig = Signature::from_der(&der).unwrap();
        assert!(sig.normalize_s().is_none(), "written low-S");
        let (r, s) = sig.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
        line["signature"] = b64.encode(high.to_der().as_bytes()).into();
        let forged = format!(
            "{}{}\n",
            &text[..text.len() - last.len() - 1],
            serde_json::to_string(&line).unwrap()
        );
        let e = verify(forged.as_bytes(), key.public_key_der()).unwrap_err();
        assert!(e.contains("altered"), "{e}");
    }

    #[test]
    fn another_key_or_unsigned_tail_fails() {
        let key = SoftEd::new(7);
        let (_dir, path) = transcript(&key);
        let bytes = std::fs::read(&path).unwrap();
        let other = SoftEd::new(8);
        let e = verify(&bytes, other.public_key_der()).unwrap_err();
        assert!(e.contains("not by the root"), "{e}");
        append(&path, &[step("list-keys")], None).unwrap();
        let e = verify(&std::fs::read(&path).unwrap(), key.public_key_der()).unwrap_err();
        assert!(e.contains("unsigned"), "{e}");
    }
}
