//! Backup and restore of a CA private key under a trusted wrapping key (feature `pkcs11`).
//!
//! A key made by [`crate::pkcs11::Pkcs11Token::generate_for_backup`] is `CKA_EXTRACTABLE` only
//! together with `CKA_WRAP_WITH_TRUSTED`: the token wraps it only under a key whose
//! `CKA_TRUSTED` is true, which only the security officer can set.
//!
//! [`wrap_private_key`]: in one session the SO logs in and creates the caller's AES-256 value as a
//! *session* object (`CKA_TOKEN = false`, `CKA_TRUSTED`, `CKA_WRAP` only; the SO may create only
//! public objects, and a token object would lie unencrypted in SoftHSM's token directory), logs
//! out; the user logs in on the same session and wraps the key with `CKM_AES_KEY_WRAP_PAD`
//! (RFC 5649). Closing the session destroys the wrapping key. The caller keeps the AES value only
//! as secret shares.
//!
//! [`unwrap_private_key`]: the user creates the AES value as a private session object that may
//! only unwrap, unwraps the key into a token object with the CA attributes (sensitive, sign only,
//! extractable only under a trusted key, not copyable) and creates its public key object from the
//! SubjectPublicKeyInfo. Nothing is written to the token before the unwrap succeeded; a failure
//! after it removes what was made.
//!
//! These functions open their own sessions: run them when no [`crate::pkcs11::Pkcs11Token`] of
//! the same token is open in the process (login state is per process).

use crate::encoding;
use crate::pkcs11::{ck_error, context, slot_by_label};
use crate::{Error, KeySpec, KeyType, Result};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use der::Decode;
use std::path::Path;

/// Length of the wrapping key in bytes (AES-256).
pub const WRAPPING_KEY_BYTES: usize = 32;

/// A read-write session on the token labelled `token_label`, logged in as `user` with `pin`.
fn session_as(module: &Path, token_label: &str, user: UserType, pin: &str) -> Result<Session> {
    let ctx = context(module)?;
    let slot = slot_by_label(&ctx, token_label)?;
    let session = ctx.open_rw_session(slot).map_err(ck_error)?;
    login(&session, user, pin)?;
    Ok(session)
}

fn login(session: &Session, user: UserType, pin: &str) -> Result<()> {
    session
        .login(user, Some(&AuthPin::new(pin.into())))
        .map_err(|e| match ck_error(e) {
            Error::Pkcs11 { rv, .. } if rv.starts_with("CKR_PIN_") => Error::LoginRefused,
            other => other,
        })
}

fn check_kek(kek: &[u8]) -> Result<()> {
    if kek.len() == WRAPPING_KEY_BYTES {
        Ok(())
    } else {
        Err(Error::UnsupportedKey(format!(
            "wrapping key of {} bytes (must be {WRAPPING_KEY_BYTES})",
            kek.len()
        )))
    }
}

/// Whether the private key labelled `label` may leave the token wrapped (`CKA_EXTRACTABLE`; a key
/// generated with `backup = false` may not), asked with the user's PIN alone: a backup that cannot
/// work is refused before the security officer is asked for the SO PIN.
///
/// # Errors
/// [`Error::LoginRefused`] for a wrong PIN; [`Error::KeyNotFound`]; [`Error::DuplicateLabel`].
pub fn is_wrappable(module: &Path, token_label: &str, user_pin: &str, label: &str) -> Result<bool> {
    let session = session_as(module, token_label, UserType::User, user_pin)?;
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(ck_error);
    let attrs = match found {
        Ok(found) => match found.as_slice() {
            [one] => session
                .get_attributes(*one, &[AttributeType::Extractable])
                .map_err(ck_error),
            [] => Err(Error::KeyNotFound {
                label: label.to_owned(),
            }),
            _ => Err(Error::DuplicateLabel(label.to_owned())),
        },
        Err(e) => Err(e),
    };
    let _ = session.logout();
    Ok(attrs?
        .iter()
        .any(|a| matches!(a, Attribute::Extractable(true))))
}

/// Wraps the private key labelled `label` on the token `token_label` under the AES-256 key `kek`
/// (see the module docs) and returns the RFC 5649 wrapped key.
///
/// # Errors
/// [`Error::LoginRefused`] for a wrong PIN; [`Error::KeyNotFound`]; [`Error::Pkcs11`] with
/// `CKR_KEY_UNEXTRACTABLE` (a key made without backup) or `CKR_KEY_NOT_WRAPPABLE` when the token
/// refuses.
pub fn wrap_private_key(
    module: &Path,
    token_label: &str,
    so_pin: &str,
    user_pin: &str,
    label: &str,
    kek: &[u8],
) -> Result<Vec<u8>> {
    check_kek(kek)?;
    let session = session_as(module, token_label, UserType::So, so_pin)?;
    let wrapping = session.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(CkKeyType::AES),
        Attribute::Value(kek.to_vec()),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Trusted(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Extractable(false),
    ]);
    let wrapping = match wrapping {
        Ok(handle) => handle,
        Err(e) => {
            let _ = session.logout();
            return Err(ck_error(e));
        }
    };
    session.logout().map_err(ck_error)?;
    login(&session, UserType::User, user_pin)?;
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(ck_error)?;
    let key = match found.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::KeyNotFound {
                label: label.to_owned(),
            })
        }
        _ => return Err(Error::DuplicateLabel(label.to_owned())),
    };
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, key);
    let _ = session.destroy_object(wrapping);
    let _ = session.logout();
    wrapped.map_err(ck_error)
}

