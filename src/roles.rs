//! Role wiring: which actors a process starts, on which arbiters, which servers it
//! runs, and the ordered drain at shutdown.
//!
//! | role | actors | servers |
//! |---|---|---|
//! | receiver | receiver pool (+ a gRPC forwarder when no router is local) | HTTP ingest, gRPC, TCP |
//! | router | receiver pool, router, one publisher per sink | gRPC (what remote receivers call) |
//! | consumer | one consumer per source, aggregator, store | HTTP query API, KPI stream and page |
//!
//! Every process serves `/metrics`, `/healthz` and `/readyz` on its HTTP port.
//! Arbiters: one per receiver (parsing and validation run in parallel), one for
//! router and publishers, one for consumers and aggregator (a Kafka consumer stores
//! a delivery before it reads the next, one part per partition, concurrently; the
//! memory bus's consumer keeps a few deliveries in the store at once).

use crate::components::probes::ComponentProbe;
use crate::components::{self, Bus, Components};
use crate::config::Plan;
use crate::gateway::{Gateway, Scope};
use crate::readiness::{self, Probe, RouterProbe};
use crate::shutdown::{Deadline, Shutdown};
use crate::transports::forward::{self, RemoteRouter};
use crate::transports::grpc::{self, proto::ingest_server::IngestServer, IngestService};
use crate::transports::http::{self, query::ReadCache, stream::KpiFeed, AppState, Limits};
use crate::transports::tcp;
use crate::transports::tls::{self, TlsListener};
use actix::prelude::*;
use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use flujo_actors::admission::Admission;
use flujo_actors::aggregator::Aggregator;
use flujo_actors::breaker::{Breaker, Breakers};
use flujo_actors::consumer::{Consumer, InFlight};
use flujo_actors::event::Kind;
use flujo_actors::mailbox::start_bounded;
use flujo_actors::messages::Route;
use flujo_actors::metrics::Exports;
use flujo_actors::publisher::Publisher;
use flujo_actors::receiver::{Receiver, ReceiverPool};
use flujo_actors::router::Router;
use flujo_actors::store::Store;
use flujo_actors::{aggregator, consumer, publisher, receiver, router};
use futures::future::BoxFuture;
use futures::FutureExt as _;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::future::IntoFuture as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The running actors of one process.
pub struct Node {
    /// Entry point for every transport (receiver and router roles).
    pub receivers: Option<ReceiverPool>,
    /// The KPI store (consumer role).
    pub store: Option<Arc<dyn Store>>,
    /// Dependencies for `/readyz`.
    pub probes: Vec<Arc<dyn Probe>>,
    /// The bound on events in flight; drained at shutdown.
    pub admission: Admission,
    /// Stops the broker sources at shutdown.
    stop_sources: CancellationToken,
    /// One per consumer: held while a delivery is being stored and committed.
    in_flight: Vec<InFlight>,
    // Kept so supervisors can restart these actors (a supervisor gives up on an
    // actor nobody can address any more).
    _consumers: Vec<Addr<Consumer>>,
    _arbiters: Vec<Arbiter>,
}

