//! Host commands that scripts rely on (`tenant`, `token`, `audit verify`, `check-config`). They
//! use the database named by `--config` directly and need no HSM. State changes are audited with
//! token id `cli`.

use crate::config::Config;
use crate::serve::{open_store, Context, StartError};
use clap::Subcommand;
use scaivault_core::time_util;
use scaivault_store::{AuditRecord, Store, TenantRow};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `scaivault tenant …`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its id.
    Create {
        /// Tenant name.
        name: String,
    },
    /// List tenants.
    List,
    /// Change a tenant's settings.
    Set {
        /// Tenant name.
        name: String,
        /// CSRs must be approved by a different token than the importer: true, false, or
        /// default (the configuration's `csr.require_distinct_approver`).
        #[arg(long, value_parser = ["true", "false", "default"])]
        csr_distinct_approver: String,
    },
}

/// `scaivault token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints only the token.
    Create {
        /// Tenant name.
        #[arg(long)]
        tenant: String,
        /// Policy (repeatable): admin, ca-admin, auditor, csr-requester, csr-approver,
        /// acme-operator, or issuer:<role> (docs/API.md, "Policies").
        #[arg(long = "policy", required = true)]
        policies: Vec<String>,
        /// Lifetime, e.g. 720h.
        #[arg(long)]
        ttl: Option<String>,
        /// A label for the token.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens of all tenants (never the secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// `tok_…`.
        id: String,
    },
}

/// `scaivault audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain: exit 0 when intact; otherwise exit 1 and print the first bad record.
    /// An intact chain's head (`SEQ:HASH`) is printed: keep it off the host.
    Verify {
        /// A head printed earlier (`SEQ:HASH`, by this command or in the daemon's log): the chain
        /// must still hold that record with that hash. The chain checks itself only against the
        /// head stored beside it; someone who can write the database can cut its end and move
        /// that head back, but not past a head kept elsewhere.
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<String>,
    },
}

/// Writes one line of a host command's output to stdout (see `say!`).
pub fn say(args: std::fmt::Arguments<'_>) {
    if let Err(e) = try_say(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("scaivault: cannot write the output: {e}");
        std::process::exit(74);
    }
}

/// One line on stdout, or why it could not be written.
///
/// # Errors
/// The write's or the flush's error.
pub fn try_say(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{args}").and_then(|()| out.flush())
}

/// Whether what stdout reaches can keep a secret: not `/dev/null` (where Rust's runtime also
/// points a standard output that was closed, `>&-`), where a token printed once is lost.
fn stdout_keeps_output() -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.rdev()))
    };
    match (id("/proc/self/fd/1"), id("/dev/null")) {
        (Some(out), Some(null)) => out != null,
        _ => true,
    }
}

/// The `--config` path or a clear error.
///
/// # Errors
/// When `--config` was not given.
pub fn need_config(p: Option<&Path>) -> Result<PathBuf, StartError> {
    p.map(Path::to_path_buf)
        .ok_or_else(|| StartError("this command needs --config FILE".into()))
}

/// Whether a command may create the SQLite file when it is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// `tenant create`: the first step of a fresh install, before the daemon ever ran.
    Create,
    /// Everything else: a missing file is a wrong `storage.path` (or a backup that is not
    /// there), and answering from a new empty database would be a lie (`audit verify` would call
    /// it intact).
    Refuse,
}

fn load(path: &Path, missing: Missing) -> Result<(Config, std::sync::Arc<Store>), StartError> {
    let cfg = Config::load(path).context("configuration")?;
    if missing == Missing::Refuse {
        load_checked(path, &cfg)?;
        if cfg.storage.backend != "postgres" {
            // A file without the schema (an empty backup) is refused before opening the store
            // would write one into it.
            scaivault_store::read_file(&cfg.db_path(), |_| Ok(())).context("database")?;
        }
    }
    let store = open_store(&cfg)?;
    Ok((cfg, store))
}

/// A SQLite database must exist (see [`Missing::Refuse`]).
fn load_checked(path: &Path, cfg: &Config) -> Result<(), StartError> {
    let db = cfg.db_path();
    if cfg.storage.backend != "postgres" && !db.exists() {
        return Err(StartError(format!(
            "database {} does not exist: check storage.path in {} (`tenant create` or the \
             daemon's first start creates it)",
            db.display(),
            path.display()
        )));
    }
    Ok(())
}

