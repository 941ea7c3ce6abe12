//! The `[valkey]` section of the configuration (used when `store` is a `valkey://`
//! URL).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "flujo:";

/// Valkey store settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValkeyConfig {
    /// Prefix of every key flujo writes.
    pub prefix: String,
    /// Connections to the server: each is one multiplexed, self-reconnecting
    /// connection, and calls take them in turn.
    pub pool_size: usize,
    /// PEM file of the CA(s) that signed the server's certificate, for a
    /// `valkeys://` (or `rediss://`) store; unset: the system's CA store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for ValkeyConfig {
    fn default() -> Self {
        ValkeyConfig {
            prefix: DEFAULT_PREFIX.into(),
            pool_size: 8,
            ca_file: None,
        }
    }
}

impl ValkeyConfig {
    /// Checks the values (the reason names both keys).
    pub fn check(&self) -> Result<(), String> {
        if self.prefix.is_empty() || self.pool_size == 0 {
            return Err("prefix must not be empty and pool_size must be > 0".into());
        }
        Ok(())
    }
}
