//! The client side: a workload of sales and tweets in every input form, sent by
//! concurrent clients that retry 429/503 with the same ids, and the ground truth of
//! what was answered 202.

use super::*;

/// The events of one HTTP request.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Sales(Vec<Sale>, SaleForm),
    Tweets(Vec<Tweet>, bool),
}

/// One request of the workload, sent once the client's gate reached `phase`.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) payload: Payload,
    /// The JSON of each event as the client sends it.
    pub(crate) bodies: Vec<Value>,
    pub(crate) phase: usize,
    pub(crate) encoding: Encoding,
}

impl Req {
    pub(crate) fn new(payload: Payload, encoding: Encoding) -> Req {
        let bodies = match &payload {
            Payload::Sales(v, form) => v.iter().map(|s| sale_json(s, *form)).collect(),
            Payload::Tweets(v, seed) => v.iter().map(|t| tweet_json(t, *seed)).collect(),
        };
        Req {
            payload,
            bodies,
            phase: 0,
            encoding,
        }
    }

    pub(crate) fn path(&self) -> &'static str {
        match self.payload {
            Payload::Sales(..) => "/v1/sales",
            Payload::Tweets(..) => "/v1/tweets",
        }
    }

    pub(crate) fn ids(&self) -> Vec<&str> {
        match &self.payload {
            Payload::Sales(v, _) => v.iter().map(|s| s.id.as_str()).collect(),
            Payload::Tweets(v, _) => v.iter().map(|t| t.id.as_str()).collect(),
        }
    }
}

/// What a test sends: one sale per category first (alone, each answered 202 before
/// anything else is sent, so the monitored product is well defined), then requests
/// of `BATCH` events in phases.
pub(crate) struct Workload {
    pub(crate) firsts: Vec<Sale>,
    pub(crate) reqs: Vec<Req>,
}

