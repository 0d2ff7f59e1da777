//! A fault-injecting PKCS#11 module for tests (issue #10, "HSM loss"). Never shipped, never linked
//! into the daemon.
//!
//! The daemon loads this shared object as its `[hsm] module`. On the first `C_GetFunctionList` it
//! loads the real module named by [`MODULE_ENV`] (SoftHSM2), copies the real function list and
//! replaces the calls the daemon makes on a token (slot and token queries, sessions, login, object
//! search and attributes, key generation, copies and destruction, signing, encryption) with
//! wrappers. Each wrapper first looks at the control file named by [`CONTROL_ENV`]:
//!
//! - absent: the call goes to the real module unchanged;
//! - `removed` (or empty, or anything else): the call returns `CKR_DEVICE_REMOVED` at once, as a
//!   token pulled out of its reader would;
//! - `hang N`: the call blocks for `N` seconds (default 30), as a network HSM that stopped
//!   answering would, then returns `CKR_DEVICE_REMOVED`; if the control file disappears during the
//!   wait, the call goes on to the real module (the "device" came back).
//!
//! `C_Initialize`, `C_Finalize`, `C_GetInfo`, `C_CloseSession` and `C_CloseAllSessions` always
//! pass through, so sessions the daemon drops during an outage are really closed.
//!
//! The shim exports only `C_GetFunctionList` (no PKCS#11 3.0 `C_GetInterface`), so `cryptoki`
//! uses the 2.40 function list.

use cryptoki_sys::{
    CKR_ARGUMENTS_BAD, CKR_DEVICE_REMOVED, CKR_FUNCTION_NOT_SUPPORTED, CKR_GENERAL_ERROR, CKR_OK,
    CK_ATTRIBUTE, CK_BBOOL, CK_BYTE, CK_FLAGS, CK_FUNCTION_LIST, CK_MECHANISM, CK_NOTIFY,
    CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CK_SESSION_INFO, CK_SLOT_ID, CK_SLOT_INFO,
    CK_TOKEN_INFO, CK_ULONG, CK_USER_TYPE, CK_UTF8CHAR,
};
use std::ffi::c_void;
use std::ptr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable naming the real PKCS#11 module to wrap.
pub const MODULE_ENV: &str = "SCAIVAULT_FAULT_MODULE";

/// The environment variable naming the control file (see the crate docs).
pub const CONTROL_ENV: &str = "SCAIVAULT_FAULT_CONTROL";

/// How long `hang` blocks when the control file gives no number of seconds.
const DEFAULT_HANG: Duration = Duration::from_secs(30);

/// How often a hanging call looks whether the control file changed.
const HANG_POLL: Duration = Duration::from_millis(20);

/// The real module: kept loaded for the life of the process, with its own function list.
struct Real {
    _library: libloading::Library,
    list: CK_FUNCTION_LIST,
}

static REAL: OnceLock<Real> = OnceLock::new();

/// The function list handed out: the real one with the wrappers installed, or why loading failed.
static WRAPPED: OnceLock<Result<CK_FUNCTION_LIST, CK_RV>> = OnceLock::new();

/// The fault the control file asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Removed,
    Hang(Duration),
}

/// Reads the control file: `None` when there is none (or no control file is configured).
fn fault() -> Option<Fault> {
    let path = std::env::var_os(CONTROL_ENV)?;
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    match words.next() {
        Some("hang") => Some(Fault::Hang(
            words
                .next()
                .and_then(|n| n.parse().ok())
                .map_or(DEFAULT_HANG, Duration::from_secs),
        )),
        _ => Some(Fault::Removed),
    }
}

/// What a wrapped call does before (maybe) reaching the real module: `Some(rv)` to return `rv`
/// instead, `None` to go on.
fn gate() -> Option<CK_RV> {
    match fault()? {
        Fault::Removed => Some(CKR_DEVICE_REMOVED),
        Fault::Hang(limit) => {
            let start = Instant::now();
            while start.elapsed() < limit {
                match fault() {
                    Some(Fault::Hang(_)) => std::thread::sleep(HANG_POLL),
                    Some(Fault::Removed) => return Some(CKR_DEVICE_REMOVED),
                    None => return None,
                }
            }
            Some(CKR_DEVICE_REMOVED)
        }
    }
}

/// Defines one wrapper per listed PKCS#11 function (same name and signature as in
/// `CK_FUNCTION_LIST`) and `install`, which puts them into a copy of the real list.
macro_rules! faulty {
    ($($name:ident($($arg:ident: $ty:ty),* $(,)?);)+) => {
        #[allow(non_snake_case)]
        mod wrapped {
            use super::*;
            $(
                pub(super) unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                    if let Some(rv) = gate() {
                        return rv;
                    }
                    let Some(real) = REAL.get().and_then(|r| r.list.$name) else {
                        return CKR_FUNCTION_NOT_SUPPORTED;
                    };
                    // SAFETY: `real` is the real module's entry point for this very function,
                    // called with the caller's arguments unchanged: the caller's side of the
                    // PKCS#11 contract carries over as is.
                    unsafe { real($($arg),*) }
                }
            )+
        }

        /// Replaces the listed functions of `list` (those the real module has) by the wrappers.
        fn install(list: &mut CK_FUNCTION_LIST) {
            $(
                if list.$name.is_some() {
                    list.$name = Some(wrapped::$name);
                }
            )+
        }
    };
}