impl Node {
    /// Starts the actors of the plan's roles; call inside an actix `System`.
    pub async fn start(plan: &Plan) -> anyhow::Result<Node> {
        let (cfg, roles) = (&plan.config, plan.roles);
        let mailbox = cfg.pipeline.mailbox_capacity;
        let admission = Admission::new(cfg.pipeline.max_inflight_events);
        let stop_sources = CancellationToken::new();
        let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
        let mut arbiters = Vec::new();
        // Sinks serve the router; a consumer's readiness asks its own sources.
        let mut components =
            Components::open(cfg.settings(), &plan.buses(), roles.router, roles.consumer).await?;
        // One breaker per sink: its publisher reports to it, the receivers ask it,
        // and its readiness probe shows it.
        let mut breakers: HashMap<Bus, Arc<Breaker>> = HashMap::new();
        for (bus, sink) in components.sinks() {
            let breaker = Breaker::new(sink.name(), cfg.breaker.clone());
            probes.push(Arc::new(ComponentProbe::guarded_sink(
                sink.clone(),
                breaker.clone(),
            )));
            breakers.insert(*bus, breaker);
        }
        let mut open_sinks = Breakers::default();
        for kind in Kind::ALL {
            for bus in plan.sinks(kind) {
                if let Some(breaker) = breakers.get(bus) {
                    open_sinks.add(kind, breaker.clone());
                }
            }
        }

        let mut store = None;
        let mut in_flight = Vec::new();
        let mut consumers = Vec::new();
        if roles.consumer {
            let kpis = components.open_store(&plan.store)?;
            let storage = Arbiter::new();
            let expire_every = Duration::from_secs(cfg.aggregator.expire_interval_secs);
            let aggregator = Supervisor::start_in_arbiter(&storage.handle(), {
                let kpis = kpis.clone();
                // Applies run on the process's multi-threaded runtime (this one).
                let runtime = tokio::runtime::Handle::current();
                move |_| Aggregator::new(kpis, expire_every, mailbox).applying_on(runtime.clone())
            });
            let sources = components.sources(&plan.routes, &kpis, &stop_sources)?;
            for probe in components::source_probes(&sources) {
                probes.push(Arc::new(probe));
            }
            probes.push(Arc::new(ComponentProbe::store(kpis.clone())));
            for source in sources {
                let gate = InFlight::default();
                in_flight.push(gate.clone());
                let aggregator = aggregator.clone();
                consumers.push(Supervisor::start_in_arbiter(&storage.handle(), move |_| {
                    Consumer::new(source, aggregator, gate)
                }));
            }
            arbiters.push(storage);
            store = Some(kpis);
        }

        let router: Option<Recipient<Route>> = if roles.router {
            let routing = Arbiter::new();
            let mut publishers: HashMap<Bus, Addr<Publisher>> = HashMap::new();
            for (bus, sink) in components.sinks().iter().cloned() {
                let breaker = breakers.get(&bus).cloned().context("a breaker per sink")?;
                let publisher = Publisher::guarded(sink, breaker, cfg.deadlines.durable_ack());
                let publisher = start_bounded(&routing.handle(), mailbox, publisher);
                publishers.insert(bus, publisher);
            }
            let routes: HashMap<Kind, Vec<Addr<Publisher>>> = Kind::ALL
                .into_iter()
                .map(|k| {
                    let addrs = plan
                        .sinks(k)
                        .iter()
                        .filter_map(|b| publishers.get(b).cloned())
                        .collect();
                    (k, addrs)
                })
                .collect();
            let router = start_bounded(&routing.handle(), mailbox, Router::new(routes));
            arbiters.push(routing);
            Some(router.recipient())
        } else if roles.receiver {
            let url = cfg.router_url.clone().context("router_url is required")?;
            let token = forward::BearerToken::new(cfg.auth.forward_token_file.as_deref());
            let ca_file = cfg.router_ca_file.as_deref();
            let channel = forward::channel(&url, ca_file)
                .with_context(|| format!("bad router_url `{url}`"))?;
            let remote = RemoteRouter::new(channel, token, cfg.deadlines.durable_ack());
            probes.push(Arc::new(RouterProbe(
                tonic_health::pb::health_client::HealthClient::new(forward::channel(
                    &url, ca_file,
                )?),
            )));
            let forwarding = Arbiter::new();
            let addr = start_bounded(&forwarding.handle(), mailbox, remote);
            arbiters.push(forwarding);
            Some(addr.recipient())
        } else {
            None
        };

        let receivers = router.map(|router| {
            let ack = plan.ack;
            let addrs = (0..plan.receivers)
                .map(|_| {
                    let arbiter = Arbiter::new();
                    let receiver = Receiver::new(router.clone(), admission.clone(), ack)
                        .with_breakers(open_sinks.clone())
                        .with_deadline(cfg.deadlines.durable_ack())
                        .with_admission_wait(cfg.pipeline.admission_wait());
                    let addr = start_bounded(&arbiter.handle(), mailbox, receiver);
                    arbiters.push(arbiter);
                    addr
                })
                .collect();
            ReceiverPool::new(addrs)
        });

        Ok(Node {
            receivers,
            store,
            probes,
            admission,
            stop_sources,
            in_flight,
            _consumers: consumers,
            _arbiters: arbiters,
        })
    }

