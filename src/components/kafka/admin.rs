//! Topic administration: [`ensure_topics`] creates the topics at start (now, or in the
//! background while the broker is away), [`check_topics`] is the readiness check
//! shared by the sink and the source, and [`reach`] the one-shot check of `flujo
//! validate`.

use super::{client_config, create, KafkaConfig, LogContext};
use crate::components::ReachError;
use flujo_actors::backoff::Backoff;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use std::time::Duration;

/// Bound of the readiness metadata request: within the sink check's bound
/// (`components::probes::SINK_CHECK_TIMEOUT`, 1.5 s), so that a blocking request
/// never outlives the check that started it (a healthy broker answers in ms).
const READY_TIMEOUT: Duration = Duration::from_millis(1_400);
/// Bound of the topic-creation requests.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound of one topic-creation attempt at start.
const CREATE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A Kafka client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused the client configuration or could not start the client.
    #[error("kafka client: {0}")]
    Client(#[source] KafkaError),
    /// A security setting cannot be used (e.g. the SASL password file is unreadable).
    #[error("kafka settings: {0}")]
    Settings(String),
    /// The topic-creation request failed as a whole (e.g. the broker is unreachable).
    #[error("kafka admin request to {brokers}: {source}")]
    Admin {
        /// The bootstrap brokers asked.
        brokers: String,
        /// What went wrong.
        #[source]
        source: KafkaError,
    },
    /// The broker refused to create a topic.
    #[error("creating kafka topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

/// Creates the sales and tweets topics when missing, with the configured partitions
/// and replication. A topic that already exists is left as it is. Call inside a
/// tokio runtime.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), KafkaSetupError> {
    let admin: AdminClient<LogContext> =
        create(config, client_config(config)?, LogContext).map_err(KafkaSetupError::Client)?;
    let topics: Vec<NewTopic<'_>> = [&config.sales_topic, &config.tweets_topic]
        .into_iter()
        .map(|name| {
            NewTopic::new(
                name,
                config.partitions,
                TopicReplication::Fixed(config.replication),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|source| KafkaSetupError::Admin {
            brokers: config.brokers.clone(),
            source,
        })?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, partitions = config.partitions, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic, "topic exists")
            }
            Err((topic, code)) => return Err(KafkaSetupError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Creates the topics now if the broker answers, else keeps trying in the background
/// (producers and consumers wait for the topics meanwhile).
pub async fn spawn_topic_creation(config: KafkaConfig) {
    let first = tokio::time::timeout(CREATE_ATTEMPT_TIMEOUT, ensure_topics(&config)).await;
    if let Ok(Ok(())) = first {
        return;
    }
    tracing::warn!(brokers = %config.brokers, "kafka topics not created yet; retrying in the background");
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            backoff.wait().await;
            match tokio::time::timeout(CREATE_ATTEMPT_TIMEOUT, ensure_topics(&config)).await {
                Ok(Ok(())) => {
                    tracing::info!("kafka topics ready");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "creating kafka topics failed"),
                Err(_) => tracing::warn!("creating kafka topics timed out"),
            }
        }
    });
}

/// Asks the bootstrap brokers for the cluster's metadata, once, within `timeout`
/// (nothing is created): how many brokers there are and whether flujo's topics
/// exist (`flujo run` creates missing ones). Blocks: call it from `spawn_blocking`.
pub fn reach(config: &KafkaConfig, timeout: Duration) -> Result<String, ReachError> {
    let client = client_config(config).map_err(|e| ReachError::Invalid(e.to_string()))?;
    // A producer (that sends nothing): unlike an admin client it can be polled,
    // which hands librdkafka's logs and errors to the context.
    let probe: BaseProducer<ReachContext> = create(config, client, ReachContext::default())
        .map_err(|e| ReachError::Invalid(format!("kafka client: {e}")))?;
    let metadata = probe.client().fetch_metadata(None, timeout).map_err(|e| {
        // librdkafka's own reason (a failed TLS handshake, a refused login) comes
        // as a log line or an error event, not in the request's error.
        probe.poll(Duration::ZERO);
        let why = match probe.context().last_error() {
            Some(reason) => format!("; last broker error: {reason}"),
            None => String::new(),
        };
        ReachError::Unreachable(format!("no metadata within {timeout:?}: {e}{why}"))
    })?;
    let brokers = metadata.brokers().len();
    let topics: Vec<String> = [&config.sales_topic, &config.tweets_topic]
        .into_iter()
        .map(|topic| {
            let exists = metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
            if exists {
                format!("topic {topic} exists")
            } else {
                format!("topic {topic} missing (flujo run creates it)")
            }
        })
        .collect();
    Ok(format!(
        "{brokers} broker{}, {}",
        if brokers == 1 { "" } else { "s" },
        topics.join(", ")
    ))
}

/// The context of [`reach`]'s client: logs like [`LogContext`] and keeps the last
/// error librdkafka reported, to say why no metadata came.
#[derive(Default)]
struct ReachContext {
    last_error: std::sync::Mutex<Option<String>>,
}

impl ReachContext {
    fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

impl ReachContext {
    fn keep(&self, reason: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(reason);
        }
    }
}

impl ProducerContext for ReachContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl ClientContext for ReachContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        LogContext.log(level, fac, log_message);
        // Errors reach the log at once (the error callback only when polled):
        // "…/bootstrap: SASL authentication error: …", "SSL handshake failed: …".
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            let reason = log_message
                .strip_prefix("[thrd:")
                .map_or(log_message, |rest| {
                    rest.split_once("]: ").map_or(rest, |(_, reason)| reason)
                });
            self.keep(reason.to_owned());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.keep(format!("{error}: {reason}"));
    }
}

/// Checks that the broker answers a metadata request and that every topic of
/// `topics` exists with partitions (readiness of a producer or a consumer). Blocks
/// for up to a few seconds: call it from `spawn_blocking`.
pub(super) fn check_topics<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
) -> Result<(), String> {
    let metadata = client
        .fetch_metadata(None, READY_TIMEOUT)
        .map_err(|e| format!("kafka broker not answering: {e}"))?;
    for topic in topics {
        let found = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !found {
            return Err(format!("kafka topic {topic} is missing"));
        }
    }
    Ok(())
}
