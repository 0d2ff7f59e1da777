//! `scaivault ceremony …`: key ceremonies for security officers, run directly on a PKCS#11 token
//! without the daemon (an offline root on its own token). One ceremony file (TOML, see
//! [`config`]) is the only input besides the PINs, which come from files or a prompt and never
//! from the command line.
//!
//! - `init-token`: initialise a free slot's token with the ceremony's label, SO PIN and user PIN.
//! - `generate-root`: a key pair on the token with the CA attributes of the hsm crate (private,
//!   sensitive, never extractable, sign only) and a self-signed root built and linted by the core
//!   CA profile; the certificate is written to `output.root_certificate`.
//! - `sign-intermediate --csr FILE --out FILE`: the root signs the CSR of a `pending_signature`
//!   intermediate (its signature checked, its key at least as strong as the policy), with the
//!   path length, name constraints and validity of the ceremony file.
//! - `sign-crl --out FILE [--revoke SERIAL[:REASON]]…`: the root's next CRL (next CRL number,
//!   every serial revoked before, as recorded in the verified transcript, plus the new ones).
//! - `backup`: M-of-N backup of a root key generated with `root.backup = true` (see [`backup`]).
//! - `restore --backup FILE --share FILE…`: the key back onto this ceremony file's token.
//! - `list-keys`: every object on the token with its security attributes.
//! - `verify-transcript`: checks the transcript against the root certificate's key.
//!
//! Every step appends to the transcript (see [`transcript`]); steps that reach the root key end
//! with a signature line made by it.

mod backup;
mod config;
mod transcript;

use crate::serve::StartError;
use clap::Subcommand;
use config::Ceremony;
use der::{Decode, Encode};
use scaivault_core::profile::{self, CaTemplate, Constraints, LintExpect};
use scaivault_core::serial::Serial;
use scaivault_core::{crl, csr, pem, sign, time_util};
use scaivault_hsm::pkcs11::{Pkcs11Config, Pkcs11Token, TokenInfo};
use scaivault_hsm::{KeyType, Signer, Token};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use transcript::{sha256_hex, KeyRecord, StepLine, TokenRecord};
use x509_cert::Certificate;
use zeroize::Zeroizing;

/// `scaivault ceremony --file CEREMONY.toml …`.
#[derive(Debug, Subcommand)]
pub enum CeremonyCommand {
    /// Initialise a free slot's token with the ceremony's token label (SO PIN and user PIN from
    /// the files the ceremony file names, or prompts).
    InitToken,
    /// Generate the root key on the token and write the self-signed root certificate.
    GenerateRoot,
    /// Sign an intermediate's CSR with the root key, under the ceremony's intermediate policy.
    SignIntermediate {
        /// The CSR (PEM), e.g. the `csr` of a `pending_signature` CA of the daemon.
        #[arg(long)]
        csr: PathBuf,
        /// Where to write the certificate (PEM); must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign the root's next CRL: every serial revoked at an earlier `sign-crl` of the (verified)
    /// transcript plus the `--revoke` ones, with the next CRL number.
    SignCrl {
        /// Where to write the CRL (PEM); must not exist.
        #[arg(long)]
        out: PathBuf,
        /// A serial (hex) to revoke now, optionally `SERIAL:REASON` with an RFC 5280 reason
        /// name such as `key_compromise` or `superseded` (repeatable).
        #[arg(long = "revoke")]
        revoke: Vec<String>,
    },
    /// Back the root key up M-of-N: wrap it under a fresh AES key (a trusted session key the SO
    /// creates), split that key into the `[backup]` shares, one file per custodian.
    Backup,
    /// Restore the root key from its backup and at least M shares into this ceremony file's token.
    Restore {
        /// The `root-backup.json` written by `backup`.
        #[arg(long)]
        backup: PathBuf,
        /// A share file (repeat for each custodian present).
        #[arg(long = "share", required = true)]
        shares: Vec<PathBuf>,
    },
    /// List the objects on the token with their security attributes.
    ListKeys,
    /// Verify the transcript's signatures with the root certificate's key (no token needed).
    VerifyTranscript {
        /// The transcript (default: the ceremony file's `output.transcript`).
        #[arg(long)]
        transcript: Option<PathBuf>,
        /// The root certificate (default: the ceremony file's `output.root_certificate`).
        #[arg(long)]
        root_certificate: Option<PathBuf>,
    },
}

/// Runs one ceremony command.
///
/// # Errors
/// Anything that stops the step; nothing is signed or written after a failed check.
pub fn run(file: &Path, command: CeremonyCommand) -> Result<ExitCode, StartError> {
    let c = Ceremony::load(file)?;
    c.apply_environment();
    match command {
        CeremonyCommand::InitToken => init_token(&c),
        CeremonyCommand::GenerateRoot => generate_root(&c),
        CeremonyCommand::SignIntermediate { csr, out } => sign_intermediate(&c, &csr, &out),
        CeremonyCommand::SignCrl { out, revoke } => sign_crl(&c, &out, &revoke),
        CeremonyCommand::Backup => backup_root(&c),
        CeremonyCommand::Restore { backup, shares } => restore_root(&c, &backup, &shares),
        CeremonyCommand::ListKeys => list_keys(&c),
        CeremonyCommand::VerifyTranscript {
            transcript,
            root_certificate,
        } => verify_transcript(&c, transcript.as_deref(), root_certificate.as_deref()),
    }
}

fn hsm(what: &str) -> impl Fn(scaivault_hsm::Error) -> StartError + '_ {
    move |e| StartError(format!("{what}: {e}"))
}

