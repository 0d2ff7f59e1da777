//! Starting and restarting: `serve` refuses a wrong PIN, token or database with a clear message;
//! dev mode reuses its token, database and admin token on a second run; `check-config` names the
//! bad key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{bin, Daemon};
use std::process::Command;
use std::time::Duration;

fn serve_fails(config: &std::path::Path) -> String {
    let mut cmd = Command::new(bin());
    cmd.arg("--config").arg(config).arg("serve");
    let (status, err) = refused(&mut cmd);
    assert!(!status.success());
    err
}

/// Runs `cmd`, which is expected to end within 10 s (a refusal), and returns how it ended and its
/// stderr; panics (after killing it) when it is still running then, as a daemon that started.
fn refused(cmd: &mut Command) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "{cmd:?} did not refuse to start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `scaivault --config <config> check-config` and returns how it ended.
fn check_config(config: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .arg("check-config")
        .output()
        .unwrap()
}

/// Runs `scaivault dev` on `data` (expected to stop at once) and returns how it ended.
fn dev_once(data: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(["dev", "--data-dir"])
        .arg(data)
        .args([
            "--listen",
            &format!("127.0.0.1:{}", scaivault_tests::free_port()),
        ])
        .output()
        .unwrap()
}

#[test]
fn dev_mode_reuses_its_state_and_serve_refuses_bad_setups() {
    let d = Daemon::start();
    let admin = d.admin.clone();
    let root = d.create_root("kept", "ec", None);
    let dir = d.into_dir();

    // Second run: same token, database and admin token; the CA still signs.
    let d = Daemon::start_in(dir);
    assert_eq!(d.admin, admin);
    let out = std::fs::read_to_string(&d.out).unwrap();
    assert!(
        !out.contains("svt_"),
        "the admin token is printed only on the first run: {out}"
    );
    let got = d.get(&format!("/v1/pki/ca/{}", root["id"].as_str().unwrap()));
    assert_eq!(got.status, 200, "{}", got.text());
    let int = d.post(
        "/v1/pki/ca",
        &serde_json::json!({"name": "after-restart", "common_name": "I", "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 30}),
    );
    assert_eq!(int.status, 201, "{}", int.text());
    let cfg_text = std::fs::read_to_string(d.config()).unwrap();
    let data = d.data();
    let dir = d.into_dir();

    // A wrong PIN.
    let bad_pin = dir.path().join("bad.pin");
    std::fs::write(&bad_pin, "0000\n").unwrap();
    let cfg = dir.path().join("badpin.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace(
            &data.join("hsm.pin").display().to_string(),
            &bad_pin.display().to_string(),
        ),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("login refused"), "{err}");
    assert!(!err.contains("0000"), "the PIN must not be echoed: {err}");
    // A PIN of a length the token cannot take is refused before any login attempt (each spends
    // one of a hardware token's few tries).
    std::fs::write(&bad_pin, "12\n").unwrap();
    let err = serve_fails(&cfg);
    assert!(
        err.contains("PIN must be 4 to 255 bytes long") && !err.contains("login refused"),
        "{err}"
    );
    // An empty PIN file (the documented install creates it empty, then edits it) is found by
    // check-config already.
    std::fs::write(&bad_pin, "\n").unwrap();
    let out = check_config(&cfg);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PIN source is empty"),
        "{out:?}"
    );
    // A wrong token label.
    let cfg = dir.path().join("badlabel.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace("token_label = \"scaivault-dev\"", "token_label = \"nope\""),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("no token labelled \"nope\""), "{err}");
    // A database path that cannot be opened.
    let cfg = dir.path().join("baddb.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace(
            &data.join("scaivault.db").display().to_string(),
            "/nonexistent/dir/x.db",
        ),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(
        err.contains(
            "cannot open database /nonexistent/dir/x.db: its directory /nonexistent/dir does not exist"
        ),
        "{err}"
    );
    // check-config says so before a start fails (it answered `ok`).
    let out = check_config(&cfg);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(
            "storage.path /nonexistent/dir/x.db: its directory /nonexistent/dir does not exist"
        ),
        "{err}"
    );
    // A database that is not one.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let cfg = dir.path().join("junkdb.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace(
            &data.join("scaivault.db").display().to_string(),
            &junk.display().to_string(),
        ),
    )
    .unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("cannot open database"), "{err}");
    // A PostgreSQL address where something accepts connections and never answers: `serve` gives
    // up after the URL's connect_timeout and says so (it used to wait forever, silently).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let cfg = dir.path().join("silentpg.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace(
            &format!("path = \"{}\"", data.join("scaivault.db").display()),
            &format!(
                "backend = \"postgres\"\nurl = \"postgres://sv@127.0.0.1:{silent_port}/db?connect_timeout=1\""
            ),
        ),
    )
    .unwrap();
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("postgres://"),
        "the config's storage path was not found to replace"
    );
    let err = serve_fails(&cfg);
    assert!(
        err.contains("cannot open PostgreSQL database")
            && err.contains("did not answer within 1 s"),
        "{err}"
    );
    drop(silent);
    // An unknown key, and check-config naming it.
    let cfg = dir.path().join("unknown.toml");
    std::fs::write(&cfg, format!("{cfg_text}\n[tuning]\nturbo = true\n")).unwrap();
    let err = serve_fails(&cfg);
    assert!(err.contains("tuning"), "{err}");
    let out = check_config(&cfg);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tuning"));
    // A secret under a wrong key: the error names the key and the line, never the value.
    let check = |name: &str, text: String| {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, text).unwrap();
        let out = check_config(&cfg);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check(
        "pin.toml",
        cfg_text.replacen("[hsm]", "[hsm]\npin = \"MySecretPin987\"", 1),
    );
    assert!(
        err.contains("unknown field `pin`") && err.contains("line "),
        "{err}"
    );
    assert!(!err.contains("MySecretPin987"), "{err}");
    let err = check(
        "typed.toml",
        cfg_text.replacen("[hsm]", "[hsm]\nsign_threads = \"Secret-In-A-String\"", 1),
    );
    assert!(err.contains("invalid type: string, expected"), "{err}");
    assert!(!err.contains("Secret-In-A-String"), "{err}");
    // A module that is no library, a database path that is a directory: refused by check-config,
    // as serve would fail on them.
    let text = std::fs::read_to_string(data.join("scaivault.toml")).unwrap();
    let module_line = text
        .lines()
        .find(|l| l.starts_with("module = "))
        .unwrap()
        .to_owned();
    let err = check(
        "module.toml",
        cfg_text.replace(&module_line, &format!("module = {:?}", dir.path())),
    );
    assert!(
        err.contains("hsm.module") && err.contains("is not a file"),
        "{err}"
    );
    let err = check(
        "dbdir.toml",
        cfg_text.replace(
            &data.join("scaivault.db").display().to_string(),
            &dir.path().display().to_string(),
        ),
    );
    assert!(err.contains("is a directory"), "{err}");
    // A log level that is not one would silence every log line: refused.
    for level in ["verbose", "", "info,scaivault=loud", "=info"] {
        let err = check(
            "level.toml",
            cfg_text.replace("level = \"info\"", &format!("level = \"{level}\"")),
        );
        assert!(err.contains("log.level"), "{level:?}: {err}");
    }
    // A database path that does not exist: the read-only commands refuse it instead of
    // creating an empty database and calling its audit chain intact.
    let missing = dir.path().join("nowhere.db");
    let cfg = dir.path().join("missing.toml");
    std::fs::write(
        &cfg,
        cfg_text.replace(
            &data.join("scaivault.db").display().to_string(),
            &missing.display().to_string(),
        ),
    )
    .unwrap();
    for args in [
        &["audit", "verify"][..],
        &["tenant", "list"],
        &["token", "list"],
        &["token", "revoke", "tok_x"],
    ] {
        let out = Command::new(bin())
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("does not exist"), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    let good = check_config(&data.join("scaivault.toml"));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

/// Dev mode's `--listen` moves the URLs in certificates along while `public_base_url` is the one
/// dev mode derived; a value edited in `scaivault.toml` stays.
#[test]
fn dev_mode_keeps_an_edited_public_base_url() {
    let d = Daemon::start();
    let root = d.create_root("urls", "ec", None);
    let root_id = root["id"].as_str().unwrap().to_owned();
    let intermediate_der = |d: &Daemon, name: &str| {
        let int = d.post(
            "/v1/pki/ca",
            &serde_json::json!({"name": name, "common_name": name, "ca_type": "intermediate",
                "parent_ca_id": root_id, "validity_days": 30}),
        );
        assert_eq!(int.status, 201, "{}", int.text());
        let id = int.json()["id"].as_str().unwrap().to_owned();
        let der = d.get(&format!("/v1/pki/ca/{id}/certificate?format=der"));
        assert_eq!(der.status, 200);
        der.bytes
    };
    let has = |der: &[u8], s: &str| der.windows(s.len()).any(|w| w == s.as_bytes());
    // A restart on another port: the parent's CRL URL in a new intermediate follows it.
    let d = d.restart_with(|t| t);
    let der = intermediate_der(&d, "follows");
    let here = format!("{}/v1/pki/ca/{root_id}/crl", d.base);
    assert!(has(&der, &here), "{here} not in the certificate");
    // An edited public_base_url is kept across restarts with --listen.
    let d = d.restart_with(|t| {
        let line = t
            .lines()
            .find(|l| l.starts_with("public_base_url = "))
            .unwrap()
            .to_owned();
        t.replace(&line, "public_base_url = \"http://pki.example.internal\"")
    });
    let der = intermediate_der(&d, "kept");
    assert!(has(
        &der,
        &format!("http://pki.example.internal/v1/pki/ca/{root_id}/crl")
    ));
    assert!(!has(&der, &d.base));
}

/// `dev --database-url postgres://user:password@…` does not leave the password in the process's
/// command line (readable by every user in `ps`): by the time the daemon connects, it runs with
/// the URL in its environment instead.
#[test]
fn dev_mode_hides_the_database_password_from_the_command_line() {
    // A "database" that accepts the connection and never answers: the daemon waits there.
    let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = db.local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["dev", "--data-dir"])
        .arg(data.path().join("data"))
        .arg(format!(
            "--database-url=postgres://sv:Hidden-Pw-31@127.0.0.1:{port}/svdb"
        ))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", scaivault_tests::free_port()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Waits for the connection, or for the daemon to end first (then the test fails with its
    // status instead of hanging).
    db.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let _conn = loop {
        match db.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("dev mode ended before it connected: {status}");
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no connection in 60 s"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let proc_file = |name: &str| std::fs::read(format!("/proc/{}/{name}", child.id())).unwrap();
    let cmdline = String::from_utf8_lossy(&proc_file("cmdline")).replace('\0', " ");
    let environ = String::from_utf8_lossy(&proc_file("environ")).into_owned();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(cmdline.contains(" dev "), "{cmdline}");
    assert!(!cmdline.contains("Hidden-Pw-31"), "{cmdline}");
    assert!(!cmdline.contains("database-url"), "{cmdline}");
    assert!(
        environ.contains("SCAIVAULT_DEV_DATABASE_URL=postgres://sv:Hidden-Pw-31@"),
        "the URL moves to the environment"
    );
}

/// `--database-url` on a later run is refused when it is not the database the directory was set
/// up for (it used to be ignored silently: a corrected typo took no effect).
#[test]
fn dev_mode_refuses_another_database_url_on_a_later_run() {
    let d = Daemon::start();
    let data = d.data();
    let _dir = d.into_dir();
    let out = Command::new(bin())
        .args(["dev", "--data-dir"])
        .arg(&data)
        .args([
            "--listen",
            &format!("127.0.0.1:{}", scaivault_tests::free_port()),
            "--database-url",
            "postgres://sv:pw@127.0.0.1:1/other",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("applies to a first run only"), "{err}");
    assert!(!err.contains("pw@"), "{err}");
}

/// Dev mode's later-run check of `--database-url`, on a PostgreSQL directory: the same database
/// (also spelt `postgresql://`) is fine, another password is refused, not ignored. The daemon
/// never gets to connect (a port nobody listens on).
#[test]
fn dev_mode_refuses_another_database_password_on_a_later_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dead = scaivault_tests::free_port();
    let run = |url: String| {
        Command::new(bin())
            .args(["dev", "--data-dir"])
            .arg(&data)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", scaivault_tests::free_port()),
            ])
            .arg(format!("--database-url={url}"))
            .output()
            .unwrap()
    };
    // The first run writes its configuration and password, then cannot connect.
    let first = run(format!("postgres://sv:first-pw@127.0.0.1:{dead}/db"));
    assert!(!first.status.success());
    assert_eq!(
        std::fs::read_to_string(data.join("db.password")).unwrap(),
        "first-pw"
    );
    let again = run(format!("postgresql://sv:first-pw@127.0.0.1:{dead}/db"));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !err.contains("first run only") && !err.contains("not the one"),
        "{err}"
    );
    assert!(err.contains("PostgreSQL"), "{err}");
    let other = run(format!("postgres://sv:second-pw@127.0.0.1:{dead}/db"));
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        err.contains("not the one this directory's configuration uses"),
        "{err}"
    );
    assert!(
        !err.contains("second-pw") && !err.contains("first-pw"),
        "{err}"
    );
    // Changed where the message says (an editor adds a newline, which is not part of it).
    std::fs::write(data.join("db.password"), "second-pw\n").unwrap();
    let changed = run(format!("postgres://sv:second-pw@127.0.0.1:{dead}/db"));
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(!err.contains("not the one"), "{err}");
    assert!(err.contains("PostgreSQL"), "{err}");
}