/// Test hook: tries to wrap the private key labelled `label` under `kek` created by the *user*
/// as a session key without `CKA_TRUSTED`. A key made for backup must be refused
/// (`CKR_KEY_NOT_WRAPPABLE`); this shows that only the SO's trusted key can wrap it.
///
/// # Errors
/// The token's refusal; login and lookup failures.
#[doc(hidden)]
pub fn wrap_with_untrusted_key_for_test(
    module: &Path,
    token_label: &str,
    user_pin: &str,
    label: &str,
    kek: &[u8],
) -> Result<Vec<u8>> {
    check_kek(kek)?;
    let session = session_as(module, token_label, UserType::User, user_pin)?;
    let wrapping = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(CkKeyType::AES),
            Attribute::Value(kek.to_vec()),
            Attribute::Token(false),
            Attribute::Wrap(true),
        ])
        .map_err(ck_error)?;
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(ck_error)?;
    let [key] = found.as_slice() else {
        return Err(Error::KeyNotFound {
            label: label.to_owned(),
        });
    };
    let wrapped = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, *key);
    let _ = session.destroy_object(wrapping);
    let _ = session.logout();
    wrapped.map_err(ck_error)
}

/// Where and as what [`unwrap_private_key`] restores a key.
#[derive(Clone, Copy)]
pub struct UnwrapTarget<'a> {
    /// The PKCS#11 module.
    pub module: &'a Path,
    /// The target token's label.
    pub token_label: &'a str,
    /// The target token's user PIN.
    pub user_pin: &'a str,
    /// CKA_LABEL and CKA_ID of the restored key pair.
    pub label: &'a str,
    /// The key's type and size.
    pub spec: KeySpec,
    /// The key's public key, DER SubjectPublicKeyInfo.
    pub spki_der: &'a [u8],
}

impl std::fmt::Debug for UnwrapTarget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnwrapTarget")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("user_pin", &"<redacted>")
            .field("label", &self.label)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Unwraps `wrapped` (from [`wrap_private_key`]) under `kek` into `target`.
///
/// # Errors
/// [`Error::DuplicateLabel`] when the target has an object with that label (nothing changed);
/// [`Error::Decrypt`] when the token refuses the unwrap (wrong key or damaged blob; nothing
/// changed); token failures.
pub fn unwrap_private_key(target: &UnwrapTarget<'_>, kek: &[u8], wrapped: &[u8]) -> Result<()> {
    let UnwrapTarget {
        module,
        token_label,
        user_pin,
        label,
        spec,
        spki_der,
    } = *target;
    check_kek(kek)?;
    let (ck_type, public_attributes) = public_key_attributes(spec, spki_der)?;
    let session = session_as(module, token_label, UserType::User, user_pin)?;
    let existing = session
        .find_objects(&[
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(ck_error)?;
    if !existing.is_empty() {
        return Err(Error::DuplicateLabel(label.to_owned()));
    }
    let unwrapping = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(CkKeyType::AES),
            Attribute::Value(kek.to_vec()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Unwrap(true),
            Attribute::Wrap(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ])
        .map_err(ck_error)?;
    let id = label.as_bytes().to_vec();
    let private_template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(ck_type),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Copyable(false),
        // Not `CKA_MODIFIABLE = false`: SoftHSM 2.6 refuses it in an unwrap template
        // (CKR_ATTRIBUTE_READ_ONLY), and it cannot be set afterwards.
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(id.clone()),
        Attribute::Id(id.clone()),
    ];
    let private = session.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        unwrapping,
        wrapped,
        &private_template,
    );
    let _ = session.destroy_object(unwrapping);
    let private = private.map_err(|e| match ck_error(e) {
        Error::Pkcs11 { function, rv } => Error::Decrypt(format!(
            "the token refused to unwrap the key ({function}: {rv}): wrong wrapping key or \
             damaged backup"
        )),
        other => other,
    })?;
    let mut public_template = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(ck_type),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(id.clone()),
        Attribute::Id(id),
    ];
    public_template.extend(public_attributes);
    if let Err(e) = session.create_object(&public_template) {
        let _ = session.destroy_object(private);
        return Err(ck_error(e));
    }
    let _ = session.logout();
    Ok(())
}

/// The PKCS#11 key type and public-key attributes of `spki_der`, which must be of `spec`.
fn public_key_attributes(spec: KeySpec, spki_der: &[u8]) -> Result<(CkKeyType, Vec<Attribute>)> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| Error::Encoding(format!("public key: {e}")))?;
    let point = spki.subject_public_key.raw_bytes();
    match spec.key_type() {
        KeyType::Ec => {
            let params = match spec {
                KeySpec::EcP256 => encoding::PARAMS_P256,
                _ => encoding::PARAMS_P384,
            };
            let ec_point = der::Encode::to_der(
                &der::asn1::OctetStringRef::new(point)
                    .map_err(|e| Error::Encoding(format!("public point: {e}")))?,
            )
            .map_err(|e| Error::Encoding(format!("public point: {e}")))?;
            Ok((
                CkKeyType::EC,
                vec![
                    Attribute::EcParams(params.to_vec()),
                    Attribute::EcPoint(ec_point),
                ],
            ))
        }
        KeyType::Rsa => {
            use rsa::pkcs8::DecodePublicKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPublicKey::from_public_key_der(spki_der)
                .map_err(|e| Error::Encoding(format!("RSA public key: {e}")))?;
            Ok((
                CkKeyType::RSA,
                vec![
                    Attribute::Modulus(key.n().to_bytes_be()),
                    Attribute::PublicExponent(key.e().to_bytes_be()),
                ],
            ))
        }
        KeyType::Ed25519 => Err(Error::UnsupportedKey(
            "Ed25519 keys cannot be restored: SoftHSM 2.6 cannot unwrap them".into(),
        )),
    }
}