fn core(what: &str) -> impl Fn(scaivault_core::Error) -> StartError + '_ {
    move |e| StartError(format!("{what}: {e}"))
}

fn open_token(c: &Ceremony) -> Result<Arc<Pkcs11Token>, StartError> {
    open_with_pin(c, c.user_pin()?, "opening the token")
}

/// Logs in to the ceremony's token with `pin` (already read).
fn open_with_pin(
    c: &Ceremony,
    pin: Zeroizing<String>,
    what: &'static str,
) -> Result<Arc<Pkcs11Token>, StartError> {
    Pkcs11Token::open(&Pkcs11Config {
        module: c.file.token.module.clone(),
        token_label: c.file.token.label.clone(),
        pin,
    })
    .map_err(hsm(what))
}

/// Logs in to the ceremony's token and finds the root key, which must be the key of the root
/// certificate (`root_spki`): `(token info, key)`.
fn root_key(
    c: &Ceremony,
    root_spki: &[u8],
) -> Result<(TokenInfo, std::sync::Arc<dyn Signer>), StartError> {
    let token = open_token(c)?;
    let info = token.token_info().map_err(hsm("token info"))?;
    let key = token
        .find(&c.file.root.key_label)
        .map_err(hsm("the root key"))?;
    if key.public_key_der() != root_spki {
        return Err(StartError(format!(
            "the key {:?} on the token is not the key of the root certificate {}",
            c.file.root.key_label,
            c.file.output.root_certificate.display()
        )));
    }
    Ok((info, key))
}

fn step(
    c: &Ceremony,
    name: &str,
    token: &TokenInfo,
    mut inputs: Map<String, Value>,
    outputs: Map<String, Value>,
    keys: Vec<KeyRecord>,
    detail: Value,
) -> StepLine {
    inputs.insert("ceremony_file".into(), json!(sha256_hex(&c.bytes)));
    StepLine {
        step: name.to_owned(),
        time: time_util::rfc3339(time_util::now()),
        operator: c.file.people.operator.clone(),
        witnesses: c.file.people.witnesses.clone(),
        token: TokenRecord {
            label: token.label.clone(),
            serial: token.serial.clone(),
        },
        inputs,
        outputs,
        keys,
        detail,
    }
}

/// Refuses, before the token is touched, an output whose directory does not exist: a step that
/// fails after changing the token (a new key, an initialised token) would otherwise leave it in a
/// state the next run cannot take up.
fn directory_exists(path: &Path, what: &str) -> Result<(), StartError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        Ok(())
    } else {
        Err(StartError(format!(
            "the directory of the {what} {} does not exist",
            path.display()
        )))
    }
}

/// `now` plus `days`, or a clear error (instead of a panic) past the representable dates.
fn days_after(
    now: time::OffsetDateTime,
    days: u32,
    key: &str,
) -> Result<time::OffsetDateTime, StartError> {
    now.checked_add(time::Duration::days(i64::from(days)))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| StartError(format!("{key} = {days} reaches past the year 9999")))
}

/// Writes `bytes` to a new file (never overwrites).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), StartError> {
    let io = |e: std::io::Error| StartError(format!("cannot write {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn init_token(c: &Ceremony) -> Result<ExitCode, StartError> {
    directory_exists(&c.file.output.transcript, "transcript")?;
    let so = c.so_pin()?;
    let user = c.user_pin()?;
    if c.file.token.user_pin_file.is_none() && user.as_str() != c.user_pin()?.as_str() {
        return Err(StartError("the two user PINs differ".into()));
    }
    scaivault_hsm::provision::init_token(
        &c.file.token.module,
        &c.file.token.label,
        so.as_str(),
        user.as_str(),
    )
    .map_err(hsm("initialising the token"))?;
    let token = open_with_pin(c, user, "opening the new token")?;
    let info = token.token_info().map_err(hsm("token info"))?;
    let line = step(
        c,
        "init-token",
        &info,
        Map::new(),
        Map::new(),
        vec![],
        json!({"manufacturer": info.manufacturer, "model": info.model}),
    );
    transcript::append(&c.file.output.transcript, &[line], None)?;
    say!(
        "token {:?} initialised (serial {})",
        info.label,
        info.serial
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints a dot to stderr every second while `f` runs (RSA generation can take minutes).
fn with_progress<T, E>(what: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    eprint!("{what} ");
    let done = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let mut ticks = 0u32;
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    eprint!(".");
                }
            }
        });
        let out = f();
        done.store(true, Ordering::SeqCst);
        out
    });
    eprintln!("{}", if out.is_ok() { " done" } else { " failed" });
    out
}

