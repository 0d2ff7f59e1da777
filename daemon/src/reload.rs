//! What `SIGHUP` may change. The configuration file is read again and checked in full; then:
//!
//! | Setting | On reload |
//! |---|---|
//! | `log.level` | applied at once (unless `RUST_LOG` is set) |
//! | `server.tls` (files re-read, or a new role-issued certificate when the section changed) | applied by restarting the HTTP listener in-process |
//! | `limits.body_bytes`, `limits.max_page`, `csr.*`, `server.shutdown_*` | applied by restarting the HTTP listener in-process |
//! | `server.listen`, `server.public_listen`, `server.public_max_connections`, `server.public_base_url`, `storage.*`, `hsm.*`, `acme.*`, `webhooks.*`, `cluster.*`, `limits.rsa_key_pool`, the rate limits (`limits.*_rate`, `limits.*_burst`), `limits.body_timeout` and `limits.header_timeout` | **not** reloadable: logged, the running value stays until a restart |
//!
//! Restarting the listener in-process: Rocket 0.5 cannot swap a listener's certificate or limits
//! while it runs, so the running server stops accepting, a new one (same token, database and
//! scheduler) binds the same address, and the old one's in-flight requests finish within
//! `shutdown_grace_secs`. Between the two, for a few milliseconds, new connections are refused.
//! Nothing is restarted when nothing the listener holds has changed.

use crate::config::Config;

/// The configuration to run with after a reload, and what it changes.
#[derive(Debug)]
pub struct Plan {
    /// `new` with the settings that cannot change put back to their running values.
    pub config: Config,
    /// One sentence per setting that changed in the file but needs a restart.
    pub not_applied: Vec<String>,
    /// Whether `log.level` changed.
    pub log_level_changed: bool,
    /// Whether a setting the HTTP listener holds changed (TLS material is compared separately).
    pub listener_changed: bool,
}

/// Compares the running configuration with the one just read.
pub fn plan(running: &Config, new: Config) -> Plan {
    let mut config = new;
    let mut not_applied = Vec::new();
    let mut keep = |what: &str, changed: bool| {
        if changed {
            not_applied.push(format!("{what} changed: restart the service to apply it"));
        }
    };
    keep(
        "server.listen",
        config.server.listen != running.server.listen,
    );
    config.server.listen = running.server.listen;
    keep(
        "server.public_listen",
        config.server.public_listen != running.server.public_listen,
    );
    config.server.public_listen = running.server.public_listen;
    keep(
        "server.public_max_connections",
        config.server.public_max_connections != running.server.public_max_connections,
    );
    config.server.public_max_connections = running.server.public_max_connections;
    keep(
        "server.public_base_url",
        config.server.public_base_url != running.server.public_base_url,
    );
    config.server.public_base_url = running.server.public_base_url.clone();
    keep("[storage]", config.storage != running.storage);
    config.storage = running.storage.clone();
    keep("[hsm]", config.hsm != running.hsm);
    config.hsm = running.hsm.clone();
    keep("[acme]", config.acme != running.acme);
    config.acme = running.acme.clone();
    // The delivery worker holds its settings from the start.
    keep("[webhooks]", config.webhooks != running.webhooks);
    config.webhooks = running.webhooks.clone();
    // The node's name and lease are the cluster task's from the start.
    keep("[cluster]", config.cluster != running.cluster);
    config.cluster = running.cluster.clone();
    keep(
        "limits.rsa_key_pool",
        config.limits.rsa_key_pool != running.limits.rsa_key_pool,
    );
    config.limits.rsa_key_pool = running.limits.rsa_key_pool;
    // The rate buckets and the body timeout live in the application state shared by listeners.
    let rates = |l: &crate::config::LimitsConfig| {
        (
            l.token_rate,
            l.token_burst,
            l.tenant_rate,
            l.tenant_burst,
            l.public_ip_rate,
            l.public_ip_burst,
            l.body_timeout.clone(),
            l.header_timeout.clone(),
        )
    };
    keep(
        "limits.*_rate, limits.*_burst, limits.body_timeout, limits.header_timeout",
        rates(&config.limits) != rates(&running.limits),
    );
    config.limits.token_rate = running.limits.token_rate;
    config.limits.token_burst = running.limits.token_burst;
    config.limits.tenant_rate = running.limits.tenant_rate;
    config.limits.tenant_burst = running.limits.tenant_burst;
    config.limits.public_ip_rate = running.limits.public_ip_rate;
    config.limits.public_ip_burst = running.limits.public_ip_burst;
    config.limits.body_timeout = running.limits.body_timeout.clone();
    config.limits.header_timeout = running.limits.header_timeout.clone();
    let listener_changed = config.server != running.server
        || config.limits != running.limits
        || config.csr != running.csr;
    Plan {
        log_level_changed: config.log.level != running.log.level,
        listener_changed,
        config,
        not_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8200"
public_base_url = "http://127.0.0.1:8200"
[storage]
path = "/tmp/x.db"
[hsm]
token_label = "t"
pin_env = "PIN"
"#;

    fn cfg(extra: &str) -> Config {
        let c: Config = toml::from_str(&format!("{BASE}{extra}")).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn reloadable_settings_apply_and_the_rest_is_kept() {
        let running = cfg("");
        let same = plan(&running, cfg(""));
        assert!(!same.listener_changed && !same.log_level_changed && same.not_applied.is_empty());

        let p = plan(&running, cfg("[log]\nlevel = \"debug\"\n"));
        assert!(p.log_level_changed && !p.listener_changed);

        let p = plan(&running, cfg("[limits]\nbody_bytes = 4096\n"));
        assert!(p.listener_changed);
        assert_eq!(p.config.limits.body_bytes, 4096);

        let moved = BASE.replace("127.0.0.1:8200\"\npublic", "127.0.0.1:9300\"\npublic");
        let mut new: Config = toml::from_str(&moved).unwrap();
        new.hsm.token_label = "other".into();
        let p = plan(&running, new);
        assert_eq!(p.config.server.listen, running.server.listen);
        assert_eq!(p.config.hsm.token_label, "t");
        assert_eq!(p.not_applied.len(), 2, "{:?}", p.not_applied);
        assert!(!p.listener_changed);

        let p = plan(&running, cfg("[cluster]\nnode_name = \"renamed\"\n"));
        assert_eq!(p.config.cluster, running.cluster);
        assert!(
            p.not_applied[0].starts_with("[cluster] changed"),
            "{:?}",
            p.not_applied
        );
    }
}
