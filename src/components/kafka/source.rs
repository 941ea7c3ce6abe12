//! [`KafkaSource`]: reads one topic (partitions taken by `kafka.assignment`: all,
//! K/N, or the consumer group's), resumes at the positions stored with the KPIs,
//! and commits a delivery's offsets only once the aggregator stored it (see the
//! guarantees in [`super`]).

use super::admin::check_topics;
use super::config::Assignment;
use super::lag::{self, report_lag, Stats};
use super::{client_config, create, log_librdkafka, KafkaConfig, KafkaSetupError, NAME};
use crate::components::wire::{self, Decoded, RECEIVED_AT_HEADER};
use crate::components::Opaque;
use flujo_actors::backoff::Backoff;
use flujo_actors::consumer::{Delivery, Source, SourceError, SourceReadiness};
use flujo_actors::event::{now_ms, Kind};
use flujo_actors::messages::Batch;
use flujo_actors::store::{Positions, Store};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the consumer computes its lag (librdkafka statistics interval).
const LAG_INTERVAL_MS: u32 = 1_000;
/// A persistent consumer error is logged at most this often (else at debug level).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Attempts of a commit that failed with a transient error, before giving up.
const COMMIT_ATTEMPTS: u32 = 3;
/// Deliveries kept awaiting their commit; older ones are forgotten (redelivered).
const MAX_OUTSTANDING: usize = 64;

/// What the rebalance callback and the source share.
#[derive(Debug, Default)]
struct GroupState {
    /// Bumped at every revocation.
    epoch: u64,
    /// Partition → epoch of its last revocation.
    revoked_at: HashMap<i32, u64>,
    /// Partition → next offset to commit, for batches stored whose commit has not
    /// been confirmed yet (it failed transiently). Empty between deliveries in normal
    /// operation, since the consumer commits right after each store.
    pending: BTreeMap<i32, i64>,
    /// Partitions assigned whose position has not been read from the store yet.
    unpositioned: Vec<i32>,
    /// Last computed lag of this consumer.
    lag: Option<i64>,
    /// When a consumer error was last logged as a warning.
    last_error_log: Option<Instant>,
}

/// The consumer's context: rebalance handling, lag from statistics, logs.
struct SourceContext {
    topic: String,
    lag_slot: u64,
    state: Arc<Mutex<GroupState>>,
}

fn lock(state: &Mutex<GroupState>) -> MutexGuard<'_, GroupState> {
    // The state stays consistent at every await-free step; a panic elsewhere does
    // not invalidate it.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(topic = %self.topic, error = %error, "librdkafka: {reason}");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let stats: Stats = match serde_json::from_slice(statistics) {
            Ok(stats) => stats,
            Err(e) => {
                tracing::debug!(error = %e, "unreadable librdkafka statistics");
                return;
            }
        };
        let lag = lag::lag_of(&stats, &self.topic).unwrap_or(0);
        lock(&self.state).lag = Some(lag);
        report_lag(self.lag_slot, Some(lag));
    }
}

/// The partitions of `topic` in a rebalance's list.
fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            let partitions = partitions_of(offsets, &self.topic);
            // Harmless for exactness (positions live with the KPIs); the group's
            // lag reads high until the next commit.
            tracing::debug!(topic = %self.topic, ?partitions, %error, "group commit refused");
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = partitions_of(tpl, &self.topic);
                // Offsets of stored batches whose commit is still owed are
                // committed now, while this member owns the partitions, so the
                // group's offsets (lag) stay close to the store's positions (where
                // the new owner resumes). In normal operation
                // there are none: rebalances are served only inside `next()`, and the
                // consumer actor commits each delivery right after storing it, before
                // it calls `next()` again.
                let owed = {
                    let mut state = lock(&self.state);
                    state.epoch += 1;
                    let epoch = state.epoch;
                    let mut owed = TopicPartitionList::new();
                    for &p in &revoked {
                        state.revoked_at.insert(p, epoch);
                        state.unpositioned.retain(|&q| q != p);
                        if let Some(next) = state.pending.remove(&p) {
                            // A valid offset always fits; an invalid one is skipped.
                            let _ = owed.add_partition_offset(&self.topic, p, Offset::Offset(next));
                        }
                    }
                    owed
                };
                tracing::info!(topic = %self.topic, partitions = ?revoked, "partitions revoked");
                if owed.count() > 0 {
                    if consumer.assignment_lost() {
                        tracing::warn!(topic = %self.topic, "assignment lost; stored offsets not committed, their messages will be redelivered");
                    } else if let Err(e) = consumer.commit(&owed, CommitMode::Sync) {
                        tracing::warn!(topic = %self.topic, error = %e, "commit on revoke failed; those messages will be redelivered");
                    }
                }
            }
            Rebalance::Assign(tpl) => {
                let assigned = partitions_of(tpl, &self.topic);
                tracing::info!(topic = %self.topic, partitions = ?assigned, "partitions assigned");
                // The source reads their positions from the store and seeks there
                // before it hands out anything more (see `KafkaSource::position`).
                let mut state = lock(&self.state);
                for p in assigned {
                    if !state.unpositioned.contains(&p) {
                        state.unpositioned.push(p);
                    }
                }
            }
            Rebalance::Error(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "rebalance error")
            }
        }
    }
}