    /// Waits until every admitted event is settled, then stops the sources and waits
    /// for each consumer to store and commit the delivery in hand.
    async fn drain(&self) {
        self.admission.close();
        tracing::info!(
            in_flight = self.admission.in_flight(),
            "draining: pipeline settles admitted events"
        );
        self.admission.drained().await;
        tracing::info!("draining: consumers finish the batch in hand");
        self.stop_sources.cancel();
        let mut idle = Vec::with_capacity(self.in_flight.len());
        for gate in &self.in_flight {
            // Held until the process exits: no delivery is between store and commit.
            idle.push(gate.lock().await);
        }
    }
}

/// The rate limits this process applies: where clients connect. A router without
/// the receiver role serves the receivers' forwards, whose clients their receivers
/// limited already; limiting the forwards again would put every client of a
/// receiver in one bucket (the receiver's), so it limits no ingest.
fn limits_of(
    cfg: &crate::config::Config,
    roles: crate::config::RoleSet,
) -> crate::gateway::LimitsConfig {
    let mut limits = cfg.limits.clone();
    if roles.router && !roles.receiver {
        limits.ingest = Default::default();
    }
    limits
}

async fn bind(
    key: &'static str,
    addr: std::net::SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {key} {addr}"))
}

/// Runs `flujo run` until SIGTERM/Ctrl-C, then drains in order within the deadline:
/// transports stop accepting and answer what is in flight → admission closes and
/// every admitted event is published (or applied, on the memory bus) → sources stop
/// and consumers store and commit what they hold.
pub async fn run(plan: Plan, metrics: PrometheusHandle) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    let node = Node::start(&plan).await?;
    let (cfg, roles) = (&plan.config, plan.roles);
    let gateway = Arc::new(Gateway::from_config(&cfg.auth, &limits_of(cfg, roles))?);
    gateway.spawn_housekeeping();

    let mut routes = utoipa_axum::router::OpenApiRouter::new();
    if roles.receiver {
        routes = routes.merge(http::ingest_routes(&cfg.http, &gateway));
    }
    if roles.consumer {
        routes = routes.merge(http::query_routes(&gateway));
    }
    let ready = readiness::keep_current(node.probes.clone(), shutdown.clone());
    let state = Arc::new(AppState {
        receivers: node.receivers.clone(),
        store: node.store.clone(),
        probes: node.probes.clone(),
        cache: ReadCache::new(Duration::from_millis(cfg.query.cache_ttl_ms)),
        feed: node.store.clone().map(|store| {
            KpiFeed::start(
                store,
                ready.clone(),
                metrics.clone(),
                shutdown.clone(),
                Duration::from_millis(cfg.query.stream_interval_ms),
                cfg.query.max_streams,
            )
        }),
        limits: Limits {
            max_body_bytes: cfg.http.max_body_bytes,
            max_batch_events: cfg.http.max_batch_events,
        },
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        request_deadline: cfg.deadlines.request(),
    });
    let full = http::full_document(&cfg.http, &gateway);
    let app = http::app(state.clone(), routes, &full, &gateway);
    exports(&plan, &app.doc).register();
    let http_listener = bind("http.addr", cfg.http.addr).await?;
    let mut listening = format!("flujo listening http={}", http_listener.local_addr()?);
    let mut over_tls = Vec::new();
    let make_service = app
        .router
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let http_server: BoxFuture<'static, std::io::Result<()>> =
        match tls::acceptor(cfg.http.tls_files(), tls::ALPN_HTTP)? {
            None => axum::serve(
                http_listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                make_service,
            )
            .with_graceful_shutdown(shutdown.signal())
            .into_future()
            .boxed(),
            Some(acceptor) => {
                over_tls.push("http");
                // `tap_io` only for its connect info: the peer address of each request.
                axum::serve(
                    TlsListener::new(http_listener, acceptor).tap_io(|_| {}),
                    make_service,
                )
                .with_graceful_shutdown(shutdown.signal())
                .into_future()
                .boxed()
            }
        };

    let grpc_server = match (&node.receivers, roles.receiver || roles.router) {
        (Some(receivers), true) => {
            let listener = bind("grpc.addr", cfg.grpc.addr).await?;
            listening.push_str(&format!(" grpc={}", listener.local_addr()?));
            let (health, health_service) = tonic_health::server::health_reporter();
            health.set_serving::<IngestServer<IngestService>>().await;
            let reflection = || {
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(grpc::proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            };
            let ingest = IngestService::new(
                receivers.clone(),
                cfg.http.max_batch_events,
                gateway.clone(),
            );
            // The gateway guards Ingest only: health and reflection stay open.
            let ingest = tonic::service::interceptor::InterceptedService::new(
                ingest.into_server(),
                grpc::GrpcGate::new(gateway.clone(), cfg.deadlines.request()),
            );
            // The request deadline bounds every call; a shorter `grpc-timeout` from
            // the client wins (tonic answers CANCELLED past either).
            let services = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .timeout(cfg.deadlines.request())
                .add_service(health_service)
                .add_service(reflection().build_v1()?)
                .add_service(reflection().build_v1alpha()?)
                .add_service(ingest);
            let signal = shutdown.signal();
            let stopped = async move {
                signal.await;
                health
                    .set_not_serving::<IngestServer<IngestService>>()
                    .await;
            };
            let server: BoxFuture<'static, Result<(), tonic::transport::Error>> =
                match tls::acceptor(cfg.grpc.tls_files(), tls::ALPN_GRPC)? {
                    None => services
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            stopped,
                        )
                        .boxed(),
                    Some(acceptor) => {
                        over_tls.push("grpc");
                        services
                            .serve_with_incoming_shutdown(
                                TlsListener::new(listener, acceptor).into_stream(),
                                stopped,
                            )
                            .boxed()
                    }
                };
            Some(server)
        }
        _ => None,
    };
    let tcp_server = match (&node.receivers, roles.receiver) {
        (Some(receivers), true) => {
            let listener = bind("tcp.addr", cfg.tcp.addr).await?;
            listening.push_str(&format!(" tcp={}", listener.local_addr()?));
            let limits = tcp::Limits {
                max_line: cfg.tcp.max_line_bytes,
                max_batch: cfg.http.max_batch_events,
                deadline: cfg.deadlines.request(),
            };
            let acceptor = tls::acceptor(cfg.tcp.tls_files(), tls::ALPN_NONE)?;
            if acceptor.is_some() {
                over_tls.push("tcp");
            }
            Some(tcp::serve(
                listener,
                acceptor,
                receivers.clone(),
                limits,
                gateway.clone(),
                shutdown.clone(),
            ))
        }
        _ => None,
    };
    // A stable line on stdout for scripts and tests that bind port 0.
    println!("{listening}");
    let _ = std::io::stdout().flush();
    tracing::info!(role = %roles, bus = ?cfg.bus, store = %plan.store.masked(),
        ack = ?plan.ack, tls = %over_tls.join(","), "{listening}");

    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            metrics.run_upkeep();
        }
    });

    // Transports stop accepting on the signal and finish what they have in flight;
    // one of them failing brings the others down.
    let mut servers = tokio::spawn(async move {
        let http = async { http_server.await.context("HTTP server") };
        let grpc = async {
            match grpc_server {
                Some(server) => server.await.context("gRPC server"),
                None => Ok(()),
            }
        };
        let tcp = async {
            if let Some(server) = tcp_server {
                server.await;
            }
            Ok(())
        };
        tokio::try_join!(http, grpc, tcp).map(|_| ())
    });
    // On a signal the servers end too, so "servers ended" is only a failure when
    // no signal came.
    let ended = tokio::select! {
        biased;
        _ = shutdown.triggered() => None,
        result = &mut servers => Some(result),
    };
    if let (Some(result), false) = (&ended, shutdown.is_triggered()) {
        shutdown.trigger();
        match result {
            Ok(Err(e)) => anyhow::bail!("{e:#}"),
            Err(e) => anyhow::bail!("servers task failed: {e}"),
            Ok(Ok(())) => anyhow::bail!("servers stopped unexpectedly"),
        }
    }

    let deadline = Deadline::after(Duration::from_secs(cfg.shutdown.deadline_secs));
    tracing::info!("draining: transports answer requests in flight");
    let servers = match ended {
        Some(result) => result,
        None => deadline
            .run(servers)
            .await
            .context("shutdown deadline passed with requests still in flight")?,
    };
    servers??;
    if deadline.run(node.drain()).await.is_none() {
        anyhow::bail!(
            "shutdown deadline passed with {} events not yet settled",
            node.admission.in_flight()
        );
    }
    tracing::info!("drained; bye");
    Ok(())
}

