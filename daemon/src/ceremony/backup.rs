//! M-of-N backup and restore of the root key.
//!
//! `backup`: a fresh random AES-256 wrapping key wraps the root key on the token (the hsm crate's
//! trusted-wrap procedure, `CKM_AES_KEY_WRAP_PAD`); the wrapping key is split with Shamir's
//! secret sharing (the `sharks` crate, GF(256)) into N shares of which M recover it, written as
//! one file per custodian; the wrapped key goes into `root-backup.json` with the key's public key,
//! and a check value of the wrapping key. The wrapping key itself is never written anywhere.
//!
//! `restore`: reads the backup and at least M share files, checks every share (its checksum, the
//! backup it belongs to), recovers the wrapping key and compares its check value, and only then
//! touches the target token: the key is unwrapped there with the CA attributes, and a test
//! signature is verified against the root certificate's public key.

use crate::serve::StartError;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const BACKUP_FORMAT: &str = "scaivault-backup-1";
const SHARE_FORMAT: &str = "scaivault-share-1";

/// `root-backup.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// Random id tying the shares to this backup.
    pub backup_id: String,
    /// CKA_LABEL of the key.
    pub key_label: String,
    /// `ec` or `rsa`.
    pub key_type: String,
    /// Curve or modulus size.
    pub key_bits: u32,
    /// The public key, base64 DER SubjectPublicKeyInfo.
    pub spki: String,
    /// `CKM_AES_KEY_WRAP_PAD`.
    pub mechanism: String,
    /// The wrapped private key, base64.
    pub wrapped: String,
    /// M.
    pub threshold: u8,
    /// N.
    pub shares: u8,
    /// [`kek_check`] of the wrapping key.
    pub kek_check: String,
}

/// `share-I-of-N.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareFile {
    /// [`SHARE_FORMAT`].
    pub format: String,
    /// The backup this share belongs to.
    pub backup_id: String,
    /// 1-based number of the share.
    pub index: u8,
    /// M.
    pub threshold: u8,
    /// N.
    pub shares: u8,
    /// The share, hex.
    pub share: String,
    /// SHA-256 over backup id and share bytes, hex: detects a damaged share file.
    pub checksum: String,
}

/// A check value of the wrapping key (SHA-256 over a context string, the backup id and the key):
/// shows whether recovered shares give the right key without revealing it.
pub fn kek_check(backup_id: &str, kek: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"scaivault backup wrapping key check\0");
    h.update(backup_id.as_bytes());
    h.update([0]);
    h.update(kek);
    hex::encode(h.finalize())
}

fn share_checksum(backup_id: &str, share: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(backup_id.as_bytes());
    h.update([0]);
    h.update(share);
    hex::encode(h.finalize())
}

/// A fresh random wrapping key and backup id.
pub fn fresh_key() -> (Zeroizing<Vec<u8>>, String) {
    let mut kek = Zeroizing::new(vec![0u8; scaivault_hsm::backup::WRAPPING_KEY_BYTES]);
    rand::rngs::OsRng.fill_bytes(&mut kek);
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    (kek, hex::encode(id))
}

/// Splits `kek` into `n` share files, any `m` of which recover it.
pub fn split(kek: &[u8], backup_id: &str, m: u8, n: u8) -> Vec<ShareFile> {
    let dealer = sharks::Sharks(m).dealer(kek);
    dealer
        .take(usize::from(n))
        .zip(1u8..)
        .map(|(share, index)| {
            let bytes = Zeroizing::new(Vec::from(&share));
            ShareFile {
                format: SHARE_FORMAT.to_owned(),
                backup_id: backup_id.to_owned(),
                index,
                threshold: m,
                shares: n,
                share: hex::encode(bytes.as_slice()),
                checksum: share_checksum(backup_id, &bytes),
            }
        })
        .collect()
}