/// A delivery handed out and not yet committed.
#[derive(Debug)]
struct Outstanding {
    /// Revocation epoch when the delivery was complete.
    epoch: u64,
    /// Partition → next offset to commit (highest offset of the delivery + 1).
    offsets: BTreeMap<i32, i64>,
}

/// A delivery being gathered.
#[derive(Debug)]
struct Gathering {
    /// Until when more messages are awaited.
    deadline: tokio::time::Instant,
    epoch: u64,
    messages: usize,
    /// Each event with its partition and offset.
    events: Vec<(i32, i64, Decoded)>,
    offsets: BTreeMap<i32, i64>,
    received_at: BTreeMap<i32, i64>,
}

/// Reads one topic (one event kind) in the consumer group. Hands out deliveries of
/// up to `batch_max` events and commits a delivery's offsets only when told to.
///
/// `next()` is cancellation safe: a delivery being gathered when its future is
/// dropped is kept and handed out by the next call.
#[derive(Debug)]
pub struct KafkaSource {
    consumer: Opaque<Arc<StreamConsumer<SourceContext>>>,
    state: Arc<Mutex<GroupState>>,
    kind: Kind,
    topic: String,
    batch_max: usize,
    poll_linger: Duration,
    stop: CancellationToken,
    next_token: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    gathering: Option<Gathering>,
    lag_slot: u64,
    /// Where positions are stored with the KPIs.
    store: Opaque<Arc<dyn Store>>,
    /// `kafka:{group}:{topic}:`, the start of this source's stream names.
    stream_prefix: String,
    /// Partition → the store's next offset, for the partitions held now: messages
    /// below it were applied already and are skipped.
    floors: HashMap<i32, i64>,
    /// Partition → the offset after the last message taken since it was assigned.
    taken: HashMap<i32, i64>,
    /// A static assignment not made yet (`None` once made, or in a group).
    static_assignment: Option<Assignment>,
}