/// What the read-only commands (`tenant list`, `token list`, `audit verify`) read: a SQLite file
/// (often a backup being checked) as it is — opened read-only, never migrated, refused when it
/// holds no ScaiVault schema — or the open PostgreSQL store. For [`read_db`].
fn reader(path: &Path) -> Result<(PathBuf, Option<std::sync::Arc<Store>>), StartError> {
    let cfg = Config::load(path).context("configuration")?;
    let store = if cfg.storage.backend == "postgres" {
        Some(load(path, Missing::Refuse)?.1)
    } else {
        load_checked(path, &cfg)?;
        None
    };
    Ok((cfg.db_path(), store))
}

/// `f` in a read transaction: on the open store (PostgreSQL), or on the SQLite file as it is
/// ([`scaivault_store::read_file`]).
fn read_db<T>(
    store: Option<&Store>,
    db: &Path,
    f: impl Fn(&scaivault_store::Tx<'_>) -> scaivault_store::Result<T>,
) -> scaivault_store::Result<T> {
    match store {
        Some(s) => s.read(|tx| f(tx)),
        None => scaivault_store::read_file(db, |tx| f(tx)),
    }
}

fn cli_record(tenant_id: Option<&str>, action: &str, object_id: &str) -> AuditRecord {
    AuditRecord {
        time: time_util::rfc3339(time_util::now()),
        tenant_id: tenant_id.map(str::to_owned),
        token_id: Some("cli".into()),
        action: action.into(),
        object_id: Some(object_id.into()),
        outcome: "success".into(),
        request_id: None,
        detail: None,
    }
}

/// `check-config`.
///
/// # Errors
/// The first problem found.
pub fn check_config(path: PathBuf) -> Result<ExitCode, StartError> {
    let cfg = Config::load(&path).context("configuration")?;
    cfg.read_pin().context("hsm pin")?;
    crate::serve::check_softhsm_conf(&cfg)?;
    crate::serve::export_softhsm_conf(&cfg);
    // A path must name a file; a bare library name (`opensc-pkcs11.so`) is for the loader to
    // find. Either way the module is then loaded as `serve` loads it.
    let bare = cfg.hsm.module.components().count() == 1 && !cfg.hsm.module.is_absolute();
    if !bare && !cfg.hsm.module.is_file() {
        return Err(StartError(format!(
            "hsm.module {} {}",
            cfg.hsm.module.display(),
            if cfg.hsm.module.exists() {
                "is not a file (give the PKCS#11 library, a .so)"
            } else {
                "does not exist"
            }
        )));
    }
    scaivault_hsm::pkcs11::load_module(&cfg.hsm.module)
        .map_err(|e| StartError(format!("hsm.module: {e}")))?;
    // What `serve` opens first: the SQLite file must be creatable where it is named.
    if cfg.storage.backend == "sqlite" {
        let db = cfg.db_path();
        if db.is_dir() {
            return Err(StartError(format!(
                "storage.path {} is a directory: name the database file in it",
                db.display()
            )));
        }
        if let Some(dir) = db.parent().filter(|d| !d.is_dir()) {
            return Err(StartError(format!(
                "storage.path {}: its directory {} does not exist",
                db.display(),
                dir.display()
            )));
        }
    }
    // What `serve` reads before it connects to PostgreSQL: the password source and the CA file.
    if cfg.storage.backend == "postgres" {
        cfg.read_db_password().context("database password")?;
        if let Some(f) = &cfg.storage.ca_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                StartError(format!(
                    "storage.ca_file {} cannot be read: {e}",
                    f.display()
                ))
            })?;
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                return Err(StartError(format!(
                    "storage.ca_file {} holds no PEM certificate",
                    f.display()
                )));
            }
        }
    }
    if let Some(tls) = &cfg.server.tls {
        if let (Some(c), Some(k)) = (&tls.cert_file, &tls.key_file) {
            crate::tls::load_files(c, k).map_err(StartError)?;
        }
    }
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    say!("{}: ok", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Creates a tenant (also used by dev mode).
///
/// # Errors
/// A taken name or a database failure.
pub fn create_tenant(store: &Store, name: &str) -> Result<TenantRow, StartError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(StartError(format!(
            "tenant name {name:?} must be 1-64 of [A-Za-z0-9_-]"
        )));
    }
    let row = TenantRow {
        id: scaivault_core::ids::new_id("tn"),
        name: name.to_owned(),
        created_at: time_util::rfc3339(time_util::now()),
    };
    store
        .write(|tx| {
            // `Acme` beside `acme` would be two tenants that people (and `--tenant` typed from
            // memory) take for one: names are unique without regard to case.
            if let Some(t) = tx
                .list_tenants()?
                .into_iter()
                .find(|t| t.name.eq_ignore_ascii_case(name))
            {
                return Err(scaivault_store::Error::Conflict(format!(
                    "tenant {:?} exists ({}); tenant names are unique without regard to case",
                    t.name, t.id
                )));
            }
            tx.insert_tenant(&row)?;
            tx.append_audit(&cli_record(Some(&row.id), "tenant.create", &row.id))
        })
        .context("tenant create")?;
    Ok(row)
}