/// A host command whose reader goes away (`scaivault token list | head -1`) ends quietly with
/// SIGPIPE's status, 141, instead of a panic and its backtrace.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    let d = Daemon::start();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .args(["token", "list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader closes before the command has opened its database.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `RUST_LOG=debug` (as OPERATIONS.md suggests for a drop-in) never logs a bearer token: Rocket's
/// request dump stays at `warn` whatever the filter says. A `RUST_LOG` that is not a filter of
/// levels (`verbose`, which would silence everything) is ignored with a warning.
#[test]
fn rust_log_never_shows_tokens_and_a_bad_one_is_ignored() {
    let d = Daemon::start();
    let dir = d.into_dir();
    // Rocket's own targets named at trace too: its cap at warn holds whatever the filter says.
    let d = Daemon::start_in_with_env(
        dir,
        &[(
            "RUST_LOG",
            std::ffi::OsStr::new("debug,rocket::server=trace,rocket::server::_=trace"),
        )],
    );
    assert_eq!(d.get("/v1/pki/ca").status, 200);
    let secret = scaivault_tests::token_secret(&d.admin).to_owned();
    let log = d.log_text();
    assert!(log.contains("DEBUG"), "debug logging is on: {log}");
    assert!(!log.contains(&secret), "the bearer token was logged: {log}");
    assert!(
        !log.lines()
            .any(|l| l.contains(" rocket::") && !l.contains("WARN") && !l.contains("ERROR")),
        "Rocket logged below warn: {log}"
    );
    let dir = d.into_dir();
    let d = Daemon::start_in_with_env(dir, &[("RUST_LOG", std::ffi::OsStr::new("verbose"))]);
    assert_eq!(d.get("/v1/pki/ca").status, 200);
    let log = d.log_text();
    assert!(log.contains("RUST_LOG is not a level"), "{log}");
}

