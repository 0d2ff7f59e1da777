//! The configuration file (TOML). Unknown keys are an error; every value is checked at load with
//! a message naming the key. Secrets are never inline: the HSM PIN comes from a file, an
//! environment variable named here, or systemd's `$CREDENTIALS_DIRECTORY/hsm-pin`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Default PKCS#11 module (Debian's SoftHSM2).
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The systemd credential name read when neither `pin_file` nor `pin_env` is set.
pub const PIN_CREDENTIAL: &str = "hsm-pin";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[hsm]`.
    pub hsm: HsmConfig,
    /// `[acme]`.
    #[serde(default)]
    pub acme: AcmeConfig,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[csr]`.
    #[serde(default)]
    pub csr: CsrConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[webhooks]`.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// `[cluster]`.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// The base URL relying parties use (CRL, OCSP and CA-issuer URLs are built from it).
    pub public_base_url: String,
    /// HTTPS on the API listener; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// The relying-party listener: plain HTTP serving only what relying parties fetch without
    /// credentials (OCSP, CRLs, CA certificates), for `public_base_url` to point at. Off when
    /// absent; those paths stay on `listen` either way.
    #[serde(default)]
    pub public_listen: Option<SocketAddr>,
    /// Most connections the relying-party listener holds open at once; one more is answered
    /// `503 too_many_connections` and closed.
    #[serde(default = "default_public_max_connections")]
    pub public_max_connections: u32,
    /// Seconds in-flight requests get to finish after SIGTERM (Rocket's `grace`).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u32,
    /// Further seconds for open connections to close after the grace period (Rocket's `mercy`).
    #[serde(default = "default_shutdown_mercy")]
    pub shutdown_mercy_secs: u32,
}

fn default_public_max_connections() -> u32 {
    4096
}
fn default_shutdown_grace() -> u32 {
    5
}
fn default_shutdown_mercy() -> u32 {
    2
}

/// `[server.tls]`: where the API listener's certificate comes from. Exactly one form: files
/// (`cert_file` and `key_file`), or a certificate ScaiVault issues itself at start from `role`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1): a secret.
    pub key_file: Option<PathBuf>,
    /// Role to issue the listener's certificate from, at start and when it is two thirds through
    /// its life.
    pub role: Option<String>,
    /// Tenant owning `role`.
    #[serde(default = "default_tls_tenant")]
    pub tenant: String,
    /// Subject CN of the issued certificate.
    pub common_name: Option<String>,
    /// DNS names of the issued certificate.
    #[serde(default)]
    pub alt_names: Vec<String>,
    /// IP addresses of the issued certificate.
    #[serde(default)]
    pub ip_sans: Vec<String>,
    /// Lifetime of the issued certificate (Go duration; the role's default when absent).
    pub ttl: Option<String>,
}

fn default_tls_tenant() -> String {
    "default".into()
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite` (default, one node) or `postgres` (one or more nodes sharing the database).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// SQLite file.
    pub path: Option<PathBuf>,
    /// PostgreSQL connection URL (`postgres://user@host:port/db?sslmode=...`), without password.
    pub url: Option<String>,
    /// PostgreSQL: read connections kept open (the writer has its own two).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// PostgreSQL: PEM bundle of the CAs trusted for TLS to the database (turns TLS on).
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: file holding the password (mode 0600 recommended).
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: name of an environment variable holding the password.
    pub password_env: Option<String>,
}

fn default_backend() -> String {
    "sqlite".into()
}

fn default_pool_size() -> usize {
    8
}

/// The systemd credential holding the database password when neither `password_file` nor
/// `password_env` is set (`LoadCredential=db-password:...`).
pub const DB_PASSWORD_CREDENTIAL: &str = "db-password";

/// `[cluster]`: several nodes on one PostgreSQL database (docs/OPERATIONS.md §multi-node).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in health, metrics and logs (default: the host name).
    pub node_name: Option<String>,
    /// Leadership lease: a follower tries to take over the scheduled jobs every half lease, and
    /// the leader re-checks its hold as often (Go duration, default `10s`).
    #[serde(default = "default_lease")]
    pub lease: String,
}

fn default_lease() -> String {
    "10s".into()
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_name: None,
            lease: default_lease(),
        }
    }
}

impl ClusterConfig {
    /// The lease (validated: at least 1 s).
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            scaivault_core::duration::parse_seconds(&self.lease)
                .unwrap_or(10)
                .max(1),
        )
    }
}

/// `[hsm]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// PKCS#11 module path.
    #[serde(default = "default_module")]
    pub module: PathBuf,
    /// Label of the token holding the CA keys.
    pub token_label: String,
    /// File holding the user PIN (mode 0600 or stricter recommended).
    pub pin_file: Option<PathBuf>,
    /// Name of an environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// SoftHSM2 only: its configuration file (sets `SOFTHSM2_CONF` for the module).
    pub softhsm2_conf: Option<PathBuf>,
    /// How long a request waits for a token call (signature, key lookup, health ping) before it
    /// answers `503 hsm_unavailable`; `0s` turns the limit off (and lets fast tokens sign on the
    /// async worker, see `App::token_call`).
    #[serde(default = "default_call_timeout")]
    pub call_timeout: String,
    /// The same for key generation (CA creation), which takes seconds for RSA-4096.
    #[serde(default = "default_keygen_timeout")]
    pub keygen_timeout: String,
    /// Threads that make leaf signatures (`crate::signers`); unset: the host's CPUs + 1.
    #[serde(default)]
    pub sign_threads: Option<usize>,
}

fn default_module() -> PathBuf {
    PathBuf::from(DEFAULT_MODULE)
}

fn default_call_timeout() -> String {
    "5s".into()
}

fn default_keygen_timeout() -> String {
    "120s".into()
}

impl HsmConfig {
    /// `call_timeout`, or `None` when it is `0s` (no limit).
    pub fn call_limit(&self) -> Option<std::time::Duration> {
        limit(&self.call_timeout, 5)
    }

