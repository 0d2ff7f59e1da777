//! The Debian and RPM packages, built by `ci/package.sh` from the binary under test:
//! - lintian finds no errors in the `.deb`;
//! - `dpkg -i` installs it on this machine: user, state directory, conffile, unit, and the service
//!   neither enabled nor started; installing again and re-running postinst change nothing;
//! - the installed `/usr/bin/scaivault` with the installed configuration, pointed at a SoftHSM
//!   token made here, runs as user `scaivault` and passes a smoke test (readiness notification,
//!   health, root and intermediate, issue, revoke);
//! - `dpkg --purge` removes it again;
//! - the `.rpm` lists the same files (`rpm -qpl`), the same conffile, and scriptlets that never
//!   enable or start the service.
//!
//! It installs a package, so it needs root; as another user it is skipped with a message. In CI
//! (`CI=true`) missing tools are a failure, elsewhere a skip. It refuses to run on a machine where
//! a `scaivault` package (or its state) already exists, and purges what it installed even when it
//! fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use scaivault_tests::{bin, free_port};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes `text` to the test process's stderr directly, past the harness's output capture, so
/// that it shows in CI logs even when the test passes.
fn report(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(script: &str) -> bool {
    Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `cmd` as user `scaivault` (with its supplementary groups), keeping the environment.
fn as_daemon_user(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=scaivault",
        "--regid=scaivault",
        "--init-groups",
        "--",
        program,
    ]);
    c
}