impl KafkaSource {
    /// A consumer of the topic of `kind` in group `config.group_id`. Each partition
    /// it is given resumes at the position `store` holds for it (the group's
    /// committed offset, or `earliest`, when the store holds none), and every
    /// delivery carries its events' positions for the store to apply atomically.
    /// `next()` returns `None` once `stop` is cancelled. Must be called inside a
    /// tokio runtime; the topic should exist ([`ensure_topics`](super::ensure_topics)).
    pub fn new(
        config: &KafkaConfig,
        kind: Kind,
        store: Arc<dyn Store>,
        stop: CancellationToken,
    ) -> Result<Self, KafkaSetupError> {
        let topic = config.topic(kind).to_owned();
        let state = Arc::new(Mutex::new(GroupState::default()));
        let lag_slot = lag::new_slot();
        let context = SourceContext {
            topic: topic.clone(),
            lag_slot,
            state: state.clone(),
        };
        let assignment = config.assignment();
        let mut client = client_config(config)?;
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", LAG_INTERVAL_MS.to_string())
            // kafka.options, applied last, may set it otherwise.
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string())
            // One strategy: a coordinator settles on the first member's choice.
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "max.poll.interval.ms",
                config.session_timeout_ms.max(300_000).to_string(),
            );
        if !config.group_instance_id.is_empty() {
            // One member per source: the two kinds' consumers must not fence each other.
            let id = format!("{}-{}", config.group_instance_id, topic);
            client.set("group.instance.id", id);
        }
        let consumer: StreamConsumer<SourceContext> =
            create(config, client, context).map_err(KafkaSetupError::Client)?;
        if assignment == Assignment::Group {
            consumer
                .subscribe(&[&topic])
                .map_err(KafkaSetupError::Client)?;
        }
        Ok(KafkaSource {
            consumer: Opaque(Arc::new(consumer)),
            state,
            kind,
            stream_prefix: format!("kafka:{}:{topic}:", config.group_id),
            topic,
            batch_max: config.batch_max.max(1),
            poll_linger: Duration::from_millis(config.poll_linger_ms),
            stop,
            next_token: 0,
            outstanding: BTreeMap::new(),
            gathering: None,
            lag_slot,
            store: Opaque(store),
            floors: HashMap::new(),
            taken: HashMap::new(),
            static_assignment: match assignment {
                Assignment::Group => None,
                fixed => Some(fixed),
            },
        })
    }

    /// The topic this source reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// This source's last computed lag (Σ high watermark − position over its
    /// assigned partitions), refreshed about every second while `next()` polls;
    /// `None` before the first statistics arrived.
    pub fn lag(&self) -> Option<i64> {
        lock(&self.state).lag
    }

    /// The name of a partition's stream in the store.
    fn stream(&self, partition: i32) -> String {
        format!("{}{partition}", self.stream_prefix)
    }

    /// Makes a static assignment (`kafka.assignment` `all` or `K/N`) once the topic's
    /// partition count is known, each partition starting at the store's position
    /// (the group's committed offset where the store has none), retrying while the
    /// broker or the store is away; returns early when stopped. Partitions added to
    /// the topic later are not picked up until the process restarts.
    async fn assign_static(&mut self) {
        let Some(assignment) = self.static_assignment else {
            return;
        };
        let mut backoff = Backoff::request();
        loop {
            match self.try_assign_static(assignment).await {
                Ok(partitions) => {
                    tracing::info!(topic = %self.topic, ?partitions, positions = ?self.floors, "partitions assigned (static)");
                    self.static_assignment = None;
                    return;
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "static assignment failed; retrying")
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = backoff.wait() => {}
            }
        }
    }

    /// The group's committed offsets of `partitions` (those it has). A commit
    /// only ever follows a store, so where it is ahead of the store's position
    /// (events applied by a consumer that stored no positions, e.g. an older flujo
    /// during a rolling upgrade) it is the better place to resume. Unreadable:
    /// none, and the store's positions alone decide.
    async fn committed(&self, partitions: &[i32]) -> HashMap<i32, i64> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let consumer = self.consumer.clone();
        let read = tokio::task::spawn_blocking(move || {
            consumer.committed_offsets(tpl, Duration::from_secs(5))
        })
        .await;
        match read {
            Ok(Ok(tpl)) => tpl
                .elements_for_topic(&self.topic)
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect(),
            Ok(Err(e)) => {
                tracing::warn!(topic = %self.topic, error = %e, "reading the group's committed offsets failed");
                HashMap::new()
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "reading the group's committed offsets failed");
                HashMap::new()
            }
        }
    }

    /// One attempt of [`KafkaSource::assign_static`].
    async fn try_assign_static(&mut self, assignment: Assignment) -> Result<Vec<i32>, String> {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let count = tokio::task::spawn_blocking(move || {
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            match i32::try_from(count) {
                Ok(count) if count > 0 => Ok(count),
                _ => Err(format!("topic {topic} has no partitions yet")),
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        let partitions = assignment.partitions(count);
        let streams: Vec<String> = partitions.iter().map(|&p| self.stream(p)).collect();
        let stored = self
            .store
            .positions(&streams)
            .await
            .map_err(|e| e.to_string())?;
        let committed = self.committed(&partitions).await;
        let mut tpl = TopicPartitionList::new();
        for (&partition, position) in partitions.iter().zip(stored) {
            let offset = match position {
                Some(position) => {
                    let position = position.max(committed.get(&partition).copied().unwrap_or(0));
                    self.floors.insert(partition, position);
                    Offset::Offset(position)
                }
                None => Offset::Stored,
            };
            tpl.add_partition_offset(&self.topic, partition, offset)
                .map_err(|e| e.to_string())?;
        }
        self.consumer.assign(&tpl).map_err(|e| e.to_string())?;
        Ok(partitions)
    }

    /// Reads the store's position of every partition assigned since the last call
    /// and seeks there, so a consumer resumes where the KPIs are, not where the
    /// group commit is. Retries while the store is down (nothing can be applied
    /// then anyway); returns early when stopped.
    async fn position(&mut self) {
        self.assign_static().await;
        let assigned = lock(&self.state).unpositioned.clone();
        if assigned.is_empty() {
            return;
        }
        let streams: Vec<String> = assigned.iter().map(|&p| self.stream(p)).collect();
        let mut backoff = Backoff::request();
        let stored = loop {
            match self.store.positions(&streams).await {
                Ok(stored) => break stored,
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "reading positions from the store failed; retrying")
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = backoff.wait() => {}
            }
        };
        let committed = self.committed(&assigned).await;
        let mut seek = TopicPartitionList::new();
        for (&partition, position) in assigned.iter().zip(stored) {
            let Some(position) = position else {
                self.floors.remove(&partition);
                continue;
            };
            // librdkafka starts at the committed offset: seek only when the store
            // is ahead of it, and of what was taken already.
            let start = committed.get(&partition).copied();
            self.floors
                .insert(partition, position.max(start.unwrap_or(0)));
            let behind = start.is_none_or(|c| c < position)
                && self.taken.get(&partition).is_none_or(|&t| t < position);
            if behind {
                // A valid offset always fits; an invalid one is skipped.
                let _ = seek.add_partition_offset(&self.topic, partition, Offset::Offset(position));
            }
        }
        if seek.count() > 0 {
            tracing::info!(topic = %self.topic, positions = ?self.floors, "resuming at the store's positions");
            let consumer = self.consumer.clone();
            let sought = tokio::task::spawn_blocking(move || {
                consumer.seek_partitions(seek, Duration::from_secs(5))
            })
            .await;
            match sought {
                Ok(Ok(result)) => {
                    for e in result.elements() {
                        if let Err(error) = e.error() {
                            tracing::warn!(topic = %self.topic, partition = e.partition(), %error, "seek failed; the messages before the stored position are read and skipped");
                        }
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(topic = %self.topic, %error, "seek failed; the messages before the stored position are read and skipped")
                }
                Err(error) => tracing::warn!(topic = %self.topic, %error, "seek task failed"),
            }
        }
        lock(&self.state)
            .unpositioned
            .retain(|p| !assigned.contains(p));
    }

    /// Decodes one message into `gathering`; an undecodable one is logged and
    /// skipped, but its offset still counts, so it cannot block its partition. A
    /// message below its partition's stored position is dropped: it was applied.
    fn take(&mut self, gathering: &mut Gathering, message: &BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        if self
            .floors
            .get(&partition)
            .is_some_and(|&floor| offset < floor)
        {
            return;
        }
        self.taken.insert(partition, offset + 1);
        gathering.messages += 1;
        let next = gathering.offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        let decoded = match message.payload() {
            None => Err("empty payload".to_owned()),
            Some(bytes) => wire::decode(self.kind, bytes).map_err(|e| e.to_string()),
        };
        match decoded {
            Ok(event) => {
                if let Some(at) = received_at(message) {
                    let min = gathering.received_at.entry(partition).or_insert(at);
                    *min = (*min).min(at);
                }
                gathering.events.push((partition, offset, event));
            }
            Err(error) => tracing::error!(
                topic = %self.topic, partition, offset, %error,
                "undecodable message skipped"
            ),
        }
    }

    /// Drops from `gathering` what was read from partitions revoked since it was
    /// last checked: their new owner reads those messages again.
    fn drop_revoked(&self, gathering: &mut Gathering) {
        let state = lock(&self.state);
        if state.epoch == gathering.epoch {
            return;
        }
        let since = gathering.epoch;
        let revoked = |p: &i32| state.revoked_at.get(p).is_some_and(|&at| at > since);
        gathering.events.retain(|(p, _, _)| !revoked(p));
        gathering.offsets.retain(|p, _| !revoked(p));
        gathering.received_at.retain(|p, _| !revoked(p));
        gathering.epoch = state.epoch;
    }

    /// Logs a consumer error: a warning, unless one was logged recently.
    fn log_error(&self, error: &KafkaError) {
        let warn = {
            let mut state = lock(&self.state);
            let due = state
                .last_error_log
                .is_none_or(|at| at.elapsed() >= ERROR_LOG_EVERY);
            if due {
                state.last_error_log = Some(Instant::now());
            }
            due
        };
        if warn {
            tracing::warn!(topic = %self.topic, %error, "kafka consumer error");
        } else {
            tracing::debug!(topic = %self.topic, %error, "kafka consumer error");
        }
    }

    /// Waits for the first message not applied yet (or `stop`); `None` when stopped.
    async fn first(&mut self) -> Option<Gathering> {
        // Consecutive consumer errors (a broker down) back off, up to 5 s.
        let mut backoff = Backoff::reconnect();
        loop {
            self.position().await;
            let consumer = self.consumer.0.clone();
            let received = tokio::select! {
                biased;
                () = self.stop.cancelled() => return None,
                received = consumer.recv() => received,
            };
            let mut gathering = Gathering {
                deadline: tokio::time::Instant::now() + self.poll_linger,
                epoch: lock(&self.state).epoch,
                messages: 0,
                events: Vec::new(),
                offsets: BTreeMap::new(),
                received_at: BTreeMap::new(),
            };
            match received {
                Ok(message) => {
                    self.take(&mut gathering, &message);
                    if gathering.messages > 0 {
                        return Some(gathering);
                    }
                }
                Err(e) => {
                    self.log_error(&e);
                    tokio::select! {
                        () = self.stop.cancelled() => return None,
                        () = backoff.wait() => {}
                    }
                }
            }
        }
    }

    /// Gathers a delivery: the first message, then more for at most `poll_linger`.
    /// The delivery being gathered lives in `self` across every await, so dropping
    /// the future (e.g. in a `select!`) loses nothing: the next call goes on with it.
    async fn gather(&mut self) -> Option<Gathering> {
        if self.gathering.is_none() {
            let first = self.first().await?;
            self.gathering = Some(first);
        }
        loop {
            let gathering = self.gathering.as_ref()?;
            if gathering.messages >= self.batch_max {
                break;
            }
            let deadline = gathering.deadline;
            self.position().await;
            let consumer = self.consumer.0.clone();
            let received = tokio::time::timeout_at(deadline, consumer.recv()).await;
            let mut gathering = self.gathering.take()?;
            self.drop_revoked(&mut gathering);
            let done = match received {
                Ok(Ok(message)) => {
                    self.take(&mut gathering, &message);
                    false
                }
                Ok(Err(e)) => {
                    self.log_error(&e);
                    false
                }
                Err(_) => true,
            };
            self.gathering = Some(gathering);
            if done {
                break;
            }
        }
        let mut gathering = self.gathering.take()?;
        self.drop_revoked(&mut gathering);
        Some(gathering)
    }

    /// Commits `offsets` (partition → next offset) without waiting for the broker:
    /// the positions stored with the KPIs are what a consumer resumes from, so the
    /// group's offsets only serve lag monitoring (and a store that lost its
    /// positions). A refusal arrives later in the context's `commit_callback`; the
    /// error here (a local one: no coordinator known, a bad offset) says whether it
    /// is worth retrying. librdkafka waits for commits in flight when it closes.
    async fn commit_offsets(&self, offsets: &BTreeMap<i32, i64>) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (&partition, &next) in offsets {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next))?;
        }
        self.consumer.commit(&tpl, CommitMode::Async)
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        report_lag(self.lag_slot, None);
    }
}

