//! The `[kafka]` section of the configuration.

use super::security::{KafkaOptions, SaslMechanism, SecurityProtocol};
use flujo_actors::event::Kind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The `[kafka]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Topic that carries sales.
    pub sales_topic: String,
    /// Topic that carries tweets.
    pub tweets_topic: String,
    /// Partitions of a topic created at start (an existing topic is left as it is).
    pub partitions: i32,
    /// Replication factor of a topic created at start.
    pub replication: i32,
    /// Consumer group of the consumer role; every consumer process joins it.
    pub group_id: String,
    /// Idempotent producer (`enable.idempotence`): a broker-side guard against
    /// duplicates from producer retries. Off by default because tansu 0.6, the
    /// broker the tests run on, panics on some idempotent produce requests
    /// (tansu-storage lite.rs:503) and then stops serving; turn it on with a real
    /// Kafka. flujo's consumers dedup by event id either way, so a retried message
    /// is never counted twice.
    pub idempotence: bool,
    /// How long the producer waits to fill a batch before sending it, in ms
    /// (librdkafka `linger.ms`; higher = fewer, larger requests).
    pub linger_ms: u32,
    /// Most messages handed to the aggregator in one delivery.
    pub batch_max: usize,
    /// How long the consumer keeps gathering a delivery after its first message, in ms.
    pub poll_linger_ms: u64,
    /// How the consumer gets its partitions: `all` (the default: this process
    /// reads every partition of its topics, with no group membership), `K/N`
    /// (member K of N, counted from 0, reads the partitions p with p mod N = K,
    /// e.g. a StatefulSet ordinal), or `group` (the broker's group coordinator
    /// shares the partitions among the group's members and rebalances them). The
    /// first two never wait on the coordinator, so a restarted consumer resumes at
    /// once (as Flink's and Spark's Kafka sources assign partitions themselves).
    /// Exactness does not depend on the choice: positions are stored with the
    /// KPIs, and the group's committed offsets only serve lag monitoring.
    pub assignment: String,
    /// `group` assignment: the member's session timeout in ms (librdkafka
    /// `session.timeout.ms`): how long the coordinator waits for a silent member
    /// before giving its partitions to others.
    pub session_timeout_ms: u32,
    /// `group` assignment: static membership (`group.instance.id`), e.g. the pod
    /// name. A member restarted with
    /// the same id gets its partitions back without a rebalance. Empty: dynamic.
    /// Each source appends `-{topic}`, so the two kinds' members stay apart.
    pub group_instance_id: String,
    /// How the clients talk to the brokers: `plaintext` (the default), `ssl`,
    /// `sasl_plaintext` or `sasl_ssl` (librdkafka `security.protocol`).
    pub security_protocol: SecurityProtocol,
    /// PEM file of the CA(s) that signed the brokers' certificates (`ssl`,
    /// `sasl_ssl`); unset: the system's CA bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `ssl_key_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_certificate_file: Option<PathBuf>,
    /// PEM private key of `ssl_certificate_file` (unencrypted, or with
    /// `kafka.options."ssl.key.password"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_key_file: Option<PathBuf>,
    /// SASL mechanism (`sasl_plaintext`, `sasl_ssl`): `PLAIN`, `SCRAM-SHA-256` or
    /// `SCRAM-SHA-512`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    /// File holding the SASL password (a trailing newline dropped); unset: the
    /// variable `FLUJO_KAFKA_SASL_PASSWORD`. The password is never a configuration
    /// value, so `flujo config` shows only this path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_password_file: Option<PathBuf>,
    /// librdkafka properties set verbatim on every client, after flujo's own
    /// (`[kafka.options]`); properties flujo owns are refused.
    pub options: KafkaOptions,
}

/// How a Kafka source gets its partitions (`kafka.assignment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// The group coordinator assigns partitions (subscribe).
    Group,
    /// Partitions p with p mod `count` = `member` (every one when `count` is 1),
    /// assigned by the process itself.
    Static {
        /// This process's number, from 0.
        member: u32,
        /// How many processes share the partitions.
        count: u32,
    },
}

