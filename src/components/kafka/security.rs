//! How flujo's Kafka clients reach a secured cluster: TLS (`kafka.security_protocol`
//! `ssl`, with an optional private CA and client certificate), SASL (`PLAIN`,
//! `SCRAM-SHA-256`, `SCRAM-SHA-512`, the password read from a file or the
//! environment, never from the configuration), and `kafka.options`, librdkafka
//! properties passed through verbatim after flujo's own.

use super::KafkaConfig;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The environment variable a SASL password may come from when
/// `kafka.sasl_password_file` is not set (it is no configuration key, so it never
/// shows in `flujo config`).
pub const SASL_PASSWORD_ENV: &str = "FLUJO_KAFKA_SASL_PASSWORD";

/// What `flujo config` shows instead of a secret.
const MASK: &str = "****";

/// `kafka.security_protocol`: how the clients talk to the brokers (librdkafka
/// `security.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// Plain TCP, no authentication (the default).
    #[default]
    #[serde(alias = "PLAINTEXT")]
    Plaintext,
    /// TLS; the client authenticates with a certificate when one is configured.
    #[serde(alias = "SSL")]
    Ssl,
    /// SASL over plain TCP.
    #[serde(alias = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL over TLS (Confluent Cloud, Amazon MSK, Strimzi's SCRAM listeners).
    #[serde(alias = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name of the protocol.
    pub fn librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection is TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `kafka.sasl_mechanism` (librdkafka `sasl.mechanisms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// User name and password in the clear (use it over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name, as librdkafka and brokers spell it.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// librdkafka properties flujo sets itself, each with the setting to use instead
/// (or why it is not settable): `kafka.options` may not name them.
const OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.brokers"),
    ("metadata.broker.list", "set kafka.brokers"),
    ("group.id", "set kafka.group_id"),
    ("group.instance.id", "set kafka.group_instance_id"),
    (
        "enable.auto.commit",
        "flujo commits only what the store applied",
    ),
    (
        "enable.auto.offset.store",
        "flujo commits only what the store applied",
    ),
    (
        "auto.offset.reset",
        "flujo resumes at the positions stored with the KPIs",
    ),
    ("partition.assignment.strategy", "set kafka.assignment"),
    ("session.timeout.ms", "set kafka.session_timeout_ms"),
    ("statistics.interval.ms", "flujo's consumer lag needs it"),
    ("enable.idempotence", "set kafka.idempotence"),
    (
        "max.in.flight.requests.per.connection",
        "set kafka.idempotence: without it one request in flight keeps each key's order",
    ),
    (
        "max.in.flight",
        "set kafka.idempotence: without it one request in flight keeps each key's order",
    ),
    ("acks", "flujo publishes with acks=all"),
    ("request.required.acks", "flujo publishes with acks=all"),
    ("linger.ms", "set kafka.linger_ms"),
    ("queue.buffering.max.ms", "set kafka.linger_ms"),
    ("message.timeout.ms", "set deadlines.durable_ack_ms"),
    ("delivery.timeout.ms", "set deadlines.durable_ack_ms"),
    ("security.protocol", "set kafka.security_protocol"),
    ("sasl.mechanism", "set kafka.sasl_mechanism"),
    ("sasl.mechanisms", "set kafka.sasl_mechanism"),
    ("sasl.username", "set kafka.sasl_username"),
    ("sasl.password", "set kafka.sasl_password_file"),
    ("ssl.ca.location", "set kafka.ssl_ca_file"),
    ("ssl.certificate.location", "set kafka.ssl_certificate_file"),
    ("ssl.key.location", "set kafka.ssl_key_file"),
];

/// `kafka.options`: librdkafka properties (`socket.keepalive.enable`,
/// `ssl.endpoint.identification.algorithm`, …) set verbatim on every client after
/// flujo's own. Values may be written as text, numbers or booleans; nested tables
/// (TOML's dotted keys, `FLUJO__KAFKA__OPTIONS__A.B`) are joined with dots. Values
/// that may hold a secret are masked when shown ([`KafkaOptions::is_secret`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaOptions(pub BTreeMap<String, String>);

impl KafkaOptions {
    /// Whether the value of `key` may be a secret (masked when shown): passwords,
    /// secrets, tokens, credentials, inline keys and certificates' keys
    /// (`ssl.key.pem`, `ssl.keystore.*`), JAAS and OAUTHBEARER configurations. A
    /// `*.location` (a path) is shown.
    pub fn is_secret(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        if key.ends_with(".location") {
            return false;
        }
        [
            "password",
            "secret",
            "token",
            "credential",
            "key",
            "jaas",
            "oauthbearer.config",
        ]
        .iter()
        .any(|word| key.contains(word))
    }

    /// The same options with secret values replaced by `****`.
    pub fn masked(&self) -> KafkaOptions {
        KafkaOptions(
            self.0
                .iter()
                .map(|(k, v)| {
                    let shown = if Self::is_secret(k) { MASK } else { v.as_str() };
                    (k.clone(), shown.to_owned())
                })
                .collect(),
        )
    }

    /// The first key flujo owns, with what to do instead.
    fn owned_key(&self) -> Option<(&str, &'static str)> {
        self.0.keys().find_map(|key| {
            OWNED
                .iter()
                .find(|(owned, _)| key.eq_ignore_ascii_case(owned))
                .map(|(_, instead)| (key.as_str(), *instead))
        })
    }
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.masked().0.iter()).finish()
    }
}

impl Serialize for KafkaOptions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// A value of `kafka.options` as written: text, a number, a boolean, or a nested
/// table (a dotted key split by TOML or by the environment's `__`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawOption {
    Text(String),
    Bool(bool),
    Integer(i64),
    Float(f64),
    Table(BTreeMap<String, RawOption>),
}

fn flatten(prefix: &str, raw: RawOption, into: &mut BTreeMap<String, String>) {
    let value = match raw {
        RawOption::Text(text) => text,
        RawOption::Bool(b) => b.to_string(),
        RawOption::Integer(i) => i.to_string(),
        RawOption::Float(x) => x.to_string(),
        RawOption::Table(table) => {
            for (key, raw) in table {
                flatten(&format!("{prefix}.{key}"), raw, into);
            }
            return;
        }
    };
    into.insert(prefix.to_owned(), value);
}

impl<'de> Deserialize<'de> for KafkaOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = BTreeMap::<String, RawOption>::deserialize(deserializer)?;
        let mut flat = BTreeMap::new();
        for (key, raw) in table {
            flatten(&key, raw, &mut flat);
        }
        Ok(KafkaOptions(flat))
    }
}

/// Reads a secret file: its text, a trailing newline dropped (what `kubectl create
/// secret --from-file` and `echo > file` leave).
fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

/// Checks that `path` is a readable file (a certificate or key librdkafka loads).
fn readable(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl KafkaConfig {
    /// The SASL password: the file `kafka.sasl_password_file`, else the variable
    /// [`SASL_PASSWORD_ENV`]; the error names the key.
    pub fn sasl_password(&self) -> Result<String, String> {
        match &self.sasl_password_file {
            Some(path) => {
                read_secret(path).map_err(|why| format!("kafka.sasl_password_file: {why}"))
            }
            None => match std::env::var(SASL_PASSWORD_ENV) {
                Ok(password) if !password.is_empty() => Ok(password),
                _ => Err(format!(
                    "kafka.sasl_password_file: must be set (or the variable {SASL_PASSWORD_ENV}) \
                     with kafka.security_protocol {}",
                    self.security_protocol.librdkafka()
                )),
            },
        }
    }

    /// Checks the security settings together; the error names the key.
    pub(super) fn check_security(&self) -> Result<(), String> {
        let protocol = self.security_protocol;
        let tls_files = [
            ("ssl_ca_file", &self.ssl_ca_file),
            ("ssl_certificate_file", &self.ssl_certificate_file),
            ("ssl_key_file", &self.ssl_key_file),
        ];
        for (key, file) in tls_files {
            let Some(path) = file else { continue };
            if !protocol.tls() {
                return Err(format!(
                    "kafka.{key}: needs kafka.security_protocol ssl or sasl_ssl (it is {})",
                    protocol.librdkafka()
                ));
            }
            readable(path).map_err(|why| format!("kafka.{key}: {why}"))?;
        }
        if let Some(path) = &self.ssl_ca_file {
            crate::transports::tls::check_ca_file(path)
                .map_err(|why| format!("kafka.ssl_ca_file: {why}"))?;
        }
        match (&self.ssl_certificate_file, &self.ssl_key_file) {
            (Some(_), None) => {
                return Err(
                    "kafka.ssl_key_file: must be set with kafka.ssl_certificate_file".into(),
                )
            }
            (None, Some(_)) => {
                return Err(
                    "kafka.ssl_certificate_file: must be set with kafka.ssl_key_file".into(),
                )
            }
            _ => {}
        }
        let sasl_keys = [
            ("sasl_mechanism", self.sasl_mechanism.is_some()),
            ("sasl_username", self.sasl_username.is_some()),
            ("sasl_password_file", self.sasl_password_file.is_some()),
        ];
        if protocol.sasl() {
            if self.sasl_mechanism.is_none() {
                return Err(format!(
                    "kafka.sasl_mechanism: must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with \
                     kafka.security_protocol {}",
                    protocol.librdkafka()
                ));
            }
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "kafka.sasl_username: must be set with kafka.security_protocol {}",
                    protocol.librdkafka()
                ));
            }
            self.sasl_password()?;
        } else if let Some((key, _)) = sasl_keys.iter().find(|(_, set)| *set) {
            return Err(format!(
                "kafka.{key}: needs kafka.security_protocol sasl_plaintext or sasl_ssl (it is {})",
                protocol.librdkafka()
            ));
        }
        if let Some((key, instead)) = self.options.owned_key() {
            return Err(format!(
                "kafka.options: `{key}` is set by flujo itself ({instead})"
            ));
        }
        if let Some(key) = self.options.0.keys().find(|k| k.trim().is_empty()) {
            return Err(format!("kafka.options: empty property name {key:?}"));
        }
        // librdkafka checks every name and value as it would at start.
        let mut dry = ClientConfig::new();
        dry.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.options.0 {
            dry.set(key, value);
        }
        dry.create_native_config().map(drop).map_err(|e| match e {
            KafkaError::ClientConfig(_, description, key, value) => {
                let shown = if KafkaOptions::is_secret(&key) {
                    MASK.to_owned()
                } else {
                    format!("{value:?}")
                };
                format!("kafka.options: `{key}` = {shown}: {description}")
            }
            other => format!("kafka.options: {other}"),
        })
    }

    /// Sets the security properties on `client`: protocol, TLS files, SASL.
    pub(super) fn apply_security(&self, client: &mut ClientConfig) -> Result<(), String> {
        let protocol = self.security_protocol;
        client.set("security.protocol", protocol.librdkafka());
        if protocol.tls() {
            match &self.ssl_ca_file {
                Some(ca) => client.set("ssl.ca.location", ca.display().to_string()),
                // The usual CA bundle paths (e.g. /etc/ssl/certs/ca-certificates.crt),
                // whatever OpenSSL's own default directory is.
                None => client.set("ssl.ca.location", "probe"),
            };
            if let (Some(cert), Some(key)) = (&self.ssl_certificate_file, &self.ssl_key_file) {
                client
                    .set("ssl.certificate.location", cert.display().to_string())
                    .set("ssl.key.location", key.display().to_string());
            }
        }
        if protocol.sasl() {
            let mechanism = self.sasl_mechanism.unwrap_or(SaslMechanism::Plain);
            client
                .set("sasl.mechanisms", mechanism.name())
                .set(
                    "sasl.username",
                    self.sasl_username.clone().unwrap_or_default(),
                )
                .set("sasl.password", self.sasl_password()?);
        }
        Ok(())
    }

    /// Sets `kafka.options` on `client`, last, so they win over flujo's tuning.
    pub(super) fn apply_options(&self, client: &mut ClientConfig) {
        for (key, value) in &self.options.0 {
            client.set(key, value);
        }
        // Options that turn off checking who the broker is: allowed (a test
        // cluster), but never silently.
        let unchecked = self.options.0.iter().any(|(key, value)| {
            (key == "enable.ssl.certificate.verification" && value == "false")
                || (key == "ssl.endpoint.identification.algorithm" && value == "none")
        });
        static WARNED: std::sync::Once = std::sync::Once::new();
        if unchecked {
            WARNED.call_once(|| {
                tracing::warn!(
                    "kafka.options turn off the check of the brokers' certificates: \
                     anyone on the path can pose as a broker"
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn secret_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    #[test]
    fn options_flatten_nested_tables_and_typed_values() {
        let parsed: KafkaConfig = toml::from_str(
            "[options]\nsocket.keepalive.enable = true\n\"fetch.wait.max.ms\" = 50\n\
             \"client.rack\" = \"eu-1a\"\n",
        )
        .expect("options");
        let want: BTreeMap<String, String> = [
            ("client.rack", "eu-1a"),
            ("fetch.wait.max.ms", "50"),
            ("socket.keepalive.enable", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(parsed.options.0, want);
        assert_eq!(parsed.check(), Ok(()));
    }

    #[test]
    fn owned_and_bad_options_are_refused_naming_the_key() {
        let with = |key: &str, value: &str| KafkaConfig {
            options: KafkaOptions([(key.to_owned(), value.to_owned())].into()),
            ..KafkaConfig::default()
        };
        let err = with("group.id", "x").check().expect_err("owned");
        assert!(
            err.contains("kafka.options") && err.contains("group.id"),
            "{err}"
        );
        assert!(err.contains("kafka.group_id"), "{err}");
        let err = with("Bootstrap.Servers", "x").check().expect_err("owned");
        assert!(err.contains("kafka.brokers"), "{err}");
        let err = with("socket.timeout.ms", "soon")
            .check()
            .expect_err("bad value");
        assert!(err.contains("socket.timeout.ms"), "{err}");
        let err = with("no.such.property", "1").check().expect_err("unknown");
        assert!(err.contains("no.such.property"), "{err}");
        assert_eq!(with("socket.keepalive.enable", "true").check(), Ok(()));
    }

    #[test]
    fn secret_option_values_are_masked() {
        let options = KafkaOptions(
            [
                ("ssl.key.password", "hunter2"),
                ("sasl.oauthbearer.client.secret", "s3"),
                ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
                ("sasl.oauthbearer.config", "clientSecret=s4"),
                ("ssl.key.location", "/etc/kafka/client.key"),
                ("client.rack", "a"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let shown = format!("{options:?}");
        for secret in ["hunter2", "s3\"", "PRIVATE KEY", "s4"] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        assert!(shown.contains("\"client.rack\": \"a\""), "{shown}");
        assert!(
            shown.contains("/etc/kafka/client.key"),
            "a path is shown: {shown}"
        );
        assert_eq!(options.masked().0["ssl.key.password"], "****");
    }

    #[test]
    fn security_combinations_name_the_key() {
        let password = secret_file("pw\n");
        let sasl = KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some("flujo".into()),
            sasl_password_file: Some(password.path().to_owned()),
            ..KafkaConfig::default()
        };
        assert_eq!(sasl.check(), Ok(()));
        assert_eq!(sasl.sasl_password().as_deref(), Ok("pw"));
        let mut client = ClientConfig::new();
        sasl.apply_security(&mut client).expect("applies");
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(client.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("ssl.ca.location"), Some("probe"));

        let no_mechanism = KafkaConfig {
            sasl_mechanism: None,
            ..sasl.clone()
        };
        let err = no_mechanism.check().expect_err("mechanism");
        assert!(err.contains("kafka.sasl_mechanism"), "{err}");
        let no_user = KafkaConfig {
            sasl_username: None,
            ..sasl.clone()
        };
        assert!(no_user
            .check()
            .expect_err("user")
            .contains("kafka.sasl_username"));
        let missing = KafkaConfig {
            sasl_password_file: Some("/no/such/file".into()),
            ..sasl.clone()
        };
        let err = missing.check().expect_err("file");
        assert!(err.contains("kafka.sasl_password_file"), "{err}");
        let plaintext_sasl = KafkaConfig {
            security_protocol: SecurityProtocol::Plaintext,
            ..sasl.clone()
        };
        let err = plaintext_sasl.check().expect_err("sasl without sasl");
        assert!(err.contains("kafka.sasl_mechanism"), "{err}");
        let ca_without_tls = KafkaConfig {
            ssl_ca_file: Some(password.path().to_owned()),
            ..KafkaConfig::default()
        };
        let err = ca_without_tls.check().expect_err("ca without tls");
        assert!(err.contains("kafka.ssl_ca_file"), "{err}");
        let cert_without_key = KafkaConfig {
            security_protocol: SecurityProtocol::Ssl,
            ssl_certificate_file: Some(password.path().to_owned()),
            ..KafkaConfig::default()
        };
        let err = cert_without_key.check().expect_err("cert without key");
        assert!(err.contains("kafka.ssl_key_file"), "{err}");
    }

    #[test]
    fn protocols_and_mechanisms_parse_in_both_spellings() {
        let parsed: KafkaConfig = toml::from_str(
            "security_protocol = \"SASL_SSL\"\nsasl_mechanism = \"SCRAM-SHA-256\"\n",
        )
        .expect("upper case");
        assert_eq!(parsed.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(parsed.sasl_mechanism, Some(SaslMechanism::ScramSha256));
        let parsed: KafkaConfig =
            toml::from_str("security_protocol = \"ssl\"\n").expect("lower case");
        assert_eq!(parsed.security_protocol, SecurityProtocol::Ssl);
        assert!(toml::from_str::<KafkaConfig>("sasl_mechanism = \"GSSAPI\"\n").is_err());
    }
}