    /// `keygen_timeout`, or `None` when it is `0s` (no limit).
    pub fn keygen_limit(&self) -> Option<std::time::Duration> {
        limit(&self.keygen_timeout, 120)
    }
}

/// A validated timeout in seconds (`fallback` if it does not parse: `validate` refused that
/// already); `None` for 0.
/// Whether a `postgres://` URL has a password: in its user-info part (`user:password@`), or as a
/// `password` query parameter (libpq and tokio-postgres take both).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let in_query = rest.split_once('?').is_some_and(|(_, query)| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(key, _)| key.trim().eq_ignore_ascii_case("password"))
    });
    in_userinfo || in_query
}

fn limit(text: &str, fallback: u64) -> Option<std::time::Duration> {
    match scaivault_core::duration::parse_seconds(text).unwrap_or(fallback) {
        0 => None,
        secs => Some(std::time::Duration::from_secs(secs)),
    }
}

/// `[acme]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// Where the http-01 challenge listener binds.
    pub http_challenge_listen: Option<SocketAddr>,
    /// Where the tls-alpn-01 challenge listener binds.
    pub tls_challenge_listen: Option<SocketAddr>,
    /// How long one ACME order may take in all (Go duration; default `10m`).
    pub order_timeout: Option<String>,
    /// Renew a managed certificate once less than this remains (Go duration). Unset (the
    /// default): min(30 days, a third of its lifetime). Meant for tests, which set it longer
    /// than the certificate's life to make a fresh certificate due at once.
    pub renew_before: Option<String>,
    /// Fire `certificate.expiring` once per version when less than this remains (Go duration;
    /// default `168h`).
    pub expiring_within: Option<String>,
}

/// Default `acme.order_timeout`.
pub const DEFAULT_ORDER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl AcmeConfig {
    /// `order_timeout` (validated at load; the default when unset).
    pub fn order_timeout(&self) -> std::time::Duration {
        self.order_timeout
            .as_deref()
            .and_then(|s| scaivault_core::duration::parse_seconds(s).ok())
            .map_or(DEFAULT_ORDER_TIMEOUT, std::time::Duration::from_secs)
    }

    /// `expiring_within` in seconds (validated at load; 7 days when unset).
    pub fn expiring_within_secs(&self) -> u64 {
        self.expiring_within
            .as_deref()
            .and_then(|s| scaivault_core::duration::parse_seconds(s).ok())
            .unwrap_or(7 * 24 * 3600)
    }

    /// `renew_before` in seconds, when set (validated at load).
    pub fn renew_before_secs(&self) -> Option<u64> {
        self.renew_before
            .as_deref()
            .and_then(|s| scaivault_core::duration::parse_seconds(s).ok())
    }
}

/// `[csr]`: the reviewed CSR workflow.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrConfig {
    /// Default for tenants without their own setting: the approver (or rejecter) must be a
    /// different token from the importer (`scaivault tenant set NAME --csr-distinct-approver`).
    #[serde(default)]
    pub require_distinct_approver: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body in bytes (larger bodies get `413`).
    #[serde(default = "default_body_bytes")]
    pub body_bytes: u64,
    /// Page size ceiling for list endpoints.
    #[serde(default = "default_max_page")]
    pub max_page: usize,
    /// RSA leaf keys kept pre-generated per RSA size in use (0 disables the pool).
    #[serde(default = "default_rsa_key_pool")]
    pub rsa_key_pool: usize,
    /// Requests per second per API token (0: no limit).
    #[serde(default)]
    pub token_rate: u32,
    /// Burst per API token (default: `token_rate`).
    #[serde(default)]
    pub token_burst: u32,
    /// Requests per second per tenant, all its tokens together (0: no limit).
    #[serde(default)]
    pub tenant_rate: u32,
    /// Burst per tenant (default: `tenant_rate`).
    #[serde(default)]
    pub tenant_burst: u32,
    /// Requests per second per client IP on the unauthenticated CRL and OCSP endpoints (0: none).
    #[serde(default)]
    pub public_ip_rate: u32,
    /// Burst per client IP (default: `public_ip_rate`).
    #[serde(default)]
    pub public_ip_burst: u32,
    /// How long a client may take to send its request body (`408 request_timeout` after).
    #[serde(default = "default_body_timeout")]
    pub body_timeout: String,
    /// Relying-party listener: how long a request's head may take to arrive, counted from the
    /// connection's start or the previous answer (also the idle limit of a keep-alive
    /// connection); the connection is closed after.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes: default_body_bytes(),
            max_page: default_max_page(),
            rsa_key_pool: default_rsa_key_pool(),
            token_rate: 0,
            token_burst: 0,
            tenant_rate: 0,
            tenant_burst: 0,
            public_ip_rate: 0,
            public_ip_burst: 0,
            body_timeout: default_body_timeout(),
            header_timeout: default_header_timeout(),
        }
    }
}

fn default_body_bytes() -> u64 {
    1024 * 1024
}
fn default_max_page() -> usize {
    1000
}
fn default_rsa_key_pool() -> usize {
    128
}
fn default_body_timeout() -> String {
    "30s".into()
}
fn default_header_timeout() -> String {
    "10s".into()
}

/// `[webhooks]`: the delivery worker (docs/WEBHOOKS.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Delay before the first retry, in milliseconds; each further retry doubles it.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest delay between two attempts, in seconds.
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Attempts (the first included) before a delivery is marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Seconds one attempt may take (connect, TLS, request, status line).
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    /// How often the worker looks for new events and due retries, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// PEM bundle of the CAs trusted for `https://` webhook URLs.
    #[serde(default = "default_webhook_ca_file")]
    pub ca_file: PathBuf,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            retry_base_ms: default_retry_base_ms(),
            retry_max_secs: default_retry_max_secs(),
            max_attempts: default_max_attempts(),
            timeout_secs: default_webhook_timeout(),
            poll_ms: default_poll_ms(),
            ca_file: default_webhook_ca_file(),
        }
    }
}

