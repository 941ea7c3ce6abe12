//! `prometheus_answers_every_dashboard_query`: flujo scraped by a real Prometheus;
//! every expression of the dashboards run through its query API after a load.

use super::*;

/// A Prometheus server scraping one target every second, killed on drop.
pub(crate) struct Prometheus {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn prometheus_binary() -> PathBuf {
    find_tool(
        "FLUJO_TEST_PROMETHEUS",
        Path::new("/usr/bin/prometheus"),
        "prometheus",
        HINT,
    )
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

pub(crate) async fn start_prometheus(scrape: std::net::SocketAddr) -> Prometheus {
    let binary = prometheus_binary();
    let mut last_error = String::new();
    // The port is free when chosen; another process may take it before Prometheus
    // binds it, so a failed start is retried on a new port.
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: flujo\n    static_configs:\n      - targets: ['{scrape}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}; {HINT}", binary.display()));
        let mut prom = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = support::http_client();
        let ready_url = format!("{}/-/ready", prom.url);
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = loop {
            if !matches!(prom.child.try_wait(), Ok(None)) || Instant::now() > deadline {
                break false;
            }
            if client
                .get(&ready_url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if ready && matches!(prom.child.try_wait(), Ok(None)) {
            return prom;
        }
        let _ = prom.child.kill();
        last_error =
            std::fs::read_to_string(prom._dir.path().join("prometheus.log")).unwrap_or_default();
    }
    panic!("Prometheus did not become ready; its log:\n{last_error}");
}

impl Prometheus {
    /// `GET /api/v1/{path}` with `params`: the `data` of a successful answer, or the
    /// error Prometheus gave.
    pub(crate) async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let resp = support::http_client()
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
            .map_err(|e| format!("GET /api/v1/{path}: {e}"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("GET /api/v1/{path}: {status}, body is not JSON: {e}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "{status} {}: {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("?")
            ))
        }
    }

    pub(crate) async fn query(&self, expr: &str) -> Result<Value, String> {
        self.api("query", &[("query", expr)]).await
    }

    /// The single value of an instant query, when it has exactly one.
    pub(crate) async fn scalar(&self, expr: &str) -> Option<f64> {
        let data = self.query(expr).await.ok()?;
        let result = data["result"].as_array()?;
        let [one] = result.as_slice() else {
            return None;
        };
        one["value"][1].as_str()?.parse().ok()
    }
}

/// Sum of every sample of `name` in a `/metrics` text.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Runs `flujo loadgen` against `server` and insists it succeeded (showing the
/// server's log when not).
pub(crate) fn loadgen(server: &TestServer, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = flujo_command(dir.path());
    cmd.arg("loadgen")
        .arg("--target")
        .arg(server.url(""))
        .args(args);
    let out = output_within(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let log = server.stderr();
        let lines: Vec<&str> = log.lines().collect();
        panic!(
            "flujo loadgen {args:?} failed ({}):\n{stdout}\n{}\nlast lines of flujo's log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    stdout
}

/// Requests a load does not make: refused batches (invalid, wrong content type, too
/// many events), a resent id (a duplicate), query reads (cache miss, then hit) and a
/// readiness probe (which sets `flujo_ready`).
pub(crate) async fn side_traffic(server: &TestServer) {
    use reqwest::StatusCode;
    let bad_sale = r#"{"category":"toys","product_id":"P1","price":1,"quantity":1}"#;
    let bad_tweet = r#"{"location":"Lima","weather":"hail","temperature":1,"humidity":1}"#;
    for (path, ct, body, want) in [
        (
            "/v1/sales",
            Some("application/json"),
            bad_sale.to_owned(),
            400,
        ),
        (
            "/input",
            Some("application/json"),
            bad_tweet.to_owned(),
            400,
        ),
        ("/purchase", Some("text/plain"), bad_sale.to_owned(), 415),
    ] {
        let resp = server.post_raw(path, ct, body).await;
        assert_eq!(resp.status().as_u16(), want, "POST {path}");
    }
    let many: Vec<String> = (0..10_001)
        .map(|i| format!(r#"{{"category":"home","product_id":"P{i}","price":1,"quantity":1}}"#))
        .collect();
    let resp = server
        .post_raw("/v1/sales", Some("application/x-ndjson"), many.join("\n"))
        .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Each call resends its own ids, so every call counts duplicates.
    let id = uuid::Uuid::now_v7().simple();
    let dup_sale = format!(
        r#"{{"id":"{id}","category":"beauty","product_id":"P7","price":9.5,"quantity":2}}"#
    );
    let dup_tweet = format!(
        r#"{{"id":"{id}","location":"Lima","weather":"foggy","temperature":14,"humidity":80}}"#
    );
    for (path, body) in [("/v1/sales", &dup_sale), ("/v1/tweets", &dup_tweet)] {
        for _ in 0..2 {
            let resp = server
                .post_raw(path, Some("application/json"), body.clone())
                .await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST {path}");
        }
    }
    for _ in 0..2 {
        server.get_plain("/v1/kpis/sales").await;
        server.get_plain("/v1/kpis/tweets").await;
    }
    let resp = server.get("/readyz").await.expect("GET /readyz");
    assert_eq!(resp.status(), StatusCode::OK, "/readyz");
}

/// Substitutions of a Prometheus expression: built-ins and, for custom variables,
/// the regex Grafana sends for "All" (`(a|b|c)`).
pub(crate) fn prometheus_values(dashboard: &Value) -> HashMap<String, String> {
    let mut values: HashMap<String, String> = BUILTINS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for v in variables(dashboard) {
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        match v["type"].as_str() {
            Some("custom") => {
                let options = custom_options(v);
                values.insert(name, format!("({})", options.join("|")));
            }
            Some("textbox" | "constant") => {
                values.insert(name, v["query"].as_str().unwrap_or_default().to_owned());
            }
            _ => {}
        }
    }
    values
}

pub(crate) fn custom_options(v: &Value) -> Vec<String> {
    v["query"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

/// The label names the series of `metrics` carry in Prometheus.
pub(crate) async fn labels_of(prom: &Prometheus, metrics: &BTreeSet<String>) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for m in metrics {
        if let Ok(series) = prom.api("series", &[("match[]", m.as_str())]).await {
            for s in series.as_array().into_iter().flatten() {
                if let Some(obj) = s.as_object() {
                    labels.extend(obj.keys().filter(|k| *k != "__name__").cloned());
                }
            }
        }
    }
    labels
}

pub(crate) async fn check_prometheus_target(
    prom: &Prometheus,
    exported: &BTreeSet<String>,
    declared: &BTreeSet<String>,
    expr: &str,
    legend: &str,
) -> Result<usize, String> {
    let refs = promql_refs(expr);
    if refs.metrics.is_empty() {
        return Err(format!("`{expr}` names no metric"));
    }
    for m in &refs.metrics {
        if !m.starts_with("flujo_") {
            return Err(format!("`{m}` is not a flujo metric"));
        }
        if !declared.contains(m) {
            return Err(format!("`{m}` is not declared in actors/src/metrics.rs"));
        }
        if !exported.contains(m) {
            return Err(format!(
                "`{m}` is not exported by flujo (not among the names Prometheus scraped: {exported:?})"
            ));
        }
    }
    let labels = labels_of(prom, &refs.metrics).await;
    for l in &refs.labels {
        if l != "__name__" && !labels.contains(l) {
            return Err(format!(
                "label `{l}` is on none of {:?} (their labels: {labels:?})",
                refs.metrics
            ));
        }
    }
    let data = prom
        .query(expr)
        .await
        .map_err(|e| format!("`{expr}` fails: {e}"))?;
    let result = data["result"].as_array().cloned().unwrap_or_default();
    if result.is_empty() {
        return Err(format!("`{expr}` returned no data after the load"));
    }
    let values: Vec<f64> = result
        .iter()
        .filter_map(|r| r["value"][1].as_str()?.parse().ok())
        .collect();
    if refs.metrics.iter().any(|m| CORE.contains(&m.as_str()))
        && !values.iter().any(|v| v.is_finite())
    {
        return Err(format!(
            "`{expr}` must have a number after the load, got {values:?}"
        ));
    }
    let mut series_labels = BTreeSet::new();
    for r in &result {
        if let Some(obj) = r["metric"].as_object() {
            series_labels.extend(obj.keys().cloned());
        }
    }
    let mut rest = legend;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let label = rest[start + 2..start + end].trim();
        if !result.is_empty() && !series_labels.contains(label) {
            return Err(format!(
                "legend {legend:?} uses `{label}`, which the result does not have ({series_labels:?})"
            ));
        }
        rest = &rest[start + end + 2..];
    }
    Ok(result.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_answers_every_dashboard_query() {
    let binary = prometheus_binary();
    let t0 = Instant::now();
    let body = async {
        let server = TestServer::start(&[]);
        let prom = start_prometheus(server.addr).await;
        println!(
            "{:>6.2?} flujo at {}, {} at {}",
            t0.elapsed(),
            server.addr,
            binary.display(),
            prom.url
        );

        // Prometheus applies new scrape targets at most every 5 s: wait for the
        // first scrape, so the load shows up as increases (rates), not as a start
        // value.
        let up = wait_until(Duration::from_secs(30), || async {
            prom.scalar(r#"max(up{job="flujo"})"#).await == Some(1.0)
        })
        .await;
        assert!(
            up,
            "Prometheus did not scrape flujo within 30 s; targets: {:?}",
            prom.api("targets", &[]).await
        );
        println!("{:>6.2?} first scrape", t0.elapsed());

        // Series appear with their first event: the side traffic runs before the
        // load too, so that each of its series has samples to compute rates from.
        side_traffic(&server).await;
        loadgen(
            &server,
            &["--kind", "mixed", "--rate", "300", "--duration", "3"],
        );
        loadgen(
            &server,
            &[
                "--kind",
                "mixed",
                "--rate",
                "2000",
                "--duration",
                "2",
                "--batch",
                "20",
                "--ndjson",
            ],
        );
        side_traffic(&server).await;
        println!("{:>6.2?} load sent", t0.elapsed());

        // Wait until everything is applied, and Prometheus holds a few samples and
        // has scraped the final values.
        let last = std::sync::Mutex::new((0.0, 0.0));
        let scraped = wait_until(Duration::from_secs(60), || async {
            let metrics = server.metrics().await;
            let applied = metric_sum(&metrics, "flujo_events_applied_total");
            let rejected = metric_sum(&metrics, "flujo_events_rejected_total");
            let inflight = metric_sum(&metrics, "flujo_inflight_events");
            *last.lock().expect("last values") = (applied, rejected);
            let samples = prom
                .scalar("min(count_over_time(flujo_events_rejected_total[1m]))")
                .await
                .unwrap_or(0.0);
            let a = prom.scalar("sum(flujo_events_applied_total)").await;
            let r = prom.scalar("sum(flujo_events_rejected_total)").await;
            let ready = prom.scalar("max(flujo_ready)").await;
            inflight == 0.0
                && samples >= 5.0
                && a == Some(applied)
                && r == Some(rejected)
                && ready == Some(1.0)
        })
        .await;
        let (applied, rejected) = *last.lock().expect("last values");
        assert!(
            scraped,
            "Prometheus did not scrape flujo's final values within 60 s (flujo: applied \
             {applied}, rejected {rejected}); targets: {:?}",
            prom.api("targets", &[]).await
        );
        assert!(
            applied > 0.0 && rejected >= 2.0,
            "applied {applied}, rejected {rejected}"
        );
        println!("{:>6.2?} scraped", t0.elapsed());

        let exported: BTreeSet<String> = prom
            .api("label/__name__/values", &[])
            .await
            .expect("metric names")
            .as_array()
            .expect("an array of names")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let declared = declared_metrics();
        let mut problems = Vec::new();
        let mut checked = 0;
        for (name, d) in load_dashboards() {
            let values = prometheus_values(&d);
            for t in targets(&name, &d)
                .into_iter()
                .filter(|t| t.source == Source::Prometheus)
            {
                let expr = interpolate(t.query["expr"].as_str().unwrap_or_default(), &values);
                let legend = t.query["legendFormat"].as_str().unwrap_or_default();
                match check_prometheus_target(&prom, &exported, &declared, &expr, legend).await {
                    Ok(series) => {
                        checked += 1;
                        println!("ok  {:<60} {series} series", t.place);
                    }
                    Err(e) => problems.push(format!("{}: {e}", t.place)),
                }
            }
        }
        assert!(
            problems.is_empty(),
            "{} of {} Prometheus queries fail:\n  {}",
            problems.len(),
            checked + problems.len(),
            problems.join("\n  ")
        );
        assert!(checked >= 40, "only {checked} Prometheus queries found");
        println!(
            "{:>6.2?} {checked} Prometheus queries answered",
            t0.elapsed()
        );
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_TIMEOUT:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fresh_flujo_exports_every_dashboard_series() {
    let body = async {
        let server = TestServer::start(&[]);
        let prom = start_prometheus(server.addr).await;
        let up = wait_until(Duration::from_secs(30), || async {
            prom.scalar(r#"max(up{job="flujo"})"#).await == Some(1.0)
        })
        .await;
        assert!(
            up,
            "Prometheus did not scrape flujo within 30 s; targets: {:?}",
            prom.api("targets", &[]).await
        );
        let mut problems = Vec::new();
        let mut checked = BTreeSet::new();
        for (name, d) in load_dashboards() {
            let values = prometheus_values(&d);
            for t in targets(&name, &d)
                .into_iter()
                .filter(|t| t.source == Source::Prometheus)
            {
                let expr = interpolate(t.query["expr"].as_str().unwrap_or_default(), &values);
                let refs = promql_refs(&expr);
                for selector in &refs.selectors {
                    let series = prom
                        .api("series", &[("match[]", selector.as_str())])
                        .await
                        .unwrap_or_else(|e| panic!("{}: series of `{selector}`: {e}", t.place));
                    let series = series.as_array().cloned().unwrap_or_default();
                    if series.is_empty() {
                        problems.push(format!(
                            "{}: `{selector}` matches no series of a fresh flujo",
                            t.place
                        ));
                        continue;
                    }
                    checked.insert(selector.clone());
                    for label in refs.labels.iter().filter(|l| *l != "__name__") {
                        let on_some = series.iter().any(|s| s.get(label.as_str()).is_some());
                        let grouped_only_by_le = label == "le" && !selector.ends_with("_bucket");
                        if !on_some && !grouped_only_by_le {
                            problems.push(format!(
                                "{}: no series of `{selector}` carries label `{label}` on a fresh flujo",
                                t.place
                            ));
                        }
                    }
                }
            }
        }
        let metrics = server.metrics().await;
        let zero = |name: &str| metric_sum(&metrics, name);
        for name in [
            "flujo_events_received_total",
            "flujo_events_applied_total",
            "flujo_actor_restarts_total",
            "flujo_events_rejected_total",
        ] {
            assert_eq!(zero(name), 0.0, "{name} on a fresh flujo");
        }
        assert!(
            problems.is_empty(),
            "{} dashboard series missing on a fresh flujo:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
        assert!(
            checked.len() >= 20,
            "only {} selectors found",
            checked.len()
        );
        let ready = wait_until(Duration::from_secs(10), || async {
            prom.scalar("max(flujo_ready)").await == Some(1.0)
        })
        .await;
        assert!(
            ready,
            "flujo_ready did not become 1 without anyone calling /readyz"
        );
        println!("{} selectors match series of a fresh flujo", checked.len());
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_TIMEOUT:?}"));
}
