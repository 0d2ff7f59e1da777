//! The PKCS#11 backend (feature `pkcs11`): CA keys generated and used inside a token through
//! `cryptoki`.
//!
//! [`Pkcs11Token::open`] loads the module (one shared, initialised `cryptoki` context per module
//! path and process: `C_Initialize` may run only once per process), finds the slot by token label
//! (never by index: `softhsm2-util --init-token` renumbers slots), logs in as the user and keeps a
//! *keeper* session open for the token's whole life, because PKCS#11 login state belongs to the
//! process and closing the last session logs it out.
//!
//! Operations run on a pool of R/W sessions: a caller takes a session (or opens one), runs its
//! PKCS#11 calls without holding any lock, and hands it back. When a call fails because the session
//! or the token went away (`CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`,
//! `CKR_TOKEN_NOT_PRESENT`, `CKR_DEVICE_REMOVED`, `CKR_USER_NOT_LOGGED_IN`, `CKR_DEVICE_ERROR`),
//! the session is dropped, the pool emptied, the keeper session checked (and the user logged in
//! again if needed), and the operation retried once on a fresh session; a second failure gives
//! [`Error::Unavailable`].
//!
//! Signers cache the private-key object handle (PKCS#11 handles are valid in every session of the
//! process); the cache is invalidated whenever the login had to be redone, and a handle the token
//! no longer knows (`CKR_KEY_HANDLE_INVALID`, `CKR_OBJECT_HANDLE_INVALID`) is looked up again by
//! label. A signature therefore costs one pooled session and `C_SignInit` + `C_Sign`.
//!
//! Session copies: a token object makes SoftHSM open, lock and read the token files on every
//! signature, which serialises the threads of a process. Signers therefore sign with a *session
//! object* copy of the private key (`C_CopyObject(key, {CKA_TOKEN = false})`), made once per key
//! and login generation in the keeper session, so that it is visible to every session of the
//! process and lives as long as the keeper. The copy keeps `CKA_SENSITIVE` and not
//! `CKA_EXTRACTABLE` (checked after copying; a copy that does not is destroyed at once) and is
//! never a token object. Copies are shared by all signers of a label, made again after a
//! recovery or re-login (a new generation) and destroyed with the key by [`Token::destroy`].
//! When the token refuses the copy (`CKA_COPYABLE = false`: `CKR_ACTION_PROHIBITED`), the signer
//! uses the token object. Setting the environment variable `SCAIVAULT_HSM_NO_SESSION_COPY=1`
//! when the token is opened turns copies off (for measurements and troubleshooting).
//!
//! Key-encryption keys ([`Token::ensure_kek`]) are AES-256 token secret keys (private,
//! sensitive, not extractable, encrypt/decrypt only). [`Token::kek_encrypt`] runs `CKM_AES_GCM`
//! on the token with a random 12-byte IV from the host CSPRNG and a 128-bit tag (SoftHSM 2.6.1
//! supports it; it reports a failed tag check as `CKR_GENERAL_ERROR` from `C_Decrypt`, which
//! becomes [`Error::Decrypt`]). `CKM_AES_KEY_WRAP_PAD` is not an alternative there: SoftHSM
//! 2.6.1 offers it only for `C_WrapKey`/`C_UnwrapKey`, `C_EncryptInit` refuses it with
//! `CKR_MECHANISM_INVALID`.
//!
//! Mechanisms (what SoftHSM 2.6 offers): ECDSA is `CKM_ECDSA` over a host-computed SHA-256
//! (P-256) or SHA-384 (P-384) digest, its raw `r||s` converted to a DER `ECDSA-Sig-Value`; RSA is
//! `CKM_SHA256_RSA_PKCS` over the message; Ed25519 is `CKM_EDDSA` over the message.
//!
//! The PIN lives only in [`Zeroizing`] memory (and, for the duration of a `C_Login`, in
//! `cryptoki`'s own zeroizing secret) and is never logged. No `cryptoki` type crosses this module's
//! boundary: failures become [`Error::Pkcs11`] with the function and return value as text.

use crate::encoding;
use crate::{Error, KeyAttributes, KeySpec, KeyType, Result, Signer, Token};
use crate::{KEK_IV_LEN, KEK_TAG_LEN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use der::Decode;
use rand_core::{OsRng, RngCore};
use sha2::Digest;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use zeroize::Zeroizing;

/// How many idle sessions the pool keeps; sessions handed back beyond that are closed.
const MAX_POOLED_SESSIONS: usize = 32;

/// The environment variable that, set to `1` when a token is opened, makes its signers sign with
/// the token object instead of a session-object copy.
pub const NO_SESSION_COPY_ENV: &str = "SCAIVAULT_HSM_NO_SESSION_COPY";

/// AES-256 key length in bytes (CKA_VALUE_LEN of a KEK).
const KEK_KEY_BYTES: u64 = 32;

/// GCM tag length in bits.
const GCM_TAG_BITS: u64 = 128;

/// RSA public exponent F4 = 65537.
const RSA_PUBLIC_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// `C_Sign` calls made by the signers of this process, every attempt counted (a retry after a
/// lost session counts twice, a call the token failed counts too).
static SIGN_CALLS: AtomicU64 = AtomicU64::new(0);

/// How many times the signers of this process (all tokens) have called `C_Sign` since it started:
/// the daemon exports it as `scaivault_hsm_sign_calls_total`, and tests use it to prove that a
/// refused operation signed nothing.
pub fn sign_calls() -> u64 {
    SIGN_CALLS.load(Ordering::Relaxed)
}

/// Where and how to reach the token.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token label (compared after trimming the padding blanks).
    pub token_label: String,
    /// The user PIN.
    pub pin: Zeroizing<String>,
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .finish()
    }
}

/// A PKCS#11 token holding the CA keys. Cheap to share (`Arc`), safe to use from many threads.
pub struct Pkcs11Token {
    shared: Arc<Shared>,
}

impl fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Token")
            .field("token_label", &self.shared.token_label)
            .field("slot", &self.shared.slot.id())
            .finish_non_exhaustive()
    }
}

/// State shared by the token and every signer it hands out.
struct Shared {
    ctx: Pkcs11,
    slot: Slot,
    token_label: String,
    pin: Zeroizing<String>,
    /// The session that keeps the login alive; used for no operation but making (and
    /// destroying) the session copies of signing keys, which live as long as it does.
    keeper: Mutex<Option<Session>>,
    /// Idle logged-in R/W sessions.
    pool: Mutex<Vec<Session>>,
    /// Serialises key generation and destruction (label uniqueness check + create).
    admin: Mutex<()>,
    /// Guards the token's object store within the process: creating or destroying token
    /// objects (write) excludes finding, reading and using them (read). SoftHSM 2.6.1 races
    /// `C_FindObjects` and token-object reads against object creation in other threads
    /// (SoftHSMv2 issue 573, fixed after 2.6.1): generation then fails with
    /// `CKR_GENERAL_ERROR` or `CKR_TEMPLATE_INCONSISTENT`. Signing with a session copy needs no
    /// guard. Never taken twice by one thread; lock order: `admin`, `copies`, `keeper`, `store`.
    store: RwLock<()>,
    /// Bumped whenever the login had to be redone, the keeper replaced or sessions were lost:
    /// cached object handles (and session copies) from an older generation are not trusted.
    generation: AtomicU64,
    /// Whether signers sign with a session-object copy of the private key.
    session_copy: bool,
    /// The session-object copies of private keys, by label. Lock order: `copies`, then `keeper`.
    copies: Mutex<HashMap<String, SessionCopy>>,
    /// KEK handles by label, with the generation they were found in.
    keks: Mutex<HashMap<String, (u64, ObjectHandle)>>,
}

/// The session-object copy of one private key.
#[derive(Debug, Clone, Copy)]
struct SessionCopy {
    /// The login generation the copy was made in.
    generation: u64,
    /// The token object it copies.
    source: ObjectHandle,
    /// The copy, or `None` when the token refused to copy (sign with `source`).
    copy: Option<ObjectHandle>,
}

