//! Test kit for ScaiVault's system tests: starts the real `scaivault` binary in dev mode on a free
//! port with a fresh data directory (its own SoftHSM2 token and SQLite file), and helpers to call
//! the API, run the CLI and ask `openssl` for a verdict.