fn default_retry_base_ms() -> u64 {
    10_000
}
fn default_retry_max_secs() -> u64 {
    3600
}
fn default_max_attempts() -> u32 {
    12
}
fn default_webhook_timeout() -> u64 {
    10
}
fn default_poll_ms() -> u64 {
    1000
}
/// The system's CA bundle: Debian's, or RHEL's and Fedora's where Debian's is missing (the
/// packages for both install the same configuration).
fn default_webhook_ca_file() -> PathBuf {
    const DEBIAN: &str = "/etc/ssl/certs/ca-certificates.crt";
    const RHEL: &str = "/etc/pki/tls/certs/ca-bundle.crt";
    if !Path::new(DEBIAN).exists() && Path::new(RHEL).exists() {
        return PathBuf::from(RHEL);
    }
    PathBuf::from(DEBIAN)
}

impl WebhooksConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if !(100..=3_600_000).contains(&self.retry_base_ms) {
            return bad("webhooks.retry_base_ms must be between 100 and 3600000");
        }
        if !(1..=86_400).contains(&self.retry_max_secs) {
            return bad("webhooks.retry_max_secs must be between 1 and 86400");
        }
        if !(1..=50).contains(&self.max_attempts) {
            return bad("webhooks.max_attempts must be between 1 and 50");
        }
        if !(1..=120).contains(&self.timeout_secs) {
            return bad("webhooks.timeout_secs must be between 1 and 120");
        }
        if !(50..=60_000).contains(&self.poll_ms) {
            return bad("webhooks.poll_ms must be between 50 and 60000");
        }
        Ok(())
    }
}

/// A TOML error as `line L, column C: message`, without the parser's quotation of the offending
/// line and without the string values serde quotes: a misplaced `pin = "…"` or `password = "…"`
/// must not reach the terminal or the journal.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = crate::api::problem::describe_json_error(e.message());
    let Some(before) = e.span().and_then(|s| text.get(..s.start)) else {
        return message;
    };
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    match key_at(text, line) {
        Some(key) => format!("line {line}, column {column} (key {key}): {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// The dotted name of the key assigned on line `line` (1-based) of `text`, under the table
/// header above it: `hsm.call_timeout`. Names only, never the value.
fn key_at(text: &str, line: usize) -> Option<String> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    };
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let key = here.split_once('=')?.0.trim();
    if !is_name(key) {
        return None;
    }
    let table = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|t| is_name(t));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_owned(),
    })
}

