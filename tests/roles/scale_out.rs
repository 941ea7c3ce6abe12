//! `kafka_three_consumers_on_a_valkey_cluster_survive_a_kill`: three consumer
//! processes share six partitions (`kafka.assignment` `K/3`) and store into a real
//! three-master Valkey Cluster of the test's own; one consumer is SIGKILLed while
//! events flow and started again at once. Every KPI must end exact (read from any
//! consumer: each merges the cluster's shards), each consumer must have applied
//! events, and every node must hold keys.
//!
//! `kafka_consumers_scale_up_and_down_on_a_valkey_cluster`: while events flow,
//! one consumer (`all`) is replaced at once by three (`K/3`, scale up: SIGTERM),
//! then the three by two (`K/2`, scale down: SIGKILL, so deliveries in hand are
//! lost and redelivered): every KPI must end exact.

use super::*;
use support::OwnCluster;

/// Events a consumer process applied, from its `flujo_events_applied_total`.
async fn applied_by(server: &TestServer) -> u64 {
    server
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("flujo_events_applied_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn three_consumers_on_a_cluster() {
    let label = "cluster-kill";
    let log = progress(label);
    require_kafka(Duration::from_secs(15)).await;
    let cluster = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .expect("cluster");
    log(&format!("cluster up: {}", cluster.url()));
    let names = Names::new(label);
    let mut envs = names.envs();
    envs.push(("FLUJO__KAFKA__PARTITIONS".into(), "6".into()));
    // The id window off: the positions each shard keeps alone must keep the
    // counts exact across the kill.
    let consumer_envs = |member: usize| -> Vec<(String, String)> {
        let mut e = envs.clone();
        e.push(("FLUJO__AGGREGATOR__DEDUP_WINDOW_SECS".into(), "0".into()));
        e.push(("FLUJO__KAFKA__ASSIGNMENT".into(), format!("{member}/3")));
        e
    };
    let store = cluster.url();

    let router = start(&envs, router_args(Bus::Kafka)).await;
    let mut consumers = Vec::new();
    for member in 0..3 {
        consumers.push(start(&consumer_envs(member), consumer_args(Bus::Kafka, &store)).await);
    }
    let receiver = start(&envs, receiver_args(&router)).await;
    for (member, consumer) in consumers.iter().enumerate() {
        wait_ready(consumer, &format!("consumer {member}"), READY_TIMEOUT).await;
    }
    wait_ready(&receiver, "receiver", READY_TIMEOUT).await;
    log("router, three consumers and receiver up");

    let work = Workload::new(label, 3000, 1500, &[0.5]);
    let (work, flow, client) = start_client(&receiver, work).await;
    let firsts = work.firsts.len() as u64;
    wait_applying(&consumers[1], firsts, "the consumers").await;
    flow.reached(0, 0.5, Duration::from_secs(60)).await;
    let before = applied_by(&consumers[1]).await;
    consumers[1].kill9();
    let killed = std::mem::replace(
        &mut consumers[1],
        start(&consumer_envs(1), consumer_args(Bus::Kafka, &store)).await,
    );
    flow.open(1);
    log(&format!(
        "consumer 1 SIGKILLed after applying {before} events, and started again at once"
    ));

    let (sales, tweets) = finish_client(client, &work, &flow).await;
    log(&client_done(&sales, &tweets, &flow));
    let context = || {
        format!(
            "consumer 1 was SIGKILLed; its stderr (tail):\n{}",
            tail(&killed, 15)
        )
    };
    wait_applied(
        &mut consumers[0],
        sales.sales.count,
        tweets.tweets.count,
        CONVERGE_TIMEOUT,
        &context,
    )
    .await;
    for consumer in &consumers {
        assert_every_kpi_stays(consumer, &sales, &tweets, None).await;
    }
    let mut work_done = vec![applied_by(&consumers[0]).await];
    work_done.push(before + applied_by(&consumers[1]).await);
    work_done.push(applied_by(&consumers[2]).await);
    log(&format!(
        "every KPI matches the ground truth on each consumer; events applied per consumer \
         {work_done:?}"
    ));
    assert!(
        work_done.iter().all(|&n| n > 0),
        "every consumer applies its partitions: {work_done:?}"
    );
    let per_node = tokio::task::spawn_blocking(move || {
        let keys = cluster.keys_per_node();
        drop(cluster);
        keys
    })
    .await
    .expect("keys");
    let tagged = format!("{}{{", names.prefix);
    for (n, keys) in per_node.iter().enumerate() {
        let mine = keys.iter().filter(|k| k.starts_with(&tagged)).count();
        assert!(mine > 0, "node {n} holds none of the test's keys");
        log(&format!("node {n}: {mine} keys"));
    }
    drop((router, receiver, consumers));
}

async fn consumers_scale_up_and_down() {
    let label = "cluster-scale";
    let log = progress(label);
    require_kafka(Duration::from_secs(15)).await;
    let cluster = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .expect("cluster");
    let names = Names::new(label);
    let mut envs = names.envs();
    envs.push(("FLUJO__KAFKA__PARTITIONS".into(), "6".into()));
    let consumer_envs = |assignment: &str| -> Vec<(String, String)> {
        let mut e = envs.clone();
        e.push(("FLUJO__AGGREGATOR__DEDUP_WINDOW_SECS".into(), "0".into()));
        e.push(("FLUJO__KAFKA__ASSIGNMENT".into(), assignment.to_owned()));
        e
    };
    let store = cluster.url();
    // `k` consumers sharing the partitions (`0/k` .. `k-1/k`), started at once.
    let start_consumers = |k: usize| {
        let (consumer_envs, store) = (&consumer_envs, &store);
        async move {
            let mut started = Vec::new();
            for member in 0..k {
                let envs = consumer_envs(&format!("{member}/{k}"));
                started.push(start(&envs, consumer_args(Bus::Kafka, store)).await);
            }
            started
        }
    };
    let router = start(&envs, router_args(Bus::Kafka)).await;
    let consumers = vec![start(&consumer_envs("all"), consumer_args(Bus::Kafka, &store)).await];
    let receiver = start(&envs, receiver_args(&router)).await;
    wait_ready(&consumers[0], "consumer", READY_TIMEOUT).await;
    wait_ready(&receiver, "receiver", READY_TIMEOUT).await;

    let work = Workload::new(label, 3000, 1500, &[0.35, 0.7]);
    let (work, flow, client) = start_client(&receiver, work).await;
    wait_applying(&consumers[0], work.firsts.len() as u64, "the consumer").await;
    flow.reached(0, 0.8, Duration::from_secs(60)).await;
    // Scale up: the one consumer stops, three take its partitions at once.
    consumers[0].sigterm();
    let mut up = start_consumers(3).await;
    flow.open(1);
    log("scaled up from one consumer to three");
    flow.reached(1, 0.8, Duration::from_secs(60)).await;
    // Scale down, abruptly: the three are SIGKILLed, two take over at once.
    for consumer in &mut up {
        consumer.kill9();
    }
    let mut down = start_consumers(2).await;
    flow.open(2);
    log("scaled down from three consumers (SIGKILLed) to two");

    let (sales, tweets) = finish_client(client, &work, &flow).await;
    log(&client_done(&sales, &tweets, &flow));
    let context = || "the consumers were scaled from 1 to 3 to 2".to_owned();
    wait_applied(
        &mut down[0],
        sales.sales.count,
        tweets.tweets.count,
        CONVERGE_TIMEOUT,
        &context,
    )
    .await;
    for consumer in &down {
        assert_every_kpi_stays(consumer, &sales, &tweets, None).await;
    }
    let applied = vec![applied_by(&down[0]).await, applied_by(&down[1]).await];
    log(&format!(
        "every KPI exact after scaling; the last two applied {applied:?}"
    ));
    assert!(
        applied.iter().all(|&n| n > 0),
        "both last consumers work: {applied:?}"
    );
    drop((router, receiver, consumers, up, down));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_consumers_scale_up_and_down_on_a_valkey_cluster() {
    bounded(
        "kafka_consumers_scale_up_and_down_on_a_valkey_cluster",
        consumers_scale_up_and_down(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_three_consumers_on_a_valkey_cluster_survive_a_kill() {
    bounded(
        "kafka_three_consumers_on_a_valkey_cluster_survive_a_kill",
        three_consumers_on_a_cluster(),
    )
    .await;
}
