//! What the HTTP API providers share: one client setup, bounded response bodies, and error
//! texts that never carry a credential.

use std::time::Duration;

use crate::DnsError;

/// The most of a response body read.
const MAX_BODY: usize = 1 << 20;
/// The most of a provider's error text kept in an error.
const MAX_ERROR_TEXT: usize = 400;

/// An HTTP client: rustls with the system's roots, bounded timeouts, no redirects (a redirect
/// could carry an auth header elsewhere).
pub(crate) fn client() -> Result<reqwest::Client, DnsError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("scaivault-dns/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DnsError::Provider(format!("cannot set up the HTTP client: {e}")))
}

/// Credentials that must not appear in any error text.
#[derive(Default)]
pub(crate) struct Redactor(Vec<String>);

impl Redactor {
    pub(crate) fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Redactor(
            secrets
                .into_iter()
                .map(Into::into)
                .filter(|s| s.len() >= 4)
                .collect(),
        )
    }

    /// `text` with every secret replaced, cut to a readable length.
    pub(crate) fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            out = out.replace(s.as_str(), "[redacted]");
        }
        let out = out.trim();
        if out.len() > MAX_ERROR_TEXT {
            let mut end = MAX_ERROR_TEXT;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &out[..end])
        } else {
            out.to_string()
        }
    }

    /// A transport error (connect, TLS, timeout) as a provider error.
    pub(crate) fn transport(&self, provider: &str, e: &reqwest::Error) -> DnsError {
        DnsError::Provider(format!(
            "{provider}: request failed: {}",
            self.clean(&error_chain(e))
        ))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Reads a response: its status and (bounded) body.
pub(crate) async fn body(
    provider: &str,
    redactor: &Redactor,
    mut resp: reqwest::Response,
) -> Result<(reqwest::StatusCode, Vec<u8>), DnsError> {
    let status = resp.status();
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_BODY {
                    return Err(DnsError::Provider(format!(
                        "{provider}: response body larger than {MAX_BODY} bytes"
                    )));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok((status, out)),
            Err(e) => return Err(redactor.transport(provider, &e)),
        }
    }
}
