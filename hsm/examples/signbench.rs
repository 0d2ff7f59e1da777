//! Signing throughput of a CA key on a throwaway SoftHSM2 token, through the crate's
//! [`Signer`] trait (session pool, handle cache and session copy included).
//!
//! ```text
//! cargo run --release -p scaivault-hsm --example signbench -- THREADS SECONDS [KEY]
//! ```
//!
//! `KEY` is `ec256` (default), `ec384`, `rsa2048` or `ed25519`. The program makes a token in a
//! temporary directory (its own `softhsm2.conf`), generates the key on it through
//! [`Pkcs11Token`], checks one signature, then signs a 1 KiB message from `THREADS` threads for
//! `SECONDS` seconds and prints the signatures per second and the p50/p99 latency of one
//! [`Signer::sign`] call in µs. `SCAIVAULT_HSM_NO_SESSION_COPY=1` makes the signer use the token
//! object instead of a session copy; `SCAIVAULT_PKCS11_MODULE` chooses the module (default
//! `/usr/lib/softhsm/libsofthsm2.so`).

use scaivault_hsm::pkcs11::{Pkcs11Config, Pkcs11Token};
use scaivault_hsm::{KeySpec, Signer, Token};
use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

type AnyResult<T> = Result<T, Box<dyn Error>>;

const TOKEN_LABEL: &str = "signbench";

fn usage() -> Box<dyn Error> {
    "usage: signbench THREADS SECONDS [ec256|ec384|rsa2048|ed25519]".into()
}

fn main() -> AnyResult<()> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().ok_or_else(usage)?.parse()?;
    let seconds: u64 = args.next().ok_or_else(usage)?.parse()?;
    let spec = match args.next().as_deref() {
        None | Some("ec256") => KeySpec::EcP256,
        Some("ec384") => KeySpec::EcP384,
        Some("rsa2048") => KeySpec::Rsa2048,
        Some("ed25519") => KeySpec::Ed25519,
        Some(_) => return Err(usage()),
    };
    if threads == 0 || seconds == 0 {
        return Err(usage());
    }

    // A throwaway token; SOFTHSM2_CONF must be set before the module is initialised.
    let dir = tempfile::Builder::new().prefix("signbench-").tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )?;
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let module = std::env::var_os("SCAIVAULT_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    // Throwaway PINs of a throwaway token.
    scaivault_hsm::provision::init_token(&module, TOKEN_LABEL, "87654321", "12345678")?;
    let token = Pkcs11Token::open(&Pkcs11Config {
        module,
        token_label: TOKEN_LABEL.to_owned(),
        pin: Zeroizing::new("12345678".to_owned()),
    })?;
    let signer = token.generate(spec, "bench-key")?;

    let message: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
    check(spec, signer.as_ref(), &message)?;
    for _ in 0..200 {
        signer.sign(&message)?;
    }

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let per_thread: Vec<Result<Vec<u64>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let signer = Arc::clone(&signer);
                let message = &message;
                scope.spawn(move || -> Result<Vec<u64>, String> {
                    let mut latencies = Vec::with_capacity(1 << 16);
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        signer.sign(message).map_err(|e| e.to_string())?;
                        latencies.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a signing thread panicked".to_owned()))
            })
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for result in per_thread {
        latencies.extend(result?);
    }
    latencies.sort_unstable();
    let count = latencies.len();
    if count == 0 {
        return Err("no signature made".into());
    }
    let at = |q: usize| latencies[(count * q / 100).min(count - 1)] as f64 / 1000.0;
    println!(
        "key={spec:?} threads={threads} seconds={seconds} session_copy={} signatures={count} \
         ops/s={:.0} p50={:.0}us p99={:.0}us",
        if token.session_copies_enabled() {
            "on"
        } else {
            "off"
        },
        count as f64 / elapsed,
        at(50),
        at(99),
    );
    Ok(())
}

/// Verifies one signature of `message` with the public key, so that a fast wrong answer is
/// not measured.
fn check(spec: KeySpec, signer: &dyn Signer, message: &[u8]) -> AnyResult<()> {
    use signature::Verifier;
    use spki::DecodePublicKey;
    let sig = signer.sign(message)?;
    let spki = signer.public_key_der();
    match spec {
        KeySpec::EcP256 => p256::ecdsa::VerifyingKey::from_public_key_der(spki)?
            .verify(message, &p256::ecdsa::Signature::from_der(&sig)?)?,
        KeySpec::EcP384 => p384::ecdsa::VerifyingKey::from_public_key_der(spki)?
            .verify(message, &p384::ecdsa::Signature::from_der(&sig)?)?,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(
                rsa::RsaPublicKey::from_public_key_der(spki)?,
            )
            .verify(
                message,
                &rsa::pkcs1v15::Signature::try_from(sig.as_slice())?,
            )?
        }
        KeySpec::Ed25519 => ed25519_dalek::VerifyingKey::from_public_key_der(spki)?
            .verify(message, &ed25519_dalek::Signature::from_slice(&sig)?)?,
    }
    Ok(())
}