/// A second daemon on the same SQLite database is refused before it touches anything: it would
/// otherwise take the running daemon's reservation journal for a crashed run's, revoke its
/// in-flight reservations and delete its journal (found by a review: even a start that then
/// failed to bind its address did that).
#[test]
fn a_second_daemon_on_the_same_database_is_refused() {
    let d = Daemon::start();
    let root = d.create_root("one", "ec", None);
    let r = d.post(
        "/v1/pki/roles",
        &serde_json::json!({"name": "svc", "ca_id": root["id"], "allowed_domains": ["*.internal"]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let ok = d.post(
        "/v1/pki/issue/svc",
        &serde_json::json!({"common_name": "a.internal"}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let journal = d.data().join("scaivault.db-reservations");
    let segments = |p: &std::path::Path| std::fs::read_dir(p).map_or(0, |d| d.count());
    let before = segments(&journal);
    let err = serve_fails(&d.config());
    assert!(
        err.contains("another scaivault daemon serves the database"),
        "{err}"
    );
    assert_eq!(
        segments(&journal),
        before,
        "the running daemon's journal is untouched"
    );
    assert!(!d.log_text().contains("left unfinished"));
    // Nor through a symbolic link to the database file elsewhere.
    let other = d.dir.path().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let link = other.join("linked.db");
    std::os::unix::fs::symlink(d.data().join("scaivault.db"), &link).unwrap();
    let text = std::fs::read_to_string(d.config()).unwrap().replace(
        &d.data().join("scaivault.db").display().to_string(),
        &link.display().to_string(),
    );
    assert!(text.contains("linked.db"));
    let linked_cfg = d.dir.path().join("linked.toml");
    std::fs::write(&linked_cfg, text).unwrap();
    let err = serve_fails(&linked_cfg);
    assert!(
        err.contains("another scaivault daemon serves the database"),
        "{err}"
    );
    let ok = d.post(
        "/v1/pki/issue/svc",
        &serde_json::json!({"common_name": "b.internal"}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    // A second dev mode on the same directory stops before it touches anything, even with the
    // admin token file gone (it would make a new admin token first).
    {
        let tokens = |d: &Daemon| {
            d.get("/v1/auth/tokens").json()["items"]
                .as_array()
                .unwrap()
                .len()
        };
        let before = tokens(&d);
        let token_file = d.data().join("admin.token");
        std::fs::rename(&token_file, d.dir.path().join("admin.token.aside")).unwrap();
        let out = dev_once(&d.data());
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("another scaivault dev mode runs in"),
            "{stderr}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("svt_") && !stdout.contains("starting on"),
            "{stdout}"
        );
        assert!(!token_file.exists(), "no admin token was made");
        assert_eq!(tokens(&d), before);
        std::fs::rename(d.dir.path().join("admin.token.aside"), &token_file).unwrap();
    }
    // Once it is stopped, the next one starts.
    let d = Daemon::start_in(d.into_dir());
    assert_eq!(d.get("/v1/sys/health").status, 200);
}

/// A first dev run killed between its PIN files and its configuration (the configuration is
/// written last, the marker first): the next run clears what it left and starts over. Without
/// the marker, such leftovers are refused by name (a directory that lost its configuration may
/// hold keys).
#[test]
fn an_interrupted_first_run_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("softhsm/tokens/half-made")).unwrap();
    for f in ["hsm.pin", "hsm-so.pin"] {
        std::fs::write(data.join(f), "123456\n").unwrap();
    }
    // Without the marker: refused, naming what is there.
    let out = dev_once(&data);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a fresh data directory") && stderr.contains("hsm.pin"),
        "{stderr}"
    );
    assert!(
        data.join("softhsm/tokens/half-made").exists(),
        "nothing removed"
    );
    // With it: the leftovers are moved aside (never deleted) and the first run completes.
    std::fs::write(data.join(".first-run-incomplete"), "").unwrap();
    let d = Daemon::start_in(dir);
    assert_eq!(d.get("/v1/sys/health").status, 200);
    assert!(!d.data().join(".first-run-incomplete").exists());
    assert!(!d.data().join("softhsm/tokens/half-made").exists());
    let aside: Vec<_> = std::fs::read_dir(d.data())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("interrupted-first-run-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].join("tokens/half-made").exists());
    assert!(aside[0].join("hsm.pin").exists());
    let root = d.create_root("after-restart", "ec", None);
    assert_eq!(root["status"], "active");
}

/// Health asks for a write, not only a read: while another process holds the database's write
/// lock every change fails (`503 database_unavailable`), and health says so instead of `ok`.
#[test]
fn health_reports_a_database_whose_write_lock_another_process_holds() {
    if scaivault_tests::pg::enabled() {
        return; // a SQLite file's lock; PostgreSQL has no such file
    }
    let d = Daemon::start();
    let root = d.create_root("locked-root", "ec", Some(256));
    let role = d.post(
        "/v1/pki/roles",
        &serde_json::json!({"name": "svc", "ca_id": root["id"], "allowed_domains": ["*.internal"]}),
    );
    assert_eq!(role.status, 201, "{}", role.text());
    let crl = d.post(
        &format!("/v1/pki/ca/{}/crl", root["id"].as_str().unwrap()),
        &serde_json::json!({}),
    );
    assert_eq!(crl.status, 200, "{}", crl.text());
    let h = d.call("GET", "/v1/sys/health", None, None);
    assert_eq!(h.status, 200, "{}", h.text());
    let published = h.json()["crl"]["published"].clone();
    assert!(published.as_i64().unwrap() >= 1, "{}", h.text());
    let db = d.data().join("scaivault.db");
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(30)",
        ])
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let h = d.call("GET", "/v1/sys/health", None, None);
    // An issuance while the lock is held: the database is unavailable (not the audit trail),
    // and nothing is issued.
    let issued = d.post(
        "/v1/pki/issue/svc",
        &serde_json::json!({"common_name": "a.internal"}),
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(h.status, 503, "{}", h.text());
    assert_eq!(h.json()["database"], "unavailable", "{}", h.text());
    // The CRLs are still published (the database answers reads): the summary says so.
    assert_eq!(h.json()["crl"]["published"], published, "{}", h.text());
    issued.problem(503, "database_unavailable");
    let inv = d.get("/v1/pki/certificates?role=svc").json();
    assert_eq!(inv["items"].as_array().unwrap().len(), 0, "{inv}");
    let h = d.call("GET", "/v1/sys/health", None, None);
    assert_eq!(h.status, 200, "{}", h.text());
}

/// `dev` reads DIR/scaivault.toml and a ceremony its --file: a `--config` given to either is
/// refused (it would be silently ignored, and the operator believe another configuration runs),
/// before anything is created; `--config DIR/scaivault.toml` itself is accepted. One from
/// `SCAIVAULT_CONFIG` (an operator's shell) is ignored with a note.
#[test]
fn a_config_that_dev_or_a_ceremony_would_not_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let other = tmp.path().join("prod.toml");
    std::fs::write(&other, "").unwrap();
    let (status, err) = refused(
        Command::new(bin())
            .arg("--config")
            .arg(&other)
            .args(["dev", "--data-dir"])
            .arg(&data)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", scaivault_tests::free_port()),
            ]),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("is not used: dev reads") && err.contains("scaivault.toml"),
        "{err}"
    );
    assert!(!data.exists(), "nothing is created");
    let (status, err) = refused(
        Command::new(bin())
            .arg("--config")
            .arg(&other)
            .args(["ceremony", "--file"])
            .arg(tmp.path().join("ceremony.toml"))
            .arg("list-keys"),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("a ceremony reads its --file"), "{err}");

    // The file dev reads, named: fine; from the environment: a note, and dev runs.
    let d = Daemon::start();
    let config = d.config();
    let dir = d.into_dir();
    let d = Daemon::start_in_with_env(dir, &[("SCAIVAULT_CONFIG", other.as_os_str())]);
    assert_eq!(d.get("/v1/pki/ca").status, 200);
    let log = std::fs::read_to_string(d.dir.path().join("daemon.log")).unwrap_or_default()
        + &std::fs::read_to_string(d.dir.path().join("daemon.out")).unwrap_or_default();
    assert!(
        log.contains("SCAIVAULT_CONFIG is ignored: dev reads"),
        "{log}"
    );
    let dir = d.into_dir();
    let d = Daemon::start_in_with_env(dir, &[("SCAIVAULT_CONFIG", config.as_os_str())]);
    assert_eq!(d.get("/v1/pki/ca").status, 200);
}