/// A commit refused because this member no longer owns the partitions (the group
/// rebalanced or dropped it); its messages go to the new owner.
fn lost_ownership(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::State
        )
    )
}

#[tonic::async_trait]
impl Source for KafkaSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn readiness(&self) -> Arc<dyn SourceReadiness> {
        Arc::new(TopicReadiness {
            consumer: self.consumer.0.clone(),
            topic: self.topic.clone(),
        })
    }

    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let gathering = self.gather().await?;
            if gathering.offsets.is_empty() {
                continue; // everything gathered was revoked meanwhile
            }
            let token = self.next_token;
            self.next_token += 1;
            self.outstanding.insert(
                token,
                Outstanding {
                    epoch: gathering.epoch,
                    offsets: gathering.offsets,
                },
            );
            while self.outstanding.len() > MAX_OUTSTANDING {
                if let Some((old, _)) = self.outstanding.pop_first() {
                    tracing::warn!(topic = %self.topic, token = old, "delivery never committed; it will be redelivered after a restart or rebalance");
                }
            }
            if gathering.events.is_empty() {
                // Only undecodable messages: nothing to store, so move past them now.
                if let Err(e) = self.commit(token).await {
                    tracing::warn!(topic = %self.topic, error = %e, "commit of skipped messages failed");
                }
                continue;
            }
            let received_at_ms = gathering
                .received_at
                .values()
                .copied()
                .min()
                .unwrap_or_else(now_ms);
            let mut positions = Positions::default();
            let mut partitions: Vec<i32> = Vec::new(); // parallel to `positions.streams`
            let mut decoded = Vec::with_capacity(gathering.events.len());
            for (partition, offset, event) in gathering.events {
                let index = match partitions.iter().position(|&p| p == partition) {
                    Some(i) => i,
                    None => {
                        partitions.push(partition);
                        positions.streams.push(self.stream(partition));
                        positions.streams.len() - 1
                    }
                };
                positions.offsets.push((index as u32, offset));
                decoded.push(event);
            }
            let events = wire::events_of(self.kind, decoded);
            return Some(Delivery {
                batch: Batch {
                    events: Arc::new(events),
                    received_at_ms,
                    admitted: None,
                    positions: Some(Arc::new(positions)),
                },
                token,
            });
        }
    }

    async fn commit(&mut self, token: u64) -> Result<(), SourceError> {
        let Some(delivery) = self.outstanding.remove(&token) else {
            tracing::warn!(topic = %self.topic, token, "commit of an unknown delivery ignored");
            return Ok(());
        };
        // Owed offsets: this delivery's, minus partitions revoked since it was
        // handed out, plus earlier ones whose commit failed transiently.
        let offsets = {
            let mut state = lock(&self.state);
            for (&partition, &next) in &delivery.offsets {
                let revoked = state
                    .revoked_at
                    .get(&partition)
                    .is_some_and(|&at| at > delivery.epoch);
                if revoked {
                    tracing::info!(topic = %self.topic, partition, "partition revoked before commit; its messages go to the new owner");
                    continue;
                }
                let owed = state.pending.entry(partition).or_insert(next);
                *owed = (*owed).max(next);
            }
            state.pending.clone()
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let mut attempt = 0;
        let mut backoff = Backoff::request();
        loop {
            attempt += 1;
            let result = self.commit_offsets(&offsets).await;
            let code = result.as_ref().err().and_then(|e| e.rdkafka_error_code());
            match result {
                Ok(()) => {}
                Err(_) if code == Some(RDKafkaErrorCode::NoOffset) => {}
                Err(e) if lost_ownership(code) => {
                    tracing::warn!(topic = %self.topic, error = %e, "commit refused after a group change; those messages will be redelivered to their new owner");
                }
                Err(e) if attempt < COMMIT_ATTEMPTS => {
                    tracing::debug!(topic = %self.topic, error = %e, attempt, "commit failed; retrying");
                    backoff.wait().await;
                    continue;
                }
                Err(e) => {
                    // Kept pending: retried with the next commit, or on revoke.
                    return Err(SourceError(format!(
                        "kafka commit on {} failed: {e}",
                        self.topic
                    )));
                }
            }
            // Done with these offsets (committed, or no longer ours to commit).
            let mut state = lock(&self.state);
            for (partition, next) in offsets {
                if state
                    .pending
                    .get(&partition)
                    .is_some_and(|&owed| owed <= next)
                {
                    state.pending.remove(&partition);
                }
            }
            return Ok(());
        }
    }
}