/// The process-wide `cryptoki` contexts, one per module path (`C_Initialize` is per process).
/// The slot whose token carries `token_label` (surrounding blanks ignored).
///
/// # Errors
/// [`Error::Unavailable`] when the slots cannot be listed, [`Error::TokenNotFound`].
pub(crate) fn slot_by_label(ctx: &Pkcs11, token_label: &str) -> Result<Slot> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| Error::Unavailable(format!("listing pkcs#11 slots: {}", describe(&e))))?;
    for slot in slots {
        match ctx.get_token_info(slot) {
            Ok(info) if info.label().trim() == token_label.trim() => return Ok(slot),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(slot = slot.id(), error = %describe(&e), "cannot read token info");
            }
        }
    }
    Err(Error::TokenNotFound(token_label.to_owned()))
}

/// Loads and initialises the PKCS#11 module `module` (a path, or a bare library name the dynamic
/// loader finds) as opening a token would, without opening one: what `check-config` asks.
///
/// # Errors
/// `Unavailable` naming the module: it cannot be loaded, is not a PKCS#11 library, or its
/// `C_Initialize` fails.
pub fn load_module(module: &Path) -> Result<()> {
    context(module).map(drop)
}

pub(crate) fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let key = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let mut contexts = lock(CONTEXTS.get_or_init(Default::default));
    if let Some(ctx) = contexts.get(&key) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&key).map_err(|e| {
        Error::Unavailable(format!(
            "cannot load pkcs#11 module {}: {}",
            module.display(),
            describe(&e)
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another library of this process initialised the module already: share it.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            // SoftHSM2 answers a configuration or token directory it cannot read with this
            // code alone.
            let hint = if matches!(e, CkError::Pkcs11(RvError::GeneralError, _)) {
                " (for SoftHSM2: SOFTHSM2_CONF, or hsm.softhsm2_conf, must name a readable file \
                 whose directories.tokendir exists and is readable and writable by this user)"
            } else {
                ""
            };
            return Err(Error::Unavailable(format!(
                "C_Initialize of {}: {}{hint}",
                module.display(),
                describe(&e)
            )));
        }
    }
    contexts.insert(key, ctx.clone());
    Ok(ctx)
}

/// Locks a mutex, taking over a poisoned one (every guarded value stays consistent on its own).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `C_Sign` for `Function::Sign`.
fn function_name(function: Function) -> String {
    format!("C_{function:?}")
}

/// `CKR_PIN_INCORRECT` for `RvError::PinIncorrect`.
fn rv_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("CKR_VENDOR_DEFINED({code:#x})"),
        RvError::UnknownErrorCode(code) => format!("CKR_UNKNOWN({code:#x})"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

/// A short text for a `cryptoki` error: `C_Sign: CKR_DEVICE_ERROR`.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{}: {}", function_name(*function), rv_name(*rv)),
        other => other.to_string(),
    }
}

/// Converts a `cryptoki` error to the crate's error.
pub(crate) fn ck_error(e: CkError) -> Error {
    match e {
        CkError::Pkcs11(rv, function) => Error::Pkcs11 {
            function: function_name(function),
            rv: rv_name(rv),
        },
        CkError::LibraryLoading(e) => Error::Unavailable(format!("pkcs#11 module: {e}")),
        other => Error::Pkcs11 {
            function: "cryptoki".to_owned(),
            rv: other.to_string(),
        },
    }
}

/// Whether an error means the session or the token went away (worth one reopen and retry).
fn is_session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::TokenNotPresent
                | RvError::DeviceRemoved
                | RvError::UserNotLoggedIn
                | RvError::DeviceError,
            _
        )
    )
}

/// Whether an error means an object handle is stale (look the object up again).
fn is_stale_handle(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _)
    )
}

/// The failure of one attempt of an operation on a session.
#[derive(Debug)]
enum OpError {
    /// A PKCS#11 call failed.
    Ck(CkError),
    /// The session turned out not to be logged in (private objects invisible).
    NotLoggedIn,
    /// A failure that is the answer (key not found, duplicate label, bad encoding).
    Hsm(Error),
}

impl From<CkError> for OpError {
    fn from(e: CkError) -> Self {
        OpError::Ck(e)
    }
}

impl From<Error> for OpError {
    fn from(e: Error) -> Self {
        OpError::Hsm(e)
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Ck(e) => f.write_str(&describe(e)),
            OpError::NotLoggedIn => f.write_str("session not logged in"),
            OpError::Hsm(e) => write!(f, "{e}"),
        }
    }
}

impl OpError {
    fn is_session_lost(&self) -> bool {
        match self {
            OpError::Ck(e) => is_session_lost(e),
            OpError::NotLoggedIn => true,
            OpError::Hsm(_) => false,
        }
    }

    fn into_error(self) -> Error {
        match self {
            OpError::Ck(e) => ck_error(e),
            OpError::NotLoggedIn => Error::Unavailable("the token session is not logged in".into()),
            OpError::Hsm(e) => e,
        }
    }
}