impl Workload {
    /// `sales` sales and `tweets` tweets in requests of `BATCH`, shuffled, split into
    /// phases by the cumulative fractions `cuts` (e.g. `[0.3, 0.65]` = three phases).
    pub(crate) fn new(label: &str, sales: usize, tweets: usize, cuts: &[f64]) -> Workload {
        let seed: u64 = rand::rng().random();
        println!("{label}: workload seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let firsts: Vec<Sale> = CATEGORIES
            .iter()
            .map(|c| random_sale(&mut rng, format!("{tag}-first-{c}"), c, &monitored(c)))
            .collect();
        let mut all_sales = Vec::with_capacity(sales);
        for i in 0..sales {
            let ci = rng.random_range(0..CATEGORIES.len());
            let c = CATEGORIES[ci];
            let product = match rng.random_range(0..10) {
                0 => monitored(c),
                1..=3 => format!("SHARED-{}", rng.random_range(0..6)),
                _ => format!("{}-{:02}", &c[..3].to_uppercase(), rng.random_range(0..15)),
            };
            all_sales.push(random_sale(&mut rng, format!("{tag}-s{i:05}"), c, &product));
        }
        // A third of the tweets in the seeds' form (`municipality`, capitalised
        // weather, whole numbers), in requests of their own.
        let (mut seed_tweets, mut plain_tweets) = (Vec::new(), Vec::new());
        for i in 0..tweets {
            let seed_form = i.is_multiple_of(3);
            let t = random_tweet(&mut rng, format!("{tag}-t{i:05}"), &LOCATIONS, seed_form);
            if seed_form {
                seed_tweets.push(t);
            } else {
                plain_tweets.push(t);
            }
        }
        let encoding = |i: usize| {
            if i.is_multiple_of(2) {
                Encoding::Array
            } else {
                Encoding::Ndjson
            }
        };
        let mut reqs = Vec::new();
        for (i, chunk) in all_sales.chunks(BATCH).enumerate() {
            let form = SALE_FORMS[i % SALE_FORMS.len()];
            reqs.push(Req::new(Payload::Sales(chunk.to_vec(), form), encoding(i)));
        }
        for (seed, group) in [(true, seed_tweets), (false, plain_tweets)] {
            for (i, chunk) in group.chunks(BATCH).enumerate() {
                reqs.push(Req::new(
                    Payload::Tweets(chunk.to_vec(), seed),
                    encoding(i + 1),
                ));
            }
        }
        reqs.shuffle(&mut rng);
        let n = reqs.len();
        for (i, req) in reqs.iter_mut().enumerate() {
            req.phase = cuts
                .iter()
                .filter(|&&cut| i as f64 >= cut * n as f64)
                .count();
        }
        Workload { firsts, reqs }
    }

    pub(crate) fn empty() -> Workload {
        Workload {
            firsts: Vec::new(),
            reqs: Vec::new(),
        }
    }

    /// Ids of the sales answered 202: the first ones and those of accepted requests.
    pub(crate) fn accepted_sale_ids(&self, flow: &Flow) -> HashSet<String> {
        let mut ids: HashSet<String> = self.firsts.iter().map(|s| s.id.clone()).collect();
        for &i in flow.accepted.lock().expect("flow").iter() {
            if let Payload::Sales(v, _) = &self.reqs[i].payload {
                ids.extend(v.iter().map(|s| s.id.clone()));
            }
        }
        ids
    }

    /// Requests in each phase.
    pub(crate) fn per_phase(&self) -> Vec<usize> {
        let phases = self.reqs.iter().map(|r| r.phase).max().unwrap_or(0) + 1;
        let mut n = vec![0; phases];
        for r in &self.reqs {
            n[r.phase] += 1;
        }
        n
    }
}

/// The monitored product of category `c` (the first product sent in it).
pub(crate) fn monitored(c: &str) -> String {
    format!("MON-{c}")
}

/// Shared state of a running client: the phase gate and its progress.
pub(crate) struct Flow {
    pub(crate) gate: watch::Sender<usize>,
    /// Requests answered 202, per phase.
    pub(crate) done: Vec<AtomicUsize>,
    /// Requests per phase.
    pub(crate) total: Vec<usize>,
    /// 429/503 answers (each retried with the same ids).
    pub(crate) refused: AtomicUsize,
    /// Set while a dependency of the receiver is known to be down.
    pub(crate) down: AtomicBool,
    /// Requests sent while `down` and answered 202 before it was cleared.
    pub(crate) accepted_while_down: Mutex<Vec<usize>>,
    /// Indices of the requests answered 202, in answer order.
    pub(crate) accepted: Mutex<Vec<usize>>,
}

impl Flow {
    pub(crate) fn new(work: &Workload) -> Arc<Flow> {
        let total = work.per_phase();
        Arc::new(Flow {
            gate: watch::channel(0).0,
            done: total.iter().map(|_| AtomicUsize::new(0)).collect(),
            total,
            refused: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            accepted_while_down: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn open(&self, phase: usize) {
        self.gate.send_replace(phase);
    }

    pub(crate) fn done(&self, phase: usize) -> usize {
        self.done[phase].load(Ordering::SeqCst)
    }

    /// Waits until at least `fraction` of `phase`'s requests were answered 202.
    pub(crate) async fn reached(&self, phase: usize, fraction: f64, within: Duration) {
        let want = ((self.total[phase] as f64 * fraction).ceil() as usize).min(self.total[phase]);
        let ok = wait_until(within, || async { self.done(phase) >= want }).await;
        assert!(
            ok,
            "the client got {} of {want} answers of phase {phase} within {within:?}",
            self.done(phase)
        );
    }
}

/// POSTs `req` until it is answered 202, retrying 429/503 and lost answers (a
/// connection refused or cut) with the same ids.
pub(crate) async fn send_until_accepted(
    http: &reqwest::Client,
    base: &str,
    req: &Req,
    flow: &Flow,
    i: usize,
) {
    let (content_type, body) = encode(&req.bodies, req.encoding);
    let ids = req.ids();
    let deadline = Instant::now() + SEND_DEADLINE;
    let mut pause = Duration::from_millis(50);
    loop {
        let down_before = flow.down.load(Ordering::SeqCst);
        let sent = http
            .post(format!("{base}{}", req.path()))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.clone())
            .send()
            .await;
        let (status, text) = match sent {
            Ok(resp) => {
                let status = resp.status();
                match resp.text().await {
                    Ok(text) => (status, text),
                    Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("answer lost: {e}")),
                }
            }
            // The receiver died with the request in hand: the outcome is unknown, so
            // the request goes again with the same ids, as the README tells clients.
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("no answer: {e}")),
        };
        match status {
            StatusCode::ACCEPTED => {
                let answer: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("202 body is not JSON ({e}): {text}"));
                assert_eq!(answer["accepted"], json!(ids.len()), "{text}");
                assert_eq!(answer["ids"], json!(ids), "client ids must be echoed");
                if down_before && flow.down.load(Ordering::SeqCst) {
                    flow.accepted_while_down.lock().expect("flow").push(i);
                }
                return;
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                flow.refused.fetch_add(1, Ordering::SeqCst);
                assert!(
                    Instant::now() < deadline,
                    "POST {} refused for {SEND_DEADLINE:?}; last answer {status}: {text}",
                    req.path()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(400));
            }
            _ => panic!("POST {}: unexpected {status}: {text}", req.path()),
        }
    }
}

