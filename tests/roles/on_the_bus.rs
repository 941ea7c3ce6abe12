//! What a 202 means on the bus: `receiver_durable_202_means_on_the_bus` and
//! `kafka_topic_holds_every_202d_sale_as_canonical_json_keyed_by_product`.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receiver_durable_202_means_on_the_bus() {
    bounded("receiver_durable_202_means_on_the_bus", async {
        let label = "durable";
        let log = progress(label);
        require_kafka(Duration::from_secs(15)).await;
        require_valkey().await;
        let names = Names::new(label);
        let _cleanup = Cleanup::new(&names, true, false);
        let envs = names.envs();

        // No consumer: the router and a receiver only.
        let mut router = start(&envs, router_args(Bus::Kafka)).await;
        let grpc = router.listener("grpc");
        let mut receiver = start(&envs, receiver_args(&router)).await;
        wait_ready(&receiver, "receiver", READY_TIMEOUT).await;
        log("router and receiver up, no consumer");

        let work = Workload::new(label, 1200, 800, &[0.4, 0.6]);
        let (work, flow, client) = start_client(&receiver, work).await;

        // The router dies mid-stream (SIGKILL) and comes back on the same address:
        // what the receiver answers 202 meanwhile cannot be on the bus, so it must
        // answer 503 (the client retries those with the same ids).
        flow.reached(0, 0.5, Duration::from_secs(60)).await;
        router.kill9();
        flow.down.store(true, Ordering::SeqCst);
        flow.open(1);
        log(&format!(
            "router SIGKILLed, client at {}/{} of phase 0",
            flow.done(0),
            flow.total[0]
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        flow.down.store(false, Ordering::SeqCst);
        let refused = flow.refused.load(Ordering::SeqCst);
        let mut args = vec![
            "--http".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--grpc".to_owned(),
            grpc.to_string(),
        ];
        args.extend(router_args(Bus::Kafka));
        let router2 = spawn_flujo(&envs, args, true).await;
        flow.open(2);
        log(&format!(
            "router restarted on {grpc}; while it was down: {refused} answers 429/503, \
             {} requests answered 202",
            flow.accepted_while_down.lock().expect("flow").len()
        ));

        join_client(client).await;
        // Nothing of the receiver or router survives: what was answered 202 must be
        // in Kafka already.
        receiver.kill9();
        drop(router2);
        let (sales, tweets) = truth(&work, &flow);
        let down_202: Vec<usize> = flow.accepted_while_down.lock().expect("flow").clone();
        let down_events: usize = down_202.iter().map(|&i| work.reqs[i].ids().len()).sum();
        log(&format!(
            "client done: {} sales and {} tweets answered 202 ({} requests while the router \
             was down); receiver and router SIGKILLed",
            sales.sales.count,
            tweets.tweets.count,
            down_202.len()
        ));

        let context = || {
            format!(
                "{} requests ({down_events} events) were answered 202 by the receiver while \
                 the router was down (SIGKILLed): a durable 202 must mean every sink \
                 confirmed the batch; receiver stderr (tail):\n{}",
                down_202.len(),
                tail(&receiver, 15)
            )
        };
        // First the bus itself, read by a plain Kafka client: every sale answered 202.
        let order = stream_order_on_bus(&names.sales_topic, &work, &flow, &sales);
        let order = join(order)
            .await
            .unwrap_or_else(|e| panic!("{e}: {}", context()));
        log("every sale answered 202 is on the sales topic");
        // Then a consumer started only now applies every event answered 202.
        let mut consumer =
            start(&envs, consumer_args(Bus::Kafka, &store_flag(&valkey_url()))).await;
        log("consumer started");
        wait_applied(
            &mut consumer,
            sales.sales.count,
            tweets.tweets.count,
            Duration::from_secs(60),
            &context,
        )
        .await;
        assert_every_kpi(&consumer, &sales, &tweets, Some(&order)).await;
        assert!(
            down_202.is_empty(),
            "{} requests were answered 202 while the router was down: {}",
            down_202.len(),
            context()
        );
        log(&format!(
            "every event answered 202 was applied; every KPI matches; skipped as \
             duplicates: {:?}",
            duplicates(&consumer).await
        ));
    })
    .await;
}

/// Where a sale's `ts` comes from.
pub(crate) enum Stamp {
    /// The client sent this one.
    Client(i64),
    /// The receiver stamped it between these two instants (ms since the epoch).
    Receiver(i64, i64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_topic_holds_every_202d_sale_as_canonical_json_keyed_by_product() {
    bounded(
        "kafka_topic_holds_every_202d_sale_as_canonical_json_keyed_by_product",
        async {
            let label = "plain";
            require_kafka(Duration::from_secs(15)).await;
            let names = Names::new(label);
            let _cleanup = Cleanup::new(&names, false, false);
            let envs = names.envs();
            let router = start(&envs, router_args(Bus::Kafka)).await;
            let receiver = start(&envs, receiver_args(&router)).await;
            wait_ready(&receiver, "receiver", READY_TIMEOUT).await;

            // One sequential client (so the order within a product is known), every
            // sale form, half of the requests with client timestamps.
            let mut rng = StdRng::seed_from_u64(rand::rng().random());
            let tag = uuid::Uuid::now_v7().simple().to_string();
            let now_ms = || {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock")
                    .as_millis() as i64
            };
            // id → (sale, client ts, or the window the receiver stamped it in)
            let mut sent: HashMap<String, (Sale, Stamp)> = HashMap::new();
            let mut order: Vec<String> = Vec::new();
            let flow = Flow::new(&Workload::empty());
            let http = http_client();
            let base = format!("http://{}", receiver.addr);
            for b in 0..12 {
                let form = SALE_FORMS[b % SALE_FORMS.len()];
                let with_ts = b.is_multiple_of(2);
                let sales: Vec<Sale> = (0..BATCH)
                    .map(|i| {
                        let c = CATEGORIES[rng.random_range(0..4)];
                        let product = format!("P-{}", rng.random_range(0..20));
                        random_sale(&mut rng, format!("{tag}-{b:02}-{i:02}"), c, &product)
                    })
                    .collect();
                let mut req = Req::new(Payload::Sales(sales.clone(), form), Encoding::Ndjson);
                for (i, body) in req.bodies.iter_mut().enumerate() {
                    if with_ts {
                        body["ts"] = json!(1_700_000_000_000i64 + (b * BATCH + i) as i64);
                    } else if let Some(fields) = body.as_object_mut() {
                        fields.remove("ts"); // for the receiver to stamp
                    }
                }
                let before = now_ms();
                send_until_accepted(&http, &base, &req, &flow, b).await;
                let after = now_ms();
                for (i, s) in sales.into_iter().enumerate() {
                    let ts = if with_ts {
                        Stamp::Client(1_700_000_000_000i64 + (b * BATCH + i) as i64)
                    } else {
                        Stamp::Receiver(before, after)
                    };
                    order.push(s.id.clone());
                    sent.insert(s.id.clone(), (s, ts));
                }
            }
            let refused = flow.refused.load(Ordering::SeqCst);

            let want: HashSet<String> = sent.keys().cloned().collect();
            let (messages, missing) =
                read_topic(&names.sales_topic, want, Duration::from_secs(45)).await;
            assert!(
                missing.is_empty(),
                "{} of {} sales answered 202 are not on {}: {:?}",
                missing.len(),
                sent.len(),
                names.sales_topic,
                missing.iter().take(10).collect::<Vec<_>>()
            );
            let mut partition_of: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
            let mut first_seen: Vec<String> = Vec::new();
            let mut copies: HashMap<&str, usize> = HashMap::new();
            for m in &messages {
                let id = m.json["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("message without id: {}", m.json));
                let (sale, ts) = sent
                    .get(id)
                    .unwrap_or_else(|| panic!("a message nobody sent: {}", m.json));
                let mut want = json!({
                    "id": sale.id, "category": sale.category, "product_id": sale.product_id,
                    "price": sale.price, "quantity": sale.quantity,
                });
                match ts {
                    Stamp::Client(ts) => want["ts"] = json!(ts),
                    Stamp::Receiver(before, after) => {
                        let got = m.json["ts"]
                            .as_i64()
                            .unwrap_or_else(|| panic!("no integer ts: {}", m.json));
                        assert!(
                            (before - 1..=after + 1).contains(&got),
                            "ts {got} stamped outside the request ({before}..{after}): {}",
                            m.json
                        );
                        want["ts"] = json!(got);
                    }
                }
                assert_eq!(m.json, want, "canonical JSON of sale {id}");
                assert_canonical_sale_fields(&format!("sale {id}"), &m.json);
                assert_eq!(
                    m.key.as_deref(),
                    Some(sale.product_id.as_str()),
                    "key of sale {id} (partition {} offset {})",
                    m.partition,
                    m.offset
                );
                partition_of
                    .entry(sale.product_id.clone())
                    .or_default()
                    .insert(m.partition);
                let n = copies.entry(id).or_default();
                *n += 1;
                if *n == 1 {
                    first_seen.push(id.to_owned());
                }
            }
            // Copies of a sale can only come from retries (the client's, after a
            // 429/503, or the producer's: `kafka.idempotence` is off by default); they
            // are shown, not failed, since consumers dedup by id.
            let duplicates = copies.values().filter(|&&n| n > 1).count();
            for (c, partitions) in &partition_of {
                assert_eq!(partitions.len(), 1, "key {c} spread over {partitions:?}");
            }
            // Within a product, the order the client sent (one request at a time).
            for product in partition_of.keys() {
                let sent_order: Vec<&String> = order
                    .iter()
                    .filter(|id| &sent[*id].0.product_id == product)
                    .collect();
                let on_topic: Vec<&String> = first_seen
                    .iter()
                    .filter(|id| &sent[*id].0.product_id == product)
                    .collect();
                assert_eq!(on_topic, sent_order, "order within {product}");
            }
            // Twenty products spread the sales over more than one partition.
            let used: BTreeSet<i32> = partition_of.values().flatten().copied().collect();
            assert!(used.len() > 1, "every sale on partitions {used:?}");
            println!(
                "plain reader: {} messages for {} sales, {duplicates} duplicates, {refused} \
                 refusals, partitions per product {partition_of:?}",
                messages.len(),
                sent.len()
            );
            drop((router, receiver));
        },
    )
    .await;
}