impl Shared {
    /// Shared access to the token objects (see [`Shared::store`]).
    fn reading(&self) -> RwLockReadGuard<'_, ()> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access to the token objects, to create or destroy some.
    fn writing(&self) -> RwLockWriteGuard<'_, ()> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs `session` in as the user unless the token already is (login is per process).
    fn ensure_login(&self, session: &Session) -> Result<()> {
        let state = session
            .get_session_info()
            .map_err(|e| self.unavailable("C_GetSessionInfo", &e))?
            .session_state();
        if matches!(state, SessionState::RwUser | SessionState::RoUser) {
            return Ok(());
        }
        // The login had been lost: handles cached before may be stale.
        self.generation.fetch_add(1, Ordering::SeqCst);
        let pin = AuthPin::from(self.pin.as_str());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                tracing::debug!(token = %self.token_label, "logged in to the token");
                Ok(())
            }
            Err(CkError::Pkcs11(
                RvError::PinIncorrect
                | RvError::PinLocked
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinExpired,
                _,
            )) => {
                tracing::error!(token = %self.token_label, "the token refused the pin");
                Err(Error::LoginRefused)
            }
            Err(e) => Err(self.unavailable("C_Login", &e)),
        }
    }

    fn unavailable(&self, what: &str, e: &CkError) -> Error {
        Error::Unavailable(format!(
            "token {:?}: {what}: {}",
            self.token_label,
            describe(e)
        ))
    }

    /// Opens a new logged-in R/W session (and a keeper session if there is none).
    fn open_session(&self) -> Result<Session> {
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| self.unavailable("C_OpenSession", &e))?;
        self.ensure_login(&session)?;
        if lock(&self.keeper).is_none() {
            self.refresh_keeper()?;
        }
        Ok(session)
    }

    /// Makes sure the keeper session exists, is valid and is logged in; replaces it otherwise.
    /// Holds the keeper lock (never the pool lock) while doing so.
    fn refresh_keeper(&self) -> Result<()> {
        let mut keeper = lock(&self.keeper);
        if let Some(current) = keeper.as_ref() {
            if current.get_session_info().is_ok() && self.ensure_login(current).is_ok() {
                return Ok(());
            }
        }
        let fresh = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| self.unavailable("C_OpenSession", &e))?;
        self.ensure_login(&fresh)?;
        let stale = keeper.replace(fresh);
        // Session objects (key copies) of the old keeper die with it.
        self.generation.fetch_add(1, Ordering::SeqCst);
        drop(keeper);
        // Closed only now that the fresh keeper holds the login.
        drop(stale);
        Ok(())
    }

    /// After a lost session: forget the idle sessions (probably dead too), re-establish the keeper
    /// and the login, and invalidate cached handles.
    fn recover(&self) -> Result<()> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let stale = std::mem::take(&mut *lock(&self.pool));
        self.refresh_keeper()?;
        drop(stale);
        Ok(())
    }

    /// Takes an idle session or opens a new one.
    fn take_session(&self) -> Result<Session> {
        let pooled = lock(&self.pool).pop();
        match pooled {
            Some(session) => Ok(session),
            None => self.open_session(),
        }
    }

    /// Hands a session back to the pool (or closes it when the pool is full).
    fn give_back(&self, session: Session) {
        let mut pool = lock(&self.pool);
        if pool.len() < MAX_POOLED_SESSIONS {
            pool.push(session);
        } else {
            drop(pool);
            drop(session);
        }
    }

    /// Runs `op` on a pooled session; on a session/token-lost failure reopens and retries once.
    fn with_session<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&Session) -> std::result::Result<T, OpError>,
    ) -> Result<T> {
        let session = self.take_session()?;
        let first = op(&session);
        match first {
            Ok(value) => {
                self.give_back(session);
                Ok(value)
            }
            Err(e) if e.is_session_lost() => {
                drop(session);
                tracing::warn!(
                    token = %self.token_label,
                    operation = what,
                    error = %e,
                    "pkcs#11 session lost; reopening and retrying once"
                );
                self.recover()?;
                let session = self.open_session()?;
                match op(&session) {
                    Ok(value) => {
                        self.give_back(session);
                        Ok(value)
                    }
                    Err(e) if e.is_session_lost() => Err(Error::Unavailable(format!(
                        "token {:?}: {what}: {e} (again after reopening the session)",
                        self.token_label
                    ))),
                    Err(e) => {
                        self.give_back(session);
                        Err(e.into_error())
                    }
                }
            }
            Err(e) => {
                self.give_back(session);
                Err(e.into_error())
            }
        }
    }

    /// If the session is not logged in, that explains an empty search: report it as lost login.
    fn check_logged_in(session: &Session) -> std::result::Result<(), OpError> {
        let state = session.get_session_info()?.session_state();
        if matches!(state, SessionState::RwUser | SessionState::RoUser) {
            Ok(())
        } else {
            Err(OpError::NotLoggedIn)
        }
    }

    /// The one object of `class` labelled `label`.
    ///
    /// SoftHSM's `C_CopyObject` first copies every attribute of the source into the new object,
    /// `CKA_TOKEN = true` included, and only then applies the template (`CKA_TOKEN = false`): a
    /// search on another thread in between also finds the session copy being made (seen once in
    /// CI as a `DuplicateLabel` while four threads re-made copies after a logout). A second match
    /// is therefore looked for again a few times, a millisecond apart, before it counts as two
    /// objects sharing the label.
    fn find_one(
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> std::result::Result<Option<ObjectHandle>, OpError> {
        const COPY_IN_FLIGHT_RETRIES: usize = 5;
        let mut retries = 0;
        loop {
            // Token objects only: the session copies of a key carry its label too.
            let found = session.find_objects(&[
                Attribute::Class(class),
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            match found.as_slice() {
                [] => return Ok(None),
                [one] => return Ok(Some(*one)),
                [..] if retries < COPY_IN_FLIGHT_RETRIES => {
                    retries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                [..] => {
                    tracing::error!(
                        label,
                        count = found.len(),
                        "several key objects share a label"
                    );
                    return Err(OpError::Hsm(Error::DuplicateLabel(label.to_owned())));
                }
            }
        }
    }

    /// The private key labelled `label`, or [`Error::KeyNotFound`].
    fn find_private(session: &Session, label: &str) -> std::result::Result<ObjectHandle, OpError> {
        match Self::find_one(session, ObjectClass::PRIVATE_KEY, label)? {
            Some(handle) => Ok(handle),
            None => {
                Self::check_logged_in(session)?;
                Err(OpError::Hsm(Error::KeyNotFound {
                    label: label.to_owned(),
                }))
            }
        }
    }

    /// The AES secret key labelled `label`, if any.
    fn find_kek(
        session: &Session,
        label: &str,
    ) -> std::result::Result<Option<ObjectHandle>, OpError> {
        let found = session.find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(CkKeyType::AES),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            [..] => {
                tracing::error!(label, count = found.len(), "several KEKs share a label");
                Err(OpError::Hsm(Error::DuplicateLabel(label.to_owned())))
            }
        }
    }

    /// The KEK labelled `label` (cached per generation unless `refresh`), or
    /// [`Error::KeyNotFound`]; [`Error::UnsupportedKey`] for a secret key of that label that is
    /// not a sensitive, non-extractable AES-256 encryption key (never used).
    fn kek_handle(
        &self,
        session: &Session,
        label: &str,
        refresh: bool,
    ) -> std::result::Result<ObjectHandle, OpError> {
        let generation = self.generation.load(Ordering::SeqCst);
        if !refresh {
            if let Some(&(cached_generation, handle)) = lock(&self.keks).get(label) {
                if cached_generation == generation {
                    return Ok(handle);
                }
            }
        }
        let Some(handle) = Self::find_kek(session, label)? else {
            Self::check_logged_in(session)?;
            return Err(OpError::Hsm(Error::KeyNotFound {
                label: label.to_owned(),
            }));
        };
        check_kek(session, handle, label)?;
        lock(&self.keks).insert(label.to_owned(), (generation, handle));
        Ok(handle)
    }

    /// Runs `op` with the KEK labelled `label`; looks the key up again once if its cached handle
    /// turns out stale.
    fn with_kek<T>(
        &self,
        session: &Session,
        label: &str,
        op: impl Fn(ObjectHandle) -> std::result::Result<T, CkError>,
    ) -> std::result::Result<T, OpError> {
        let key = self.kek_handle(session, label, false)?;
        match op(key) {
            Err(e) if is_stale_handle(&e) => {
                let key = self.kek_handle(session, label, true)?;
                Ok(op(key)?)
            }
            other => Ok(other?),
        }
    }

    /// The object to sign with for the private key `source` labelled `label`: its session copy
    /// (made now unless one of this `generation` exists and is not `failed`), or `source` when
    /// copies are off or refused.
    fn signing_key(
        &self,
        label: &str,
        generation: u64,
        source: ObjectHandle,
        failed: Option<ObjectHandle>,
    ) -> std::result::Result<ObjectHandle, OpError> {
        if !self.session_copy {
            return Ok(source);
        }
        let mut copies = lock(&self.copies);
        if let Some(entry) = copies.get(label) {
            let usable = entry.generation == generation
                && entry.source == source
                && (failed.is_none() || entry.copy != failed);
            if usable {
                return Ok(entry.copy.unwrap_or(source));
            }
        }
        let replaced = copies.remove(label).and_then(|entry| entry.copy);
        let copy = self.copy_in_keeper(label, source, replaced)?;
        copies.insert(
            label.to_owned(),
            SessionCopy {
                generation,
                source,
                copy,
            },
        );
        Ok(copy.unwrap_or(source))
    }

    /// Makes a session-object copy of `source` in the keeper session (destroying `replaced`, an
    /// older copy, first). `None` when the token refuses the copy or the copy would not be
    /// sensitive, non-extractable and a session object.
    fn copy_in_keeper(
        &self,
        label: &str,
        source: ObjectHandle,
        replaced: Option<ObjectHandle>,
    ) -> std::result::Result<Option<ObjectHandle>, OpError> {
        let keeper = lock(&self.keeper);
        // No keeper: the sessions were lost; recovery makes a new one.
        let Some(keeper) = keeper.as_ref() else {
            return Err(OpError::NotLoggedIn);
        };
        let _store = self.reading();
        if let Some(old) = replaced {
            destroy_own_copy(keeper, old, label);
        }
        let copy = match keeper.copy_object(source, &[Attribute::Token(false)]) {
            Ok(copy) => copy,
            Err(e) if is_session_lost(&e) || is_stale_handle(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(
                    token = %self.token_label,
                    label,
                    error = %describe(&e),
                    "the token refused a session copy of the key; signing with the token object"
                );
                return Ok(None);
            }
        };
        let attrs = read_attributes(
            keeper,
            copy,
            &[
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )?;
        let safe = matches!(
            attrs.as_slice(),
            [
                Some(Attribute::Token(false)),
                Some(Attribute::Sensitive(true)),
                Some(Attribute::Extractable(false))
            ]
        );
        if !safe {
            tracing::error!(
                token = %self.token_label,
                label,
                "the session copy of the key is not a sensitive, non-extractable session object; \
                 destroyed it, signing with the token object"
            );
            if let Err(e) = keeper.destroy_object(copy) {
                tracing::error!(label, error = %describe(&e), "cannot destroy the unsafe key copy");
            }
            return Ok(None);
        }
        tracing::debug!(token = %self.token_label, label, "made a session copy of the key");
        Ok(Some(copy))
    }
}

/// Destroys `handle` if it still is a session-object private key labelled `label` (one of our
/// copies; a handle number the token reused for another object is left alone). Best effort.
fn destroy_own_copy(session: &Session, handle: ObjectHandle, label: &str) {
    let Ok(attrs) = read_attributes(
        session,
        handle,
        &[
            AttributeType::Token,
            AttributeType::Class,
            AttributeType::Label,
        ],
    ) else {
        // Gone with its session or login.
        return;
    };
    let own = match attrs.as_slice() {
        [Some(Attribute::Token(false)), Some(Attribute::Class(class)), Some(Attribute::Label(l))] => {
            *class == ObjectClass::PRIVATE_KEY && l.as_slice() == label.as_bytes()
        }
        _ => false,
    };
    if own {
        if let Err(e) = session.destroy_object(handle) {
            tracing::debug!(label, error = %describe(&e), "cannot destroy an old key copy");
        }
    }
}

/// Whether a `C_Decrypt` failure under AES-GCM means the ciphertext does not authenticate
/// (SoftHSM 2.6.1 says `CKR_GENERAL_ERROR`; the standard says `CKR_ENCRYPTED_DATA_INVALID`).
fn is_decrypt_refused(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::GeneralError | RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
            Function::Decrypt
        )
    )
}

/// The template of an AES-256 key-encryption key labelled `label`.
fn kek_template(label: &str) -> Vec<Attribute> {
    let id = label.as_bytes().to_vec();
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(CkKeyType::AES),
        Attribute::ValueLen(Ulong::from(KEK_KEY_BYTES)),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(id.clone()),
        Attribute::Id(id),
    ]
}

