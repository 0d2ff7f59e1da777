//! The ceremony file (TOML): the only input of a ceremony besides the PINs. It names the token,
//! where the PINs come from (a file or a prompt, never the command line), the people present,
//! the root's profile, the policy every intermediate the root signs must meet, and where the
//! outputs go. Relative paths are relative to the ceremony file's directory.

use crate::serve::StartError;
use scaivault_core::csr::KeyInfo;
use scaivault_core::name::DnFields;
use scaivault_core::profile::{self, Constraints, IpRange};
use scaivault_hsm::KeySpec;
use serde::Deserialize;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The whole ceremony file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeremonyFile {
    /// The token.
    pub token: TokenSection,
    /// Who runs and who watches.
    pub people: People,
    /// The offline root.
    pub root: RootSection,
    /// What an intermediate signed by the root must be.
    pub intermediate: IntermediatePolicy,
    /// Output files.
    pub output: OutputSection,
    /// The offline root's CRLs.
    #[serde(default)]
    pub crl: CrlSection,
    /// M-of-N backup of the root key (needs `root.backup = true` at generation).
    pub backup: Option<BackupSection>,
}

/// `[backup]` (optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    /// N: how many share files (one per custodian).
    pub shares: u8,
    /// M: how many shares a restore needs.
    pub threshold: u8,
    /// Where `backup` writes the wrapped key and the share files.
    pub directory: PathBuf,
}

/// `[crl]` (optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlSection {
    /// Days from thisUpdate to nextUpdate (default 365: an offline root signs rarely).
    #[serde(default = "default_crl_days")]
    pub next_update_days: u32,
}

/// The longest root validity a ceremony file may ask for, in days (100 years).
pub const MAX_ROOT_DAYS: u32 = 36_525;
/// The longest CRL validity (`crl.next_update_days`), in days.
pub const MAX_CRL_DAYS: u32 = 3_650;

impl Default for CrlSection {
    fn default() -> Self {
        CrlSection {
            next_update_days: default_crl_days(),
        }
    }
}

fn default_crl_days() -> u32 {
    365
}

/// `[token]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// The token label.
    pub label: String,
    /// SoftHSM2 only: the `softhsm2.conf` to use (sets `SOFTHSM2_CONF` for this process).
    pub softhsm2_conf: Option<PathBuf>,
    /// A file holding the user PIN; absent: prompt.
    pub user_pin_file: Option<PathBuf>,
    /// A file holding the SO PIN (only `init-token` needs it); absent: prompt.
    pub so_pin_file: Option<PathBuf>,
}

/// `[people]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct People {
    /// The ceremony administrator who types the commands.
    pub operator: String,
    /// The witnesses present.
    #[serde(default)]
    pub witnesses: Vec<String>,
}

/// `[root]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootSection {
    /// CKA_LABEL (and CKA_ID) of the root key on the token.
    pub key_label: String,
    /// `ec`, `rsa` or `ed25519`.
    pub key_type: String,
    /// Curve or modulus size (default: EC 256, RSA 2048).
    pub key_size: Option<u32>,
    /// Subject CN.
    pub common_name: String,
    /// Subject O.
    pub organization: Option<String>,
    /// Subject OU.
    pub organizational_unit: Option<String>,
    /// Subject C.
    pub country: Option<String>,
    /// Validity in days.
    pub validity_days: u32,
    /// The root's pathLenConstraint, if any.
    pub max_path_length: Option<u8>,
    /// Generate the key so that it can be backed up (`CKA_EXTRACTABLE` only under a wrapping key
    /// the SO marked `CKA_TRUSTED`). Default false: the key never leaves the token.
    #[serde(default)]
    pub backup: bool,
}

/// `[intermediate]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntermediatePolicy {
    /// Validity in days of every intermediate the root signs.
    pub validity_days: u32,
    /// pathLenConstraint written into every intermediate (0: it may sign only leaves).
    pub max_path_length: Option<u8>,
    /// Permitted DNS subtrees (NameConstraints, critical).
    #[serde(default)]
    pub permitted_dns_domains: Vec<String>,
    /// Excluded DNS subtrees.
    #[serde(default)]
    pub excluded_dns_domains: Vec<String>,
    /// Permitted IP ranges (CIDR).
    #[serde(default)]
    pub permitted_ip_ranges: Vec<String>,
    /// The smallest RSA modulus accepted (default 3072).
    #[serde(default = "default_min_rsa")]
    pub min_rsa_bits: u32,
    /// The smallest EC curve accepted (default 256).
    #[serde(default = "default_min_ec")]
    pub min_ec_bits: u32,
    /// Whether Ed25519 keys are accepted (default true).
    #[serde(default = "default_true")]
    pub allow_ed25519: bool,
}

fn default_min_rsa() -> u32 {
    3072
}
fn default_min_ec() -> u32 {
    256
}
fn default_true() -> bool {
    true
}

