//! `kafka_three_roles_survive_consumer_sigkill`, `kafka_static_member_…`,
//! `rabbitmq_…`: router, consumer and receiver as three processes; consumers
//! SIGKILLed while events flow and restarted at once.

use super::*;

/// Router, consumer and receiver as three processes over `bus`; the consumer is
/// SIGKILLed twice while a client sends, and the third one must end with every KPI
/// exact.
///
/// On Kafka the consumers take their partitions in `assignment` (`all`, or `group`
/// with static membership: the restarted consumer comes back under the same
/// `group.instance.id`), and restart at once either way.
pub(crate) async fn three_roles_survive_consumer_sigkill(bus: Bus, assignment: &str) {
    let label = match (bus, assignment) {
        (Bus::Kafka, "group") => "kafka-member-kill",
        (Bus::Kafka, _) => "kafka-kill",
        (Bus::Rabbitmq, _) => "rabbit-kill",
    };
    let log = progress(label);
    match bus {
        Bus::Kafka => require_kafka(Duration::from_secs(15)).await,
        Bus::Rabbitmq => require_rabbitmq().await,
    }
    require_valkey().await;
    let names = Names::new(label);
    let _cleanup = Cleanup::new(&names, true, bus == Bus::Rabbitmq);
    let envs = names.envs();
    // On Kafka the id window is off in the consumers: only the positions stored
    // with the KPIs can keep the counts exact across the kills.
    let consumer_envs: Vec<(String, String)> = match bus {
        Bus::Kafka => envs
            .iter()
            .cloned()
            .chain(
                [
                    ("FLUJO__AGGREGATOR__DEDUP_WINDOW_SECS", "0"),
                    ("FLUJO__KAFKA__ASSIGNMENT", assignment),
                    ("FLUJO__KAFKA__GROUP_INSTANCE_ID", "consumer-0"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            )
            .collect(),
        Bus::Rabbitmq => envs.clone(),
    };
    let store = store_flag(&valkey_url());

    let router = start(&envs, router_args(bus)).await;
    let mut consumer1 = start(&consumer_envs, consumer_args(bus, &store)).await;
    let receiver = start(&envs, receiver_args(&router)).await;
    wait_ready(&consumer1, "consumer", READY_TIMEOUT).await;
    wait_ready(&receiver, "receiver", READY_TIMEOUT).await;
    log("three roles up");

    let work = Workload::new(label, 2500, 1500, &[0.4, 0.7]);
    let (work, flow, client) = start_client(&receiver, work).await;
    log(&format!(
        "first sales accepted; client sends {} requests in phases {:?}",
        work.reqs.len(),
        flow.total
    ));

    // Kill 1: as soon as the consumer has applied some of phase 0, it is frozen
    // (SIGSTOP) while the client sends the rest of phase 0, so a backlog builds up;
    // then it is resumed and SIGKILLed as soon as it stored its first batch of that
    // backlog: with the next delivery in hand, and maybe that batch not committed
    // yet, so the next consumer gets them again and must not count them twice.
    let firsts = work.firsts.len() as u64;
    wait_applying(&consumer1, firsts, "consumer 1").await;
    let applied = counts(&consumer1).await;
    signal(&consumer1, "STOP");
    let frozen_at = flow.done(0);
    flow.reached(0, 1.0, Duration::from_secs(60)).await;
    signal(&consumer1, "CONT");
    let resumed = Instant::now();
    let before = loop {
        let now = counts(&consumer1).await;
        if now != applied {
            break now;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "consumer 1 applied nothing within 30 s of SIGCONT (counts {now:?}):\n{}",
            tail(&consumer1, 30)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    consumer1.kill9();
    flow.open(1);
    log(&format!(
        "consumer 1 frozen at counts {applied:?} (client at {frozen_at}/{} of phase 0), \
         resumed once phase 0 was sent, SIGKILLed at {before:?}",
        flow.total[0]
    ));

    // Kill 2: a moment after the second consumer started at once (it is already
    // consuming what the first one left).
    let mut consumer2 = start(&consumer_envs, consumer_args(bus, &store)).await;
    log("consumer 2 started");
    tokio::time::sleep(Duration::from_secs(2)).await;
    flow.reached(1, 0.5, Duration::from_secs(60)).await;
    let at = counts(&consumer2).await;
    consumer2.kill9();
    flow.open(2);
    log(&format!(
        "consumer 2 SIGKILLed at counts {at:?}, client at {}/{} of phase 1",
        flow.done(1),
        flow.total[1]
    ));

    // At once, on both buses: a Kafka consumer takes its partitions itself
    // (`kafka.assignment` `all`) and resumes at the positions in the store.
    let mut consumer3 = start(&consumer_envs, consumer_args(bus, &store)).await;
    log("consumer 3 started");
    let (sales, tweets) = finish_client(client, &work, &flow).await;
    log(&client_done(&sales, &tweets, &flow));
    let order =
        (bus == Bus::Kafka).then(|| stream_order_on_bus(&names.sales_topic, &work, &flow, &sales));

    let context = || {
        format!(
            "consumers were SIGKILLed twice; consumer 1 stderr (tail):\n{}\n\
             consumer 2 stderr (tail):\n{}",
            tail(&consumer1, 15),
            tail(&consumer2, 15),
        )
    };
    wait_applied(
        &mut consumer3,
        sales.sales.count,
        tweets.tweets.count,
        CONVERGE_TIMEOUT,
        &context,
    )
    .await;
    log(&format!(
        "consumer 3 counts every event answered 202; its log:\n{}",
        tail(&consumer3, 8)
    ));
    assert_every_kpi_stays(&consumer3, &sales, &tweets, order).await;
    log(&format!(
        "every KPI matches the ground truth; consumer 3 skipped as duplicates: {:?}",
        duplicates(&consumer3).await
    ));
    drop((router, receiver));
}

/// A test of [`three_roles_survive_consumer_sigkill`] over one bus.
macro_rules! three_roles_test {
    ($name:ident, $bus:expr, $assignment:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            bounded(
                stringify!($name),
                three_roles_survive_consumer_sigkill($bus, $assignment),
            )
            .await;
        }
    };
}

three_roles_test!(
    kafka_three_roles_survive_consumer_sigkill,
    Bus::Kafka,
    "all"
);
three_roles_test!(
    kafka_static_member_survives_consumer_sigkill,
    Bus::Kafka,
    "group"
);
three_roles_test!(
    rabbitmq_three_roles_survive_consumer_sigkill,
    Bus::Rabbitmq,
    "all"
);