fn generate_root(c: &Ceremony) -> Result<ExitCode, StartError> {
    let r = &c.file.root;
    let out = &c.file.output.root_certificate;
    if out.exists() {
        return Err(StartError(format!(
            "{} exists already: a ceremony never overwrites a root certificate",
            out.display()
        )));
    }
    directory_exists(out, "root certificate")?;
    directory_exists(&c.file.output.transcript, "transcript")?;
    let spec = c.root_spec()?;
    let subject = c.root_subject()?;
    days_after(time_util::now(), r.validity_days, "root.validity_days")?;
    let token = open_token(c)?;
    let info = token.token_info().map_err(hsm("token info"))?;
    let slow = if spec.key_type() == KeyType::Rsa && spec.bits() >= 3072 {
        " (RSA generation can take minutes)"
    } else {
        ""
    };
    let key = with_progress(
        &format!(
            "generating {} {} key {:?} on token {:?}{slow}",
            spec.type_name(),
            spec.bits(),
            r.key_label,
            info.label
        ),
        || {
            if r.backup {
                token.generate_for_backup(spec, &r.key_label)
            } else {
                token.generate_offline(spec, &r.key_label)
            }
        },
    )
    .map_err(hsm("generating the root key"))?;
    // From here on a failure takes the new key off the token again (and the certificate out of
    // the directory), so that the step can simply be run again.
    let mut wrote = false;
    let done = finish_root(c, &info, key.as_ref(), subject, &mut wrote);
    if done.is_err() {
        if let Err(d) = token.destroy(&r.key_label) {
            eprintln!("warning: cannot destroy the new key {:?}: {d}", r.key_label);
        }
        if wrote {
            if let Err(d) = std::fs::remove_file(out) {
                eprintln!("warning: cannot remove {}: {d}", out.display());
            }
        }
    }
    done
}

/// The rest of `generate-root` once the key exists: certificate, file, transcript line.
fn finish_root(
    c: &Ceremony,
    info: &scaivault_hsm::pkcs11::TokenInfo,
    key: &dyn Signer,
    subject: x509_cert::name::Name,
    wrote: &mut bool,
) -> Result<ExitCode, StartError> {
    let (r, out) = (&c.file.root, &c.file.output.root_certificate);
    let spec = c.root_spec()?;
    let der = build_root(c, key, subject)?;
    let cert = pem::from_der(&der).map_err(core("root certificate"))?;
    let pem_text = pem::certificate(&der).map_err(core("root certificate"))?;
    write_new(out, pem_text.as_bytes())?;
    *wrote = true;
    let tbs = &cert.tbs_certificate;
    let mut outputs = Map::new();
    outputs.insert(
        "root_certificate_pem".into(),
        json!(sha256_hex(pem_text.as_bytes())),
    );
    outputs.insert("root_certificate_der".into(), json!(sha256_hex(&der)));
    let line = step(
        c,
        "generate-root",
        info,
        Map::new(),
        outputs,
        vec![KeyRecord::new(
            "root",
            Some(&r.key_label),
            key.public_key_der(),
        )?],
        json!({
            "key_type": spec.type_name(),
            "key_bits": spec.bits(),
            "serial": hex::encode(tbs.serial_number.as_bytes()),
            "subject": tbs.subject.to_string(),
            "not_before": time_util::rfc3339(time_util::from_x509(&tbs.validity.not_before)),
            "not_after": time_util::rfc3339(time_util::from_x509(&tbs.validity.not_after)),
            "max_path_length": r.max_path_length,
            "backup_enabled": r.backup,
        }),
    );
    transcript::append(
        &c.file.output.transcript,
        &[line],
        Some((key, &r.key_label)),
    )?;
    say!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn build_root(
    c: &Ceremony,
    key: &dyn Signer,
    subject: x509_cert::name::Name,
) -> Result<Vec<u8>, StartError> {
    let now = time_util::now();
    let t = CaTemplate {
        subject,
        spki_der: key.public_key_der().to_vec(),
        serial: Serial::fresh(),
        not_before: now,
        not_after: days_after(now, c.file.root.validity_days, "root.validity_days")?,
        max_path_length: c.file.root.max_path_length,
        constraints: Constraints::default(),
        issuer_urls: None,
    };
    let alg = key.algorithm_der();
    let tbs = profile::ca_tbs(&t, None, &alg).map_err(core("root certificate"))?;
    sign::sign_certificate(
        tbs,
        LintExpect {
            issuer: None,
            ca: true,
            algorithm_der: &alg,
        },
        key,
    )
    .map_err(core("signing the root certificate"))
}

fn read_root(c: &Ceremony) -> Result<(Certificate, Vec<u8>), StartError> {
    let path = &c.file.output.root_certificate;
    let bytes = std::fs::read(path).map_err(|e| {
        StartError(format!(
            "cannot read the root certificate {}: {e}",
            path.display()
        ))
    })?;
    let cert = pem_certificate(&bytes)
        .map_err(|e| StartError(format!("root certificate {}: {e}", path.display())))?;
    Ok((cert, bytes))
}

/// One PEM certificate from a file's bytes, through the core's PEM reader (which decodes the
/// block before parsing: `der`'s streaming PEM reader loops forever on some truncated bodies, see
/// docs/FUZZING.md).
fn pem_certificate(bytes: &[u8]) -> Result<Certificate, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    scaivault_core::pem::parse_certificate(text).map_err(|e| e.to_string())
}