/// `[output]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Where `generate-root` writes the root certificate (PEM); later steps read it.
    pub root_certificate: PathBuf,
    /// The transcript (JSON lines), appended to by every step.
    pub transcript: PathBuf,
}

/// A loaded ceremony file with its own bytes (for the transcript's hash).
#[derive(Debug)]
pub struct Ceremony {
    /// The parsed file.
    pub file: CeremonyFile,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Ceremony {
    /// Reads, parses and checks the ceremony file; resolves relative paths.
    ///
    /// # Errors
    /// Unreadable or invalid file, with the reason.
    pub fn load(path: &Path) -> Result<Ceremony, StartError> {
        let bytes = std::fs::read(path).map_err(|e| {
            StartError(format!("cannot read ceremony file {}: {e}", path.display()))
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| StartError(format!("{} is not UTF-8", path.display())))?;
        let mut file: CeremonyFile = toml::from_str(text)
            .map_err(|e| StartError(format!("ceremony file {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut file.output.root_certificate);
        resolve(&mut file.output.transcript);
        if let Some(b) = file.backup.as_mut() {
            resolve(&mut b.directory);
        }
        for p in [
            &mut file.token.softhsm2_conf,
            &mut file.token.user_pin_file,
            &mut file.token.so_pin_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        let c = Ceremony { file, bytes };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), StartError> {
        let f = &self.file;
        let bad = |m: String| Err(StartError(format!("ceremony file: {m}")));
        if f.people.operator.trim().is_empty() {
            return bad("people.operator is empty".into());
        }
        // The record of a ceremony is what its witnesses saw and signed (docs/CEREMONY.md).
        if f.people.witnesses.iter().all(|w| w.trim().is_empty()) {
            return bad(
                "people.witnesses is empty: a key ceremony needs at least one witness".into(),
            );
        }
        if f.token.label.is_empty() || f.token.label.len() > 32 {
            return bad("token.label must be 1-32 characters".into());
        }
        if f.root.key_label.is_empty() {
            return bad("root.key_label is empty".into());
        }
        self.root_spec()?;
        self.root_subject()?;
        // A root for at most 100 years (what GeneralizedTime and every relying party handle).
        for (key, days, max) in [
            ("root.validity_days", f.root.validity_days, MAX_ROOT_DAYS),
            (
                "intermediate.validity_days",
                f.intermediate.validity_days,
                MAX_ROOT_DAYS,
            ),
            ("crl.next_update_days", f.crl.next_update_days, MAX_CRL_DAYS),
        ] {
            if !(1..=max).contains(&days) {
                return bad(format!("{key} must be between 1 and {max}"));
            }
        }
        if f.intermediate.validity_days >= f.root.validity_days {
            return bad(
                "intermediate.validity_days must be shorter than root.validity_days".into(),
            );
        }
        if let (Some(root), Some(inter)) = (f.root.max_path_length, f.intermediate.max_path_length)
        {
            if inter >= root {
                return bad(format!(
                    "intermediate.max_path_length {inter} must be below root.max_path_length {root}"
                ));
            }
        }
        if let Some(b) = &f.backup {
            if b.threshold < 2 || b.threshold > b.shares {
                return bad(format!(
                    "backup.threshold {} must be between 2 and backup.shares {}",
                    b.threshold, b.shares
                ));
            }
        }
        if f.root.max_path_length == Some(0) {
            return bad("root.max_path_length 0 would forbid every intermediate".into());
        }
        profile::check_constraints(&self.constraints()?)
            .map_err(|e| StartError(format!("ceremony file: intermediate constraints: {e}")))?;
        Ok(())
    }

    /// The root key's type and size.
    ///
    /// # Errors
    /// Unsupported type or size.
    pub fn root_spec(&self) -> Result<KeySpec, StartError> {
        KeySpec::from_api(&self.file.root.key_type, self.file.root.key_size)
            .map_err(|e| StartError(format!("ceremony file: root key: {e}")))
    }

    /// The root's subject fields.
    ///
    /// # Errors
    /// An invalid name.
    pub fn root_subject(&self) -> Result<x509_cert::name::Name, StartError> {
        let r = &self.file.root;
        DnFields {
            common_name: r.common_name.clone(),
            organization: r.organization.clone(),
            organizational_unit: r.organizational_unit.clone(),
            country: r.country.clone(),
            locality: None,
            province: None,
        }
        .to_name()
        .map_err(|e| StartError(format!("ceremony file: root subject: {e}")))
    }

    /// The intermediate name constraints.
    ///
    /// # Errors
    /// An invalid IP range.
    pub fn constraints(&self) -> Result<Constraints, StartError> {
        let p = &self.file.intermediate;
        Ok(Constraints {
            permitted_dns_domains: p.permitted_dns_domains.clone(),
            excluded_dns_domains: p.excluded_dns_domains.clone(),
            permitted_ip_ranges: p
                .permitted_ip_ranges
                .iter()
                .map(|r| IpRange::parse_exact(r))
                .collect::<Result<_, _>>()
                .map_err(|e| StartError(format!("ceremony file: intermediate: {e}")))?,
        })
    }

    /// Checks a CSR key against the intermediate policy.
    ///
    /// # Errors
    /// A key weaker than the policy, or of a refused type.
    pub fn check_key(&self, key: &KeyInfo) -> Result<(), StartError> {
        let p = &self.file.intermediate;
        let ok = match key.key_type {
            "rsa" => key.bits >= p.min_rsa_bits,
            "ec" => key.bits >= p.min_ec_bits,
            "ed25519" => p.allow_ed25519,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(StartError(format!(
                "the CSR's {} {} key is weaker than the ceremony policy allows \
                 (min_rsa_bits {}, min_ec_bits {}, allow_ed25519 {})",
                key.key_type, key.bits, p.min_rsa_bits, p.min_ec_bits, p.allow_ed25519
            )))
        }
    }

    /// Sets `SOFTHSM2_CONF` when the ceremony file names one (before the module is loaded).
    pub fn apply_environment(&self) {
        if let Some(conf) = &self.file.token.softhsm2_conf {
            std::env::set_var("SOFTHSM2_CONF", conf);
        }
    }

    /// The user PIN: from `token.user_pin_file`, else prompted.
    ///
    /// # Errors
    /// Unreadable file, empty PIN, no terminal input.
    pub fn user_pin(&self) -> Result<Zeroizing<String>, StartError> {
        read_pin(self.file.token.user_pin_file.as_deref(), "user PIN")
    }

    /// The SO PIN: from `token.so_pin_file`, else prompted.
    ///
    /// # Errors
    /// As [`Ceremony::user_pin`].
    pub fn so_pin(&self) -> Result<Zeroizing<String>, StartError> {
        read_pin(self.file.token.so_pin_file.as_deref(), "SO PIN")
    }
}

/// Reads a PIN from `file` (trailing newline removed) or prompts for it on the terminal without
/// echo (or reads one line from standard input when that is not a terminal).
fn read_pin(file: Option<&Path>, what: &str) -> Result<Zeroizing<String>, StartError> {
    let pin = match file {
        Some(f) => {
            let s = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
                StartError(format!("cannot read the {what} file {}: {e}", f.display()))
            })?);
            Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned())
        }
        None => prompt(what)?,
    };
    if pin.is_empty() {
        return Err(StartError(format!("the {what} is empty")));
    }
    Ok(pin)
}

fn prompt(what: &str) -> Result<Zeroizing<String>, StartError> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{what}: ");
    let _ = stderr.flush();
    // Echo off while the PIN is typed, restored afterwards whatever happens.
    let saved = if stdin.is_terminal() {
        let saved = tcgetattr(&stdin).map_err(|e| StartError(format!("terminal: {e}")))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet)
            .map_err(|e| StartError(format!("terminal: {e}")))?;
        Some(saved)
    } else {
        None
    };
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        let _ = writeln!(stderr);
    }
    read.map_err(|e| StartError(format!("reading the {what}: {e}")))?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_example_ceremony_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ceremony.example.toml");
        let c = Ceremony::load(&path).unwrap();
        assert_eq!(c.root_spec().unwrap(), KeySpec::EcP384);
        assert_eq!(c.constraints().unwrap().permitted_ip_ranges.len(), 1);
        assert!(c
            .check_key(&KeyInfo {
                key_type: "rsa",
                bits: 2048
            })
            .is_err());
        assert!(c
            .check_key(&KeyInfo {
                key_type: "ec",
                bits: 256
            })
            .is_ok());
    }

    #[test]
    fn contradictory_policies_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ceremony.example.toml"),
        )
        .unwrap();
        for (from, to, why) in [
            (
                "validity_days = 1825",
                "validity_days = 9000",
                "shorter than root",
            ),
            (
                "max_path_length = 0",
                "max_path_length = 1",
                "must be below",
            ),
            (
                "# [backup]\n# shares = 5\n# threshold = 3\n# directory",
                "[backup]\nshares = 2\nthreshold = 3\ndirectory",
                "between 2",
            ),
            ("[people]", "pin = \"1\"\n[people]", "unknown field"),
            (
                "permitted_ip_ranges = [\"10.0.0.0/8\"]",
                "permitted_ip_ranges = [\"10.0.0.1/8\"]",
                "it names the range 10.0.0.0/8",
            ),
        ] {
            assert!(example.contains(from), "{from}");
            let path = dir.path().join("c.toml");
            std::fs::write(&path, example.replace(from, to)).unwrap();
            let e = Ceremony::load(&path).unwrap_err();
            assert!(e.0.contains(why), "{from}: {e}");
        }
    }
}