/// Sends every first sale alone, each after the previous one was answered 202.
pub(crate) async fn send_firsts(receiver: &TestServer, work: &Workload) {
    for s in &work.firsts {
        let req = Req::new(
            Payload::Sales(vec![s.clone()], SaleForm::English),
            Encoding::Object,
        );
        let flow = Flow::new(&Workload::empty());
        let base = format!("http://{}", receiver.addr);
        send_until_accepted(&receiver.client, &base, &req, &flow, 0).await;
    }
}

/// Sends the workload's requests with `CLIENT_TASKS` tasks; a request of phase `p`
/// waits until the gate is at `p` or beyond.
pub(crate) fn spawn_client(
    receiver: &TestServer,
    work: Arc<Workload>,
    flow: Arc<Flow>,
) -> tokio::task::JoinHandle<()> {
    let base = format!("http://{}", receiver.addr);
    tokio::spawn(async move {
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..CLIENT_TASKS)
            .map(|_| {
                let (base, work, flow, next) =
                    (base.clone(), work.clone(), flow.clone(), next.clone());
                tokio::spawn(async move {
                    let http = http_client();
                    let mut gate = flow.gate.subscribe();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(req) = work.reqs.get(i) else { break };
                        gate.wait_for(|&open| open >= req.phase)
                            .await
                            .expect("gate sender alive");
                        send_until_accepted(&http, &base, req, &flow, i).await;
                        flow.accepted.lock().expect("flow").push(i);
                        flow.done[req.phase].fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for task in tasks {
            if let Err(e) = task.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    })
}

/// Sends the workload's first sales alone, then starts the client on the rest: the
/// workload, the flow of its phases and the client task.
pub(crate) async fn start_client(
    receiver: &TestServer,
    work: Workload,
) -> (Arc<Workload>, Arc<Flow>, tokio::task::JoinHandle<()>) {
    let work = Arc::new(work);
    send_firsts(receiver, &work).await;
    let flow = Flow::new(&work);
    let client = spawn_client(receiver, work.clone(), flow.clone());
    (work, flow, client)
}

/// Waits for the client, re-raising its panic.
pub(crate) async fn join_client(client: tokio::task::JoinHandle<()>) {
    if let Err(e) = client.await {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Waits for the client and returns the ground truth of what it got answered 202.
pub(crate) async fn finish_client(
    client: tokio::task::JoinHandle<()>,
    work: &Workload,
    flow: &Flow,
) -> (DedupTruth, DedupTruth) {
    join_client(client).await;
    truth(work, flow)
}

/// The log line of a finished client.
pub(crate) fn client_done(sales: &Truth, tweets: &Truth, flow: &Flow) -> String {
    format!(
        "client done: {} sales and {} tweets answered 202, {} answers 429/503 retried",
        sales.sales.count,
        tweets.tweets.count,
        flow.refused.load(Ordering::SeqCst)
    )
}

/// Ground truth of everything answered 202: the first sales, then every accepted
/// request.
pub(crate) fn truth(work: &Workload, flow: &Flow) -> (DedupTruth, DedupTruth) {
    let (mut sales, mut tweets) = (DedupTruth::default(), DedupTruth::default());
    for s in &work.firsts {
        sales.apply_sale(s);
    }
    for &i in flow.accepted.lock().expect("flow").iter() {
        match &work.reqs[i].payload {
            Payload::Sales(v, _) => v.iter().for_each(|s| {
                sales.apply_sale(s);
            }),
            Payload::Tweets(v, _) => v.iter().for_each(|t| {
                tweets.apply_tweet(t);
            }),
        }
    }
    (sales, tweets)
}