/// The pathLenConstraint of an intermediate under a root whose own limit is `root_limit`.
fn intermediate_path_length(
    root_limit: Option<u8>,
    policy: Option<u8>,
) -> Result<Option<u8>, StartError> {
    match (root_limit, policy) {
        (Some(0), _) => Err(StartError(
            "the root's pathLenConstraint is 0: it may sign no intermediate".into(),
        )),
        (Some(l), Some(n)) if n >= l => Err(StartError(format!(
            "intermediate.max_path_length {n} is not below the root's pathLenConstraint {l}"
        ))),
        (Some(l), None) => Ok(Some(l - 1)),
        (_, n) => Ok(n),
    }
}

fn sign_intermediate(c: &Ceremony, csr_path: &Path, out: &Path) -> Result<ExitCode, StartError> {
    if out.exists() {
        return Err(StartError(format!("{} exists already", out.display())));
    }
    // Before the root signs: a signature whose certificate cannot be written is a root signature
    // spent for nothing (and not in the transcript).
    directory_exists(out, "intermediate certificate")?;
    let csr_bytes = std::fs::read(csr_path)
        .map_err(|e| StartError(format!("cannot read {}: {e}", csr_path.display())))?;
    let csr_text = std::str::from_utf8(&csr_bytes)
        .map_err(|_| StartError(format!("{} is not PEM text", csr_path.display())))?;
    // Parses and checks the request's signature (proof of possession).
    let req = csr::parse_pem(csr_text).map_err(core("the CSR"))?;
    c.check_key(&req.key)?;
    let (root, root_bytes) = read_root(c)?;
    // RFC 5280 §4.1.2.6: a CA's subject is not empty; §6.1.4: one equal to its issuer's is
    // self-issued and would not count against the root's path length limit.
    if req.subject.0.is_empty() {
        return Err(StartError(
            "the CSR's subject is empty: a CA certificate needs a name".into(),
        ));
    }
    if scaivault_core::name::same_name(&req.subject, &root.tbs_certificate.subject) {
        return Err(StartError(format!(
            "the CSR's subject is the root's own name (\"{}\"): such a self-issued intermediate \
             would escape the root's path length limit; give it another name",
            req.subject
        )));
    }
    let root_spki = root
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| StartError(format!("root certificate: {e}")))?;
    if req.spki_der == root_spki {
        return Err(StartError("the CSR carries the root's own key".into()));
    }
    let path_len = intermediate_path_length(
        sign::path_len_constraint(&root),
        c.file.intermediate.max_path_length,
    )?;
    let constraints = c.constraints()?;
    let (info, key) = root_key(c, &root_spki)?;
    let issuer = sign::issuer_info(&root, key.algorithm_der()).map_err(core("root certificate"))?;
    let now = time_util::now();
    let not_after = days_after(
        now,
        c.file.intermediate.validity_days,
        "intermediate.validity_days",
    )?;
    if not_after > issuer.not_after {
        return Err(StartError(format!(
            "an intermediate valid for {} days would outlive the root (notAfter {})",
            c.file.intermediate.validity_days,
            time_util::rfc3339(issuer.not_after)
        )));
    }
    let t = CaTemplate {
        subject: req.subject.clone(),
        spki_der: req.spki_der.clone(),
        serial: Serial::fresh(),
        not_before: now,
        not_after,
        max_path_length: path_len,
        constraints,
        issuer_urls: None,
    };
    let tbs = profile::ca_tbs(&t, Some(&issuer), &issuer.algorithm_der)
        .map_err(core("intermediate certificate"))?;
    let der = sign::sign_certificate(
        tbs,
        LintExpect {
            issuer: Some(&issuer),
            ca: true,
            algorithm_der: &issuer.algorithm_der,
        },
        key.as_ref(),
    )
    .map_err(core("signing the intermediate certificate"))?;
    let pem_text = pem::certificate(&der).map_err(core("intermediate certificate"))?;
    write_new(out, pem_text.as_bytes())?;
    let cert = Certificate::from_der(&der)
        .map_err(|e| StartError(format!("intermediate certificate: {e}")))?;
    let tbs = &cert.tbs_certificate;
    let mut inputs = Map::new();
    inputs.insert("csr".into(), json!(sha256_hex(&csr_bytes)));
    inputs.insert("csr_der".into(), json!(req.fingerprint_sha256));
    inputs.insert(
        "root_certificate_pem".into(),
        json!(sha256_hex(&root_bytes)),
    );
    let mut outputs = Map::new();
    outputs.insert(
        "certificate_pem".into(),
        json!(sha256_hex(pem_text.as_bytes())),
    );
    outputs.insert("certificate_der".into(), json!(sha256_hex(&der)));
    let p = &c.file.intermediate;
    let line = step(
        c,
        "sign-intermediate",
        &info,
        inputs,
        outputs,
        vec![
            KeyRecord::new("root", Some(&c.file.root.key_label), key.public_key_der())?,
            KeyRecord::new("intermediate", None, &req.spki_der)?,
        ],
        json!({
            "serial": hex::encode(tbs.serial_number.as_bytes()),
            "subject": tbs.subject.to_string(),
            "key_type": req.key.key_type,
            "key_bits": req.key.bits,
            "not_before": time_util::rfc3339(time_util::from_x509(&tbs.validity.not_before)),
            "not_after": time_util::rfc3339(time_util::from_x509(&tbs.validity.not_after)),
            "max_path_length": path_len,
            "permitted_dns_domains": p.permitted_dns_domains,
            "excluded_dns_domains": p.excluded_dns_domains,
            "permitted_ip_ranges": p.permitted_ip_ranges,
        }),
    );
    transcript::append(
        &c.file.output.transcript,
        &[line],
        Some((key.as_ref(), &c.file.root.key_label)),
    )?;
    say!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Parses `SERIAL[:REASON]` (the serial may itself contain `:` between hex pairs: the reason is
/// the part after the last `:` when it is a reason name).
fn parse_revocation(arg: &str) -> Result<(String, String), StartError> {
    let (serial, reason) = match arg.rsplit_once(':') {
        Some((s, r)) if crl::reason_code(r).is_some() => (s, r),
        // Not hex after the last `:`: a misspelt reason, not part of the serial.
        Some((_, r)) if !r.is_empty() && !r.chars().all(|c| c.is_ascii_hexdigit()) => {
            return Err(StartError(format!(
                "--revoke {arg:?}: {r:?} is not a revocation reason (unspecified, key_compromise, \
                 ca_compromise, affiliation_changed, superseded, cessation_of_operation, \
                 certificate_hold, privilege_withdrawn, aa_compromise)"
            )));
        }
        _ => (arg, "unspecified"),
    };
    let serial = Serial::parse(serial).map_err(core("--revoke"))?;
    Ok((serial.key(), reason.to_owned()))
}

/// The CRL number and revoked entries of the last `sign-crl` step of a verified transcript.
fn previous_crl(lines: &[Value]) -> Result<(u64, Vec<crl::RevokedEntry>), StartError> {
    let Some(last) = lines
        .iter()
        .rev()
        .find(|l| l.get("step").and_then(Value::as_str) == Some("sign-crl"))
    else {
        return Ok((0, Vec::new()));
    };
    let detail = &last["detail"];
    let number = detail["crl_number"]
        .as_u64()
        .ok_or_else(|| StartError("transcript: sign-crl step without crl_number".into()))?;
    let mut entries = Vec::new();
    for e in detail["revoked"].as_array().into_iter().flatten() {
        let (Some(serial), Some(at)) = (e["serial"].as_str(), e["revoked_at"].as_str()) else {
            return Err(StartError("transcript: malformed revoked entry".into()));
        };
        entries.push(crl::RevokedEntry {
            serial: serial.to_owned(),
            revoked_at: time_util::parse_rfc3339(at).map_err(core("transcript"))?,
            reason: e["reason"].as_str().map(str::to_owned),
        });
    }
    Ok((number, entries))
}

/// The root's history from the ceremony's transcript, verified under the root key `root_spki`
/// (up to its last signature when `unsigned_tail` is allowed) and beginning with the root's own
/// `generate-root`: the CRL's memory (its number, earlier revocations) comes from it, so a
/// transcript that starts later — a fresh file after a restore — would silently restart the
/// numbering and forget every revocation.
fn root_history(
    c: &Ceremony,
    root_spki: &[u8],
    unsigned_tail: bool,
) -> Result<(Vec<Value>, Vec<u8>), StartError> {
    let t_path = &c.file.output.transcript;
    let t_bytes = std::fs::read(t_path).map_err(|e| {
        StartError(format!(
            "cannot read the transcript {} ({e}): it is the root's memory (CRL numbers, \
             revocations); after a restore it must be the root's own transcript, copied here",
            t_path.display()
        ))
    })?;
    let not_history = || {
        StartError(format!(
            "the transcript {} does not hold the root's generate-root step: it is not the root's \
             whole history (after a restore, copy the root's own transcript here first)",
            t_path.display()
        ))
    };
    let signed = if unsigned_tail {
        &t_bytes[..transcript::signed_prefix_len(&t_bytes)]
    } else {
        &t_bytes[..]
    };
    if signed.is_empty() {
        return Err(not_history());
    }
    transcript::verify(signed, root_spki).map_err(|why| {
        StartError(format!(
            "the transcript {} does not verify under the root's key ({why})",
            t_path.display()
        ))
    })?;
    let lines: Vec<Value> = signed
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()
        .map_err(|e| StartError(format!("transcript: {e}")))?;
    if !lines
        .iter()
        .any(|l| l.get("step").and_then(Value::as_str) == Some("generate-root"))
    {
        return Err(not_history());
    }
    Ok((lines, t_bytes))
}

fn sign_crl(c: &Ceremony, out: &Path, revoke: &[String]) -> Result<ExitCode, StartError> {
    if out.exists() {
        return Err(StartError(format!("{} exists already", out.display())));
    }
    directory_exists(out, "CRL")?;
    let (root, root_bytes) = read_root(c)?;
    let root_spki = root
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| StartError(format!("root certificate: {e}")))?;
    // The transcript is the CRL's memory (number, earlier revocations): trust it only verified.
    let (lines, t_bytes) = root_history(c, &root_spki, false)?;
    let t_path = &c.file.output.transcript;
    let (previous_number, mut entries) = previous_crl(&lines)?;
    let now = time_util::now();
    let mut newly = Vec::new();
    for arg in revoke {
        let (serial, reason) = parse_revocation(arg)?;
        if entries.iter().any(|e| e.serial == serial) {
            return Err(StartError(format!("serial {serial} is revoked already")));
        }
        newly.push(serial.clone());
        entries.push(crl::RevokedEntry {
            serial,
            revoked_at: now,
            reason: Some(reason),
        });
    }
    let number = previous_number + 1;
    let (info, key) = root_key(c, &root_spki)?;
    let issuer = sign::issuer_info(&root, key.algorithm_der()).map_err(core("root certificate"))?;
    let next_update = days_after(now, c.file.crl.next_update_days, "crl.next_update_days")?;
    let params = crl::CrlParams {
        number,
        this_update: now,
        next_update,
    };
    let mut pending = Some(entries.clone());
    let (der, count) = crl::build(&issuer, key.as_ref(), &params, || {
        Ok(pending.take().unwrap_or_default())
    })
    .map_err(core("signing the CRL"))?;
    let pem_text = pem::encode("X509 CRL", &der).map_err(core("CRL"))?;
    write_new(out, pem_text.as_bytes())?;
    let mut inputs = Map::new();
    inputs.insert(
        "root_certificate_pem".into(),
        json!(sha256_hex(&root_bytes)),
    );
    inputs.insert("transcript_before".into(), json!(sha256_hex(&t_bytes)));
    let mut outputs = Map::new();
    outputs.insert("crl_pem".into(), json!(sha256_hex(pem_text.as_bytes())));
    outputs.insert("crl_der".into(), json!(sha256_hex(&der)));
    let revoked: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "serial": e.serial,
                "revoked_at": time_util::rfc3339(e.revoked_at),
                "reason": e.reason,
            })
        })
        .collect();
    let line = step(
        c,
        "sign-crl",
        &info,
        inputs,
        outputs,
        vec![KeyRecord::new(
            "root",
            Some(&c.file.root.key_label),
            key.public_key_der(),
        )?],
        json!({
            "crl_number": number,
            "this_update": time_util::rfc3339(now),
            "next_update": time_util::rfc3339(next_update),
            "entries": count,
            "newly_revoked": newly,
            "revoked": revoked,
        }),
    );
    transcript::append(
        t_path,
        &[line],
        Some((key.as_ref(), &c.file.root.key_label)),
    )?;
    say!("{} (CRL number {number}, {count} entries)", out.display());
    Ok(ExitCode::SUCCESS)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StartError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| StartError(format!("json: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn backup_root(c: &Ceremony) -> Result<ExitCode, StartError> {
    let Some(b) = &c.file.backup else {
        return Err(StartError(
            "the ceremony file has no [backup] section (shares, threshold, directory)".into(),
        ));
    };
    let (root, _) = read_root(c)?;
    let root_spki = root
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| StartError(format!("root certificate: {e}")))?;
    let spec = c.root_spec()?;
    // The directory must exist already: made here, a backup meant for removable media that is
    // not mounted would land on this host's disk (the wrapped key and every share together).
    if !b.directory.is_dir() {
        return Err(StartError(format!(
            "the backup directory {} does not exist (is the medium mounted?); nothing was written",
            b.directory.display()
        )));
    }
    // Every file this backup writes must be new: checked before any is written, so that a
    // directory holding an earlier backup's files is refused with nothing mixed into it.
    let mut names = vec!["root-backup.json".to_owned()];
    names.extend((1..=b.shares).map(|i| format!("share-{i}-of-{}.json", b.shares)));
    if let Some(taken) = names.iter().find(|n| b.directory.join(n).exists()) {
        return Err(StartError(format!(
            "{} exists already: back up into an empty directory",
            b.directory.join(taken).display()
        )));
    }
    // The user PIN first: a key made with `backup = false` is refused before the security
    // officer is asked for anything.
    let user = c.user_pin()?;
    let wrappable = scaivault_hsm::backup::is_wrappable(
        &c.file.token.module,
        &c.file.token.label,
        user.as_str(),
        &c.file.root.key_label,
    )
    .map_err(hsm("looking at the root key"))?;
    if !wrappable {
        return Err(StartError(format!(
            "the root key {:?} was generated with backup = false (CKA_EXTRACTABLE is false): the \
             token will not wrap it, so it cannot be backed up; nothing was written. A backup \
             needs a root generated with backup = true in a new ceremony",
            c.file.root.key_label
        )));
    }
    let so = c.so_pin()?;
    let (kek, backup_id) = backup::fresh_key();
    // Wrap first: a token that refuses anyway (CKR_KEY_NOT_WRAPPABLE) stops here, before any
    // file is written.
    let wrapped = scaivault_hsm::backup::wrap_private_key(
        &c.file.token.module,
        &c.file.token.label,
        so.as_str(),
        user.as_str(),
        &c.file.root.key_label,
        &kek,
    )
    .map_err(hsm("wrapping the root key"))?;
    drop(so);
    let file = backup::BackupFile {
        format: backup::BACKUP_FORMAT.into(),
        backup_id: backup_id.clone(),
        key_label: c.file.root.key_label.clone(),
        key_type: spec.type_name().into(),
        key_bits: spec.bits(),
        spki: backup::b64(&root_spki),
        mechanism: "CKM_AES_KEY_WRAP_PAD".into(),
        wrapped: backup::b64(&wrapped),
        threshold: b.threshold,
        shares: b.shares,
        kek_check: backup::kek_check(&backup_id, &kek),
    };
    let shares = backup::split(&kek, &backup_id, b.threshold, b.shares);
    drop(kek);
    let mut outputs = Map::new();
    let backup_bytes = to_json(&file)?;
    let backup_path = b.directory.join("root-backup.json");
    write_new(&backup_path, &backup_bytes)?;
    outputs.insert("root-backup.json".into(), json!(sha256_hex(&backup_bytes)));
    for share in &shares {
        let name = format!("share-{}-of-{}.json", share.index, share.shares);
        let bytes = Zeroizing::new(to_json(share)?);
        write_new(&b.directory.join(&name), &bytes)?;
        outputs.insert(name, json!(sha256_hex(&bytes)));
    }
    drop(shares);
    let token = open_with_pin(c, user, "opening the token")?;
    let info = token.token_info().map_err(hsm("token info"))?;
    let key = token
        .find(&c.file.root.key_label)
        .map_err(hsm("the root key"))?;
    let line = step(
        c,
        "backup",
        &info,
        Map::new(),
        outputs,
        vec![KeyRecord::new(
            "root",
            Some(&c.file.root.key_label),
            key.public_key_der(),
        )?],
        json!({
            "backup_id": backup_id,
            "mechanism": "CKM_AES_KEY_WRAP_PAD",
            "threshold": b.threshold,
            "shares": b.shares,
            "wrapped_sha256": sha256_hex(&wrapped),
        }),
    );
    transcript::append(
        &c.file.output.transcript,
        &[line],
        Some((key.as_ref(), &c.file.root.key_label)),
    )?;
    say!(
        "backup {backup_id}: {} shares ({} needed) in {}",
        b.shares,
        b.threshold,
        b.directory.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn restore_root(
    c: &Ceremony,
    backup_path: &Path,
    share_paths: &[PathBuf],
) -> Result<ExitCode, StartError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| StartError(format!("cannot read {}: {e}", p.display())))
    };
    let backup_bytes = read(backup_path)?;
    let file: backup::BackupFile = serde_json::from_slice(&backup_bytes)
        .map_err(|e| StartError(format!("{}: {e}", backup_path.display())))?;
    if file.format != backup::BACKUP_FORMAT {
        return Err(StartError(format!(
            "{} is not a ScaiVault backup ({})",
            backup_path.display(),
            file.format
        )));
    }
    let mut inputs = Map::new();
    inputs.insert("root-backup.json".into(), json!(sha256_hex(&backup_bytes)));
    let mut shares = Vec::new();
    for p in share_paths {
        let bytes = Zeroizing::new(read(p)?);
        let name = p.display().to_string();
        let share: backup::ShareFile = serde_json::from_slice(&bytes)
            .map_err(|e| StartError(format!("share file {name} is corrupted ({e})")))?;
        inputs.insert(format!("share-{}", share.index), json!(sha256_hex(&bytes)));
        shares.push((name, share));
    }
    // Everything is checked before the target token is touched.
    let kek = backup::recover(&file, &shares)?;
    drop(shares);
    let spki = backup::unb64("backup spki", &file.spki)?;
    let wrapped = backup::unb64("backup wrapped key", &file.wrapped)?;
    let spec = scaivault_hsm::KeySpec::from_api(&file.key_type, Some(file.key_bits))
        .map_err(hsm("backup key type"))?;
    let (root, root_bytes) = read_root(c)?;
    let root_spki = root
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| StartError(format!("root certificate: {e}")))?;
    if root_spki != spki {
        return Err(StartError(format!(
            "the backup holds another key than the root certificate {}",
            c.file.output.root_certificate.display()
        )));
    }
    // The restored root goes on with its own history, or not at all.
    root_history(c, &root_spki, true)?;
    inputs.insert(
        "root_certificate_pem".into(),
        json!(sha256_hex(&root_bytes)),
    );
    let user = c.user_pin()?;
    scaivault_hsm::backup::unwrap_private_key(
        &scaivault_hsm::backup::UnwrapTarget {
            module: &c.file.token.module,
            token_label: &c.file.token.label,
            user_pin: user.as_str(),
            label: &c.file.root.key_label,
            spec,
            spki_der: &spki,
        },
        &kek,
        &wrapped,
    )
    .map_err(hsm("restoring the key"))?;
    drop(kek);
    let token = open_with_pin(c, user, "opening the token")?;
    let info = token.token_info().map_err(hsm("token info"))?;
    let key = token
        .find(&c.file.root.key_label)
        .map_err(hsm("the restored key"))?;
    // The restored private key must sign under the root certificate's public key.
    let probe = format!("scaivault restore check {}", file.backup_id);
    let sig = key
        .sign(probe.as_bytes())
        .map_err(hsm("signing with the restored key"))?;
    let alg = spki::AlgorithmIdentifierOwned::from_der(&key.algorithm_der())
        .map_err(|e| StartError(format!("algorithm: {e}")))?;
    scaivault_core::verify::verify_signature(&root_spki, &alg, probe.as_bytes(), &sig).map_err(
        |e| {
            StartError(format!(
                "the restored key does not match the root certificate: {e}"
            ))
        },
    )?;
    let line = step(
        c,
        "restore",
        &info,
        inputs,
        Map::new(),
        vec![KeyRecord::new(
            "root",
            Some(&c.file.root.key_label),
            &root_spki,
        )?],
        json!({
            "backup_id": file.backup_id,
            "shares_used": share_paths.len(),
            "threshold": file.threshold,
            "verified_against_root_certificate": true,
        }),
    );
    transcript::append(
        &c.file.output.transcript,
        &[line],
        Some((key.as_ref(), &c.file.root.key_label)),
    )?;
    say!(
        "restored {:?} onto token {:?} (serial {}); it signs under the root certificate's key",
        c.file.root.key_label,
        info.label,
        info.serial
    );
    Ok(ExitCode::SUCCESS)
}