/// How long a consumer lets the broker hold a fetch that finds no data, in ms,
/// unless `kafka.options` sets `fetch.wait.max.ms` (librdkafka's default is 500;
/// Vector's Kafka source also asks for 100). A Kafka broker answers as soon as
/// data is there, so this only paces an idle consumer's empty fetches; tansu 0.6
/// sleeps part of it after every fetch, data or not (`service/fetch.rs`), so
/// there it paces reading a backlog too.
const FETCH_WAIT_MAX_MS: u32 = 100;

/// The receive time carried by a message's header, if any.
fn received_at(message: &BorrowedMessage<'_>) -> Option<i64> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == RECEIVED_AT_HEADER)
        .and_then(|h| h.value)
        .and_then(wire::parse_received_at)
}

/// A source's readiness: the broker answers and its topic exists, asked on the
/// consumer's own client.
struct TopicReadiness {
    consumer: Arc<StreamConsumer<SourceContext>>,
    topic: String,
}

#[tonic::async_trait]
impl SourceReadiness for TopicReadiness {
    async fn ready(&self) -> Result<(), SourceError> {
        let consumer = self.consumer.clone();
        let topics = [self.topic.clone()];
        tokio::task::spawn_blocking(move || check_topics(consumer.client(), &topics))
            .await
            .map_err(|e| SourceError(format!("kafka readiness check: {e}")))?
            .map_err(SourceError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_errors_are_recognised() {
        assert!(lost_ownership(Some(RDKafkaErrorCode::IllegalGeneration)));
        assert!(lost_ownership(Some(RDKafkaErrorCode::RebalanceInProgress)));
        assert!(!lost_ownership(Some(RDKafkaErrorCode::NotCoordinator)));
        assert!(!lost_ownership(None));
    }
}
