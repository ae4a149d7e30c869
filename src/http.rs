//! The one HTTP agent: TLS roots, timeouts, retries, per-host credentials.