/// The series this process writes, from its plan and its HTTP routes.
fn exports(plan: &Plan, doc: &utoipa::openapi::OpenApi) -> Exports {
    let roles = plan.roles;
    let mut e = Exports::default();
    if roles.receiver {
        e.transports = vec!["http", "grpc", "tcp"];
    } else if roles.router {
        e.transports = vec!["grpc"];
    }
    let per_kind = |kind: Kind| plan.sinks(kind).iter().map(move |b| (kind, b.as_str()));
    if roles.router {
        e.sinks = Kind::ALL.into_iter().flat_map(per_kind).collect();
        e.mailboxes
            .extend([router::MAILBOX.name(), publisher::MAILBOX.name()]);
    }
    if roles.receiver || roles.router {
        e.mailboxes.push(receiver::MAILBOX.name());
    }
    if roles.consumer {
        e.sources = Kind::ALL.into_iter().flat_map(per_kind).collect();
        if e.sources.iter().any(|&(_, s)| s == Bus::Rabbitmq.as_str()) {
            e.per_kind_sources.push(Bus::Rabbitmq.as_str());
        }
        e.mailboxes.push(aggregator::MAILBOX.name());
        e.supervised = vec![consumer::ACTOR, aggregator::ACTOR];
    }
    e.http = http::api::routes_and_statuses(doc);
    // The gateway guards ingest on every transport of a receiver (gRPC on a
    // router too), and the query routes of a consumer on HTTP; its series are
    // exported whether or not authentication and rate limits are on.
    e.guarded = e
        .transports
        .iter()
        .map(|&t| (t, Scope::Ingest.as_str()))
        .collect();
    if roles.consumer {
        e.guarded.push(("http", Scope::Query.as_str()));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn exports_of(role: &str, bus: Bus) -> Exports {
        let config = Config {
            role: role.parse().expect("valid roles"),
            bus,
            router_url: Some("http://router:50051".to_owned()),
            ..Config::default()
        };
        let plan = Plan::resolve(config).expect("valid plan");
        let gateway = Arc::new(
            Gateway::from_config(&plan.config.auth, &plan.config.limits).expect("gateway"),
        );
        let doc = http::full_document(&plan.config.http, &gateway);
        exports(&plan, &doc)
    }

    /// What each role exports from start-up: the series its actors will write.
    #[test]
    fn each_role_exports_the_series_it_writes() {
        let receiver = exports_of("receiver", Bus::Kafka);
        assert_eq!(receiver.transports, ["http", "grpc", "tcp"]);
        assert!(receiver.sinks.is_empty() && receiver.sources.is_empty());
        assert_eq!(receiver.mailboxes, [receiver::MAILBOX.name()]);
        // Authentication and rate limits are off by default: their series are
        // exported all the same.
        assert_eq!(
            receiver.guarded,
            [("http", "ingest"), ("grpc", "ingest"), ("tcp", "ingest")]
        );

        let router = exports_of("router", Bus::Kafka);
        assert_eq!(router.transports, ["grpc"]);
        assert_eq!(
            router.sinks,
            [(Kind::Sale, "kafka"), (Kind::Tweet, "kafka")]
        );
        assert!(router.supervised.is_empty());
        assert_eq!(router.guarded, [("grpc", "ingest")]);

        let consumer = exports_of("consumer", Bus::Rabbitmq);
        assert!(consumer.transports.is_empty());
        assert_eq!(
            consumer.sources,
            [(Kind::Sale, "rabbitmq"), (Kind::Tweet, "rabbitmq")]
        );
        assert_eq!(consumer.per_kind_sources, ["rabbitmq"]);
        assert_eq!(consumer.supervised, [consumer::ACTOR, aggregator::ACTOR]);
        assert_eq!(consumer.guarded, [("http", "query")]);

        let all = exports_of("all", Bus::Memory);
        assert_eq!(all.sinks.len(), 2);
        assert_eq!(all.sources.len(), 2);
        assert!(all.per_kind_sources.is_empty());
        let statuses = |route: &str| {
            all.http
                .iter()
                .find(|(r, _)| r == route)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        assert_eq!(statuses("/v1/sales"), [202, 400, 413, 415, 429, 503]);
        assert_eq!(statuses("/readyz"), [200, 503]);
    }
}
