//! Role wiring: which actors a process starts, on which arbiters, and the ordered
//! drain at shutdown. On the memory bus every role runs in this one process.
//!
//! Arbiters: one per receiver (ingest parses and validates in parallel), one for
//! router and publishers, one for consumer and aggregator (applies stay ordered).

use crate::config::Config;
use crate::grpc::{self, proto::ingest_server::IngestServer, IngestService};
use crate::http::{self, query::ReadCache, AppState, Limits};
use crate::shutdown::{Deadline, Shutdown};
use crate::tcp;
use actix::prelude::*;
use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use flujo_actors::admission::Admission;
use flujo_actors::aggregator::Aggregator;
use flujo_actors::bus::memory_bus;
use flujo_actors::consumer::Consumer;
use flujo_actors::event::Kind;
use flujo_actors::publisher::{Publisher, Sink};
use flujo_actors::receiver::{Receiver, ReceiverPool};
use flujo_actors::router::Router;
use flujo_actors::store::{MemoryStore, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::future::IntoFuture as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// The running actors of one process.
pub struct Pipeline {
    /// Entry point for every transport.
    pub receivers: ReceiverPool,
    /// The KPI store.
    pub store: Arc<dyn Store>,
    /// Every sink, for readiness.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// The bound on events in flight; drained at shutdown.
    pub admission: Admission,
    // Kept so supervisors can restart these actors (a supervisor gives up on an
    // actor nobody can address any more).
    _consumer: Addr<Consumer>,
    _arbiters: Vec<Arbiter>,
}

/// Starts every actor of the embedded pipeline; call inside an actix `System`.
pub fn start_pipeline(cfg: &Config) -> Pipeline {
    let mailbox = cfg.pipeline.mailbox_capacity;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Duration::from_secs(
        cfg.aggregator.dedup_window_secs,
    )));
    let admission = Admission::new(cfg.pipeline.max_inflight_events);

    let storage = Arbiter::new();
    let expire_every = Duration::from_secs(cfg.aggregator.expire_interval_secs);
    let aggregator = Supervisor::start_in_arbiter(&storage.handle(), {
        let store = store.clone();
        move |_| Aggregator::new(store, expire_every, mailbox)
    });
    let (sink, source) = memory_bus(cfg.pipeline.bus_capacity);
    let consumer = Supervisor::start_in_arbiter(&storage.handle(), move |_| {
        Consumer::new(Box::new(source), aggregator)
    });

    let routing = Arbiter::new();
    let sink: Arc<dyn Sink> = Arc::new(sink);
    let publisher = Supervisor::start_in_arbiter(&routing.handle(), {
        let sink = sink.clone();
        move |_| Publisher::new(sink, mailbox)
    });
    let routes: HashMap<Kind, Vec<Addr<Publisher>>> = Kind::ALL
        .into_iter()
        .map(|k| (k, vec![publisher.clone()]))
        .collect();
    let router =
        Supervisor::start_in_arbiter(&routing.handle(), move |_| Router::new(routes, mailbox));

    let ack = cfg.ack_mode();
    let mut arbiters = vec![storage, routing];
    let receivers = (0..cfg.receiver_count())
        .map(|_| {
            let arbiter = Arbiter::new();
            let (router, admission) = (router.clone(), admission.clone());
            let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
                Receiver::new(router, admission, ack, mailbox)
            });
            arbiters.push(arbiter);
            addr
        })
        .collect();

    Pipeline {
        receivers: ReceiverPool::new(receivers),
        store,
        sinks: vec![sink],
        admission,
        _consumer: consumer,
        _arbiters: arbiters,
    }
}

/// Runs `flujo run` until SIGTERM/Ctrl-C, then drains in order within the deadline:
/// HTTP stops accepting and answers what is in flight → admission closes → router,
/// publisher, bus, consumer and aggregator settle every admitted event.
pub async fn run(cfg: Config, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let pipeline = start_pipeline(&cfg);
    let state = Arc::new(AppState {
        receivers: pipeline.receivers.clone(),
        store: pipeline.store.clone(),
        sinks: pipeline.sinks.clone(),
        cache: ReadCache::new(Duration::from_millis(cfg.query.cache_ttl_ms)),
        limits: Limits {
            max_body_bytes: cfg.http.max_body_bytes,
            max_batch_events: cfg.http.max_batch_events,
        },
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
    });
    let bind = |key: &'static str, addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {key} {addr}"))
    };
    let http_listener = bind("http.addr", cfg.http.addr).await?;
    let grpc_listener = bind("grpc.addr", cfg.grpc.addr).await?;
    let tcp_listener = bind("tcp.addr", cfg.tcp.addr).await?;
    let (http_addr, grpc_addr, tcp_addr) = (
        http_listener.local_addr()?,
        grpc_listener.local_addr()?,
        tcp_listener.local_addr()?,
    );
    // A stable line on stdout for scripts and tests that bind port 0.
    println!("flujo listening http={http_addr} grpc={grpc_addr} tcp={tcp_addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%http_addr, %grpc_addr, %tcp_addr, role = %cfg.role, bus = ?cfg.bus, store = %cfg.store, ack = ?cfg.ack_mode(), "flujo started");

    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            metrics.run_upkeep();
        }
    });
    let app = http::app(state, &cfg.http);
    let http_server = axum::serve(
        http_listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app,
    )
    .with_graceful_shutdown(shutdown.signal())
    .into_future();

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServer<IngestService>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let ingest = IngestService::new(pipeline.receivers.clone(), cfg.http.max_batch_events);
    let grpc_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ingest.into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            {
                let (signal, health) = (shutdown.signal(), health.clone());
                async move {
                    signal.await;
                    health
                        .set_not_serving::<IngestServer<IngestService>>()
                        .await;
                }
            },
        );
    let tcp_server = tcp::serve(
        tcp_listener,
        pipeline.receivers.clone(),
        cfg.tcp.max_line_bytes,
        shutdown.clone(),
    );

    // Receivers: all three servers stop accepting on the signal and finish what
    // they have in flight; any of them failing brings the others down.
    let mut servers = tokio::spawn(async move {
        let http = async { http_server.await.context("HTTP server") };
        let grpc = async { grpc_server.await.context("gRPC server") };
        let tcp = async {
            tcp_server.await;
            Ok(())
        };
        tokio::try_join!(http, grpc, tcp).map(|_| ())
    });
    tokio::select! {
        _ = shutdown.triggered() => {}
        result = &mut servers => {
            shutdown.trigger();
            result??;
            anyhow::bail!("servers stopped unexpectedly");
        }
    }

    let deadline = Deadline::after(Duration::from_secs(cfg.shutdown.deadline_secs));
    tracing::info!("draining: transports answer requests in flight");
    match deadline.run(servers).await {
        Some(result) => result??,
        None => anyhow::bail!("shutdown deadline passed with requests still in flight"),
    }
    pipeline.admission.close();
    let in_flight = pipeline.admission.in_flight();
    tracing::info!(in_flight, "draining: pipeline settles admitted events");
    if deadline.run(pipeline.admission.drained()).await.is_none() {
        anyhow::bail!(
            "shutdown deadline passed with {} events not yet applied",
            pipeline.admission.in_flight()
        );
    }
    tracing::info!("drained; bye");
    Ok(())
}
