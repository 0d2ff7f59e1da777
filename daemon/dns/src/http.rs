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

    /// `text` with every secret replaced, cut to a readable length: the configured secrets,
    /// and whatever reads as a credential made at run time (an upstream or a proxy that echoes
    /// the request: OAuth access tokens, SigV4 signatures, JWT assertions; see
    /// [`scrub_credentials`]). Line breaks and other control characters become spaces, so that
    /// an upstream text cannot forge log lines.
    pub(crate) fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.0 {
            out = out.replace(s.as_str(), "[redacted]");
        }
        let out: String = scrub_credentials(&out)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
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

/// Markers after which a credential's value follows, lowercase; `true`: the value runs to the end
/// of its line (a whole header value: `Bearer …`, `AWS4-HMAC-SHA256 Credential=…, Signature=…`,
/// `Basic …`, also as a JSON-echoed header).
const CREDENTIAL_MARKERS: [(&str, bool); 12] = [
    ("authorization:", true),
    ("authorization\"", true),
    ("bearer ", false),
    ("access_token", false),
    ("id_token", false),
    ("refresh_token", false),
    ("assertion", false),
    ("client_secret", false),
    ("signature=", false),
    ("credential=", false),
    ("x-amz-security-token", false),
    ("private_key", false),
];

/// The most of a text [`scrub_credentials`] reads: the error keeps far less
/// ([`MAX_ERROR_TEXT`]); a value cut here is redacted up to the cut.
const SCRUBBED_PREFIX: usize = 16 * MAX_ERROR_TEXT;

/// The first [`SCRUBBED_PREFIX`] bytes of `text` with the value after each credential marker,
/// every PEM block and every JWT (`eyJ….….…`) replaced by `[redacted]`. Linear in the prefix.
pub(crate) fn scrub_credentials(text: &str) -> String {
    let mut cut_at = text.len().min(SCRUBBED_PREFIX);
    while !text.is_char_boundary(cut_at) {
        cut_at -= 1;
    }
    let text = &text[..cut_at];
    // ASCII lowercasing keeps every byte offset (and every char boundary).
    let lower = text.to_ascii_lowercase();
    let mut cut: Vec<(usize, usize)> = Vec::new();
    for (marker, to_line_end) in CREDENTIAL_MARKERS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(marker) {
            let start = from + at + marker.len();
            // Separators between the marker and its value: quotes (also JSON-escaped), `:`,
            // `=`, spaces.
            let value = start
                + text[start..]
                    .find(|c: char| !matches!(c, '"' | '\'' | '\\' | ':' | '=' | ' ' | '\t'))
                    .unwrap_or(text.len() - start);
            let end = if to_line_end {
                value
                    + text[value..]
                        .find(['\r', '\n'])
                        .unwrap_or(text.len() - value)
            } else {
                value
                    + text[value..]
                        .find(|c: char| {
                            c.is_whitespace()
                                || matches!(
                                    c,
                                    '"' | '\'' | '\\' | '&' | ',' | ';' | '}' | '<' | '>'
                                )
                        })
                        .unwrap_or(text.len() - value)
            };
            if end > value {
                cut.push((value, end));
            }
            from = end.max(start);
        }
    }
    let mut from = 0;
    while let Some(at) = text[from..].find("-----BEGIN") {
        let start = from + at;
        let end = text[start..]
            .find("-----END")
            .and_then(|e| {
                let after = start + e + "-----END".len();
                text[after..]
                    .find("-----")
                    .map(|f| after + f + "-----".len())
            })
            .unwrap_or(text.len());
        cut.push((start, end));
        from = end;
    }
    let mut from = 0;
    while let Some(at) = text[from..].find("eyJ") {
        let start = from + at;
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
                .unwrap_or(text.len() - start);
        if text[start..end].matches('.').count() >= 2 {
            cut.push((start, end));
        }
        from = end.max(start + 3);
    }
    if cut.is_empty() {
        return text.to_string();
    }
    cut.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in cut {
        if end <= at {
            continue;
        }
        out.push_str(&text[at..start.max(at)]);
        if start >= at {
            out.push_str("[redacted]");
        }
        at = end;
    }
    out.push_str(&text[at..]);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_made_at_run_time_are_scrubbed() {
        let r = Redactor::new(["configured-secret"]);
        let cases = [
            (
                "401: echo\nauthorization: Bearer ya29.LIVE-TOKEN_x\nhost: dns",
                "LIVE-TOKEN",
            ),
            ("{\"access_token\":\"ya29.ACCESS\",\"expires_in\":3599}", "ACCESS"),
            (
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2026/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=abcdef0123",
                "AKIDEXAMPLE",
            ),
            ("sig: Signature=abcdef0123&x=1", "abcdef0123"),
            (
                "grant_type=urn%3Aietf&assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl",
                "c2lnbmF0dXJl",
            ),
            ("token eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.SIGPART end", "SIGPART"),
            ("the configured-secret leaked", "configured-secret"),
            ("{\\\"access_token\\\":\\\"ya29.ESCAPED\\\"}", "ESCAPED"),
            (
                "{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n\"}",
                "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            ),
            ("{\"Authorization\":\"Basic dXNlcjpwYXNz\"}", "dXNlcjpwYXNz"),
        ];
        for (text, secret) in cases {
            let out = r.clean(text);
            assert!(!out.contains(secret), "{text:?} -> {out:?}");
            assert!(out.contains("[redacted]"), "{text:?} -> {out:?}");
            assert!(!out.contains('\n'), "{out:?}");
        }
        // Repeated markers cost linear time on a bounded prefix, and the prefix is scrubbed.
        let many = "access_token ".repeat(100_000);
        let out = scrub_credentials(&many);
        assert!(out.len() <= SCRUBBED_PREFIX, "{}", out.len());
        let long = format!(
            "{}access_token=LATE-SECRET",
            "x".repeat(SCRUBBED_PREFIX - 20)
        );
        assert!(!scrub_credentials(&long).contains("LATE-SECRET"));
        // Ordinary error texts pass unchanged.
        for text in [
            "403: zone example.org not found",
            "HTTP 500: internal error (code 13)",
            "eyJ but no dots",
        ] {
            assert_eq!(r.clean(text), text);
        }
    }
}
