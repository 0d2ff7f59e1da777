//! `scaivault dev --data-dir DIR`: the embedded default. The first run creates, under DIR, a
//! SoftHSM2 token with its own `softhsm2.conf`, random user and SO PINs (files, mode 0600), a
//! configuration file `scaivault.toml`, the SQLite database, tenant `default` and an admin token
//! (`admin.token`, mode 0600, printed once). Later runs reuse all of it. Then it serves.

use crate::config::Config;
use crate::serve::{self, Context, StartError};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Label of the dev token.
pub const DEV_TOKEN_LABEL: &str = "scaivault-dev";
const DEFAULT_LISTEN: &str = "127.0.0.1:8200";
const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
];

fn softhsm_module() -> Result<PathBuf, StartError> {
    if let Some(p) = std::env::var_os("SCAIVAULT_PKCS11_MODULE") {
        return Ok(PathBuf::from(p));
    }
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| StartError("SoftHSM2 is not installed: run `sudo ci/install-deps.sh` (or apt-get install softhsm2)".into()))
}

/// Writes `contents` to a new file readable only by the owner.
fn write_private(path: &Path, contents: &str) -> Result<(), StartError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .context(&format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .context(&format!("cannot write {}", path.display()))?;
    f.sync_all()
        .context(&format!("cannot write {}", path.display()))
}

fn random_pin() -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(hex::encode(scaivault_core::ids::random_bytes(16)))
}

fn toml_str(p: &Path) -> String {
    // TOML basic string with the characters that need escaping escaped.
    format!(
        "\"{}\"",
        p.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

/// The `[storage]` section of a first run: a SQLite file in `dir`, or the PostgreSQL database of
/// `database_url` with its password moved to `dir/db.password`.
fn storage_section(dir: &Path, database_url: Option<&str>) -> Result<String, StartError> {
    let Some(raw) = database_url else {
        return Ok(format!(
            "[storage]\npath = {}\n",
            toml_str(&dir.join("scaivault.db"))
        ));
    };
    let mut url = parse_database_url(raw)?;
    let mut section = String::from("[storage]\nbackend = \"postgres\"\n");
    if let Some(pw) = url.password() {
        let pw = percent_decode(pw);
        write_private(&dir.join("db.password"), &pw)?;
        section.push_str(&format!(
            "password_file = {}\n",
            toml_str(&dir.join("db.password"))
        ));
        url.set_password(None)
            .map_err(|()| StartError("--database-url: cannot remove the password".into()))?;
    }
    section.push_str(&format!("url = \"{}\"\n", url.as_str().replace('"', "%22")));
    Ok(section)
}

fn parse_database_url(raw: &str) -> Result<url::Url, StartError> {
    let url = url::Url::parse(raw)
        .map_err(|e| StartError(format!("--database-url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(StartError(
            "--database-url must be a postgres:// URL".into(),
        ));
    }
    Ok(url)
}

/// The URL as the first run's `[storage]` section keeps it: without its password.
fn url_without_password(raw: &str) -> Result<String, StartError> {
    let mut url = parse_database_url(raw)?;
    // As the first run did: only a password there is to remove (a socket URL,
    // `postgres:///db?host=/run/postgresql`, has no host to hold one).
    if url.password().is_some() {
        url.set_password(None)
            .map_err(|()| StartError("--database-url: cannot remove the password".into()))?;
    }
    Ok(url.as_str().replace('"', "%22"))
}

/// Decodes `%XX` escapes (a URL's password may contain them).
fn percent_decode(s: &str) -> zeroize::Zeroizing<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes.get(i), hex) {
            (Some(b'%'), Some(b)) => {
                out.push(b);
                i += 3;
            }
            (Some(&b), _) => {
                out.push(b);
                i += 1;
            }
            (None, _) => break,
        }
    }
    zeroize::Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
}

/// Marks a first run under way: written before its first file, removed after its last.
const FIRST_RUN_MARKER: &str = ".first-run-incomplete";

/// Where the first run writes `scaivault.toml` before renaming it into place.
const PARTIAL_CONFIG: &str = "scaivault.toml.partial";

/// The files a first run creates before `scaivault.toml` (which is written last).
const FIRST_RUN_FILES: [&str; 3] = ["hsm.pin", "hsm-so.pin", "db.password"];