/// Creates a token for tenant `tenant` (also used by dev mode); returns its id and the secret.
///
/// # Errors
/// Unknown tenant or policy, bad ttl, database failure.
pub fn create_token(
    store: &Store,
    tenant: &str,
    policies: Vec<String>,
    ttl: Option<&str>,
    name: Option<String>,
) -> Result<(String, zeroize::Zeroizing<String>), StartError> {
    let t = store
        .read(|tx| tx.tenant_by_name(tenant))
        .map_err(|e| StartError(format!("tenant {tenant:?}: {e}")))?;
    let (row, minted) =
        crate::api::new_token(&t.id, policies, ttl, name).map_err(|e| StartError(e.detail))?;
    store
        .write(|tx| {
            tx.insert_token(&row, &minted.hash)?;
            tx.append_audit(&cli_record(Some(&t.id), "token.create", &row.id))
        })
        .context("token create")?;
    Ok((row.id, minted.token))
}

/// `tenant …`.
///
/// # Errors
/// Database failures.
pub fn tenant(path: &Path, cmd: TenantCommand) -> Result<ExitCode, StartError> {
    let missing = match cmd {
        TenantCommand::Create { .. } => Missing::Create,
        _ => Missing::Refuse,
    };
    if matches!(cmd, TenantCommand::List) {
        let (db, store) = reader(path)?;
        for t in read_db(store.as_deref(), &db, |tx| tx.list_tenants()).context("tenant list")? {
            say!("{}\t{}\t{}", t.id, t.name, t.created_at);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (_cfg, store) = load(path, missing)?;
    match cmd {
        TenantCommand::Create { name } => {
            let t = create_tenant(&store, &name)?;
            try_say(format_args!("{}", t.id)).map_err(|e| {
                StartError(format!(
                    "tenant {name:?} was created ({}), but its id could not be written: {e} \
                     (`tenant list` shows it)",
                    t.id
                ))
            })?;
        }
        TenantCommand::Set {
            name,
            csr_distinct_approver,
        } => {
            let value = match csr_distinct_approver.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            };
            let t = store
                .read(|tx| tx.tenant_by_name(&name))
                .map_err(|e| StartError(format!("tenant {name:?}: {e}")))?;
            store
                .write(|tx| {
                    tx.set_tenant_csr_distinct_approver(&name, value)?;
                    // What was set, not only that something was (the setting is no secret).
                    let mut record = cli_record(Some(&t.id), "tenant.set", &t.id);
                    record.detail =
                        Some(format!("csr_distinct_approver = {csr_distinct_approver}"));
                    tx.append_audit(&record)
                })
                .context("tenant set")?;
            say!("{name}: csr_distinct_approver = {csr_distinct_approver}");
        }
        TenantCommand::List => unreachable!("listed above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `token …`.
///
/// # Errors
/// Database failures, unknown tenant or token.
pub fn token(path: &Path, cmd: TokenCommand) -> Result<ExitCode, StartError> {
    if matches!(cmd, TokenCommand::List) {
        let (db, store) = reader(path)?;
        let mut cursor: Option<String> = None;
        loop {
            let page = read_db(store.as_deref(), &db, |tx| {
                tx.list_tokens(None, cursor.as_deref(), 1000)
            })
            .context("token list")?;
            for t in &page.items {
                say!(
                    "{}\t{}\t{}\t{}\texpires={}\trevoked={}\tname={}",
                    t.id,
                    t.tenant_id,
                    t.policies.join(","),
                    t.created_at,
                    t.expires_at.as_deref().unwrap_or("-"),
                    t.revoked_at.as_deref().unwrap_or("-"),
                    t.name.as_deref().unwrap_or("-")
                );
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(ExitCode::SUCCESS),
            }
        }
    }
    let (_cfg, store) = load(path, Missing::Refuse)?;
    match cmd {
        TokenCommand::Create {
            tenant,
            policies,
            ttl,
            name,
        } => {
            // The token is shown once, here: with nowhere to show it, none is made.
            if !stdout_keeps_output() {
                return Err(StartError(
                    "standard output is closed or /dev/null: the new token, shown only once, \
                     would be lost (none was made)"
                        .into(),
                ));
            }
            let (id, secret) = create_token(&store, &tenant, policies, ttl.as_deref(), name)?;
            if let Err(e) = try_say(format_args!("{}", secret.as_str())) {
                // Nobody holds it: revoked again, so no live admin token is left behind.
                let at = time_util::rfc3339(time_util::now());
                let undone = revoke_token(&store, &id, &at);
                return Err(StartError(match undone {
                    Ok(_) => format!(
                        "cannot write the new token: {e}; token {id} was revoked again (nobody holds it)"
                    ),
                    Err(r) => format!(
                        "cannot write the new token: {e}; revoking token {id} failed too ({r}): revoke it"
                    ),
                }));
            }
        }
        TokenCommand::List => unreachable!("listed above"),
        TokenCommand::Revoke { id } => {
            // The token pasted where its id belongs: refused without repeating it (an error
            // goes to the journal, a CI log…), as the API refuses it.
            if crate::auth::token_id(&id).is_some() {
                return Err(StartError(
                    "that is a token, not a token id: revoke it by its id (tok_…), as `token list` shows it"
                        .into(),
                ));
            }
            let at = time_util::rfc3339(time_util::now());
            revoke_token(&store, &id, &at).map_err(|e| StartError(format!("token {id}: {e}")))?;
            say!("{id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Revokes token `id` with its audit record, which names the token's tenant (whose audit log shows
/// it). A token revoked already is said to be so (`Conflict`), not "not found".
fn revoke_token(store: &Store, id: &str, at: &str) -> scaivault_store::Result<()> {
    store
        .write(|tx| {
            let (token, _) = tx.token_by_id(id)?;
            if let Some(when) = &token.revoked_at {
                return Err(scaivault_store::Error::Conflict(format!(
                    "revoked already, at {when}"
                )));
            }
            tx.revoke_token(id, None, at)?;
            tx.append_audit(&cli_record(Some(&token.tenant_id), "token.revoke", id))
        })
        .map(drop)
}

/// `audit verify`.
///
/// # Errors
/// Database failures (a broken chain is exit code 1, not an error).
pub fn audit(path: &Path, cmd: AuditCommand) -> Result<ExitCode, StartError> {
    let (db, store) = reader(path)?;
    let store = store.as_deref();
    match cmd {
        AuditCommand::Verify { expect_head } => {
            let expected = expect_head.as_deref().map(parse_head).transpose()?;
            let check = read_db(store, &db, |tx| tx.verify_audit()).context("audit verify")?;
            // An empty chain beside tenants: each tenant was created with an audit record, so
            // the records were removed (the chain alone cannot show a cut at its start).
            let tenants = if check.records == 0 && check.first_bad.is_none() {
                read_db(store, &db, |tx| tx.list_tenants())
                    .context("audit verify")?
                    .len()
            } else {
                0
            };
            if tenants > 0 {
                say!("1");
                eprintln!(
                    "audit chain broken at record 1: the chain is empty, but the database holds \
                     {tenants} tenant(s), each created with an audit record (records were removed)"
                );
                return Ok(ExitCode::from(1));
            }
            match check.first_bad {
                None => {
                    let (head, at) = read_db(store, &db, |tx| {
                        let at = match &expected {
                            Some((seq, _)) => tx.audit_hash_at(*seq)?,
                            None => None,
                        };
                        Ok((tx.audit_head()?, at))
                    })
                    .context("audit verify")?;
                    if let Some((seq, hash)) = &expected {
                        if at.as_deref() != Some(hash.as_str()) {
                            say!("{seq}");
                            eprintln!(
                                "audit chain does not hold the expected head {seq}:{hash}: {}",
                                if at.is_none() {
                                    "that record is gone (records at the end were removed)"
                                } else {
                                    "that record's hash differs (the chain was rewritten)"
                                }
                            );
                            return Ok(ExitCode::from(1));
                        }
                    }
                    say!("audit chain intact: {} records", check.records);
                    if let Some((seq, hash)) = head {
                        say!("head {seq}:{hash}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some((seq, why)) => {
                    say!("{seq}");
                    eprintln!("audit chain broken at record {seq}: {why}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// `SEQ:HASH` as `audit verify` prints it.
fn parse_head(s: &str) -> Result<(i64, String), StartError> {
    s.split_once(':')
        .and_then(|(seq, hash)| {
            let seq = seq.trim().parse::<i64>().ok().filter(|n| *n > 0)?;
            let hash = hash.trim().to_ascii_lowercase();
            (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((seq, hash))
        })
        .ok_or_else(|| {
            StartError(format!(
                "--expect-head {s:?}: expected SEQ:HASH as `audit verify` prints it \
                 (a record number, a colon, 64 hex digits)"
            ))
        })
}