/// Checks that the existing secret key `kek` is a sensitive, non-extractable AES-256 key that
/// encrypts and decrypts.
fn check_kek(
    session: &Session,
    kek: ObjectHandle,
    label: &str,
) -> std::result::Result<(), OpError> {
    let attrs = read_attributes(
        session,
        kek,
        &[
            AttributeType::ValueLen,
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
        ],
    )?;
    let fits = match attrs.as_slice() {
        [Some(Attribute::ValueLen(len)), Some(Attribute::Sensitive(true)), Some(Attribute::Extractable(false)), Some(Attribute::Encrypt(true)), Some(Attribute::Decrypt(true))] => {
            u64::from(*len) == KEK_KEY_BYTES
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(Error::UnsupportedKey(format!(
            "the secret key labelled {label:?} is not a sensitive, non-extractable AES-256 \
             encryption key"
        ))
        .into())
    }
}

/// Reads the security attributes of the key object `key` and tries to read its secret value.
fn object_attributes(
    session: &Session,
    key: ObjectHandle,
) -> std::result::Result<KeyAttributes, OpError> {
    let attrs = read_attributes(
        session,
        key,
        &[
            AttributeType::Token,
            AttributeType::Private,
            AttributeType::Sensitive,
            AttributeType::AlwaysSensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Sign,
            AttributeType::KeyType,
            AttributeType::WrapWithTrusted,
        ],
    )?;
    let flag = |i: usize| -> bool {
        matches!(
            attrs.get(i),
            Some(Some(
                Attribute::Token(true)
                    | Attribute::Private(true)
                    | Attribute::Sensitive(true)
                    | Attribute::AlwaysSensitive(true)
                    | Attribute::Extractable(true)
                    | Attribute::NeverExtractable(true)
                    | Attribute::Sign(true)
                    | Attribute::WrapWithTrusted(true)
            ))
        )
    };
    let secret = match attrs.get(7) {
        Some(Some(Attribute::KeyType(t))) if *t == CkKeyType::RSA => AttributeType::PrivateExponent,
        _ => AttributeType::Value,
    };
    // Try to read the secret: a compliant token refuses (CKR_ATTRIBUTE_SENSITIVE, which
    // cryptoki reports as an unavailable attribute). Anything read is wiped at once.
    let read = read_attributes(session, key, &[secret])?;
    let value_read_refused = match read.into_iter().next() {
        Some(Some(Attribute::Value(v) | Attribute::PrivateExponent(v))) => {
            let v = Zeroizing::new(v);
            v.is_empty()
        }
        _ => true,
    };
    Ok(KeyAttributes {
        token: flag(0),
        private: flag(1),
        sensitive: flag(2),
        always_sensitive: flag(3),
        extractable: flag(4),
        never_extractable: flag(5),
        sign: flag(6),
        wrap_with_trusted: flag(8),
        value_read_refused,
    })
}

impl Pkcs11Token {
    /// Loads the module, finds the token labelled `config.token_label`, logs in with the PIN and
    /// opens the keeper session that holds the login for the token's life.
    ///
    /// Opening the same module twice in one process shares one initialised `cryptoki` context;
    /// opening the same token twice shares its (per-process) login.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the module cannot be loaded or initialised or the token does not
    /// answer, [`Error::TokenNotFound`] when no token carries the label, [`Error::LoginRefused`]
    /// when the PIN is refused (wrong or locked).
    pub fn open(config: &Pkcs11Config) -> Result<Arc<Pkcs11Token>> {
        let ctx = context(&config.module)?;
        let slot = slot_by_label(&ctx, &config.token_label)?;
        // A PIN the token cannot take is refused before a login attempt: on a hardware token
        // each failed login spends one of the few tries before the PIN locks.
        let info = ctx.get_token_info(slot).map_err(ck_error)?;
        let (min, max) = (info.min_pin_length(), info.max_pin_length());
        let n = config.pin.len(); // PKCS#11 gives the range in bytes
        if n < min || (max > 0 && n > max) {
            return Err(Error::PinLength {
                which: "user",
                min,
                max,
            });
        }
        let session_copy = std::env::var_os(NO_SESSION_COPY_ENV).is_none_or(|v| v != "1");
        let shared = Arc::new(Shared {
            ctx,
            slot,
            token_label: config.token_label.clone(),
            pin: config.pin.clone(),
            keeper: Mutex::new(None),
            pool: Mutex::new(Vec::new()),
            admin: Mutex::new(()),
            store: RwLock::new(()),
            generation: AtomicU64::new(0),
            session_copy,
            copies: Mutex::new(HashMap::new()),
            keks: Mutex::new(HashMap::new()),
        });
        shared.refresh_keeper()?;
        tracing::info!(
            token = %shared.token_label,
            slot = slot.id(),
            session_copy,
            "pkcs#11 token opened"
        );
        Ok(Arc::new(Pkcs11Token { shared }))
    }

    /// The label of the token.
    pub fn token_label(&self) -> &str {
        &self.shared.token_label
    }

    /// Test hook: closes every idle session and the keeper session (which logs the process out
    /// of the token unless a session is in use). The next operation must recover by itself.
    #[doc(hidden)]
    pub fn drop_sessions_for_test(&self) {
        let pooled = std::mem::take(&mut *lock(&self.shared.pool));
        let keeper = lock(&self.shared.keeper).take();
        drop(pooled);
        drop(keeper);
    }

    /// Test hook: logs the process out of the token (`C_Logout`) while keeping every session
    /// open, as a token reset would. The next operation must notice and log in again.
    ///
    /// # Errors
    /// Token failures.
    #[doc(hidden)]
    pub fn logout_for_test(&self) -> Result<()> {
        let session = self.shared.take_session()?;
        let result = session.logout().map_err(ck_error);
        self.shared.give_back(session);
        result
    }

    /// Test hook: the number of idle sessions in the pool.
    #[doc(hidden)]
    pub fn idle_sessions_for_test(&self) -> usize {
        lock(&self.shared.pool).len()
    }

    /// Whether signers of this token sign with session-object copies (see
    /// [`NO_SESSION_COPY_ENV`]).
    pub fn session_copies_enabled(&self) -> bool {
        self.shared.session_copy
    }

    /// Test hook: the attributes of every session object (not token object) of the process that
    /// is a private key labelled `label`: the session copies of that key.
    ///
    /// # Errors
    /// Token failures.
    #[doc(hidden)]
    pub fn session_copies_for_test(&self, label: &str) -> Result<Vec<KeyAttributes>> {
        self.shared.with_session("session copies", |session| {
            let _store = self.shared.reading();
            Shared::check_logged_in(session)?;
            let found = session.find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Token(false),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            found
                .into_iter()
                .map(|copy| object_attributes(session, copy))
                .collect()
        })
    }

    /// Test hook: the number of token objects (any class) labelled `label`.
    ///
    /// # Errors
    /// Token failures.
    #[doc(hidden)]
    pub fn token_objects_for_test(&self, label: &str) -> Result<usize> {
        self.shared.with_session("count objects", |session| {
            let _store = self.shared.reading();
            Shared::check_logged_in(session)?;
            let found = session.find_objects(&[
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            Ok(found.len())
        })
    }

    /// Generates the key pair of an offline CA (a key ceremony's root): as [`Token::generate`],
    /// but the private key is `CKA_COPYABLE = false` and `CKA_MODIFIABLE = false`, so that
    /// nobody holding the user PIN can copy it, relabel it or widen its usage (`CKA_DERIVE`). The
    /// daemon's own CA keys stay copyable: its signer threads sign with session copies.
    ///
    /// # Errors
    /// As [`Token::generate`].
    pub fn generate_offline(&self, spec: KeySpec, label: &str) -> Result<Arc<dyn Signer>> {
        self.generate_with(spec, label, false, false)
    }

    /// Test hook: generates a key pair whose private key has `CKA_COPYABLE = false`, so that
    /// signers must fall back to the token object.
    ///
    /// # Errors
    /// As [`Token::generate`].
    #[doc(hidden)]
    pub fn generate_uncopyable_for_test(
        &self,
        spec: KeySpec,
        label: &str,
    ) -> Result<Arc<dyn Signer>> {
        self.generate_with(spec, label, false, false)
    }

    /// Generates a CA key pair that can be backed up (see [`crate::backup`]): as
    /// [`Token::generate`], but the private key is `CKA_EXTRACTABLE` together with
    /// `CKA_WRAP_WITH_TRUSTED` (so only a wrapping key the SO marked `CKA_TRUSTED` can wrap it; it
    /// stays `CKA_SENSITIVE`) and `CKA_COPYABLE = false` (no session copies of an extractable
    /// key: signers use the token object) and `CKA_MODIFIABLE = false`.
    ///
    /// # Errors
    /// As [`Token::generate`]; [`Error::UnsupportedKey`] for Ed25519, which SoftHSM 2.6 cannot
    /// wrap.
    pub fn generate_for_backup(&self, spec: KeySpec, label: &str) -> Result<Arc<dyn Signer>> {
        self.generate_with(spec, label, true, true)
    }

    /// Generates a key pair (see [`Token::generate`]); `copyable` is the private key's
    /// `CKA_COPYABLE`; `backup` makes it wrappable under a trusted key.
    fn generate_with(
        &self,
        spec: KeySpec,
        label: &str,
        copyable: bool,
        backup: bool,
    ) -> Result<Arc<dyn Signer>> {
        let _admin = lock(&self.shared.admin);
        let (mechanism, public_template, mut private_template) = generation_templates(spec, label)?;
        if backup {
            if spec.key_type() == KeyType::Ed25519 {
                return Err(Error::UnsupportedKey(
                    "Ed25519 keys cannot be backed up: SoftHSM 2.6 cannot wrap them".into(),
                ));
            }
            // Extractable only under a wrapping key the SO marked CKA_TRUSTED; still sensitive.
            for attribute in &mut private_template {
                if matches!(attribute, Attribute::Extractable(_)) {
                    *attribute = Attribute::Extractable(true);
                }
            }
            private_template.push(Attribute::WrapWithTrusted(true));
        }
        if !copyable || backup {
            // Offline keys: neither copied nor changed once made.
            private_template.push(Attribute::Copyable(false));
            private_template.push(Attribute::Modifiable(false));
        }
        let (handle, spki, generation) = self.shared.with_session("generate", |session| {
            let _store = self.shared.writing();
            Shared::check_logged_in(session)?;
            let existing = session.find_objects(&[
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            if !existing.is_empty() {
                return Err(Error::DuplicateLabel(label.to_owned()).into());
            }
            let generation = self.shared.generation.load(Ordering::SeqCst);
            let (public, private) =
                session.generate_key_pair(&mechanism, &public_template, &private_template)?;
            match public_key_spki(session, spec, public) {
                Ok(spki) => Ok((private, spki, generation)),
                Err(e) => {
                    // Do not leave a key pair behind whose public half we cannot use.
                    for object in [private, public] {
                        if let Err(destroy) = session.destroy_object(object) {
                            tracing::warn!(label, error = %describe(&destroy), "cannot destroy half-made key");
                        }
                    }
                    Err(e)
                }
            }
        })?;
        tracing::info!(token = %self.shared.token_label, label, ?spec, "generated key pair on the token");
        Ok(self.signer(spec, label, spki, handle, generation))
    }

    fn signer(
        &self,
        spec: KeySpec,
        label: &str,
        spki: Vec<u8>,
        handle: ObjectHandle,
        generation: u64,
    ) -> Arc<dyn Signer> {
        Arc::new(Pkcs11Signer {
            shared: Arc::clone(&self.shared),
            spec,
            label: label.to_owned(),
            spki,
            cache: Mutex::new(Some(CachedKey {
                generation,
                source: handle,
                key: None,
            })),
        })
    }
}

/// What a token says about itself (`C_GetTokenInfo`), padding blanks trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// CKA token label.
    pub label: String,
    /// The token's serial number.
    pub serial: String,
    /// The manufacturer id.
    pub manufacturer: String,
    /// The model.
    pub model: String,
}

/// One token object with its identity and security attributes (for inventories such as the
/// ceremony's `list-keys`). Attributes the object does not have are absent from `flags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object class, e.g. `CKO_PRIVATE_KEY`.
    pub class: String,
    /// CKA_LABEL as text (lossy UTF-8).
    pub label: String,
    /// CKA_ID as hex.
    pub id_hex: String,
    /// CKA_KEY_TYPE, e.g. `CKK_EC`, for key objects.
    pub key_type: Option<String>,
    /// Boolean attributes by PKCS#11 name (`CKA_SENSITIVE`, …), in a fixed order.
    pub flags: Vec<(&'static str, bool)>,
}

/// The boolean attributes an inventory reports, with their PKCS#11 names.
const INVENTORY_FLAGS: [(AttributeType, &str); 19] = [
    (AttributeType::Token, "CKA_TOKEN"),
    (AttributeType::Private, "CKA_PRIVATE"),
    (AttributeType::Modifiable, "CKA_MODIFIABLE"),
    (AttributeType::Copyable, "CKA_COPYABLE"),
    (AttributeType::Destroyable, "CKA_DESTROYABLE"),
    (AttributeType::Local, "CKA_LOCAL"),
    (AttributeType::Sensitive, "CKA_SENSITIVE"),
    (AttributeType::AlwaysSensitive, "CKA_ALWAYS_SENSITIVE"),
    (AttributeType::Extractable, "CKA_EXTRACTABLE"),
    (AttributeType::NeverExtractable, "CKA_NEVER_EXTRACTABLE"),
    (AttributeType::WrapWithTrusted, "CKA_WRAP_WITH_TRUSTED"),
    (AttributeType::Trusted, "CKA_TRUSTED"),
    (AttributeType::Sign, "CKA_SIGN"),
    (AttributeType::Verify, "CKA_VERIFY"),
    (AttributeType::Encrypt, "CKA_ENCRYPT"),
    (AttributeType::Decrypt, "CKA_DECRYPT"),
    (AttributeType::Wrap, "CKA_WRAP"),
    (AttributeType::Unwrap, "CKA_UNWRAP"),
    (AttributeType::Derive, "CKA_DERIVE"),
];

/// The value of a boolean attribute.
fn bool_value(attribute: &Attribute) -> Option<bool> {
    match attribute {
        Attribute::Token(b)
        | Attribute::Private(b)
        | Attribute::Modifiable(b)
        | Attribute::Copyable(b)
        | Attribute::Destroyable(b)
        | Attribute::Local(b)
        | Attribute::Sensitive(b)
        | Attribute::AlwaysSensitive(b)
        | Attribute::Extractable(b)
        | Attribute::NeverExtractable(b)
        | Attribute::WrapWithTrusted(b)
        | Attribute::Trusted(b)
        | Attribute::Sign(b)
        | Attribute::Verify(b)
        | Attribute::Encrypt(b)
        | Attribute::Decrypt(b)
        | Attribute::Wrap(b)
        | Attribute::Unwrap(b)
        | Attribute::Derive(b) => Some(*b),
        _ => None,
    }
}

impl Pkcs11Token {
    /// The token's label, serial number, manufacturer and model (`C_GetTokenInfo`).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the token does not answer.
    pub fn token_info(&self) -> Result<TokenInfo> {
        let info = self
            .shared
            .ctx
            .get_token_info(self.shared.slot)
            .map_err(|e| self.shared.unavailable("C_GetTokenInfo", &e))?;
        Ok(TokenInfo {
            label: info.label().trim_end().to_owned(),
            serial: info.serial_number().trim_end().to_owned(),
            manufacturer: info.manufacturer_id().trim_end().to_owned(),
            model: info.model().trim_end().to_owned(),
        })
    }

    /// Every token object the logged-in user can see (public and private), with class, label,
    /// id, key type and security attributes. Secret values are never read.
    ///
    /// # Errors
    /// Token failures.
    pub fn list_objects(&self) -> Result<Vec<ObjectInfo>> {
        let mut types = vec![
            AttributeType::Class,
            AttributeType::Label,
            AttributeType::Id,
            AttributeType::KeyType,
        ];
        types.extend(INVENTORY_FLAGS.iter().map(|(t, _)| *t));
        self.shared.with_session("list objects", |session| {
            let _store = self.shared.reading();
            Shared::check_logged_in(session)?;
            let found = session.find_objects(&[Attribute::Token(true)])?;
            let mut out = Vec::with_capacity(found.len());
            for object in found {
                let attrs = read_attributes(session, object, &types)?;
                let mut info = ObjectInfo {
                    class: String::new(),
                    label: String::new(),
                    id_hex: String::new(),
                    key_type: None,
                    flags: Vec::new(),
                };
                for (i, attr) in attrs.iter().enumerate() {
                    match attr {
                        Some(Attribute::Class(c)) => info.class = c.to_string(),
                        Some(Attribute::Label(l)) => {
                            info.label = String::from_utf8_lossy(l).into_owned();
                        }
                        Some(Attribute::Id(id)) => info.id_hex = hex(id),
                        Some(Attribute::KeyType(t)) => info.key_type = Some(t.to_string()),
                        Some(other) => {
                            let name = i
                                .checked_sub(4)
                                .and_then(|j| INVENTORY_FLAGS.get(j))
                                .map(|(_, name)| *name);
                            if let (Some(name), Some(b)) = (name, bool_value(other)) {
                                info.flags.push((name, b));
                            }
                        }
                        None => {}
                    }
                }
                out.push(info);
            }
            out.sort_by(|a, b| (&a.label, &a.class).cmp(&(&b.label, &b.class)));
            Ok(out)
        })
    }
}

/// Key-pair generation mechanism and templates for `spec`.
fn generation_templates(
    spec: KeySpec,
    label: &str,
) -> Result<(Mechanism<'static>, Vec<Attribute>, Vec<Attribute>)> {
    let id = label.as_bytes().to_vec();
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(id.clone()),
        Attribute::Id(id.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(id.clone()),
        Attribute::Id(id),
    ];
    let mechanism = match spec {
        KeySpec::EcP256 => {
            public.push(Attribute::EcParams(encoding::PARAMS_P256.to_vec()));
            Mechanism::EccKeyPairGen
        }
        KeySpec::EcP384 => {
            public.push(Attribute::EcParams(encoding::PARAMS_P384.to_vec()));
            Mechanism::EccKeyPairGen
        }
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            let bits = usize::try_from(spec.bits())
                .ok()
                .and_then(|bits| Ulong::try_from(bits).ok())
                .ok_or_else(|| Error::UnsupportedKey(format!("rsa {}", spec.bits())))?;
            public.push(Attribute::ModulusBits(bits));
            public.push(Attribute::PublicExponent(RSA_PUBLIC_EXPONENT.to_vec()));
            Mechanism::RsaPkcsKeyPairGen
        }
        KeySpec::Ed25519 => {
            public.push(Attribute::EcParams(encoding::PARAMS_ED25519.to_vec()));
            Mechanism::EccEdwardsKeyPairGen
        }
    };
    Ok((mechanism, public, private))
}

/// The public point inside `CKA_EC_POINT`: a DER OCTET STRING around the point (PKCS#11), or
/// the bare point (some tokens). `raw_len` is the length of a bare point.
fn ec_point(value: &[u8], raw_len: usize) -> Result<Vec<u8>> {
    if value.len() == raw_len {
        return Ok(value.to_vec());
    }
    der::asn1::OctetString::from_der(value)
        .map(der::asn1::OctetString::into_bytes)
        .map_err(|e| Error::Encoding(format!("CKA_EC_POINT is not an OCTET STRING: {e}")))
}

/// Reads the given attributes of `object`, in the order asked, `None` where unavailable.
fn read_attributes(
    session: &Session,
    object: ObjectHandle,
    types: &[AttributeType],
) -> std::result::Result<Vec<Option<Attribute>>, CkError> {
    let got = session.get_attributes(object, types)?;
    Ok(types
        .iter()
        .map(|t| got.iter().find(|a| a.attribute_type() == *t).cloned())
        .collect())
}

/// The DER SPKI of the public-key object `public`, whose key must be of `spec`.
fn public_key_spki(
    session: &Session,
    spec: KeySpec,
    public: ObjectHandle,
) -> std::result::Result<Vec<u8>, OpError> {
    match spec.key_type() {
        KeyType::Ec | KeyType::Ed25519 => {
            let attrs = read_attributes(session, public, &[AttributeType::EcPoint])?;
            let Some(Some(Attribute::EcPoint(value))) = attrs.into_iter().next() else {
                return Err(Error::Encoding("public key without CKA_EC_POINT".into()).into());
            };
            let spki = match spec {
                KeySpec::EcP256 => encoding::ec_spki(spec, &ec_point(&value, 65)?)?,
                KeySpec::EcP384 => encoding::ec_spki(spec, &ec_point(&value, 97)?)?,
                _ => encoding::ed25519_spki(&ec_point(&value, 32)?)?,
            };
            Ok(spki)
        }
        KeyType::Rsa => {
            let attrs = read_attributes(
                session,
                public,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            match attrs.as_slice() {
                [Some(Attribute::Modulus(n)), Some(Attribute::PublicExponent(e))] => {
                    Ok(encoding::rsa_spki(n, e)?)
                }
                _ => Err(Error::Encoding(
                    "RSA public key without CKA_MODULUS/CKA_PUBLIC_EXPONENT".into(),
                )
                .into()),
            }
        }
    }
}

/// What kind of key the pair is: key type and curve of the private-key object `private`, or the
/// modulus size of the public-key object `public`.
fn key_spec(
    session: &Session,
    private: ObjectHandle,
    public: ObjectHandle,
) -> std::result::Result<KeySpec, OpError> {
    let attrs = read_attributes(
        session,
        private,
        &[AttributeType::KeyType, AttributeType::EcParams],
    )?;
    let [Some(Attribute::KeyType(key_type)), params] = attrs.as_slice() else {
        return Err(Error::Encoding("private key without CKA_KEY_TYPE".into()).into());
    };
    let params = match params {
        Some(Attribute::EcParams(p)) => p.as_slice(),
        _ => &[],
    };
    let spec = if *key_type == CkKeyType::EC {
        match params {
            p if p == encoding::PARAMS_P256 => KeySpec::EcP256,
            p if p == encoding::PARAMS_P384 => KeySpec::EcP384,
            p => {
                return Err(Error::UnsupportedKey(format!("EC curve {}", hex(p))).into());
            }
        }
    } else if *key_type == CkKeyType::EC_EDWARDS {
        if params == encoding::PARAMS_ED25519 || params == encoding::PARAMS_ED25519_NAME {
            KeySpec::Ed25519
        } else {
            return Err(Error::UnsupportedKey(format!("Edwards curve {}", hex(params))).into());
        }
    } else if *key_type == CkKeyType::RSA {
        let modulus = read_attributes(session, public, &[AttributeType::Modulus])?;
        let Some(Some(Attribute::Modulus(n))) = modulus.first() else {
            return Err(Error::Encoding("RSA public key without CKA_MODULUS".into()).into());
        };
        let bits = rsa::BigUint::from_bytes_be(n).bits();
        match bits {
            2048 => KeySpec::Rsa2048,
            3072 => KeySpec::Rsa3072,
            4096 => KeySpec::Rsa4096,
            other => return Err(Error::UnsupportedKey(format!("rsa {other}")).into()),
        }
    } else {
        return Err(Error::UnsupportedKey(format!("key type {key_type}")).into());
    };
    Ok(spec)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Token for Pkcs11Token {
    fn generate(&self, spec: KeySpec, label: &str) -> Result<Arc<dyn Signer>> {
        self.generate_with(spec, label, true, false)
    }

    fn find(&self, label: &str) -> Result<Arc<dyn Signer>> {
        let (spec, spki, handle, generation) =
            self.shared.with_session("find", |session| {
                let _store = self.shared.reading();
                let generation = self.shared.generation.load(Ordering::SeqCst);
                let private = Shared::find_private(session, label)?;
                let public = Shared::find_one(session, ObjectClass::PUBLIC_KEY, label)?
                    .ok_or_else(|| Error::PublicKeyMissing {
                        label: label.to_owned(),
                    })?;
                let spec = key_spec(session, private, public)?;
                let spki = public_key_spki(session, spec, public)?;
                Ok((spec, spki, private, generation))
            })?;
        Ok(self.signer(spec, label, spki, handle, generation))
    }

    fn attributes(&self, label: &str) -> Result<KeyAttributes> {
        self.shared.with_session("attributes", |session| {
            let _store = self.shared.reading();
            let private = Shared::find_private(session, label)?;
            object_attributes(session, private)
        })
    }

    fn key_present(&self, label: &str) -> Result<bool> {
        self.shared.with_session("key lookup", |session| {
            let _store = self.shared.reading();
            let private = Shared::find_one(session, ObjectClass::PRIVATE_KEY, label)?;
            let public = Shared::find_one(session, ObjectClass::PUBLIC_KEY, label)?;
            if private.is_none() || public.is_none() {
                // An empty answer from a session that lost its login says nothing.
                Shared::check_logged_in(session)?;
            }
            Ok(private.is_some() && public.is_some())
        })
    }

    fn forget_copies(&self, label: &str) {
        let mut copies = lock(&self.shared.copies);
        if let Some(copy) = copies.remove(label).and_then(|entry| entry.copy) {
            if let Some(keeper) = lock(&self.shared.keeper).as_ref() {
                let _store = self.shared.reading();
                destroy_own_copy(keeper, copy, label);
            }
        }
    }

    fn destroy(&self, label: &str) -> Result<()> {
        let _admin = lock(&self.shared.admin);
        // Held throughout: no signer makes a new session copy while the key goes.
        let mut copies = lock(&self.shared.copies);
        let destroyed = self.shared.with_session("destroy", |session| {
            let _store = self.shared.writing();
            let mut destroyed = 0usize;
            // Token objects and their session copies (same class and label) alike.
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                let found = session.find_objects(&[
                    Attribute::Class(class),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])?;
                for object in found {
                    session.destroy_object(object)?;
                    destroyed += 1;
                }
            }
            Ok(destroyed)
        })?;
        copies.remove(label);
        drop(copies);
        if destroyed > 0 {
            tracing::info!(token = %self.shared.token_label, label, destroyed, "destroyed key objects");
        }
        Ok(())
    }

    fn ping(&self) -> Result<()> {
        let shared = &self.shared;
        shared.with_session("ping", |session| {
            Shared::check_logged_in(session)?;
            let slot = shared.ctx.get_slot_info(shared.slot)?;
            if slot.token_present() {
                Ok(())
            } else {
                Err(OpError::Ck(CkError::Pkcs11(
                    RvError::TokenNotPresent,
                    Function::GetSlotInfo,
                )))
            }
        })
    }

    fn ensure_kek(&self, label: &str) -> Result<()> {
        let shared = &self.shared;
        // Fast path (callers may ensure before every use): the KEK was found or made in this
        // login generation.
        let generation = shared.generation.load(Ordering::SeqCst);
        if matches!(lock(&shared.keks).get(label), Some(&(g, _)) if g == generation) {
            return Ok(());
        }
        // The admin lock makes "look, then create" atomic within the process.
        let _admin = lock(&shared.admin);
        let template = kek_template(label);
        let created = shared.with_session("ensure_kek", |session| {
            let _store = shared.writing();
            // Logged out, the private KEK would be invisible: do not conclude it is absent.
            Shared::check_logged_in(session)?;
            let generation = shared.generation.load(Ordering::SeqCst);
            if let Some(existing) = Shared::find_kek(session, label)? {
                check_kek(session, existing, label)?;
                lock(&shared.keks).insert(label.to_owned(), (generation, existing));
                return Ok(false);
            }
            let others = session.find_objects(&[
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])?;
            if !others.is_empty() {
                return Err(Error::DuplicateLabel(label.to_owned()).into());
            }
            let kek = session.generate_key(&Mechanism::AesKeyGen, &template)?;
            lock(&shared.keks).insert(label.to_owned(), (generation, kek));
            Ok(true)
        })?;
        if created {
            tracing::info!(token = %shared.token_label, label, "generated AES-256 KEK on the token");
        }
        Ok(())
    }

    fn kek_encrypt(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut iv = [0u8; KEK_IV_LEN];
        OsRng
            .try_fill_bytes(&mut iv)
            .map_err(|e| Error::Unavailable(format!("host random generator: {e}")))?;
        let shared = &self.shared;
        let sealed = shared.with_session("kek_encrypt", |session| {
            let _store = shared.reading();
            shared.with_kek(session, label, |kek| {
                let mut iv = iv;
                let params = GcmParams::new(&mut iv, &[], Ulong::from(GCM_TAG_BITS))?;
                session.encrypt(&Mechanism::AesGcm(params), kek, plaintext)
            })
        })?;
        if sealed.len() != plaintext.len() + KEK_TAG_LEN {
            return Err(Error::Encoding(format!(
                "AES-GCM gave {} bytes for {} bytes of plaintext",
                sealed.len(),
                plaintext.len()
            )));
        }
        let mut out = Vec::with_capacity(KEK_IV_LEN + sealed.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn kek_decrypt(&self, label: &str, ciphertext: &[u8]) -> Result<Vec<u8>> {
        if ciphertext.len() < KEK_IV_LEN + KEK_TAG_LEN {
            return Err(Error::Decrypt(format!(
                "{} bytes are shorter than IV and tag",
                ciphertext.len()
            )));
        }
        let (iv, sealed) = ciphertext.split_at(KEK_IV_LEN);
        let shared = &self.shared;
        shared.with_session("kek_decrypt", |session| {
            let _store = shared.reading();
            let opened = shared.with_kek(session, label, |kek| {
                let mut iv_buf = [0u8; KEK_IV_LEN];
                iv_buf.copy_from_slice(iv);
                let params = GcmParams::new(&mut iv_buf, &[], Ulong::from(GCM_TAG_BITS))?;
                session.decrypt(&Mechanism::AesGcm(params), kek, sealed)
            });
            match opened {
                Err(OpError::Ck(e)) if is_decrypt_refused(&e) => Err(OpError::Hsm(Error::Decrypt(
                    format!("the ciphertext does not authenticate under KEK {label:?}"),
                ))),
                other => other,
            }
        })
    }

    fn kek_attributes(&self, label: &str) -> Result<KeyAttributes> {
        self.shared.with_session("kek_attributes", |session| {
            let _store = self.shared.reading();
            let Some(kek) = Shared::find_kek(session, label)? else {
                Shared::check_logged_in(session)?;
                return Err(OpError::Hsm(Error::KeyNotFound {
                    label: label.to_owned(),
                }));
            };
            object_attributes(session, kek)
        })
    }
}

/// A private key on the token, with its public key cached.
struct Pkcs11Signer {
    shared: Arc<Shared>,
    spec: KeySpec,
    label: String,
    spki: Vec<u8>,
    /// The handles to sign with and the login generation they were found in.
    cache: Mutex<Option<CachedKey>>,
}

/// The handles a signer signs with.
#[derive(Debug, Clone, Copy)]
struct CachedKey {
    /// The login generation they are from.
    generation: u64,
    /// The private-key token object.
    source: ObjectHandle,
    /// What to sign with (the session copy or `source`); `None` until decided.
    key: Option<ObjectHandle>,
}

impl fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("token", &self.shared.token_label)
            .field("label", &self.label)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// The object to sign with: the cached one when it is from the current login, else the
    /// private key looked up by label and its session copy. `refresh` (after a stale-handle
    /// failure of the cached one) looks both up again.
    ///
    /// Returns the handle and whether it is the token object (which needs the store guard).
    fn key(
        &self,
        session: &Session,
        refresh: bool,
    ) -> std::result::Result<(ObjectHandle, bool), OpError> {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let cached = *lock(&self.cache);
        let current = cached.filter(|c| c.generation == generation && !refresh);
        if let Some(CachedKey {
            key: Some(key),
            source,
            ..
        }) = current
        {
            return Ok((key, key == source));
        }
        let source = match current {
            Some(c) => c.source,
            None => {
                let _store = self.shared.reading();
                Shared::find_private(session, &self.label)?
            }
        };
        let failed = if refresh {
            cached.and_then(|c| c.key)
        } else {
            None
        };
        let key = self
            .shared
            .signing_key(&self.label, generation, source, failed)?;
        *lock(&self.cache) = Some(CachedKey {
            generation,
            source,
            key: Some(key),
        });
        Ok((key, key == source))
    }

    /// Signs `data` with `key`; a token object is used under the store guard, a session copy
    /// without.
    fn sign_with(
        &self,
        session: &Session,
        mechanism: &Mechanism<'_>,
        (key, token_object): (ObjectHandle, bool),
        data: &[u8],
    ) -> std::result::Result<Vec<u8>, OpError> {
        let _store = token_object.then(|| self.shared.reading());
        SIGN_CALLS.fetch_add(1, Ordering::Relaxed);
        Ok(session.sign(mechanism, key, data)?)
    }
}

impl Signer for Pkcs11Signer {
    fn spec(&self) -> KeySpec {
        self.spec
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn algorithm_der(&self) -> Vec<u8> {
        encoding::signature_algorithm(self.spec).to_vec()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let digest;
        let (mechanism, data): (Mechanism<'_>, &[u8]) = match self.spec {
            // SoftHSM has no CKM_ECDSA_SHA256: hash on the host. CKM_ECDSA on an unhashed
            // message would silently truncate it.
            KeySpec::EcP256 => {
                digest = sha2::Sha256::digest(message).to_vec();
                (Mechanism::Ecdsa, &digest)
            }
            KeySpec::EcP384 => {
                digest = sha2::Sha384::digest(message).to_vec();
                (Mechanism::Ecdsa, &digest)
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                (Mechanism::Sha256RsaPkcs, message)
            }
            KeySpec::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message,
            ),
        };
        let raw = self.shared.with_session("sign", |session| {
            let first = self
                .key(session, false)
                .and_then(|key| self.sign_with(session, &mechanism, key, data));
            match first {
                Err(OpError::Ck(e)) if is_stale_handle(&e) => {
                    let key = self.key(session, true)?;
                    self.sign_with(session, &mechanism, key, data)
                }
                other => other,
            }
        })?;
        match self.spec.key_type() {
            KeyType::Ec => encoding::ecdsa_raw_to_der(self.spec, &raw),
            KeyType::Rsa => Ok(raw),
            KeyType::Ed25519 if raw.len() == 64 => Ok(raw),
            KeyType::Ed25519 => Err(Error::Encoding(format!(
                "Ed25519 signature of {} bytes",
                raw.len()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_are_named_like_the_spec() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            rv_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
        assert_eq!(rv_name(RvError::DeviceError), "CKR_DEVICE_ERROR");
        assert_eq!(function_name(Function::Sign), "C_Sign");
        assert_eq!(
            function_name(Function::GetAttributeValue),
            "C_GetAttributeValue"
        );
    }

    #[test]
    fn session_loss_is_classified() {
        assert!(is_session_lost(&CkError::Pkcs11(
            RvError::SessionHandleInvalid,
            Function::Sign
        )));
        assert!(is_session_lost(&CkError::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::SignInit
        )));
        assert!(!is_session_lost(&CkError::Pkcs11(
            RvError::KeyHandleInvalid,
            Function::SignInit
        )));
        let e = ck_error(CkError::Pkcs11(RvError::DeviceError, Function::Sign));
        assert!(
            matches!(e, Error::Pkcs11 { ref function, ref rv } if function == "C_Sign" && rv == "CKR_DEVICE_ERROR")
        );
        // The device's state is "unavailable" (503), not a fault of the daemon (500): a broken
        // or full device, and a failed object creation (SoftHSM on a full disk).
        let unavailable = |rv, f| ck_error(CkError::Pkcs11(rv, f)).is_unavailable();
        assert!(unavailable(RvError::DeviceError, Function::Sign));
        assert!(unavailable(RvError::DeviceMemory, Function::CreateObject));
        assert!(unavailable(
            RvError::FunctionFailed,
            Function::GenerateKeyPair
        ));
        assert!(!unavailable(RvError::FunctionFailed, Function::Sign));
        assert!(!unavailable(RvError::KeyHandleInvalid, Function::SignInit));
    }

    #[test]
    fn ec_point_accepts_wrapped_and_bare_points() {
        let mut wrapped = vec![0x04, 0x41, 0x04];
        wrapped.extend([7u8; 64]);
        let point = ec_point(&wrapped, 65).unwrap();
        assert_eq!(point.len(), 65);
        assert_eq!(ec_point(&point, 65).unwrap(), point);
        assert!(ec_point(&[0x04, 0x05, 1], 65).is_err());
    }

    #[test]
    fn config_debug_hides_the_pin() {
        let config = Pkcs11Config {
            module: PathBuf::from("/m.so"),
            token_label: "t".into(),
            pin: Zeroizing::new("123456".into()),
        };
        assert!(!format!("{config:?}").contains("123456"));
    }
}
