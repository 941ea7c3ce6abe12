//! `kafka_every_role_sigkilled_and_restarted_at_once`, `rabbitmq_…`: router,
//! receiver and consumer as three processes; while a client sends, each role in
//! turn is SIGKILLed and started again at once on the same address. The client
//! retries what was refused, or whose answer was lost, with the same ids; the id
//! window (on, as by default) absorbs the copies those retries put on the bus, and
//! the positions or redelivery the consumer's. Every KPI must end exact.

use super::*;

/// Each role of three processes over `bus` SIGKILLed once mid-stream and restarted
/// at once; every KPI must equal the ground truth of what was answered 202.
pub(crate) async fn every_role_sigkilled(bus: Bus) {
    let label = match bus {
        Bus::Kafka => "kafka-every-kill",
        Bus::Rabbitmq => "rabbit-every-kill",
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
    let store = store_flag(&valkey_url());

    let mut router = start(&envs, router_args(bus)).await;
    let router_grpc = router.listener("grpc");
    let mut consumer = start(&envs, consumer_args(bus, &store)).await;
    let mut receiver = start(&envs, receiver_args(&router)).await;
    let receiver_http = receiver.listener("http");
    wait_ready(&consumer, "consumer", READY_TIMEOUT).await;
    wait_ready(&receiver, "receiver", READY_TIMEOUT).await;
    log("three roles up");

    let work = Workload::new(label, 2000, 1200, &[0.3, 0.55, 0.8]);
    let (work, flow, client) = start_client(&receiver, work).await;

    // 1. The router, mid-phase 0: the receiver answers 503 until it is back.
    flow.reached(0, 0.5, Duration::from_secs(60)).await;
    router.kill9();
    let mut args = vec![
        "--http".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--grpc".to_owned(),
        router_grpc.to_string(),
    ];
    args.extend(router_args(bus));
    router = spawn_flujo(&envs, args, true).await;
    flow.open(1);
    log(&format!(
        "router SIGKILLed and restarted at once on {router_grpc}"
    ));

    // 2. The receiver, mid-phase 1: requests in its hands get no answer (some of
    // their events may be on the bus already) and are sent again.
    flow.reached(1, 0.5, Duration::from_secs(60)).await;
    receiver.kill9();
    let mut args = vec![
        "--http".to_owned(),
        receiver_http.to_string(),
        "--grpc".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--tcp".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    args.extend(receiver_args(&router));
    receiver = spawn_flujo(&envs, args, true).await;
    flow.open(2);
    log(&format!(
        "receiver SIGKILLed and restarted at once on {receiver_http}"
    ));

    // 3. The consumer, mid-phase 2, with deliveries in hand.
    flow.reached(2, 0.5, Duration::from_secs(60)).await;
    consumer.kill9();
    consumer = start(&envs, consumer_args(bus, &store)).await;
    flow.open(3);
    log("consumer SIGKILLed and restarted at once");

    let (sales, tweets) = finish_client(client, &work, &flow).await;
    log(&client_done(&sales, &tweets, &flow));
    let order =
        (bus == Bus::Kafka).then(|| stream_order_on_bus(&names.sales_topic, &work, &flow, &sales));
    let context = || {
        format!(
            "every role was SIGKILLed once; receiver stderr (tail):\n{}",
            tail(&receiver, 15)
        )
    };
    wait_applied(
        &mut consumer,
        sales.sales.count,
        tweets.tweets.count,
        CONVERGE_TIMEOUT,
        &context,
    )
    .await;
    assert_every_kpi_stays(&consumer, &sales, &tweets, order).await;
    log(&format!(
        "every KPI matches the ground truth; skipped as duplicates: {:?}",
        duplicates(&consumer).await
    ));
    drop((router, receiver));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_every_role_sigkilled_and_restarted_at_once() {
    bounded(
        "kafka_every_role_sigkilled_and_restarted_at_once",
        every_role_sigkilled(Bus::Kafka),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_every_role_sigkilled_and_restarted_at_once() {
    bounded(
        "rabbitmq_every_role_sigkilled_and_restarted_at_once",
        every_role_sigkilled(Bus::Rabbitmq),
    )
    .await;
}