/// Checks the share files against the backup and recovers the wrapping key.
///
/// # Errors
/// A damaged share or one of another backup, fewer than M distinct shares, or shares that do not
/// reconstruct the wrapping key (its check value differs).
pub fn recover(
    backup: &BackupFile,
    shares: &[(String, ShareFile)],
) -> Result<Zeroizing<Vec<u8>>, StartError> {
    let mut parsed = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, s) in shares {
        if s.format != SHARE_FORMAT || s.backup_id != backup.backup_id {
            return Err(StartError(format!(
                "share file {name} does not belong to backup {}",
                backup.backup_id
            )));
        }
        let bytes = Zeroizing::new(hex::decode(&s.share).map_err(|_| {
            StartError(format!("share file {name} is corrupted (share is not hex)"))
        })?);
        if share_checksum(&backup.backup_id, &bytes) != s.checksum {
            return Err(StartError(format!(
                "share file {name} is corrupted (checksum mismatch)"
            )));
        }
        if !seen.insert(s.index) {
            continue;
        }
        let share = sharks::Share::try_from(bytes.as_slice())
            .map_err(|e| StartError(format!("share file {name} is corrupted ({e})")))?;
        parsed.push(share);
    }
    if parsed.len() < usize::from(backup.threshold) {
        return Err(StartError(format!(
            "{} distinct shares given, but this backup needs {} of its {}",
            parsed.len(),
            backup.threshold,
            backup.shares
        )));
    }
    let kek = Zeroizing::new(
        sharks::Sharks(backup.threshold)
            .recover(parsed.as_slice())
            .map_err(|e| StartError(format!("cannot recover the wrapping key: {e}")))?,
    );
    if kek_check(&backup.backup_id, &kek) != backup.kek_check {
        return Err(StartError(
            "the shares do not reconstruct the backup's wrapping key (a share is wrong)".into(),
        ));
    }
    Ok(kek)
}

/// Base64 (standard) encoding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Base64 (standard) decoding with a named error.
///
/// # Errors
/// Not base64.
pub fn unb64(what: &str, text: &str) -> Result<Vec<u8>, StartError> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| StartError(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn backup(kek: &[u8], id: &str) -> BackupFile {
        BackupFile {
            format: BACKUP_FORMAT.into(),
            backup_id: id.into(),
            key_label: "root".into(),
            key_type: "ec".into(),
            key_bits: 256,
            spki: String::new(),
            mechanism: "CKM_AES_KEY_WRAP_PAD".into(),
            wrapped: String::new(),
            threshold: 3,
            shares: 5,
            kek_check: kek_check(id, kek),
        }
    }

    #[test]
    fn three_of_five() {
        let (kek, id) = fresh_key();
        let b = backup(&kek, &id);
        let shares: Vec<(String, ShareFile)> = split(&kek, &id, 3, 5)
            .into_iter()
            .map(|s| (format!("share-{}", s.index), s))
            .collect();
        assert_eq!(shares.len(), 5);
        let pick = |idx: &[usize]| -> Vec<(String, ShareFile)> {
            idx.iter()
                .map(|i| {
                    let (n, s) = &shares[*i];
                    (
                        n.clone(),
                        serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(
            recover(&b, &pick(&[0, 2, 4])).unwrap().as_slice(),
            kek.as_slice()
        );
        assert_eq!(
            recover(&b, &pick(&[3, 1, 0])).unwrap().as_slice(),
            kek.as_slice()
        );
        let e = recover(&b, &pick(&[0, 1])).unwrap_err();
        assert!(e.0.contains("needs 3"), "{e}");
        let e = recover(&b, &pick(&[0, 1, 1])).unwrap_err();
        assert!(e.0.contains("needs 3"), "{e}");
        // A damaged share: checksum; a consistent but wrong share: the check value.
        let mut bad = pick(&[0, 1, 2]);
        bad[1].1.share.replace_range(4..6, "00");
        if bad[1].1.share == shares[1].1.share {
            bad[1].1.share.replace_range(4..6, "11");
        }
        let e = recover(&b, &bad).unwrap_err();
        assert!(e.0.contains("corrupted"), "{e}");
        let mut bytes = hex::decode(&bad[1].1.share).unwrap();
        bytes[3] ^= 1;
        bad[1].1.share = hex::encode(&bytes);
        bad[1].1.checksum = share_checksum(&id, &bytes);
        let e = recover(&b, &bad).unwrap_err();
        assert!(e.0.contains("do not reconstruct"), "{e}");
        // Shares of another backup.
        let (kek2, id2) = fresh_key();
        let other: Vec<(String, ShareFile)> = split(&kek2, &id2, 3, 5)
            .into_iter()
            .map(|s| ("x".to_owned(), s))
            .collect();
        let e = recover(&b, &other).unwrap_err();
        assert!(e.0.contains("does not belong"), "{e}");
    }
}
