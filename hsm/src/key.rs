//! Key types and sizes ScaiVault supports for CA keys.

use crate::{Error, Result};

/// The family of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// ECDSA on a NIST curve.
    Ec,
    /// RSA with PKCS#1 v1.5 signatures over SHA-256.
    Rsa,
    /// EdDSA on edwards25519.
    Ed25519,
}

/// A concrete key type and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// ECDSA P-256, signatures `ecdsa-with-SHA256`.
    EcP256,
    /// ECDSA P-384, signatures `ecdsa-with-SHA384`.
    EcP384,
    /// RSA 2048, signatures `sha256WithRSAEncryption`.
    Rsa2048,
    /// RSA 3072, signatures `sha256WithRSAEncryption`.
    Rsa3072,
    /// RSA 4096, signatures `sha256WithRSAEncryption`.
    Rsa4096,
    /// Ed25519, signatures `id-Ed25519`.
    Ed25519,
}

impl KeySpec {
    /// Parses the API's `key_type` and `key_size` (`None` takes the default size: EC 256, RSA 2048;
    /// Ed25519 accepts no size other than 0 or 256).
    ///
    /// # Errors
    /// [`Error::UnsupportedKey`] naming what was asked for.
    pub fn from_api(key_type: &str, size: Option<u32>) -> Result<Self> {
        let spec = match (key_type, size) {
            ("ec", None | Some(256)) => KeySpec::EcP256,
            ("ec", Some(384)) => KeySpec::EcP384,
            ("rsa", None | Some(2048)) => KeySpec::Rsa2048,
            ("rsa", Some(3072)) => KeySpec::Rsa3072,
            ("rsa", Some(4096)) => KeySpec::Rsa4096,
            ("ed25519", None | Some(0) | Some(256)) => KeySpec::Ed25519,
            _ => {
                return Err(Error::UnsupportedKey(match size {
                    Some(s) => format!("{key_type} {s}"),
                    None => key_type.to_owned(),
                }))
            }
        };
        Ok(spec)
    }

    /// The family.
    pub fn key_type(self) -> KeyType {
        match self {
            KeySpec::EcP256 | KeySpec::EcP384 => KeyType::Ec,
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => KeyType::Rsa,
            KeySpec::Ed25519 => KeyType::Ed25519,
        }
    }

    /// The API name of the family: `ec`, `rsa` or `ed25519`.
    pub fn type_name(self) -> &'static str {
        match self.key_type() {
            KeyType::Ec => "ec",
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// The size in bits as the API reports it (curve size for EC, modulus for RSA, 256 for
    /// Ed25519).
    pub fn bits(self) -> u32 {
        match self {
            KeySpec::EcP256 | KeySpec::Ed25519 => 256,
            KeySpec::EcP384 => 384,
            KeySpec::Rsa2048 => 2048,
            KeySpec::Rsa3072 => 3072,
            KeySpec::Rsa4096 => 4096,
        }
    }
}

/// Security attributes of a private-key object, as read back from the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAttributes {
    /// CKA_TOKEN.
    pub token: bool,
    /// CKA_PRIVATE.
    pub private: bool,
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_ALWAYS_SENSITIVE.
    pub always_sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_NEVER_EXTRACTABLE.
    pub never_extractable: bool,
    /// CKA_SIGN.
    pub sign: bool,
    /// CKA_WRAP_WITH_TRUSTED: extractable (if at all) only under a trusted wrapping key.
    pub wrap_with_trusted: bool,
    /// Whether reading CKA_VALUE (or the RSA private exponent) was refused by the token.
    pub value_read_refused: bool,
}