/// Moves aside what an interrupted first run left (its marker is there): the PIN files, the
/// partial configuration and the token it may have begun, into `interrupted-first-run-*`. Nothing
/// else can be there yet: the configuration is written last, and no daemon ever ran without it.
/// Without the marker, or with a database (a daemon ran here), leftovers are refused: a directory
/// whose `scaivault.toml` was removed may hold keys.
fn clear_interrupted_first_run(dir: &Path) -> Result<(), StartError> {
    let marker = dir.join(FIRST_RUN_MARKER);
    let tokens = dir.join("softhsm").join("tokens");
    let tokens_used = std::fs::read_dir(&tokens).is_ok_and(|mut d| d.next().is_some());
    let mut found: Vec<&str> = FIRST_RUN_FILES
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
    // A database proves that a daemon ran here (a first run writes none): never a leftover.
    let ran = dir.join("scaivault.db").exists();
    if !marker.exists() || ran {
        if ran {
            found.push("scaivault.db");
        }
        if tokens_used {
            found.push("a SoftHSM token");
        }
        if found.is_empty() {
            return Ok(());
        }
        return Err(StartError(format!(
            "{} holds {} but no scaivault.toml: it is not a fresh data directory (restore its \
             scaivault.toml, or use an empty directory)",
            dir.display(),
            found.join(", ")
        )));
    }
    // Moved aside, not deleted: whatever the marker says, a token is worth keeping. The token
    // directory first: if it cannot move (another filesystem), nothing else has moved either.
    let moves: Vec<(PathBuf, &str)> = tokens_used
        .then(|| (tokens.clone(), "tokens"))
        .into_iter()
        .chain(
            found
                .into_iter()
                .chain([PARTIAL_CONFIG])
                .map(|f| (dir.join(f), f))
                .filter(|(p, _)| p.exists()),
        )
        .collect();
    if moves.is_empty() {
        return Ok(());
    }
    let aside = dir.join(format!(
        "interrupted-first-run-{}",
        scaivault_core::time_util::now().unix_timestamp_nanos()
    ));
    eprintln!(
        "ScaiVault dev mode: an earlier first run in {} was interrupted; its files go to {} and it \
         starts again",
        dir.display(),
        aside.display()
    );
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&aside)
        .context(&format!("cannot create {}", aside.display()))?;
    for (from, name) in moves {
        std::fs::rename(&from, aside.join(name)).map_err(|e| {
            StartError(format!(
                "cannot move {} to {}: {e} (move it away by hand, then start again)",
                from.display(),
                aside.display()
            ))
        })?;
    }
    Ok(())
}

/// Takes the lock that serialises dev-mode starts on `dir` (`flock` on `dir/.dev.lock`, held
/// until the process ends): a second `dev` on the same directory waits for nothing and touches
/// nothing.
fn lock_dir(dir: &Path) -> Result<serve::InstanceLock, StartError> {
    let path = dir.join(".dev.lock");
    serve::lock_file(
        &path,
        &format!("the data directory {}", dir.display()),
        || {
            format!(
                "another scaivault dev mode runs in {} (it holds {}); stop it first",
                dir.display(),
                path.display()
            )
        },
    )
}

fn first_run(dir: &Path, listen: SocketAddr, database_url: Option<&str>) -> Result<(), StartError> {
    clear_interrupted_first_run(dir)?;
    let marker = dir.join(FIRST_RUN_MARKER);
    std::fs::write(&marker, b"").context(&format!("cannot write {}", marker.display()))?;
    let storage = storage_section(dir, database_url)?;
    let module = softhsm_module()?;
    let hsm_dir = dir.join("softhsm");
    let tokens = hsm_dir.join("tokens");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tokens)
        .context(&format!("cannot create {}", tokens.display()))?;
    let conf = hsm_dir.join("softhsm2.conf");
    if !conf.exists() {
        write_private(
            &conf,
            &format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )?;
    }
    let user_pin = random_pin();
    let so_pin = random_pin();
    write_private(&dir.join("hsm.pin"), &user_pin)?;
    write_private(&dir.join("hsm-so.pin"), &so_pin)?;
    std::env::set_var("SOFTHSM2_CONF", &conf);
    scaivault_hsm::provision::init_token(&module, DEV_TOKEN_LABEL, &so_pin, &user_pin)
        .context("cannot initialize the SoftHSM2 dev token")?;
    let config = format!(
        "# ScaiVault dev-mode configuration, written by `scaivault dev`. See config/scaivault.example.toml.\n\
         [server]\nlisten = \"{listen}\"\npublic_base_url = \"http://{listen}\"\n\n\
         {storage}\n\
         [hsm]\nmodule = {module}\ntoken_label = \"{DEV_TOKEN_LABEL}\"\npin_file = {pin}\nsofthsm2_conf = {conf}\n\n\
         [log]\nlevel = \"info\"\n",
        module = toml_str(&module),
        pin = toml_str(&dir.join("hsm.pin")),
        conf = toml_str(&conf),
    );
    // Written last, whole or not at all: its presence marks a completed first run.
    let partial = dir.join(PARTIAL_CONFIG);
    write_private(&partial, &config)?;
    std::fs::rename(&partial, dir.join("scaivault.toml")).context("cannot write scaivault.toml")?;
    std::fs::remove_file(&marker).context(&format!("cannot remove {}", marker.display()))
}

/// Why the token in `file` (a later run's `admin.token`) no longer works, if it does not.
fn unusable_admin_token(store: &scaivault_store::Store, file: &Path) -> Option<String> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(file).ok()?);
    let Some(id) = crate::auth::token_id(text.trim()) else {
        return Some("is not a token".to_owned());
    };
    let now = scaivault_core::time_util::rfc3339(scaivault_core::time_util::now());
    match store.read(|tx| tx.token_by_id(&id)) {
        Ok((t, _)) => match (t.revoked_at, t.expires_at) {
            (Some(at), _) => Some(format!("was revoked at {at}")),
            (None, Some(at)) if at <= now => Some(format!("expired at {at}")),
            _ => None,
        },
        Err(scaivault_store::Error::NotFound) => Some("is not in the database".to_owned()),
        // Anything else: the daemon's start says what is wrong with the database.
        Err(_) => None,
    }
}

