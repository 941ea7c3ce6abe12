//! Broker faults: a lost connection (through a proxy that cuts it), a connection
//! closed by the broker, a deleted queue.

use super::*;

/// A TCP proxy in front of RabbitMQ that the test can take down (dropping every
/// open connection and refusing new ones) and bring back.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) up: Arc<AtomicBool>,
    pub(crate) epoch: watch::Sender<u64>,
    pub(crate) stop: CancellationToken,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let (epoch, _) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let (up2, epoch2, stop2) = (up.clone(), epoch.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut killed = epoch2.subscribe();
                let stop3 = stop2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = killed.changed() => {}
                        _ = stop3.cancelled() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            epoch,
            stop,
        }
    }

    pub(crate) fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    pub(crate) fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub(crate) fn url(&self, url: &str) -> String {
        crate::support::via(url, self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_and_source_survive_a_lost_connection() {
    run_test(async {
        let base = test_config("outage");
        let _cleanup = queue_cleanup(&base);
        let proxy = Proxy::start(amqp_broker_addr(&base.url).await).await;
        let config = RabbitConfig {
            url: proxy.url(&base.url),
            ..base.clone()
        };
        let sink = ready_sink(&config, &unique("outage-sink")).await;
        let mut source = RabbitSource::new(config.clone(), Kind::Tweet, CancellationToken::new());

        // Before: a committed batch, then one read but not committed.
        let a = actor_tweets("a", 3, 3);
        publish(&sink, Events::Tweets(a.clone()), 1, "confirmed").await;
        let got = read_events(&mut source, a.len()).await;
        assert_eq!(all_tweets(&got), a);
        let c = actor_tweets("c", 4, 3);
        publish(&sink, Events::Tweets(c.clone()), 2, "confirmed").await;
        // Read all of c without committing (it may take several deliveries).
        let mut pending = Vec::new();
        while all_tweets(&pending).len() < c.len() {
            pending.push(next_delivery(&mut source).await);
        }
        assert_eq!(all_tweets(&pending), c);
        let pending = pending.pop().expect("a delivery");

        // Down: publishing fails promptly, readiness says so, the commit of the
        // pending delivery cannot take effect (its channel is gone).
        proxy.down();
        let deadline = Instant::now() + WAIT;
        loop {
            let d = actor_tweets("d-lost", 1, 3);
            let result = tokio::time::timeout(
                Duration::from_secs(5),
                sink.publish(batch(Events::Tweets(d), 3)),
            )
            .await
            .expect("publish answers promptly while down");
            if result.is_err() {
                break;
            }
            assert!(Instant::now() < deadline, "sink never noticed the outage");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..3 {
            let result = tokio::time::timeout(
                Duration::from_secs(5),
                sink.publish(batch(Events::Tweets(actor_tweets("d-lost", 1, 3)), 3)),
            )
            .await
            .expect("publish answers promptly while down");
            let err = result.expect_err("publish fails while RabbitMQ is unreachable");
            assert!(err.0.contains("rabbitmq"), "{err}");
        }
        assert!(sink.ready().await.is_err(), "not ready while down");
        tokio::time::sleep(Duration::from_millis(200)).await;
        source
            .commit(pending.token)
            .await
            .expect("commit is a no-op");

        // The source keeps trying while down and resumes once RabbitMQ is back.
        let reader = tokio::spawn(async move {
            let mut deliveries = Vec::new();
            let mut tweets_seen = Vec::new();
            while tweets_seen.len() < 7 {
                let d = tokio::time::timeout(Duration::from_secs(60), source.next())
                    .await
                    .expect("a delivery after recovery")
                    .expect("open");
                tweets_seen.extend(all_tweets(std::slice::from_ref(&d)));
                source.commit(d.token).await.expect("commit");
                deliveries.push(d);
            }
            (source, tweets_seen)
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!reader.is_finished(), "nothing can be read while down");
        proxy.up();

        sink.wait_ready(WAIT)
            .await
            .expect("the sink recovers on its own");
        let d = actor_tweets("d", 3, 3);
        let again = "publishes again after recovery";
        publish(&sink, Events::Tweets(d.clone()), 4, again).await;
        let (mut source, seen) = tokio::time::timeout(Duration::from_secs(90), reader)
            .await
            .expect("reader finishes")
            .expect("reader ok");
        // The uncommitted batch comes again (first), then the new one; "d-lost"
        // events may or may not have reached the queue before the outage.
        let seen: Vec<Tweet> = seen
            .into_iter()
            .filter(|t| !t.id.starts_with("d-lost"))
            .collect();
        let mut expected = c.clone();
        expected.extend(d.clone());
        if seen.len() < expected.len() {
            let more = read_events(&mut source, expected.len() - seen.len()).await;
            let mut all = seen.clone();
            all.extend(all_tweets(&more));
            let all: Vec<Tweet> = all
                .into_iter()
                .filter(|t| !t.id.starts_with("d-lost"))
                .collect();
            assert_eq!(all, expected);
        } else {
            assert_eq!(seen, expected, "redelivered batch, then the new one");
        }

        // The stale token of the old channel is still a no-op (acking it on the new
        // channel would close it), and the new channel keeps working.
        let generation = source.channel_generation();
        assert!(generation > 1, "the source reconnected");
        source.commit(pending.token).await.expect("stale commit");
        let e = actor_tweets("e", 2, 3);
        publish(&sink, Events::Tweets(e.clone()), 5, "confirmed").await;
        let mut tail = Vec::new();
        while !e.iter().all(|t| tail.contains(t)) {
            let got = next_delivery(&mut source).await;
            tail.extend(all_tweets(std::slice::from_ref(&got)));
            source.commit(got.token).await.expect("commit");
            // Committing twice is harmless (a second ack would close the channel).
            source.commit(got.token).await.expect("commit again");
        }
        assert!(tail.iter().all(|t| e.contains(t)), "only e is left");
        let f = actor_tweets("f", 1, 3);
        publish(&sink, Events::Tweets(f.clone()), 6, "confirmed").await;
        let got = next_delivery(&mut source).await;
        assert_eq!(
            all_tweets(std::slice::from_ref(&got)),
            f,
            "same channel still works"
        );
        assert!(source.is_connected());
        assert_eq!(
            source.channel_generation(),
            generation,
            "no reconnect after the stale and the double commits"
        );
    })
    .await;
}

/// `rabbitmqctl` pids of the connections whose client properties contain `name`.
pub(crate) fn broker_connections(name: &str) -> Option<Vec<String>> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "pid", "client_properties", "--silent"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    // One line per connection: `<pid>\t<client properties as an Erlang term>`.
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.starts_with('<') && line.contains(name))
            .filter_map(|line| line.split('\t').next().map(str::to_owned))
            .collect(),
    )
}

pub(crate) fn close_broker_connection(pid: &str) -> bool {
    std::process::Command::new("rabbitmqctl")
        .args(["close_connection", pid, "flujo test: forced close"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_the_broker_closes_the_connection() {
    run_test(async {
        let config = test_config("brokerclose");
        let _cleanup = queue_cleanup(&config);
        let sink_name = unique("brokerclose-sink");
        let source_name = unique("brokerclose-source");
        let sink = ready_sink(&config, &sink_name).await;
        let mut source = RabbitSource::with_connection_name(
            config.clone(),
            Kind::Sale,
            CancellationToken::new(),
            &source_name,
        );
        let a = actor_sales("a", 2);
        publish(&sink, Events::Sales(a.clone()), 1, "confirmed").await;
        assert_eq!(all_sales(&read_events(&mut source, 2).await), a);

        // Only this test's two connections are closed (others may be in use).
        let pids = tokio::task::spawn_blocking({
            let (s, c) = (sink_name.clone(), source_name.clone());
            move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let found: Vec<String> = [s.as_str(), c.as_str()]
                        .iter()
                        .filter_map(|n| broker_connections(n))
                        .flatten()
                        .collect();
                    if found.len() >= 2 || Instant::now() > deadline {
                        return (found, broker_connections("").is_some());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
        .await
        .expect("rabbitmqctl");
        let (pids, ctl_works) = pids;
        if !ctl_works {
            eprintln!("rabbitmqctl is not usable here; the proxy test covers a lost connection");
            return;
        }
        assert_eq!(pids.len(), 2, "both connections listed by rabbitmqctl");
        let closed = tokio::task::spawn_blocking(move || {
            pids.iter().all(|pid| close_broker_connection(pid))
        })
        .await
        .expect("rabbitmqctl");
        assert!(closed, "rabbitmqctl close_connection");

        // The sink reconnects by itself; a publish may fail meanwhile, never hang.
        let b = actor_sales("b", 3);
        until_ok(
            "sink did not recover",
            Duration::from_millis(100),
            || async {
                let publishing = sink.publish(batch(Events::Sales(b.clone()), 2));
                let answer = tokio::time::timeout(Duration::from_secs(10), publishing).await;
                answer.expect("publish answers")
            },
        )
        .await;
        // The source resumes; b may come more than once if an attempt was confirmed
        // but its answer lost; ids are what the aggregator deduplicates on.
        let mut seen = Vec::new();
        while !b.iter().all(|s| seen.contains(s)) {
            let d = next_delivery(&mut source).await;
            seen.extend(all_sales(std::slice::from_ref(&d)));
            source.commit(d.token).await.expect("commit");
        }
        assert!(seen.iter().all(|s| b.contains(s)), "only b after recovery");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_queue_is_reported_and_declared_again() {
    with_queues("deleted", |config, sink| async move {
        publish(
            &sink,
            Events::Sales(actor_sales("before", 2)),
            1,
            "confirmed",
        )
        .await;

        let (connection, channel) = open_channel(&config.url).await;
        channel
            .queue_delete(
                config.sales_queue.as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .expect("delete queue");
        let _ = channel.close(200, "OK".into()).await;
        let _ = connection.close(200, "OK".into()).await;

        // Not silently dropped: the publish fails (the client retries, HTTP 503)...
        let err = sink
            .publish(batch(Events::Sales(actor_sales("lost", 2)), 2))
            .await
            .expect_err("unroutable messages are an error");
        assert!(err.0.contains("unroutable"), "{err}");
        // ...and the queue is back for the retry.
        let again = actor_sales("retry", 2);
        let redeclared = "confirmed after re-declare";
        publish(&sink, Events::Sales(again.clone()), 3, redeclared).await;
        let mut source = sales_source(&config);
        assert_eq!(all_sales(&read_events(&mut source, 2).await), again);
    })
    .await;
}
