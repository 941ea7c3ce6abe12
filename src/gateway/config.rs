//! The `[auth]` and `[limits]` sections of the configuration.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[auth]`: who may call the ingest and query APIs. Off (everyone may) unless at
/// least one of `jwt_secret_file`, `jwt_public_key_file`, `jwks_file` or
/// `api_keys_file` is set. Secrets are read from the files named here, never from
/// the configuration itself, so `flujo config` shows only paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// File holding the HS256 secret (its bytes, a trailing newline dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM file of the public key checking RS256 (RSA key) or ES256 (P-256 key) tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// JWKS file (`{"keys": [...]}`): a token's `kid` picks its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// TOML file of static API keys (`[[keys]] name, key or sha256, scopes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// When set, a token's `iss` must be this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When set, a token's `aud` must contain this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// File holding the token a receiver-only process sends to its router
    /// (`router_url`) as `authorization: Bearer …`; re-read every few seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_token_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret_file: None,
            jwt_public_key_file: None,
            jwks_file: None,
            api_keys_file: None,
            leeway_secs: 30,
            issuer: None,
            audience: None,
            forward_token_file: None,
        }
    }
}

impl AuthConfig {
    /// Whether any credential source is configured, i.e. authentication is on.
    pub fn enabled(&self) -> bool {
        self.jwt_secret_file.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwks_file.is_some()
            || self.api_keys_file.is_some()
    }
}

/// `[limits]`: per-client request rates, separately for ingest and query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Ingest: HTTP ingest requests, gRPC calls and stream events, TCP event lines.
    pub ingest: ClientLimit,
    /// Query: the query API, the KPI stream and the page.
    pub query: ClientLimit,
    /// Most clients each limiter tracks at once; beyond, a new client is refused
    /// (429) until idle clients are forgotten.
    pub max_clients: usize,
}

/// One per-client limit; a rate of 0 turns it off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimit {
    /// Sustained requests per second per client; 0 = no limit.
    pub per_client_rps: u32,
    /// Requests a client may send at once above the rate; 0 = `per_client_rps`.
    pub burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            ingest: ClientLimit::default(),
            query: ClientLimit::default(),
            max_clients: 100_000,
        }
    }
}
