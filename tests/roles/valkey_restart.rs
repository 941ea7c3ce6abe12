//! `valkey_restart_mid_stream`: a Valkey of the test's own SIGKILLed mid-stream and
//! restarted on the same port.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valkey_restart_mid_stream() {
    bounded("valkey_restart_mid_stream", async {
        let label = "valkey-restart";
        let log = progress(label);
        let names = Names::new(label);
        let _cleanup = Cleanup::new(&names, false, false);
        require_kafka(Duration::from_secs(15)).await;
        let mut valkey = tokio::task::spawn_blocking(OwnValkey::start)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let mut args = vec!["--role".to_owned(), "all".to_owned()];
        args.extend(bus_args(Bus::Kafka));
        args.extend(["--store".to_owned(), store_flag(&valkey.url())]);
        let mut flujo = start(&names.envs(), args).await;
        wait_ready(&flujo, "flujo", READY_TIMEOUT).await;
        log(&format!(
            "flujo up, own valkey-server on port {}",
            valkey.port
        ));

        let work = Workload::new(label, 2000, 1500, &[0.3, 0.6]);
        let (work, flow, client) = start_client(&flujo, work).await;

        flow.reached(0, 0.5, Duration::from_secs(60)).await;
        let firsts = work.firsts.len() as u64;
        wait_applying(&flujo, firsts, "flujo").await;
        let before = counts(&flujo).await;
        valkey.kill9();
        let down_at = Instant::now();
        flow.open(1);
        log(&format!(
            "valkey SIGKILLed at counts {before:?}, client at {}/{} of phase 0",
            flow.done(0),
            flow.total[0]
        ));

        // While Valkey is down (at least 2 s, and until readiness has named it; the
        // client sends phase 1 meanwhile), the process stays up and /readyz fails
        // naming the store.
        let mut named: Option<Value> = None;
        let mut polls = 0;
        while down_at.elapsed() < Duration::from_secs(2) || named.is_none() {
            assert!(
                down_at.elapsed() < Duration::from_secs(30),
                "/readyz did not name the store as failing within 30 s of the Valkey outage"
            );
            assert_running(&mut flujo, "during the Valkey outage").await;
            let (status, body) = readyz(&flujo).await;
            polls += 1;
            let names_store = body["failing"].as_array().is_some_and(|f| {
                f.iter()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with("store:valkey")))
            });
            if status == StatusCode::SERVICE_UNAVAILABLE
                && names_store
                && body["checks"]["store:valkey"] != json!("ok")
            {
                named.get_or_insert(body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        log(&format!(
            "/readyz during the outage ({polls} polls): {}",
            named.as_ref().expect("named")
        ));
        let mut valkey = tokio::task::spawn_blocking(move || {
            valkey.spawn();
            valkey
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        flow.open(2);
        log(&format!(
            "valkey restarted after {:?} down, client at {}/{} of phase 1",
            down_at.elapsed(),
            flow.done(1),
            flow.total[1]
        ));
        wait_ready(&flujo, "flujo after the Valkey restart", READY_TIMEOUT).await;
        log("/readyz is 200 again");

        let (sales, tweets) = finish_client(client, &work, &flow).await;
        log(&client_done(&sales, &tweets, &flow));
        let order = stream_order_on_bus(&names.sales_topic, &work, &flow, &sales);
        let context = || "Valkey was SIGKILLed and restarted".to_owned();
        wait_applied(
            &mut flujo,
            sales.sales.count,
            tweets.tweets.count,
            CONVERGE_TIMEOUT,
            &context,
        )
        .await;
        let order = join(order).await.unwrap_or_else(|e| panic!("{e}"));
        assert_every_kpi(&flujo, &sales, &tweets, Some(&order)).await;
        wait_ready(&flujo, "flujo at the end", READY_TIMEOUT).await;
        let (_, body) = readyz(&flujo).await;
        assert_eq!(body["checks"]["store:valkey"], json!("ok"), "{body}");
        let metrics = flujo.metrics().await;
        let restarts: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("flujo_actor_restarts_total"))
            .collect();
        log(&format!(
            "every KPI matches; actor restarts: {restarts:?}; skipped as duplicates: {:?}",
            duplicates(&flujo).await
        ));
        valkey.kill9();
    })
    .await;
}
