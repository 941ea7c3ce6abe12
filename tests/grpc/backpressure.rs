//! Backpressure as `RESOURCE_EXHAUSTED`; what was acked is what counts.

use super::*;

/// Fires `batches` concurrent 10,000-event PublishSales over a few connections;
/// returns, per batch, the Ack or the refusal.
pub(crate) async fn burst(
    clients: &[Ingest],
    round: usize,
    batches: usize,
) -> Vec<Result<Ack, Status>> {
    let sends = (0..batches).map(|b| {
        let mut client = clients[b % clients.len()].clone();
        let sales: Vec<pb::Sale> = (0..10_000)
            .map(|i| pb::Sale {
                id: format!("bp-{round}-{b}-{i}"),
                ts: 0,
                category: i % 4 + 1,
                product_id: format!("P{}", i % 50),
                price: 1.5,
                quantity: 1,
            })
            .collect();
        async move { publish_sales(&mut client, sales).await }
    });
    join_all(sends).await
}

#[tokio::test]
async fn backpressure_is_resource_exhausted_and_acked_is_what_counts() {
    let server = TestServer::start(&[
        ("FLUJO__PIPELINE__MAX_INFLIGHT_EVENTS", "10000"),
        // Refuse at once instead of waiting for room: RESOURCE_EXHAUSTED itself.
        ("FLUJO__PIPELINE__ADMISSION_WAIT_MS", "0"),
        ("FLUJO__QUERY__CACHE_TTL_MS", "0"),
    ]);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(ingest_client(&server).await);
    }
    let mut acked = 0u64;
    let mut exhausted = 0usize;
    for round in 0..3 {
        for outcome in burst(&clients, round, 40).await {
            match outcome {
                Ok(ack) => {
                    assert_eq!((ack.accepted, ack.ids.len()), (10_000, 10_000), "{ack:?}");
                    acked += 10_000;
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    assert!(!status.message().is_empty(), "{status:?}");
                    exhausted += 1;
                }
                Err(status) => panic!(
                    "under backpressure only an Ack or RESOURCE_EXHAUSTED is expected: {status:?}"
                ),
            }
        }
        // Exactly what was acked is counted: nothing lost, nothing of a refused
        // batch stored.
        server.wait_sales(acked).await;
        server.wait_idle().await;
        let kpis = server.wait_sales(acked).await;
        assert_eq!(kpis["total"]["quantity_sum"], json!(acked), "{kpis}");
        for c in CATEGORIES {
            assert_eq!(
                kpis["categories"][c]["count"],
                json!(acked / 4),
                "{c}: {kpis}"
            );
        }
        eprintln!("round {round}: {acked} events acked in all, {exhausted} batches refused");
        if exhausted > 0 {
            break;
        }
    }
    assert!(acked > 0, "some batch must get through");
    assert!(
        exhausted > 0,
        "120 concurrent 10,000-event batches against max_inflight_events=10000: \
         no RESOURCE_EXHAUSTED was ever answered"
    );
    // After the burst the pipeline takes batches again.
    let mut client = clients[0].clone();
    let ack = publish_sales(&mut client, vec![good_sale(424_242)])
        .await
        .expect("a batch after the burst");
    assert_eq!(ack.accepted, 1);
    server.wait_sales(acked + 1).await;
}