faulty! {
    C_GetSlotList(present: CK_BBOOL, slots: *mut CK_SLOT_ID, count: *mut CK_ULONG);
    C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO);
    C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO);
    C_OpenSession(slot: CK_SLOT_ID, flags: CK_FLAGS, app: *mut c_void, notify: CK_NOTIFY, session: *mut CK_SESSION_HANDLE);
    C_GetSessionInfo(session: CK_SESSION_HANDLE, info: *mut CK_SESSION_INFO);
    C_Login(session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: *mut CK_UTF8CHAR, pin_len: CK_ULONG);
    C_Logout(session: CK_SESSION_HANDLE);
    C_FindObjectsInit(session: CK_SESSION_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    C_FindObjects(session: CK_SESSION_HANDLE, objects: *mut CK_OBJECT_HANDLE, max: CK_ULONG, count: *mut CK_ULONG);
    C_FindObjectsFinal(session: CK_SESSION_HANDLE);
    C_GetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG);
    C_CopyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, template: *mut CK_ATTRIBUTE, count: CK_ULONG, copy: *mut CK_OBJECT_HANDLE);
    C_DestroyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE);
    C_GenerateKey(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, template: *mut CK_ATTRIBUTE, count: CK_ULONG, key: *mut CK_OBJECT_HANDLE);
    C_GenerateKeyPair(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, public: *mut CK_ATTRIBUTE, public_count: CK_ULONG, private: *mut CK_ATTRIBUTE, private_count: CK_ULONG, public_key: *mut CK_OBJECT_HANDLE, private_key: *mut CK_OBJECT_HANDLE);
    C_SignInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_Sign(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, signature: *mut CK_BYTE, signature_len: *mut CK_ULONG);
    C_EncryptInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_Encrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_DecryptInit(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, key: CK_OBJECT_HANDLE);
    C_Decrypt(session: CK_SESSION_HANDLE, data: *mut CK_BYTE, data_len: CK_ULONG, out: *mut CK_BYTE, out_len: *mut CK_ULONG);
    C_GenerateRandom(session: CK_SESSION_HANDLE, out: *mut CK_BYTE, len: CK_ULONG);
}

/// Loads the real module and builds the wrapped function list (once per process).
fn load() -> Result<CK_FUNCTION_LIST, CK_RV> {
    let Some(path) = std::env::var_os(MODULE_ENV) else {
        eprintln!("scaivault-fault-shim: {MODULE_ENV} is not set");
        return Err(CKR_GENERAL_ERROR);
    };
    // SAFETY: loading a shared object runs its initialisers; the module named by the test
    // (SoftHSM2) is trusted like any PKCS#11 module the daemon loads.
    let library = unsafe { libloading::Library::new(&path) }.map_err(|e| {
        eprintln!("scaivault-fault-shim: cannot load {}: {e}", path.display());
        CKR_GENERAL_ERROR
    })?;
    let mut real: *mut CK_FUNCTION_LIST = ptr::null_mut();
    {
        // SAFETY: every PKCS#11 module exports `C_GetFunctionList` with this signature
        // (PKCS#11 2.40 §5.2); the symbol does not outlive `library`.
        let get = unsafe {
            library.get::<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV>(
                b"C_GetFunctionList\0",
            )
        }
        .map_err(|_| CKR_GENERAL_ERROR)?;
        // SAFETY: `real` is a valid place for the module to store its list pointer.
        let rv = unsafe { get(&mut real) };
        if rv != CKR_OK || real.is_null() {
            return Err(CKR_GENERAL_ERROR);
        }
    }
    // SAFETY: the module returned a non-null pointer to its function list, which stays valid
    // while the library is loaded; the library is kept in `REAL` for the life of the process.
    let list = unsafe { *real };
    let _ = REAL.set(Real {
        _library: library,
        list,
    });
    let mut ours = list;
    install(&mut ours);
    Ok(ours)
}

/// The module's one exported entry point (PKCS#11 2.40 §5.2): the real module's function list
/// with the fault-injecting wrappers installed.
///
/// # Safety
/// `list` must be null or point to writable storage for one pointer (the PKCS#11 contract).
#[no_mangle]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    match WRAPPED.get_or_init(load) {
        Ok(wrapped) => {
            // SAFETY: `list` is non-null and writable (checked above, and the caller's contract).
            // The list is static and callers only read through the pointer (PKCS#11 forbids
            // writing to it), so handing out a `*mut` to immutable data is sound.
            unsafe { *list = ptr::from_ref(wrapped).cast_mut() };
            CKR_OK
        }
        Err(rv) => *rv,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_file_modes_are_read() {
        let dir = std::env::temp_dir().join(format!("fault-shim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let control = dir.join("control");
        std::env::set_var(CONTROL_ENV, &control);
        assert_eq!(fault(), None);
        assert_eq!(gate(), None);
        std::fs::write(&control, "removed\n").unwrap();
        assert_eq!(fault(), Some(Fault::Removed));
        assert_eq!(gate(), Some(CKR_DEVICE_REMOVED));
        std::fs::write(&control, "hang 7").unwrap();
        assert_eq!(fault(), Some(Fault::Hang(Duration::from_secs(7))));
        std::fs::write(&control, "hang").unwrap();
        assert_eq!(fault(), Some(Fault::Hang(DEFAULT_HANG)));
        // A hang ends early (and the call goes on) once the control file is gone.
        let remover = {
            let control = control.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                std::fs::remove_file(control).unwrap();
            })
        };
        let t0 = Instant::now();
        assert_eq!(gate(), None);
        assert!(t0.elapsed() < Duration::from_secs(5));
        remover.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
