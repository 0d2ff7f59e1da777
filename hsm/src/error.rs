//! The crate's one error type.

/// The crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a token. `cryptoki` types never appear here: the failing
/// PKCS#11 function and return value are kept as text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The module could not be loaded, the token is absent, or the login failed.
    #[error("hsm unavailable: {0}")]
    Unavailable(String),
    /// The PIN was refused by the token.
    #[error("hsm login refused (wrong pin or locked token)")]
    LoginRefused,
    /// No token with the configured label.
    #[error("no token labelled {0:?}")]
    TokenNotFound(String),
    /// No key with that label.
    #[error("no key labelled {label:?} on the token")]
    KeyNotFound {
        /// The label looked for.
        label: String,
    },
    /// A private key with that label, but no public key object beside it (the public key is
    /// read from that object: an imported key needs both).
    #[error(
        "the token has a private key labelled {label:?} but no public key object with that \
         label; import the public key too (pkcs11-tool --write-object KEY.der --type pubkey \
         --label {label:?})"
    )]
    PublicKeyMissing {
        /// The label looked for.
        label: String,
    },
    /// A key with that label exists already.
    #[error("a key labelled {0:?} exists already on the token")]
    DuplicateLabel(String),
    /// A token with that label is initialised already (with its user PIN).
    #[error("a token labelled {0:?} is initialised already")]
    TokenExists(String),
    /// A PIN the token cannot take (its length is outside the token's range).
    #[error("the {which} PIN must be {min} to {max} bytes long")]
    PinLength {
        /// `SO` or `user`.
        which: &'static str,
        /// The token's minimum.
        min: usize,
        /// The token's maximum.
        max: usize,
    },
    /// Key type or size the crate does not support.
    #[error("unsupported key type or size: {0}")]
    UnsupportedKey(String),
    /// A PKCS#11 call failed.
    #[error("pkcs#11 {function} failed: {rv}")]
    Pkcs11 {
        /// The PKCS#11 function, e.g. `C_Sign`.
        function: String,
        /// The return value, e.g. `CKR_DEVICE_ERROR`.
        rv: String,
    },
    /// The token returned something the crate cannot decode (a public point, a signature).
    #[error("unexpected data from the token: {0}")]
    Encoding(String),
    /// A ciphertext did not decrypt under the key-encryption key: it was tampered with, truncated,
    /// or made under another key. Retrying does not help.
    #[error("decryption refused: {0}")]
    Decrypt(String),
}

impl Error {
    /// Whether retrying later may help (token absent, session lost) rather than the request being
    /// wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::LoginRefused | Error::TokenNotFound(_) => true,
            // The device, not the request: out of memory or storage, broken, removed.
            Error::Pkcs11 { rv, function } => {
                matches!(
                    rv.as_str(),
                    "CKR_DEVICE_MEMORY"
                        | "CKR_DEVICE_ERROR"
                        | "CKR_DEVICE_REMOVED"
                        | "CKR_TOKEN_NOT_PRESENT"
                ) || (rv == "CKR_FUNCTION_FAILED"
                    // A call that stores an object failed for no stated reason: what a token
                    // reports when it cannot write (SoftHSM on a full disk).
                    && matches!(
                        function.as_str(),
                        "C_GenerateKeyPair" | "C_GenerateKey" | "C_CreateObject" | "C_UnwrapKey"
                    ))
            }
            _ => false,
        }
    }
}