/// Purges the package (and removes the user when this test created it), also on failure.
struct Cleanup {
    user_existed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.user_existed {
            let _ = Command::new("pkill").args(["-u", "scaivault"]).status();
        }
        let _ = Command::new("dpkg")
            .args(["--purge", "scaivault"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !self.user_existed {
            let _ = Command::new("userdel").arg("scaivault").status();
            if sh("getent group scaivault") {
                let _ = Command::new("groupdel").arg("scaivault").status();
            }
        }
    }
}

fn mode(p: &str) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

fn id(what: &str, name: &str) -> u32 {
    let out = run(Command::new("getent").args([what, name]));
    stdout(&out)
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn check_installed_state() {
    assert!(Path::new("/usr/bin/scaivault").exists());
    let version = stdout(&run(Command::new("/usr/bin/scaivault").arg("--version")));
    assert!(version.starts_with("scaivault "), "{version}");
    let passwd = stdout(&run(Command::new("getent").args(["passwd", "scaivault"])));
    assert!(passwd.contains(":/var/lib/scaivault:"), "{passwd}");
    let (uid, gid) = (id("passwd", "scaivault"), id("group", "scaivault"));
    assert_eq!(mode("/var/lib/scaivault"), (0o700, uid, gid));
    assert_eq!(mode("/etc/scaivault"), (0o750, 0, gid));
    assert_eq!(mode("/etc/scaivault/scaivault.toml"), (0o640, 0, gid));
    let conffiles = stdout(&run(Command::new("dpkg-query").args([
        "-W",
        "-f=${Conffiles}",
        "scaivault",
    ])));
    assert!(
        conffiles.contains("/etc/scaivault/scaivault.toml"),
        "{conffiles}"
    );
    // Neither enabled nor started.
    for wants in [
        "/etc/systemd/system/multi-user.target.wants/scaivault.service",
        "/lib/systemd/system/multi-user.target.wants/scaivault.service",
    ] {
        assert!(!Path::new(wants).exists(), "{wants} exists: enabled");
    }
    assert!(!sh("pgrep -u scaivault"), "a scaivault process runs");
    if sh("getent group softhsm") {
        let groups = stdout(&run(Command::new("id").args(["-nG", "scaivault"])));
        assert!(
            groups.split_whitespace().any(|g| g == "softhsm"),
            "{groups}"
        );
    }
}

/// File paths of the `.deb`, normalised for comparison with the RPM: `/lib/systemd` is
/// `/usr/lib/systemd` on merged-/usr systems, and `changelog.Debian.gz` is Debian's own
/// packaging record (the RPM carries its changelog in its header).
fn deb_files(deb: &Path) -> BTreeSet<String> {
    let listing = stdout(&run(Command::new("dpkg-deb").arg("-c").arg(deb)));
    listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| format!("/{}", p.trim_start_matches("./")))
        .map(|p| p.replacen("/lib/systemd/", "/usr/lib/systemd/", 1))
        .map(|p| p.replacen("/usr/usr/", "/usr/", 1))
        .filter(|p| !p.ends_with("/changelog.Debian.gz"))
        .collect()
}

fn wait_ready(sock: &UnixDatagram, child: &mut std::process::Child, log: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let ready = text.lines().any(|l| l == "READY=1");
            seen.push(text);
            if ready {
                return seen;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the installed daemon exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no READY=1 within 60 s: {seen:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Health, root and intermediate, a role, issue, revoke: against the installed daemon.
fn smoke(base: &str, token: &str) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let call = |method: &str, path: &str, body: Option<Value>| -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = http
            .request(m, format!("{base}{path}"))
            .header("Authorization", format!("Bearer {token}"));
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let r = rb.send().unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    };
    let (s, h) = call("GET", "/v1/sys/health", None);
    assert_eq!((s, h["status"].as_str()), (200, Some("ok")), "{h}");
    let (s, root) = call(
        "POST",
        "/v1/pki/ca",
        Some(
            json!({"name": "pkg-root", "common_name": "Package Test Root CA", "ca_type": "root",
                    "key_type": "ec", "key_size": 256, "validity_days": 3650}),
        ),
    );
    assert_eq!(s, 201, "{root}");
    let (s, int) = call(
        "POST",
        "/v1/pki/ca",
        Some(
            json!({"name": "pkg-int", "common_name": "Package Test Intermediate",
                    "ca_type": "intermediate", "parent_ca_id": root["id"], "validity_days": 365}),
        ),
    );
    assert_eq!(s, 201, "{int}");
    let (s, role) = call(
        "POST",
        "/v1/pki/roles",
        Some(
            json!({"name": "web", "ca_id": int["id"], "allowed_domains": ["example.test"],
                    "allow_subdomains": true, "max_ttl": "72h"}),
        ),
    );
    assert_eq!(s, 201, "{role}");
    let (s, leaf) = call(
        "POST",
        "/v1/pki/issue/web",
        Some(json!({"common_name": "www.example.test", "ttl": "24h"})),
    );
    assert_eq!(s, 200, "{leaf}");
    assert!(leaf["certificate"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let serial = leaf["serial_number"].as_str().unwrap().to_owned();
    let (s, rev) = call(
        "POST",
        "/v1/pki/revoke",
        Some(json!({"serial_number": serial, "reason": "superseded"})),
    );
    assert_eq!(s, 200, "{rev}");
    let (s, got) = call("GET", &format!("/v1/pki/certificates/{serial}"), None);
    assert_eq!((s, got["status"].as_str()), (200, Some("revoked")), "{got}");
}

/// Points the installed configuration at the test's token and port (the conffile is purged with
/// the package at the end).
fn point_config_at(port: u16, softhsm_conf: &Path) {
    let path = "/etc/scaivault/scaivault.toml";
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in [
        (
            "listen = \"127.0.0.1:8200\"".to_owned(),
            format!("listen = \"127.0.0.1:{port}\""),
        ),
        (
            "public_base_url = \"https://pki.example.internal\"".to_owned(),
            format!("public_base_url = \"http://127.0.0.1:{port}\""),
        ),
        (
            "token_label = \"scaivault\"".to_owned(),
            "token_label = \"pkgtest\"".to_owned(),
        ),
        (
            "softhsm2_conf = \"/etc/softhsm/softhsm2.conf\"".to_owned(),
            format!("softhsm2_conf = \"{}\"", softhsm_conf.display()),
        ),
    ] {
        assert!(text.contains(&from), "{from:?} not in the installed config");
        text = text.replace(&from, &to);
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn deb_installs_runs_and_purges_and_the_rpm_has_the_same_files() {
    if !sh("[ \"$(id -u)\" = 0 ]") {
        assert!(!in_ci(), "the package test must run as root in CI");
        report("SKIPPED: the package test installs a .deb and needs root");
        return;
    }
    let tools = Command::new("bash")
        .arg(repo().join("ci/package.sh"))
        .arg("--check-tools")
        .output()
        .unwrap();
    let have = tools.status.success()
        && ["lintian", "rpm", "dpkg", "setpriv", "softhsm2-util"]
            .iter()
            .all(|t| sh(&format!("command -v {t}")));
    if !have {
        let why = String::from_utf8_lossy(&tools.stderr).into_owned();
        assert!(
            !in_ci(),
            "packaging tools missing in CI: {why} (ci/install-deps.sh installs them)"
        );
        report(&format!(
            "SKIPPED: packaging tools missing ({why}); run ci/install-deps.sh as root"
        ));
        return;
    }
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "scaivault"])
        .output()
        .unwrap();
    let status = stdout(&status);
    assert!(
        !status.contains("installed") || status.contains("not-installed"),
        "a scaivault package is already on this machine ({status}): this test installs and \
         purges its own, so remove that one first"
    );
    for p in ["/var/lib/scaivault", "/etc/scaivault", "/usr/bin/scaivault"] {
        assert!(
            !Path::new(p).exists(),
            "{p} exists: refusing to install over it"
        );
    }

    // Build both packages from the binary under test.
    let out = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    run(Command::new("bash")
        .arg(repo().join("ci/package.sh"))
        .arg("--binary")
        .arg(bin())
        .arg("--out")
        .arg(out.path())
        .arg("--fast"));
    report(&format!(
        "package: .deb and .rpm built in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    let find = |ext: &str| -> PathBuf {
        std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
            .unwrap_or_else(|| panic!("no .{ext} built"))
    };
    let (deb, rpm) = (find("deb"), find("rpm"));

    // lintian: no errors (warnings and notes are printed).
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    let lint_out = format!("{}{}", stdout(&lint), String::from_utf8_lossy(&lint.stderr));
    report(&format!(
        "package: lintian found {} errors, {} warnings",
        lint_out.lines().filter(|l| l.starts_with("E:")).count(),
        lint_out.lines().filter(|l| l.starts_with("W:")).count()
    ));
    println!("lintian:\n{lint_out}");
    let errors: Vec<_> = lint_out.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors: {errors:#?}");

    // Install, twice, and run postinst once more by hand: idempotent.
    let cleanup = Cleanup {
        user_existed: sh("getent passwd scaivault"),
    };
    run(Command::new("dpkg").arg("-i").arg(&deb));
    check_installed_state();
    run(Command::new("dpkg").arg("-i").arg(&deb));
    run(Command::new("/var/lib/dpkg/info/scaivault.postinst").args(["configure", "0.1.0-1"]));
    check_installed_state();
    if sh("command -v systemd-analyze") {
        let v = Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/scaivault.service"])
            .output()
            .unwrap();
        let said = format!("{}{}", stdout(&v), String::from_utf8_lossy(&v.stderr));
        assert!(
            v.status.success() && !said.contains("scaivault.service"),
            "{said}"
        );
    }

    // A SoftHSM token of the daemon's user, its PIN as the systemd credential would provide it.
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hsm = work.path().join("softhsm");
    std::fs::create_dir_all(hsm.join("tokens")).unwrap();
    let conf = hsm.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            hsm.join("tokens").display()
        ),
    )
    .unwrap();
    let creds = work.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("hsm-pin"), "4711\n").unwrap();
    run(Command::new("chown")
        .args(["-R", "scaivault:scaivault"])
        .arg(&hsm)
        .arg(&creds));
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
    run(as_daemon_user("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "pkgtest",
            "--so-pin",
            "8642",
            "--pin",
            "4711",
        ]));
    let port = free_port();
    point_config_at(port, &conf);
    let config = "/etc/scaivault/scaivault.toml";

    let check = run(as_daemon_user("/usr/bin/scaivault")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .args(["check-config", "--config", config]));
    assert!(stdout(&check).contains(": ok"), "{}", stdout(&check));
    run(as_daemon_user("/usr/bin/scaivault")
        .args(["--config", config, "tenant", "create", "default"]));
    let token = stdout(&run(as_daemon_user("/usr/bin/scaivault").args([
        "--config", config, "token", "create", "--tenant", "default", "--policy", "admin",
    ])))
    .trim()
    .to_owned();
    assert!(token.starts_with("svt_"), "{token}");

    // The daemon as the unit would run it: user scaivault, the credential, Type=notify.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("scaivault-pkgtest-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let log = work.path().join("serve.log");
    let mut child = as_daemon_user("/usr/bin/scaivault")
        .args(["serve", "--config", config])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let seen = wait_ready(&sock, &mut child, &log);
    println!("installed daemon ready: {seen:?}");
    smoke(&format!("http://127.0.0.1:{port}"), &token);
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let (db_mode, db_uid, _) = mode("/var/lib/scaivault/scaivault.db");
    assert_eq!(db_uid, id("passwd", "scaivault"));
    assert_eq!(db_mode & 0o077, 0, "the database is private: {db_mode:o}");

    // Remove masks the unit (no daemon of a removed package may start); a reinstall lifts the
    // mask again, or `systemctl enable` would fail with "unit is masked".
    let masked = || {
        std::fs::read_link("/etc/systemd/system/scaivault.service")
            .is_ok_and(|t| t == Path::new("/dev/null"))
    };
    run(Command::new("dpkg").args(["-r", "scaivault"]));
    if sh("command -v deb-systemd-helper") {
        assert!(masked(), "remove masks the unit");
    }
    assert!(
        Path::new("/var/lib/scaivault/scaivault.db").exists(),
        "remove keeps the state"
    );
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(!masked(), "a reinstall leaves the unit masked");
    check_installed_state();

    // Purge: the files and the state go; the token (here, a test directory) is never touched.
    run(Command::new("dpkg").args(["--purge", "scaivault"]));
    for p in [
        "/usr/bin/scaivault",
        "/var/lib/scaivault",
        "/etc/scaivault/scaivault.toml",
    ] {
        assert!(!Path::new(p).exists(), "{p} left after purge");
    }
    assert!(hsm.join("tokens").read_dir().unwrap().next().is_some());
    drop(cleanup);

    // The RPM: the same files, the same conffile, and no enabling or starting.
    let rpm_files: BTreeSet<String> = stdout(&run(Command::new("rpm").arg("-qpl").arg(&rpm)))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(rpm_files, deb_files(&deb), "rpm -qpl and the .deb differ");
    let rpm_conf = stdout(&run(Command::new("rpm").arg("-qpc").arg(&rpm)));
    assert_eq!(rpm_conf.trim(), "/etc/scaivault/scaivault.toml");
    let scripts = stdout(&run(Command::new("rpm")
        .args(["-qp", "--scripts"])
        .arg(&rpm)));
    let ctl = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctl.path()));
    let mut deb_scripts = String::new();
    for s in ["postinst", "prerm", "postrm"] {
        deb_scripts.push_str(&std::fs::read_to_string(ctl.path().join(s)).unwrap());
    }
    // The configuration directory as the .deb leaves it (rpm cannot run the scriptlet here).
    assert!(
        scripts.contains("chown root:scaivault /etc/scaivault && chmod 0750 /etc/scaivault"),
        "{scripts}"
    );
    for (which, text) in [("rpm", &scripts), ("deb", &deb_scripts)] {
        for bad in [
            "systemctl enable",
            "systemctl start",
            "systemctl preset",
            "deb-systemd-helper enable",
            "deb-systemd-invoke start",
        ] {
            assert!(!text.contains(bad), "{which} scriptlets contain {bad:?}");
        }
    }
    println!(
        "rpm -qpl:\n{}",
        rpm_files.into_iter().collect::<Vec<_>>().join("\n")
    );
}