impl Assignment {
    /// Parses `group`, `all` or `K/N`.
    pub fn parse(text: &str) -> Result<Assignment, String> {
        let text = text.trim();
        match text {
            "group" | "" => return Ok(Assignment::Group),
            "all" => {
                return Ok(Assignment::Static {
                    member: 0,
                    count: 1,
                })
            }
            _ => {}
        }
        let parsed = text.split_once('/').and_then(|(k, n)| {
            Some((k.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((member, count)) if count >= 1 && member < count => {
                Ok(Assignment::Static { member, count })
            }
            _ => Err(format!(
                "{text:?} is not `group`, `all` or `K/N` with 0 <= K < N"
            )),
        }
    }

    /// The partitions of a topic of `partitions` this process reads (static only).
    pub fn partitions(self, partitions: i32) -> Vec<i32> {
        match self {
            Assignment::Group => Vec::new(),
            Assignment::Static { member, count } => (0..partitions)
                .filter(|p| *p as u32 % count == member)
                .collect(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            sales_topic: "sales".into(),
            tweets_topic: "tweets".into(),
            partitions: 3,
            replication: 1,
            group_id: "flujo-consumer".into(),
            idempotence: false,
            linger_ms: 5,
            batch_max: 1000,
            poll_linger_ms: 5,
            assignment: "all".into(),
            session_timeout_ms: 45_000,
            group_instance_id: String::new(),
            security_protocol: SecurityProtocol::Plaintext,
            ssl_ca_file: None,
            ssl_certificate_file: None,
            ssl_key_file: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            options: KafkaOptions::default(),
        }
    }
}

impl KafkaConfig {
    /// The topic that carries events of `kind`.
    pub fn topic(&self, kind: Kind) -> &str {
        kind.pick(&self.sales_topic, &self.tweets_topic)
    }

    /// Checks the values; the error names the offending key (`kafka.KEY`).
    pub fn check(&self) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("kafka.{key}: {why}"));
        if self.brokers.trim().is_empty() {
            return bad("brokers", "must name at least one host:port");
        }
        for (key, topic) in [
            ("sales_topic", &self.sales_topic),
            ("tweets_topic", &self.tweets_topic),
        ] {
            let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if topic.is_empty() || topic.len() > 249 || !topic.chars().all(legal) {
                return bad(key, "must be 1-249 characters of [a-zA-Z0-9._-]");
            }
        }
        if self.sales_topic == self.tweets_topic {
            return bad("tweets_topic", "must differ from kafka.sales_topic");
        }
        if self.partitions < 1 {
            return bad("partitions", "must be at least 1");
        }
        if self.replication < 1 {
            return bad("replication", "must be at least 1");
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id", "must not be empty");
        }
        if self.linger_ms > 900_000 {
            return bad("linger_ms", "must be at most 900000");
        }
        if self.batch_max < 1 {
            return bad("batch_max", "must be at least 1");
        }
        if let Err(why) = Assignment::parse(&self.assignment) {
            return bad("assignment", &why);
        }
        if !(1_000..=3_600_000).contains(&self.session_timeout_ms) {
            return bad("session_timeout_ms", "must be 1000-3600000");
        }
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if !self.group_instance_id.chars().all(legal) || self.group_instance_id.len() > 200 {
            return bad(
                "group_instance_id",
                "must be at most 200 characters of [a-zA-Z0-9._-]",
            );
        }
        self.check_security()
    }

    /// The parsed `assignment` (checked by [`KafkaConfig::check`]; `group` if bad).
    pub fn assignment(&self) -> Assignment {
        Assignment::parse(&self.assignment).unwrap_or(Assignment::Group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_checks() {
        let c = KafkaConfig::default();
        assert_eq!(c.brokers, "127.0.0.1:9092");
        assert_eq!(
            (c.topic(Kind::Sale), c.topic(Kind::Tweet)),
            ("sales", "tweets")
        );
        assert_eq!(c.check(), Ok(()));
        let bad = KafkaConfig {
            partitions: 0,
            ..KafkaConfig::default()
        };
        assert!(bad.check().expect_err("bad").contains("kafka.partitions"));
        let bad = KafkaConfig {
            tweets_topic: "sales".into(),
            ..KafkaConfig::default()
        };
        assert!(bad.check().expect_err("bad").contains("kafka.tweets_topic"));
        let bad = KafkaConfig {
            sales_topic: "a b".into(),
            ..KafkaConfig::default()
        };
        assert!(bad.check().expect_err("bad").contains("kafka.sales_topic"));
        let bad = KafkaConfig {
            assignment: "3/3".into(),
            ..KafkaConfig::default()
        };
        assert!(bad.check().expect_err("bad").contains("kafka.assignment"));
    }

    #[test]
    fn assignments_parse_and_split_partitions() {
        assert_eq!(Assignment::parse("group"), Ok(Assignment::Group));
        let all = Assignment::parse("all").expect("all");
        assert_eq!(all.partitions(3), vec![0, 1, 2]);
        let second = Assignment::parse("1/2").expect("1/2");
        assert_eq!(second.partitions(6), vec![1, 3, 5]);
        assert_eq!(
            Assignment::parse(" 0 / 4 ").expect("0/4").partitions(2),
            vec![0]
        );
        for bad in ["2/2", "x/2", "1/0", "-1/2", "some"] {
            assert!(Assignment::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let parsed: KafkaConfig =
            serde_json::from_str(r#"{"brokers":"k:9092","batch_max":5}"#).expect("valid");
        assert_eq!((parsed.brokers.as_str(), parsed.batch_max), ("k:9092", 5));
        assert_eq!(parsed.group_id, "flujo-consumer");
        let err = serde_json::from_str::<KafkaConfig>(r#"{"broker":"k"}"#).expect_err("typo");
        assert!(err.to_string().contains("broker"), "{err}");
    }
}
