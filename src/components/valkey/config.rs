//! The `[valkey]` section of the configuration (used when `store` is a `valkey://`
//! URL).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The most shards a store may have (each is read by every query).
pub const MAX_SHARDS: usize = 1024;

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
    /// Independent key sets the KPIs are kept in, each under its own hash tag
    /// (`{prefix}{n}:`) so that they spread over a Valkey Cluster's nodes; queries
    /// merge them. Unset: 1 on a standalone server (the plain `{prefix}` keys), 12
    /// on a cluster. An event goes to the shard of its product or location (the
    /// partition murmur2 gives its key among `shards`): a count that divides the
    /// topics' partition count keeps each partition's events in one shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
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
            shards: None,
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
        if self.prefix.contains(['{', '}']) {
            return Err(
                "prefix must not contain `{` or `}` (shards put a hash tag after it)".into(),
            );
        }
        if let Some(shards) = self.shards {
            if !(1..=MAX_SHARDS).contains(&shards) {
                return Err(format!("shards must be 1 to {MAX_SHARDS}, not {shards}"));
            }
        }
        Ok(())
    }
}