fn list_keys(c: &Ceremony) -> Result<ExitCode, StartError> {
    let token = open_token(c)?;
    let info = token.token_info().map_err(hsm("token info"))?;
    let objects = token.list_objects().map_err(hsm("listing objects"))?;
    say!(
        "token {:?} serial {} ({} {}): {} objects",
        info.label,
        info.serial,
        info.manufacturer,
        info.model,
        objects.len()
    );
    let mut listed = Vec::new();
    for o in &objects {
        let flags: Vec<String> = o
            .flags
            .iter()
            .map(|(name, v)| format!("{}={}", name.trim_start_matches("CKA_"), u8::from(*v)))
            .collect();
        say!(
            "{}\t{}\tid={}\t{}\t{}",
            o.label,
            o.class,
            o.id_hex,
            o.key_type.as_deref().unwrap_or("-"),
            flags.join(" ")
        );
        let flag_map: Map<String, Value> = o
            .flags
            .iter()
            .map(|(name, v)| ((*name).to_owned(), json!(v)))
            .collect();
        listed.push(json!({
            "label": o.label, "class": o.class, "id": o.id_hex,
            "key_type": o.key_type, "attributes": flag_map,
        }));
    }
    let root = token.find(&c.file.root.key_label).ok();
    let mut keys = Vec::new();
    if let Some(k) = &root {
        keys.push(KeyRecord::new(
            "root",
            Some(&c.file.root.key_label),
            k.public_key_der(),
        )?);
    }
    let line = step(
        c,
        "list-keys",
        &info,
        Map::new(),
        Map::new(),
        keys,
        json!({ "objects": listed }),
    );
    let signer = root
        .as_ref()
        .map(|k| (k.as_ref(), c.file.root.key_label.as_str()));
    transcript::append(&c.file.output.transcript, &[line], signer)?;
    Ok(ExitCode::SUCCESS)
}