/// A later dev run whose `admin.token` was revoked says so, with the command that makes another,
/// instead of leaving the operator to puzzle over `401`s; it does not replace the token itself
/// (the revocation was meant).
#[test]
fn dev_mode_says_when_its_admin_token_was_revoked() {
    let d = Daemon::start();
    let admin = d.admin.clone();
    let id = scaivault_tests::token_id(&admin);
    let out = d.cli(&["token", "revoke", &id]);
    assert!(out.status.success(), "{out:?}");
    let dir = d.into_dir();
    let d = Daemon::start_in(dir);
    assert_eq!(d.admin, admin, "the file is left as it was");
    let out = std::fs::read_to_string(d.dir.path().join("daemon.out")).unwrap();
    assert!(
        out.contains("admin.token was revoked at")
            && out.contains("token create --tenant default --policy admin >"),
        "{out}"
    );
    assert_eq!(d.get("/v1/pki/ca").status, 401);
    // A working token: no warning.
    let fresh = Daemon::start();
    let out = std::fs::read_to_string(fresh.dir.path().join("daemon.out")).unwrap();
    assert!(!out.contains("warning"), "{out}");
}

/// `check-config` checks what `serve` would load: the PKCS#11 module through the dynamic loader
/// (a bare library name included), and for PostgreSQL the password source and the CA file.
#[test]
fn check_config_loads_the_module_and_reads_what_postgres_needs() {
    let d = Daemon::start();
    let cfg_text = std::fs::read_to_string(d.config()).unwrap();
    let data = d.data();
    let dir = d.into_dir();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(check_config(&write("as-is.toml", cfg_text.clone()))
        .status
        .success());

    // A bare library name is the loader's to find.
    let line = cfg_text
        .lines()
        .find(|l| l.starts_with("module = "))
        .unwrap()
        .to_owned();
    let module = std::path::PathBuf::from(line.split('"').nth(1).unwrap());
    let (libdir, file) = (
        module.parent().unwrap(),
        module.file_name().unwrap().to_str().unwrap(),
    );
    let bare = write(
        "bare.toml",
        cfg_text.replace(&line, &format!("module = \"{file}\"")),
    );
    let out = Command::new(bin())
        .env("LD_LIBRARY_PATH", libdir)
        .arg("--config")
        .arg(&bare)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // One it does not find, or a library that is not PKCS#11, is named.
    for name in ["libscaivault-no-such-module.so", "libc.so.6"] {
        let out = check_config(&write(
            "bare-bad.toml",
            cfg_text.replace(&line, &format!("module = \"{name}\"")),
        ));
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("cannot load pkcs#11 module {name}")),
            "{name}: {}",
            stderr(&out)
        );
    }

    // PostgreSQL: a password file or variable that is not there, and a CA file that is not one.
    let pg = |extra: &str| {
        cfg_text.replace(
            &format!("path = \"{}\"", data.join("scaivault.db").display()),
            &format!("backend = \"postgres\"\nurl = \"postgres://sv@127.0.0.1:1/sv\"\n{extra}"),
        )
    };
    assert!(pg("").contains("backend = \"postgres\""));
    let missing = dir.path().join("no-such.pw");
    let not_pem = write("not-pem.crt", "hello\n".into());
    for (extra, says) in [
        (
            format!("password_file = \"{}\"", missing.display()),
            "cannot read storage.password_file".to_owned(),
        ),
        (
            "password_env = \"SCAIVAULT_TEST_NO_SUCH_VAR\"".to_owned(),
            "SCAIVAULT_TEST_NO_SUCH_VAR (storage.password_env) is not set".to_owned(),
        ),
        (
            format!("ca_file = \"{}\"", not_pem.display()),
            "holds no PEM certificate".to_owned(),
        ),
    ] {
        let out = check_config(&write("pg.toml", pg(&extra)));
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", stderr(&out));
        assert!(stderr(&out).contains(&says), "{extra}: {}", stderr(&out));
    }
    // PostgreSQL settings beside SQLite are not used: said so.
    let out = check_config(&write(
        "sqlite-pg-keys.toml",
        cfg_text.replace("[storage]\n", "[storage]\npool_size = 4\n"),
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("storage.pool_size is for backend = \"postgres\""),
        "{}",
        stderr(&out)
    );
}
