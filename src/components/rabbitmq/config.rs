//! The `[rabbitmq]` section of the configuration.

use crate::components::{mask_url_password, read_ca_pem};
use flujo_actors::event::Kind;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// RabbitMQ settings (config section `[rabbitmq]`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RabbitConfig {
    /// AMQP URL, `amqp://user:password@host:port/vhost` (vhost `/` is `%2f`), or
    /// `amqps://…` for TLS (port 5671 unless given). The password is masked when shown.
    pub url: String,
    /// PEM file of the CA(s) that signed the broker's certificate (`amqps://`), in
    /// addition to the system's CA store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Queue that carries sales (declared durable at start when missing).
    pub sales_queue: String,
    /// Queue that carries tweets (declared durable at start when missing).
    pub tweets_queue: String,
    /// Consumer prefetch: unacked messages RabbitMQ may have in flight to one
    /// consumer. Keep it at least `batch_max` (twice is good: the next batch fills
    /// while the previous one is being stored).
    pub prefetch: u16,
    /// Most messages (events) a consumer gathers into one batch.
    pub batch_max: usize,
    /// How long a consumer waits for more messages after the first one of a batch, in ms.
    pub batch_linger_ms: u64,
}

impl Default for RabbitConfig {
    fn default() -> Self {
        RabbitConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            ca_file: None,
            sales_queue: "sales".into(),
            tweets_queue: "tweets".into(),
            prefetch: 1000,
            batch_max: 500,
            batch_linger_ms: 5,
        }
    }
}

impl fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("url", &mask_url_password(&self.url))
            .field("ca_file", &self.ca_file)
            .field("sales_queue", &self.sales_queue)
            .field("tweets_queue", &self.tweets_queue)
            .field("prefetch", &self.prefetch)
            .field("batch_max", &self.batch_max)
            .field("batch_linger_ms", &self.batch_linger_ms)
            .finish()
    }
}

impl RabbitConfig {
    /// The queue that carries events of `kind`.
    pub fn queue(&self, kind: Kind) -> &str {
        kind.pick(&self.sales_queue, &self.tweets_queue)
    }

    /// Checks the values a broker would refuse or that make no sense, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.url.starts_with("amqp://") && !self.url.starts_with("amqps://") {
            return Err(format!(
                "rabbitmq.url must be an amqp:// or amqps:// URL, got {}",
                mask_url_password(&self.url)
            ));
        }
        if let Some(path) = &self.ca_file {
            if !self.tls() {
                return Err("rabbitmq.ca_file needs an amqps:// rabbitmq.url".into());
            }
            read_ca_pem(path).map_err(|why| format!("rabbitmq.ca_file: {why}"))?;
        }
        if self.url.parse::<lapin::uri::AMQPUri>().is_err() {
            return Err(format!(
                "rabbitmq.url is not a valid AMQP URL: {}",
                mask_url_password(&self.url)
            ));
        }
        for (key, queue) in [
            ("rabbitmq.sales_queue", &self.sales_queue),
            ("rabbitmq.tweets_queue", &self.tweets_queue),
        ] {
            if queue.is_empty() || queue.len() > 255 || queue.starts_with("amq.") {
                return Err(format!(
                    "{key} must be 1-255 bytes and not start with `amq.`, got {queue:?}"
                ));
            }
        }
        if self.sales_queue == self.tweets_queue {
            return Err("rabbitmq.sales_queue and rabbitmq.tweets_queue must differ".into());
        }
        if self.prefetch == 0 {
            return Err("rabbitmq.prefetch must be at least 1".into());
        }
        if self.batch_max == 0 {
            return Err("rabbitmq.batch_max must be at least 1".into());
        }
        Ok(())
    }

    /// Whether the URL asks for TLS (`amqps://`).
    pub fn tls(&self) -> bool {
        self.url.starts_with("amqps://")
    }

    /// The TLS settings of a connection: `ca_file`'s certificates trusted on top
    /// of the system's. Read at every connect, so a renewed CA is picked up by the
    /// next reconnect.
    pub fn tls_config(&self) -> Result<lapin::tcp::OwnedTLSConfig, String> {
        let cert_chain = match &self.ca_file {
            Some(path) => {
                Some(read_ca_pem(path).map_err(|why| format!("rabbitmq.ca_file: {why}"))?)
            }
            None => None,
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let config = RabbitConfig::default();
        assert_eq!(config.queue(Kind::Sale), "sales");
        assert_eq!(config.queue(Kind::Tweet), "tweets");
        assert!(config.validate().is_ok());
        assert!(!format!("{config:?}").contains("guest:guest"));
        let bad = RabbitConfig {
            tweets_queue: "sales".into(),
            ..RabbitConfig::default()
        };
        assert!(bad.validate().is_err());
        let tls = RabbitConfig {
            url: "amqps://u:p@h/".into(),
            ..RabbitConfig::default()
        };
        assert!(tls.validate().is_ok() && tls.tls());
        let bad = RabbitConfig {
            url: "http://h/".into(),
            ..RabbitConfig::default()
        };
        assert!(bad.validate().expect_err("http").contains("rabbitmq.url"));
        let ca_without_tls = RabbitConfig {
            ca_file: Some("/etc/hostname".into()),
            ..RabbitConfig::default()
        };
        let err = ca_without_tls.validate().expect_err("ca without tls");
        assert!(err.contains("rabbitmq.ca_file"), "{err}");
        let missing_ca = RabbitConfig {
            ca_file: Some("/no/such/ca.pem".into()),
            ..tls
        };
        let err = missing_ca.validate().expect_err("missing ca");
        assert!(
            err.contains("rabbitmq.ca_file") && err.contains("/no/such/ca.pem"),
            "{err}"
        );
        let parsed: RabbitConfig =
            serde_json::from_str(r#"{"prefetch": 10}"#).expect("partial config");
        assert_eq!((parsed.prefetch, parsed.batch_max), (10, 500));
        assert!(serde_json::from_str::<RabbitConfig>(r#"{"prefetc": 10}"#).is_err());
    }
}
