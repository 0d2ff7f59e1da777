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
/// [`Error::DuplicateLabel`] when a token with `label` exists already; token failures otherwise.
pub fn init_token(module: &Path, label: &str, so_pin: &str, user_pin: &str) -> Result<()> {
    let ctx = context(module)?;
    let slots = ctx.get_slots_with_token().map_err(ck_error)?;
    let mut free = None;
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(ck_error)?;
        if info.token_initialized() {
            if info.label().trim_end() == label {
                return Err(Error::DuplicateLabel(label.to_owned()));
            }
        } else if free.is_none() {
            free = Some(slot);
        }
    }
    let slot =
        free.ok_or_else(|| Error::Unavailable("no slot with an uninitialised token".into()))?;
    let so = AuthPin::new(so_pin.into());
    ctx.init_token(slot, &so, label).map_err(ck_error)?;
    let session = ctx.open_rw_session(slot).map_err(ck_error)?;
    session.login(UserType::So, Some(&so)).map_err(ck_error)?;
    session
        .init_pin(&AuthPin::new(user_pin.into()))
        .map_err(ck_error)?;
    session.logout().map_err(ck_error)?;
    Ok(())
}