/// Runs dev mode.
///
/// # Errors
/// Startup failures, with a sentence for the operator.
pub fn run(
    dir: &Path,
    listen: Option<SocketAddr>,
    database_url: Option<&str>,
) -> Result<ExitCode, StartError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .context(&format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .context(&format!("cannot resolve {}", dir.display()))?;
    let _dir_lock = lock_dir(&dir)?;
    let config_path = dir.join("scaivault.toml");
    if config_path.exists() {
        // A first run that ended between its configuration and the marker's removal.
        let _ = std::fs::remove_file(dir.join(FIRST_RUN_MARKER));
    } else {
        let addr = match listen {
            Some(a) => a,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        first_run(&dir, addr, database_url)?;
    }
    let mut cfg = Config::load(&config_path).context("configuration")?;
    if let Some(raw) = database_url {
        // Only a first run takes the URL; a different one on a later run (a typo corrected
        // after a first run that could not connect) must not be ignored silently.
        let given = url_without_password(raw)?;
        // `postgres://` and `postgresql://` name the same database.
        let same_scheme = |u: &str| u.replacen("postgresql://", "postgres://", 1);
        if cfg.storage.url.as_deref().map(same_scheme) != Some(same_scheme(&given)) {
            return Err(StartError(format!(
                "{} was set up for {}; --database-url (or SCAIVAULT_DEV_DATABASE_URL) applies to a \
                 first run only: edit [storage] in {}, or use an empty directory",
                dir.display(),
                cfg.storage.url.as_deref().map_or_else(
                    || "a SQLite file".to_owned(),
                    |u| format!("the PostgreSQL database {u}")
                ),
                config_path.display()
            )));
        }
        // Nor a password other than the one the first run kept.
        let password = parse_database_url(raw)?.password().map(percent_decode);
        // Compared with the password the configuration resolves (db.password, or whatever
        // [storage] now names), read as the daemon reads it.
        let kept = cfg.read_db_password().ok().flatten();
        if kept.as_deref().map(String::as_str) != password.as_deref().map(String::as_str) {
            return Err(StartError(format!(
                "--database-url's password is not the one this directory's configuration uses \
                 (storage.password_file, storage.password_env or db.password in {}): a first-run \
                 setting; change it there",
                dir.display()
            )));
        }
    }
    if let Some(l) = listen {
        // The URLs in certificates follow `--listen` while they are the ones dev mode derives
        // from the configuration's own address; a `public_base_url` edited in the file stays.
        let derived = |listen: SocketAddr, public: Option<SocketAddr>| {
            // Relying parties go to the relying-party listener when there is one.
            format!("http://{}", public.unwrap_or(listen))
        };
        let url = cfg.server.public_base_url.trim_end_matches('/');
        let follows = url == derived(cfg.server.listen, None)
            || url == derived(cfg.server.listen, cfg.server.public_listen);
        cfg.server.listen = l;
        if follows {
            cfg.server.public_base_url = derived(l, cfg.server.public_listen);
        }
    }
    // A second daemon on this directory stops here, before it touches the database or the
    // admin token (the lock is held until the daemon ends).
    let lock = if cfg.storage.backend == "sqlite" {
        Some(serve::lock_instance(&cfg.db_path())?)
    } else {
        None
    };
    let store = serve::open_store(&cfg)?;
    let has_default = store
        .read(|tx| tx.list_tenants())
        .context("tenants")?
        .iter()
        .any(|t| t.name == "default");
    let token_file = dir.join("admin.token");
    if !has_default {
        crate::cli::create_tenant(&store, "default")?;
    }
    if !token_file.exists() {
        let (_, token) = crate::cli::create_token(
            &store,
            "default",
            vec!["admin".into()],
            None,
            // Token names are unique among live tokens: a later first-run (admin.token deleted)
            // must not collide with the earlier one.
            Some(format!(
                "dev admin {}",
                scaivault_core::time_util::rfc3339(scaivault_core::time_util::now())
            )),
        )?;
        write_private(&token_file, &format!("{}\n", token.as_str()))?;
        println!("ScaiVault dev mode: data in {}", dir.display());
        println!(
            "admin token (also in {}): {}",
            token_file.display(),
            token.as_str()
        );
    } else {
        println!(
            "ScaiVault dev mode: data in {}; admin token in {}",
            dir.display(),
            token_file.display()
        );
        if let Some(why) = unusable_admin_token(&store, &token_file) {
            // Not replaced behind the operator's back (a revocation is meant): said, with the
            // command that makes another.
            println!(
                "warning: the admin token in {} {why}; make another with: scaivault --config {} \
                 token create --tenant default --policy admin > {}",
                token_file.display(),
                config_path.display(),
                token_file.display()
            );
        }
    }
    println!("starting on http://{}", cfg.server.listen);
    drop(store);
    serve::run_locked(cfg, &config_path, lock)
}