/// Whether `level` is a `tracing` filter whose every directive names a level: `info`, or
/// `info,scaivault::http=warn`. A bare word that is not a level (`verbose`) would be taken as a
/// target and silence every other one.
fn check_log_level(level: &str) -> Result<(), ConfigError> {
    if log_level_ok(level) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "log.level {level:?} is not a level ({}) or a filter of target=level directives \
             such as \"info,scaivault::http=warn\"",
            LOG_LEVELS.join(", ")
        )))
    }
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Whether `level` is a filter whose every directive names a level (see `check_log_level`); the
/// same test applies to `RUST_LOG`.
pub fn log_level_ok(level: &str) -> bool {
    let is_level = |l: &str| LOG_LEVELS.iter().any(|k| k.eq_ignore_ascii_case(l.trim()));
    !level.trim().is_empty()
        && level.split(',').all(|d| match d.rsplit_once('=') {
            Some((target, l)) => !target.trim().is_empty() && is_level(l),
            None => is_level(d),
        })
        && tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .is_ok()
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace` (or a `tracing` filter).
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

impl TlsSettings {
    /// Checks that exactly one certificate source is configured.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("server.tls: {m}")));
        let files = self.cert_file.is_some() || self.key_file.is_some();
        match (files, &self.role) {
            (true, Some(_)) => bad("set either cert_file and key_file, or role, not both"),
            (false, None) => bad("set cert_file and key_file, or role"),
            (true, None) if self.cert_file.is_none() || self.key_file.is_none() => {
                bad("cert_file and key_file go together")
            }
            (true, None) => {
                if self.common_name.is_some()
                    || !self.alt_names.is_empty()
                    || !self.ip_sans.is_empty()
                    || self.ttl.is_some()
                {
                    return bad("common_name, alt_names, ip_sans and ttl are for role, not files");
                }
                Ok(())
            }
            (false, Some(role)) => {
                if role.trim().is_empty() || self.tenant.trim().is_empty() {
                    return bad("role and tenant must not be empty");
                }
                if self.common_name.is_none()
                    && self.alt_names.is_empty()
                    && self.ip_sans.is_empty()
                {
                    return bad("role needs common_name, alt_names or ip_sans to certify");
                }
                if let Some(ttl) = &self.ttl {
                    if !matches!(scaivault_core::duration::parse_seconds(ttl), Ok(s) if s >= 1) {
                        return Err(ConfigError::Invalid(format!(
                            "server.tls: ttl {ttl:?} is not a duration such as 720h"
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

/// The permission bits of `path` when users other than its owner and group may use it.
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o007 != 0).then_some(mode)
}

/// Errors loading the configuration: each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Cannot read the file.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: describe_toml_error(&text, &e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let url = &self.server.public_base_url;
        if let Err(why) = check_public_base_url(url) {
            return bad(format!("server.public_base_url {url:?} {why}"));
        }
        if self.storage.backend == "sqlite" {
            match &self.storage.path {
                Some(p) if p.as_os_str().is_empty() => {
                    return bad("storage.path is empty".into());
                }
                // Relative to what? The service runs in `/`, a command wherever it is started.
                Some(p) if !p.is_absolute() => {
                    return bad(format!(
                        "storage.path {} must be an absolute path",
                        p.display()
                    ));
                }
                _ => {}
            }
        }
        if self.storage.backend == "sqlite" && self.storage.url.is_some() {
            return bad(
                "storage.url is for server backends; the sqlite backend takes storage.path".into(),
            );
        }
        match scaivault_core::duration::parse_seconds(&self.cluster.lease) {
            Ok(secs) if secs >= 1 => {}
            Ok(_) => {
                return bad(format!(
                    "cluster.lease {:?} is shorter than 1s",
                    self.cluster.lease
                ))
            }
            Err(e) => {
                return bad(format!(
                    "cluster.lease {:?} is not a usable duration: {}",
                    self.cluster.lease, e
                ))
            }
        }
        for (key, addr) in [
            (
                "acme.http_challenge_listen",
                self.acme.http_challenge_listen,
            ),
            ("acme.tls_challenge_listen", self.acme.tls_challenge_listen),
            ("server.public_listen", self.server.public_listen),
        ] {
            if addr == Some(self.server.listen) {
                return bad(format!("{key} must differ from server.listen"));
            }
        }
        if !(1..=1_000_000).contains(&self.server.public_max_connections) {
            return bad("server.public_max_connections must be between 1 and 1000000".to_owned());
        }
        if let Some(public) = self.server.public_listen {
            let acme = [
                self.acme.http_challenge_listen,
                self.acme.tls_challenge_listen,
            ];
            if acme.contains(&Some(public)) {
                return bad(format!(
                    "server.public_listen {public} is also an ACME challenge listener"
                ));
            }
        }
        // Two listeners on one port collide when their addresses are equal, or one is the
        // wildcard of the other's family (`0.0.0.0`, `::`), or `::` (dual-stack on Linux, so it
        // takes IPv4 too): `serve` would fail to bind the second.
        let listeners = [
            ("server.listen", Some(self.server.listen)),
            ("server.public_listen", self.server.public_listen),
            (
                "acme.http_challenge_listen",
                self.acme.http_challenge_listen,
            ),
            ("acme.tls_challenge_listen", self.acme.tls_challenge_listen),
        ];
        for (i, (key_a, a)) in listeners.iter().enumerate() {
            for (key_b, b) in &listeners[i + 1..] {
                if let (Some(a), Some(b)) = (a, b) {
                    let family = a.is_ipv4() == b.is_ipv4();
                    let v6_any = |s: &SocketAddr| s.is_ipv6() && s.ip().is_unspecified();
                    let same_ip = a.ip() == b.ip()
                        || (family && (a.ip().is_unspecified() || b.ip().is_unspecified()))
                        || v6_any(a)
                        || v6_any(b);
                    if a.port() == b.port() && same_ip {
                        return bad(format!(
                            "{key_b} {b} and {key_a} {a} would share one port: give each listener its own"
                        ));
                    }
                }
            }
        }
        // Relative to what? The service runs in `/`, `check-config` wherever it is started.
        let files = [
            ("hsm.pin_file", self.hsm.pin_file.as_ref()),
            ("hsm.softhsm2_conf", self.hsm.softhsm2_conf.as_ref()),
            ("storage.ca_file", self.storage.ca_file.as_ref()),
            ("storage.password_file", self.storage.password_file.as_ref()),
            (
                "server.tls.cert_file",
                self.server.tls.as_ref().and_then(|t| t.cert_file.as_ref()),
            ),
            (
                "server.tls.key_file",
                self.server.tls.as_ref().and_then(|t| t.key_file.as_ref()),
            ),
            ("webhooks.ca_file", Some(&self.webhooks.ca_file)),
        ];
        for (key, path) in files {
            if let Some(p) = path.filter(|p| !p.is_absolute()) {
                return bad(format!("{key} {} must be an absolute path", p.display()));
            }
        }
        for (key, value) in [
            ("acme.order_timeout", &self.acme.order_timeout),
            ("acme.renew_before", &self.acme.renew_before),
            ("acme.expiring_within", &self.acme.expiring_within),
        ] {
            if let Some(v) = value {
                match scaivault_core::duration::parse_seconds(v) {
                    Ok(secs) if secs >= 1 => {}
                    Ok(_) => return bad(format!("{key} {v:?} must be at least 1s")),
                    Err(e) => return bad(format!("{key}: {e} (a duration such as 10m or 720h)")),
                }
            }
        }
        match self.storage.backend.as_str() {
            "sqlite" if self.storage.path.is_some() => {}
            "sqlite" => return bad("storage.path is required for the sqlite backend".into()),
            "postgres" => {
                let Some(url) = &self.storage.url else {
                    return bad("storage.url is required for the postgres backend".into());
                };
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return bad("storage.url must be a postgres:// URL".into());
                }
                if url_has_password(url) {
                    return bad(
                        "storage.url must not carry a password: use storage.password_file, storage.password_env or the systemd credential db-password".into(),
                    );
                }
                if self.storage.path.is_some() {
                    return bad("storage.path is for the sqlite backend".into());
                }
                if self.storage.password_file.is_some() && self.storage.password_env.is_some() {
                    return bad(
                        "set only one of storage.password_file and storage.password_env".into(),
                    );
                }
                if !(1..=256).contains(&self.storage.pool_size) {
                    return bad("storage.pool_size must be between 1 and 256".into());
                }
            }
            other => {
                return bad(format!(
                    "storage.backend {other:?} is not supported (sqlite, postgres)"
                ))
            }
        }
        if self.hsm.token_label.trim().is_empty() {
            return bad("hsm.token_label must not be empty".into());
        }
        if self.hsm.pin_file.is_some() && self.hsm.pin_env.is_some() {
            return bad("set only one of hsm.pin_file and hsm.pin_env".into());
        }
        for (key, value) in [
            ("hsm.call_timeout", &self.hsm.call_timeout),
            ("hsm.keygen_timeout", &self.hsm.keygen_timeout),
        ] {
            match scaivault_core::duration::parse_seconds(value) {
                Ok(0..=3600) => {}
                Ok(_) => return bad(format!("{key} must be a duration from 0s (no limit) to 1h")),
                Err(e) => return bad(format!("{key}: {e} (a duration from 0s, no limit, to 1h)")),
            }
        }
        if matches!(self.hsm.sign_threads, Some(n) if !(1..=256).contains(&n)) {
            return bad("hsm.sign_threads must be between 1 and 256".into());
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.limits.body_bytes) {
            return bad("limits.body_bytes must be between 1024 and 67108864".into());
        }
        if self.limits.rsa_key_pool > 10_000 {
            return bad("limits.rsa_key_pool must be at most 10000".into());
        }
        if !(1..=10_000).contains(&self.limits.max_page) {
            return bad("limits.max_page must be between 1 and 10000".into());
        }
        match scaivault_core::duration::parse_seconds(&self.limits.body_timeout) {
            Ok(1..=3600) => {}
            _ => return bad("limits.body_timeout must be a duration from 1s to 1h".into()),
        }
        match scaivault_core::duration::parse_seconds(&self.limits.header_timeout) {
            Ok(1..=3600) => {}
            _ => return bad("limits.header_timeout must be a duration from 1s to 1h".into()),
        }
        if !(1..=300).contains(&self.server.shutdown_grace_secs) {
            return bad("server.shutdown_grace_secs must be between 1 and 300".into());
        }
        if self.server.shutdown_mercy_secs > 60 {
            return bad("server.shutdown_mercy_secs must be at most 60".into());
        }
        if let Some(tls) = &self.server.tls {
            tls.validate()?;
        }
        self.webhooks.validate()?;
        check_log_level(&self.log.level)?;
        Ok(())
    }

    /// Operator warnings about values that are valid but probably not what production wants.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.storage.backend == "sqlite" {
            let st = &self.storage;
            for (key, set) in [
                ("storage.pool_size", st.pool_size != default_pool_size()),
                ("storage.ca_file", st.ca_file.is_some()),
                ("storage.password_file", st.password_file.is_some()),
                ("storage.password_env", st.password_env.is_some()),
            ] {
                if set {
                    out.push(format!(
                        "{key} is for backend = \"postgres\": with \"sqlite\" it is not used"
                    ));
                }
            }
        }
        let privileged =
            |a: Option<SocketAddr>| a.is_some_and(|a| a.port() != 0 && a.port() < 1024);
        for (key, addr) in [
            ("server.listen", Some(self.server.listen)),
            (
                "acme.http_challenge_listen",
                self.acme.http_challenge_listen,
            ),
            ("acme.tls_challenge_listen", self.acme.tls_challenge_listen),
            ("server.public_listen", self.server.public_listen),
        ] {
            if privileged(addr) {
                out.push(format!(
                    "{key} uses a port below 1024: the systemd unit grants no capability; add \
                     CapabilityBoundingSet=CAP_NET_BIND_SERVICE and \
                     AmbientCapabilities=CAP_NET_BIND_SERVICE in a drop-in (docs/OPERATIONS.md)"
                ));
            }
        }
        if self.server.tls.is_none() && !self.server.listen.ip().is_loopback() {
            out.push(format!(
                "server.listen {} is not a loopback address and [server.tls] is not set: the \
                 API (bearer tokens, issued private keys) would travel as plain HTTP",
                self.server.listen
            ));
        }
        if let Some(key) = self.server.tls.as_ref().and_then(|t| t.key_file.as_ref()) {
            if let Some(mode) = loose_mode(key) {
                out.push(format!(
                    "server.tls.key_file {} is open to others (mode {mode:o}); make it \
                     0600 scaivault or 0640 root:scaivault",
                    key.display()
                ));
            }
        }
        let l = &self.limits;
        for (burst, n, rate, r) in [
            ("token_burst", l.token_burst, "token_rate", l.token_rate),
            ("tenant_burst", l.tenant_burst, "tenant_rate", l.tenant_rate),
            (
                "public_ip_burst",
                l.public_ip_burst,
                "public_ip_rate",
                l.public_ip_rate,
            ),
        ] {
            if n > 0 && r == 0 {
                out.push(format!(
                    "limits.{burst} = {n} does nothing without limits.{rate} (the limit is off)"
                ));
            }
        }
        match std::fs::read_to_string(&self.webhooks.ca_file) {
            Ok(text) if !text.contains("-----BEGIN CERTIFICATE-----") => out.push(format!(
                "webhooks.ca_file {} holds no PEM certificate: deliveries to https:// webhooks \
                 would fail",
                self.webhooks.ca_file.display()
            )),
            _ => {}
        }
        if let Err(e) = std::fs::File::open(&self.webhooks.ca_file) {
            out.push(format!(
                "webhooks.ca_file {} cannot be read ({e}): deliveries to https:// webhooks \
                 would fail; set it to this system's CA bundle (Debian: \
                 /etc/ssl/certs/ca-certificates.crt, RHEL and Fedora: \
                 /etc/pki/tls/certs/ca-bundle.crt)",
                self.webhooks.ca_file.display()
            ));
        }
        if let Some(pin) = &self.hsm.pin_file {
            if let Some(mode) = loose_mode(pin) {
                out.push(format!(
                    "hsm.pin_file {} is open to others (mode {mode:o}); make it 0600",
                    pin.display()
                ));
            }
        }
        out
    }

    /// The PostgreSQL password from its configured source, if any (never logged).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the source (never the password).
    pub fn read_db_password(&self) -> Result<Option<Zeroizing<String>>, ConfigError> {
        let trim =
            |s: Zeroizing<String>| Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned());
        if let Some(f) = &self.storage.password_file {
            let s = std::fs::read_to_string(f).map_err(|e| {
                ConfigError::Invalid(format!(
                    "cannot read storage.password_file {}: {e}",
                    f.display()
                ))
            })?;
            return Ok(Some(trim(Zeroizing::new(s))));
        }
        if let Some(var) = &self.storage.password_env {
            let s = std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!(
                    "environment variable {var} (storage.password_env) is not set"
                ))
            })?;
            return Ok(Some(trim(Zeroizing::new(s))));
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(DB_PASSWORD_CREDENTIAL);
            if p.exists() {
                let s = std::fs::read_to_string(&p).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "cannot read systemd credential {}: {e}",
                        p.display()
                    ))
                })?;
                return Ok(Some(trim(Zeroizing::new(s))));
            }
        }
        Ok(None)
    }

    /// The SQLite path (validated present).
    pub fn db_path(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from("scaivault.db"))
    }

    /// Reads the HSM PIN from its configured source. The PIN is never logged, never on argv.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the source (never the PIN).
    pub fn read_pin(&self) -> Result<Zeroizing<String>, ConfigError> {
        let pin = self.read_pin_source()?;
        if pin.is_empty() {
            // An edit that never happened (the documented install creates the file empty):
            // said here, by `check-config` too, before any login is tried.
            return Err(ConfigError::Invalid(
                "the HSM PIN source is empty: put the token's user PIN in it".into(),
            ));
        }
        Ok(pin)
    }

    fn read_pin_source(&self) -> Result<Zeroizing<String>, ConfigError> {
        let trim =
            |s: Zeroizing<String>| Zeroizing::new(s.trim_end_matches(['\n', '\r']).to_owned());
        if let Some(f) = &self.hsm.pin_file {
            let s = std::fs::read_to_string(f).map_err(|e| {
                ConfigError::Invalid(format!("cannot read hsm.pin_file {}: {e}", f.display()))
            })?;
            return Ok(trim(Zeroizing::new(s)));
        }
        if let Some(var) = &self.hsm.pin_env {
            let s = std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!(
                    "environment variable {var} (hsm.pin_env) is not set"
                ))
            })?;
            return Ok(trim(Zeroizing::new(s)));
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(PIN_CREDENTIAL);
            let s = std::fs::read_to_string(&p).map_err(|e| {
                ConfigError::Invalid(format!(
                    "cannot read systemd credential {}: {e}",
                    p.display()
                ))
            })?;
            return Ok(trim(Zeroizing::new(s)));
        }
        Err(ConfigError::Invalid(
            "no HSM PIN source: set hsm.pin_file or hsm.pin_env, or pass the credential hsm-pin via systemd".into(),
        ))
    }
}

/// `public_base_url` goes into every certificate (CRL distribution point, OCSP, CA issuers) and
/// cannot be corrected in one already issued: an http(s) URL with a host, no user or password,
/// query or fragment, and no trailing slash, written in characters a URI may hold as they are
/// (RFC 3986; an IA5String in the certificate: no spaces, no non-ASCII host — write it as its
/// A-label). A default port or an uppercase host is fine.
fn check_public_base_url(url: &str) -> Result<(), String> {
    let shape =
        "must be an http(s) URL with a host, without user info, query, fragment or trailing slash";
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
        return Err(shape.into());
    }
    if let Some(c) = url
        .chars()
        .find(|c| !c.is_ascii_graphic() || "\"<>\\^`{|}".contains(*c))
    {
        return Err(format!(
            "holds {c:?}, which a URI cannot carry as it is: percent-encode it, or write the host \
             as its A-label (xn--…)"
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("{shape} ({e})"))?;
    if parsed.host_str().is_none_or(str::is_empty)
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err(shape.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_base_urls_are_plain_http_urls() {
        for good in [
            "http://127.0.0.1:8200",
            "https://pki.example.internal",
            "https://pki.example.internal:8443/scaivault",
            "http://[::1]:8200",
            "http://127.0.0.1:80",
            "https://pki.example:443",
            "http://Pki.Example",
            "https://xn--bcher-kva.example/pki",
        ] {
            assert_eq!(check_public_base_url(good), Ok(()), "{good}");
        }
        for bad in [
            "ftp://x",
            "http://x/",
            "http://a b",
            "http://pki example?y=1#frag",
            "http://pki.example?y=1",
            "http://pki.example#f",
            "http://user:pw@x",
            "http://user@x",
            "http://x:99999",
            "https://:80",
            "http://",
            "http://x/a b",
            "https://bücher.example",
            "http://x/a\"b",
        ] {
            assert!(check_public_base_url(bad).is_err(), "{bad}");
        }
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8200"
public_base_url = "http://127.0.0.1:8200"
[storage]
path = "/tmp/x.db"
[hsm]
token_label = "t"
pin_env = "PIN"
"#;

    #[test]
    fn parses_defaults_and_refuses_unknown_keys() {
        let c: Config = toml::from_str(GOOD).unwrap();
        c.validate().unwrap();
        assert_eq!(c.limits.body_bytes, 1024 * 1024);
        assert_eq!(c.hsm.module, PathBuf::from(DEFAULT_MODULE));
        let bad = format!("{GOOD}\nbogus = 1\n");
        let e = toml::from_str::<Config>(&bad).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let bad = GOOD.replace("pin_env = \"PIN\"", "pin_env = \"PIN\"\npin = \"1234\"");
        assert!(
            toml::from_str::<Config>(&bad).is_err(),
            "an inline pin must be refused"
        );
    }

    #[test]
    fn postgres_storage_is_checked() {
        let pg = |storage: &str| {
            let text = GOOD.replace("path = \"/tmp/x.db\"", storage);
            let c: Config = toml::from_str(&text).unwrap();
            c.validate().map(|()| c).map_err(|e| e.to_string())
        };
        let c = pg(
            "backend = \"postgres\"\nurl = \"postgres://sv@db:5432/sv\"\npassword_env = \"PGPW\"",
        )
        .unwrap();
        assert_eq!(c.storage.pool_size, 8);
        assert_eq!(c.cluster.lease(), std::time::Duration::from_secs(10));
        let e = pg("backend = \"postgres\"").unwrap_err();
        assert!(e.contains("storage.url is required"), "{e}");
        for url in [
            "postgres://sv@db/sv?password=hunter2",
            "postgres://sv@db/sv?sslmode=require&PassWord=hunter2",
            "postgres://sv@db/sv?pass%77ord=hunter2",
        ] {
            let e = pg(&format!("backend = \"postgres\"\nurl = \"{url}\"")).unwrap_err();
            assert!(e.contains("must not carry a password"), "{url}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = pg("backend = \"postgres\"\nurl = \"postgres://sv:hunter2@db/sv\"").unwrap_err();
        assert!(
            e.contains("must not carry a password") && !e.contains("hunter2"),
            "{e}"
        );
        let e = pg("backend = \"postgres\"\nurl = \"mysql://db/sv\"").unwrap_err();
        assert!(e.contains("postgres:// URL"), "{e}");
        let e =
            pg("backend = \"postgres\"\nurl = \"postgres://db/sv\"\npool_size = 0").unwrap_err();
        assert!(e.contains("pool_size"), "{e}");
        let e = pg("backend = \"oracle\"").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        // `@` inside the path or query is not a password.
        assert!(
            pg("backend = \"postgres\"\nurl = \"postgres://sv@db/sv?application_name=a:b\"")
                .is_ok()
        );
        let text = format!("{GOOD}\n[cluster]\nlease = \"0s\"\n");
        let c: Config = toml::from_str(&text).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("cluster.lease") && e.contains("shorter than 1s"),
            "{e}"
        );
        let text = format!("{GOOD}\n[cluster]\nlease = \"999999999999999999h\"\n");
        let c: Config = toml::from_str(&text).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cluster.lease") && !e.contains("shorter"), "{e}");
    }

    #[test]
    fn a_type_error_names_the_key_not_the_value() {
        let text = GOOD.replace(
            "token_label = \"t\"",
            "token_label = \"t\"\ncall_timeout = 5",
        );
        let e = toml::from_str::<Config>(&text).unwrap_err();
        let m = describe_toml_error(&text, &e);
        assert!(m.contains("(key hsm.call_timeout)"), "{m}");
        // A secret given where a number belongs: named by its key, its value never shown.
        let text = GOOD.replace(
            "token_label = \"t\"",
            "token_label = \"t\"\nsign_threads = \"S3cret\"",
        );
        let e = toml::from_str::<Config>(&text).unwrap_err();
        let m = describe_toml_error(&text, &e);
        assert!(
            m.contains("(key hsm.sign_threads)") && !m.contains("S3cret"),
            "{m}"
        );
    }

    #[test]
    fn a_refused_duration_says_why() {
        let refused = |from: &str, to: &str| {
            assert!(GOOD.contains(from), "{from}");
            let c: Config = toml::from_str(&GOOD.replace(from, to)).unwrap();
            c.validate().unwrap_err().to_string()
        };
        let e = refused(
            "token_label = \"t\"",
            "token_label = \"t\"\ncall_timeout = \"500ms\"",
        );
        assert!(
            e.contains("hsm.call_timeout") && e.contains("whole number of seconds"),
            "{e}"
        );
        let e = refused(
            "token_label = \"t\"",
            "token_label = \"t\"\ncall_timeout = \"2h\"",
        );
        assert!(e.contains("from 0s (no limit) to 1h"), "{e}");
        let e = refused("[hsm]", "[acme]\nrenew_before = \"0s\"\n[hsm]");
        assert!(
            e.contains("acme.renew_before \"0s\" must be at least 1s"),
            "{e}"
        );
    }

    #[test]
    fn the_shipped_example_parses_and_validates() {
        let text = include_str!("../../config/scaivault.example.toml");
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.limits.rsa_key_pool, 128);
        assert!(!c.csr.require_distinct_approver);
        // The example documents the defaults of [webhooks].
        assert_eq!(c.webhooks, WebhooksConfig::default());
    }

    #[test]
    fn sign_threads_is_optional_and_range_checked() {
        let c: Config = toml::from_str(GOOD).unwrap();
        assert_eq!(c.hsm.sign_threads, None, "unset: the daemon picks CPUs + 1");
        for (n, ok) in [("0", false), ("1", true), ("256", true), ("257", false)] {
            let text = GOOD.replace(
                "pin_env = \"PIN\"",
                &format!("pin_env = \"PIN\"\nsign_threads = {n}"),
            );
            let c: Config = toml::from_str(&text).unwrap();
            match c.validate() {
                Ok(()) => assert!(ok, "{n} accepted"),
                Err(e) => assert!(
                    !ok && e.to_string().contains("hsm.sign_threads"),
                    "{n}: {e}"
                ),
            }
        }
    }

    #[test]
    fn webhook_settings_are_range_checked() {
        for bad in [
            "retry_base_ms = 10",
            "retry_max_secs = 0",
            "max_attempts = 0",
            "max_attempts = 51",
            "timeout_secs = 0",
            "poll_ms = 10",
        ] {
            let c: Config = toml::from_str(&format!("{GOOD}\n[webhooks]\n{bad}\n")).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains("webhooks."), "{bad}: {e}");
        }
        let c: Config =
            toml::from_str(&format!("{GOOD}\n[webhooks]\nretry_base_ms = 300\n")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.webhooks.retry_base_ms, 300);
        assert_eq!(c.webhooks.max_attempts, 12);
    }

    #[test]
    fn tls_takes_exactly_one_form_and_the_example_forms_parse() {
        // The two commented-out forms of the shipped example, uncommented.
        let example = include_str!("../../config/scaivault.example.toml");
        let mut forms = Vec::new();
        let mut current: Option<String> = None;
        for line in example.lines() {
            if line == "# [server.tls]" {
                current = Some("[server.tls]\n".into());
            } else if let (Some(c), Some(kv)) = (current.as_mut(), line.strip_prefix("# ")) {
                if kv.contains(" = ") {
                    c.push_str(kv);
                    c.push('\n');
                    continue;
                }
                forms.extend(current.take());
            } else {
                forms.extend(current.take());
            }
        }
        assert_eq!(forms.len(), 2, "{forms:?}");
        for f in &forms {
            let c: Config = toml::from_str(&format!("{GOOD}\n{f}")).unwrap();
            c.validate().unwrap();
            assert!(c.server.tls.is_some());
        }
        let both = format!("{GOOD}\n{}role = \"x\"\n", forms[0]);
        let e = toml::from_str::<Config>(&both)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let half = format!("{GOOD}\n[server.tls]\ncert_file = \"/x.pem\"\n");
        let e = toml::from_str::<Config>(&half)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let nameless = format!("{GOOD}\n[server.tls]\nrole = \"r\"\n");
        let e = toml::from_str::<Config>(&nameless)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("to certify"), "{e}");
        let typo = format!("{GOOD}\n[server.tls]\nrole = \"r\"\ncn = \"x\"\n");
        assert!(toml::from_str::<Config>(&typo).is_err());
        let banana =
            format!("{GOOD}\n[server.tls]\nrole = \"r\"\ncommon_name = \"x\"\nttl = \"banana\"\n");
        let e = toml::from_str::<Config>(&banana)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("ttl \"banana\""), "{e}");
    }

    #[test]
    fn warnings_name_risky_settings() {
        let mut c: Config = toml::from_str(GOOD).unwrap();
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        c.server.listen = "0.0.0.0:443".parse().unwrap();
        let w = c.warnings().join("\n");
        assert!(w.contains("CAP_NET_BIND_SERVICE"), "{w}");
        assert!(w.contains("plain HTTP"), "{w}");
        c.webhooks.ca_file = PathBuf::from("/nonexistent/ca-bundle.crt");
        let w = c.warnings().join("\n");
        assert!(
            w.contains("webhooks.ca_file /nonexistent/ca-bundle.crt cannot be read"),
            "{w}"
        );
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("bundle.crt");
        std::fs::write(&not_pem, "not a bundle\n").unwrap();
        c.webhooks.ca_file = not_pem;
        c.limits.token_burst = 5;
        let w = c.warnings().join("\n");
        assert!(w.contains("bundle.crt holds no PEM certificate"), "{w}");
        assert!(
            w.contains("limits.token_burst = 5 does nothing without limits.token_rate"),
            "{w}"
        );
        c.limits.token_rate = 1;
        assert!(!c.warnings().join("\n").contains("token_burst"));
    }

    #[test]
    fn a_sqlite_path_is_absolute() {
        for (path, why) in [("", "is empty"), ("rel/x.db", "must be an absolute path")] {
            let text = GOOD.replace("path = \"/tmp/x.db\"", &format!("path = {path:?}"));
            let c: Config = toml::from_str(&text).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("storage.path") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn listeners_need_ports_of_their_own_and_files_absolute_paths() {
        let mut c: Config = toml::from_str(GOOD).unwrap();
        let port = c.server.listen.port();
        c.acme.http_challenge_listen = Some(format!("0.0.0.0:{port}").parse().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("acme.http_challenge_listen") && e.contains("share one port"),
            "{e}"
        );
        c.acme.http_challenge_listen = Some("127.0.0.1:18720".parse().unwrap());
        c.acme.tls_challenge_listen = Some("127.0.0.1:18720".parse().unwrap());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("acme.tls_challenge_listen"), "{e}");
        c.acme.tls_challenge_listen = Some("127.0.0.2:18720".parse().unwrap());
        assert!(c.validate().is_ok());
        // Another family's address beside an IPv4 wildcard: no collision; `::` takes both.
        c.acme.http_challenge_listen = Some("0.0.0.0:18721".parse().unwrap());
        c.acme.tls_challenge_listen = Some("[::1]:18721".parse().unwrap());
        assert!(c.validate().is_ok());
        c.acme.tls_challenge_listen = Some("[::]:18721".parse().unwrap());
        assert!(c.validate().is_err());
        c.acme.tls_challenge_listen = Some("127.0.0.2:18720".parse().unwrap());
        c.hsm.pin_file = Some(PathBuf::from("hsm.pin"));
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("hsm.pin_file hsm.pin must be an absolute path"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let mut c: Config = toml::from_str(GOOD).unwrap();
        c.server.public_base_url = "ftp://x/".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("public_base_url"));
    }

    #[test]
    fn the_relying_party_listener_needs_an_address_of_its_own() {
        let mut c: Config = toml::from_str(GOOD).unwrap();
        c.server.public_listen = Some(c.server.listen);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("server.public_listen must differ"), "{e}");
        let port80: SocketAddr = "0.0.0.0:80".parse().unwrap();
        c.server.public_listen = Some(port80);
        c.acme.http_challenge_listen = Some(port80);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("also an ACME challenge listener"), "{e}");
        c.acme.http_challenge_listen = None;
        c.validate().unwrap();
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.starts_with("server.public_listen uses a port below 1024")));
    }

    #[test]
    fn the_relying_party_connection_cap_is_bounded() {
        let mut c: Config = toml::from_str(GOOD).unwrap();
        assert_eq!(c.server.public_max_connections, 4096);
        for bad in [0, 1_000_001] {
            c.server.public_max_connections = bad;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("server.public_max_connections"), "{e}");
        }
        c.server.public_max_connections = 1;
        c.validate().unwrap();
    }

    #[test]
    fn the_header_timeout_is_a_bounded_duration() {
        let mut c: Config = toml::from_str(GOOD).unwrap();
        assert_eq!(c.limits.header_timeout, "10s");
        for bad in ["0s", "2h", "soon", ""] {
            c.limits.header_timeout = bad.into();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("limits.header_timeout"), "{bad}: {e}");
        }
        c.limits.header_timeout = "1s".into();
        c.validate().unwrap();
        let l = crate::limits::RateLimits::new(&c.limits);
        assert_eq!(l.header_timeout, std::time::Duration::from_secs(1));
    }
}
