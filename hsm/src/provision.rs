//! Token provisioning for development and tests (feature `pkcs11`): initialise a free slot's
//! token with a label, an SO PIN and a user PIN through PKCS#11 itself, so that no PIN ever
//! appears on a command line (as it would with `softhsm2-util --pin`).

use crate::pkcs11::{ck_error, context};
use crate::{Error, Result};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use std::path::Path;

/// Initialises the first slot whose token is not yet initialised: `C_InitToken` with `so_pin`
/// and `label`, then (as SO) `C_InitPIN` with `user_pin`.
///
/// # Errors
/// [`Error::Unavailable`] when the module cannot be loaded or no free slot exists;
/// [`Error::TokenExists`] when a token with `label` exists already with its user PIN (one without
/// it, left by a run that failed half-way, is finished: the SO PIN must be the one it was
/// initialised with); [`Error::PinLength`] before anything is written; token failures otherwise.
pub fn init_token(module: &Path, label: &str, so_pin: &str, user_pin: &str) -> Result<()> {
    let ctx = context(module)?;
    let slots = ctx.get_slots_with_token().map_err(ck_error)?;
    let mut free = None;
    let mut unfinished = None;
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(ck_error)?;
        if info.token_initialized() {
            if info.label().trim_end() == label {
                if info.user_pin_initialized() {
                    return Err(Error::TokenExists(label.to_owned()));
                }
                // An earlier run initialised it and failed before its user PIN: finish that.
                unfinished = Some((slot, info));
            }
        } else if free.is_none() {
            free = Some((slot, info));
        }
    }
    let (slot, info, fresh) = match (unfinished, free) {
        (Some((slot, info)), _) => (slot, info, false),
        (None, Some((slot, info))) => (slot, info, true),
        (None, None) => {
            return Err(Error::Unavailable(
                "no slot with an uninitialised token".into(),
            ))
        }
    };
    // Both PINs are checked before anything is written, so that a PIN the token refuses does
    // not leave it initialised without a user PIN.
    let (min, max) = (info.min_pin_length(), info.max_pin_length());
    for (which, pin) in [("SO", so_pin), ("user", user_pin)] {
        let n = pin.len(); // PKCS#11 gives the range in bytes
        if n < min || (max > 0 && n > max) {
            return Err(Error::PinLength { which, min, max });
        }
    }
    let so = AuthPin::new(so_pin.into());
    if fresh {
        ctx.init_token(slot, &so, label).map_err(ck_error)?;
    }
    let session = ctx.open_rw_session(slot).map_err(ck_error)?;
    session.login(UserType::So, Some(&so)).map_err(ck_error)?;
    session
        .init_pin(&AuthPin::new(user_pin.into()))
        .map_err(ck_error)?;
    session.logout().map_err(ck_error)?;
    Ok(())
}