fn verify_transcript(
    c: &Ceremony,
    transcript_path: Option<&Path>,
    root_path: Option<&Path>,
) -> Result<ExitCode, StartError> {
    let t_path = transcript_path.unwrap_or(&c.file.output.transcript);
    let r_path = root_path.unwrap_or(&c.file.output.root_certificate);
    let bytes = std::fs::read(t_path)
        .map_err(|e| StartError(format!("cannot read {}: {e}", t_path.display())))?;
    let root_bytes = std::fs::read(r_path)
        .map_err(|e| StartError(format!("cannot read {}: {e}", r_path.display())))?;
    let root = pem_certificate(&root_bytes)
        .map_err(|e| StartError(format!("root certificate {}: {e}", r_path.display())))?;
    let spki = root
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| StartError(format!("root certificate: {e}")))?;
    match transcript::verify(&bytes, &spki) {
        Ok(v) => {
            say!(
                "transcript {} verified: {} lines, {} signatures by the root key (spki sha256 {}), file sha256 {}",
                t_path.display(),
                v.lines,
                v.signatures,
                sha256_hex(&spki),
                v.sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("transcript {} FAILED verification: {why}", t_path.display());
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::{intermediate_path_length, parse_revocation};

    #[test]
    fn revocations_name_a_misspelt_reason() {
        let (serial, reason) = parse_revocation("0a:1b:key_compromise").unwrap();
        assert_eq!(
            (serial.as_str(), reason.as_str()),
            ("0A1B", "key_compromise")
        );
        let (serial, reason) = parse_revocation("0a:1b").unwrap();
        assert_eq!((serial.as_str(), reason.as_str()), ("0A1B", "unspecified"));
        let e = parse_revocation("0A1B:bogus").unwrap_err().to_string();
        assert!(e.contains("\"bogus\" is not a revocation reason"), "{e}");
        assert!(parse_revocation("0A1Z").is_err());
    }

    #[test]
    fn path_length_stays_below_the_roots() {
        assert_eq!(intermediate_path_length(None, Some(0)).unwrap(), Some(0));
        assert_eq!(intermediate_path_length(None, None).unwrap(), None);
        assert_eq!(intermediate_path_length(Some(2), None).unwrap(), Some(1));
        assert_eq!(intermediate_path_length(Some(2), Some(1)).unwrap(), Some(1));
        assert!(intermediate_path_length(Some(1), Some(1)).is_err());
        assert!(intermediate_path_length(Some(0), None).is_err());
    }
}
