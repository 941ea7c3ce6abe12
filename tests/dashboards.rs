//! The Grafana dashboards in `dashboards/` against what flujo really produces.
//!
//! - `dashboards_are_well_formed` (no services): every file parses, panel ids and
//!   grid positions are sane, every data source is one of the two documented ones
//!   (`${prometheus}`, `${valkey}`), every `$variable` is defined, every metric an
//!   expression names is declared in `actors/src/metrics.rs`.
//! - `prometheus_answers_every_dashboard_query`: flujo (all-in-one, memory) scraped
//!   every second by a real Prometheus (`/usr/bin/prometheus`, Debian's `prometheus`
//!   package, installed by `scripts/test.sh`); after a load with rejected and
//!   duplicate events, every Prometheus expression of the three dashboards is run
//!   through `/api/v1/query`: none may error, every metric it names must be one
//!   flujo exports, every label it groups or filters by must exist, and each must
//!   return data (except those on series that only appear with a failure).
//! - `valkey_holds_every_dashboard_key`: flujo with `--store valkey://…` under a
//!   random key prefix on the shared Valkey (`scripts/services.sh up`); after a
//!   verified load, every Redis-data-source query of the dashboards is run as the
//!   plugin would run it: every key must exist with the right type and hold data,
//!   every hash field a panel computes with must be there.

mod common;

use common::{flujo_command, output_within, wait_until, TestServer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The dashboards the manifests ship (as ConfigMaps, from exactly these files).
const DASHBOARDS: [&str; 3] = ["sales", "tweets", "pipeline"];
/// Upper bound of each service-backed test.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// What a developer runs to get the tools and services these tests need.
const HINT: &str = "run `scripts/test.sh` (it installs Prometheus from Debian's `prometheus` \
    package and starts the services with `scripts/services.sh up`)";

/// Metrics whose series only exist once something failed (a supervisor restart, a
/// sink refusing a batch): a healthy run does not export them, so a dashboard query
/// on them may come back empty. They must still be declared in `metrics.rs`, and
/// only these labels may be used with them (their labels, from `metrics.rs`).
const ON_FAILURE_ONLY: [(&str, &[&str]); 2] = [
    ("flujo_actor_restarts_total", &["actor"]),
    ("flujo_events_publish_failed_total", &["kind", "sink"]),
];
/// Metrics whose expressions must produce real numbers after a load.
const CORE: [&str; 3] = [
    "flujo_events_received_total",
    "flujo_events_applied_total",
    "flujo_ingest_duration_seconds_bucket",
];
/// Commands of the Redis data source the dashboards may use, with the key type each
/// one reads.
const REDIS_COMMANDS: [(&str, &str); 7] = [
    ("hgetall", "hash"),
    ("hget", "hash"),
    ("hmget", "hash"),
    ("zrange", "zset"),
    ("xrange", "stream"),
    ("xrevrange", "stream"),
    ("xlen", "stream"),
];
/// Grafana's built-in interval variables, and the values the tests give them.
const BUILTINS: [(&str, &str); 4] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "5m"),
    ("__auto", ""),
];

// ---------------------------------------------------------------------------------
// The dashboards
// ---------------------------------------------------------------------------------

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn load_dashboards() -> Vec<(String, Value)> {
    DASHBOARDS
        .iter()
        .map(|name| {
            let path = repo_path(&format!("dashboards/{name}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            ((*name).to_owned(), json)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .map(|l| l.iter().collect())
        .unwrap_or_default()
}

/// Which data source a reference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Prometheus,
    Valkey,
}

fn source_of(datasource: &Value) -> Result<Source, String> {
    let uid = datasource["uid"].as_str().unwrap_or_default();
    let kind = datasource["type"].as_str().unwrap_or_default();
    match (kind, uid) {
        ("prometheus", "${prometheus}" | "prometheus") => Ok(Source::Prometheus),
        ("redis-datasource", "${valkey}" | "valkey") => Ok(Source::Valkey),
        _ => Err(format!(
            "data source {datasource} is neither Prometheus (uid `${{prometheus}}` or \
             `prometheus`) nor the Redis data source (uid `${{valkey}}` or `valkey`)"
        )),
    }
}

/// One query of one panel.
#[derive(Debug, Clone)]
struct Target {
    /// `dashboard / panel title / refId`, for messages.
    place: String,
    source: Source,
    query: Value,
    /// The panel's transformations (they name the fields the query must produce).
    transformations: Vec<Value>,
}

fn targets(name: &str, dashboard: &Value) -> Vec<Target> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let ds = if t["datasource"].is_object() {
                &t["datasource"]
            } else {
                &panel["datasource"]
            };
            let place = format!(
                "{name} / {} / {}",
                panel["title"].as_str().unwrap_or("?"),
                t["refId"].as_str().unwrap_or("?")
            );
            let source = source_of(ds).unwrap_or_else(|e| panic!("{place}: {e}"));
            out.push(Target {
                place,
                source,
                query: t.clone(),
                transformations: panel["transformations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// Replaces `$name`, `${name}`, `${name:format}` and `[[name]]` by `values[name]`;
/// unknown names stay as they are.
fn interpolate(text: &str, values: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(['$', '[']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let (name, len) = match variable_at(tail) {
            Some(found) => found,
            None => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
                continue;
            }
        };
        match values.get(name) {
            Some(v) => out.push_str(v),
            None => out.push_str(&tail[..len]),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// The variable reference at the start of `s`: its name and the length of the
/// reference.
fn variable_at(s: &str) -> Option<(&str, usize)> {
    let ident = |t: &str| {
        t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len())
    };
    if let Some(inner) = s.strip_prefix("${") {
        let end = inner.find('}')?;
        let name = inner[..end].split(':').next().unwrap_or_default();
        return Some((name, end + 3));
    }
    if let Some(inner) = s.strip_prefix("[[") {
        let end = inner.find("]]")?;
        let name = inner[..end].split(':').next().unwrap_or_default();
        return Some((name, end + 4));
    }
    let inner = s.strip_prefix('$')?;
    let n = ident(inner);
    (n > 0).then(|| (&inner[..n], n + 1))
}

/// Every variable a string references.
fn referenced_variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(pos) = rest.find(['$', '[']) {
        let tail = &rest[pos..];
        match variable_at(tail) {
            Some((name, len)) => {
                names.insert(name.to_owned());
                rest = &tail[len..];
            }
            None => rest = &tail[1..],
        }
    }
    names
}

/// The string fields of a target that Grafana interpolates.
const INTERPOLATED: [&str; 8] = [
    "expr", "keyName", "field", "query", "start", "end", "min", "max",
];

// ---------------------------------------------------------------------------------
// PromQL: the metric and label names an expression uses
// ---------------------------------------------------------------------------------

#[derive(Debug, Default, PartialEq)]
struct PromRefs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// Metric names and label names of a PromQL expression (a small lexer: strings,
/// label matchers, ranges, numbers and functions are told apart; enough for the
/// dashboards' queries, not a full parser).
fn promql_refs(expr: &str) -> PromRefs {
    let s: Vec<char> = expr.chars().collect();
    let mut refs = PromRefs::default();
    let is_ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_string = |i: usize| -> usize {
        let quote = s[i];
        let mut j = i + 1;
        while j < s.len() && s[j] != quote {
            if s[j] == '\\' && quote != '`' {
                j += 1;
            }
            j += 1;
        }
        j + 1
    };
    let read_ident = |i: usize| -> (String, usize) {
        let mut j = i;
        while j < s.len() && is_ident(s[j]) {
            j += 1;
        }
        (s[i..j].iter().collect(), j)
    };
    let next_non_space = |mut j: usize| -> (Option<char>, usize) {
        while j < s.len() && s[j].is_whitespace() {
            j += 1;
        }
        (s.get(j).copied(), j)
    };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '{' {
            // Label matchers: `name op "value"`, comma separated.
            i += 1;
            while i < s.len() && s[i] != '}' {
                if s[i] == '"' || s[i] == '\'' || s[i] == '`' {
                    i = skip_string(i);
                } else if is_ident_start(s[i]) {
                    let (name, j) = read_ident(i);
                    refs.labels.insert(name);
                    i = j;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == '[' {
            while i < s.len() && s[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let (ident, j) = read_ident(i);
            let lower = ident.to_ascii_lowercase();
            let (next, k) = next_non_space(j);
            i = j;
            if LABEL_LISTS.contains(&lower.as_str()) {
                if next == Some('(') {
                    let mut m = k + 1;
                    while m < s.len() && s[m] != ')' {
                        if is_ident_start(s[m]) {
                            let (label, n) = read_ident(m);
                            refs.labels.insert(label);
                            m = n;
                        } else {
                            m += 1;
                        }
                    }
                    i = m + 1;
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || next == Some('(')
            {
                // an operator, an aggregation or a function call
            } else {
                refs.metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    refs
}

/// Metric names declared in `actors/src/metrics.rs` (histograms expanded to their
/// `_bucket`, `_sum` and `_count` series).
fn declared_metrics() -> BTreeSet<String> {
    let path = repo_path("actors/src/metrics.rs");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut consts = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(": &str = \"") else {
            continue;
        };
        if let Some(value) = value.strip_suffix("\";") {
            consts.insert(name.to_owned(), value.to_owned());
        }
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut names = BTreeSet::new();
    for (constant, metric) in &consts {
        if compact.contains(&format!("describe_histogram!({constant},")) {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{metric}{suffix}"));
            }
        } else {
            names.insert(metric.clone());
        }
    }
    assert!(
        names.len() >= 20,
        "found only {} metric constants in {}: {names:?}",
        names.len(),
        path.display()
    );
    names
}

// ---------------------------------------------------------------------------------
// Static checks
// ---------------------------------------------------------------------------------

#[test]
fn promql_lexer_finds_metrics_and_labels() {
    let r = promql_refs(
        r#"histogram_quantile(0.99, sum by (le, transport) (rate(flujo_ingest_duration_seconds_bucket{kind=~"a|b", x!="}"}[5m]))) / on(instance) group_left(version) flujo_build_info or vector(0)"#,
    );
    let metrics: Vec<&str> = r.metrics.iter().map(String::as_str).collect();
    assert_eq!(
        metrics,
        ["flujo_build_info", "flujo_ingest_duration_seconds_bucket"]
    );
    let labels: Vec<&str> = r.labels.iter().map(String::as_str).collect();
    assert_eq!(
        labels,
        ["instance", "kind", "le", "transport", "version", "x"]
    );
    let r = promql_refs("sum(rate(flujo_sales_total[1m])) by (category) > bool 0.5e3");
    assert_eq!(r.metrics.len(), 1);
    assert!(r.labels.contains("category"));
}

#[test]
fn interpolation_replaces_every_syntax() {
    let values: HashMap<String, String> = [("prefix", "p:"), ("category", "home")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(
        interpolate(
            "${prefix}sales:$category:[[category]] $unknown [x]",
            &values
        ),
        "p:sales:home:home $unknown [x]"
    );
    assert_eq!(
        referenced_variables("${a:regex} $b_c [[d]] $"),
        ["a", "b_c", "d"].iter().map(|s| (*s).to_owned()).collect()
    );
}

#[test]
fn dashboards_are_well_formed() {
    let declared = declared_metrics();
    let mut problems = Vec::new();
    let mut uids = BTreeSet::new();
    for (name, d) in load_dashboards() {
        let uid = d["uid"].as_str().unwrap_or_default();
        if uid.is_empty() || !uids.insert(uid.to_owned()) {
            problems.push(format!("{name}: missing or repeated uid {uid:?}"));
        }
        if d["title"].as_str().unwrap_or_default().is_empty() {
            problems.push(format!("{name}: no title"));
        }
        let schema = d["schemaVersion"].as_u64().unwrap_or(0);
        if !(36..=41).contains(&schema) {
            problems.push(format!("{name}: schemaVersion {schema}, expected ~39"));
        }

        let vars: BTreeMap<String, &Value> = variables(&d)
            .into_iter()
            .map(|v| (v["name"].as_str().unwrap_or_default().to_owned(), v))
            .collect();
        let mut defined: BTreeSet<String> = vars.keys().cloned().collect();
        defined.extend(BUILTINS.iter().map(|(n, _)| (*n).to_owned()));
        for (vname, v) in &vars {
            if v["type"] == "datasource" {
                let want = match vname.as_str() {
                    "prometheus" => "prometheus",
                    "valkey" => "redis-datasource",
                    other => {
                        problems.push(format!("{name}: unexpected data source variable {other}"));
                        continue;
                    }
                };
                if v["query"] != want || v["current"]["value"] != vname.as_str() {
                    problems.push(format!(
                        "{name}: variable {vname} must select {want} with default uid {vname}"
                    ));
                }
            }
            if v["type"] == "query" {
                if let Err(e) = source_of(&v["datasource"]) {
                    problems.push(format!("{name}: variable {vname}: {e}"));
                }
            }
            let query = v["query"].as_str().unwrap_or_default();
            for used in referenced_variables(query) {
                if !defined.contains(&used) {
                    problems.push(format!("{name}: variable {vname} uses undefined ${used}"));
                }
            }
        }

        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or("?");
            let id = p["id"].as_u64();
            if id.is_none() || !ids.insert(id) {
                problems.push(format!(
                    "{name} / {title}: missing or repeated panel id {id:?}"
                ));
            }
            let g = &p["gridPos"];
            let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
            match (x, w, h, g["y"].as_u64()) {
                (Some(x), Some(w), Some(h), Some(_)) if w > 0 && h > 0 && x + w <= 24 => {}
                _ => problems.push(format!("{name} / {title}: bad gridPos {g}")),
            }
            for used in referenced_variables(title) {
                if !defined.contains(&used) {
                    problems.push(format!("{name} / {title}: title uses undefined ${used}"));
                }
            }
            if let Some(repeat) = p["repeat"].as_str() {
                match vars.get(repeat) {
                    Some(v) if v["multi"] == true => {}
                    _ => problems.push(format!(
                        "{name} / {title}: repeats over {repeat}, which is not a multi-value variable"
                    )),
                }
            }
            if p["type"] != "row" && !p["datasource"].is_object() {
                problems.push(format!("{name} / {title}: no panel data source"));
            }
            let mut refs = BTreeSet::new();
            for t in p["targets"].as_array().into_iter().flatten() {
                let r = t["refId"].as_str().unwrap_or_default();
                if r.is_empty() || !refs.insert(r.to_owned()) {
                    problems.push(format!("{name} / {title}: missing or repeated refId {r:?}"));
                }
            }
        }

        for t in targets(&name, &d) {
            for field in INTERPOLATED {
                let text = t.query[field].as_str().unwrap_or_default();
                for used in referenced_variables(text) {
                    if !defined.contains(&used) {
                        problems.push(format!("{}: {field} uses undefined ${used}", t.place));
                    }
                }
            }
            match t.source {
                Source::Prometheus => {
                    let expr = t.query["expr"].as_str().unwrap_or_default();
                    if expr.trim().is_empty() {
                        problems.push(format!("{}: empty expression", t.place));
                    }
                    for m in promql_refs(expr).metrics {
                        if !declared.contains(&m) {
                            problems.push(format!(
                                "{}: `{m}` is not a metric declared in actors/src/metrics.rs",
                                t.place
                            ));
                        }
                    }
                }
                Source::Valkey => {
                    let command = t.query["command"].as_str().unwrap_or_default();
                    if t.query["type"] != "command"
                        || !REDIS_COMMANDS.iter().any(|(c, _)| *c == command)
                    {
                        problems.push(format!(
                            "{}: Redis query must be a `command` among {REDIS_COMMANDS:?}, got {}",
                            t.place, t.query
                        ));
                    }
                    let key = t.query["keyName"].as_str().unwrap_or_default();
                    if !key.starts_with("${prefix}") {
                        problems.push(format!(
                            "{}: key {key:?} must start with ${{prefix}} (flujo's valkey.prefix)",
                            t.place
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems in dashboards/:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------------

/// A Prometheus server scraping one target every second, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prometheus_binary() -> PathBuf {
    if let Ok(path) = std::env::var("FLUJO_TEST_PROMETHEUS") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "FLUJO_TEST_PROMETHEUS={} is not a file; {HINT}",
            path.display()
        );
        return path;
    }
    let debian = PathBuf::from("/usr/bin/prometheus");
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "no `prometheus` binary (looked at FLUJO_TEST_PROMETHEUS, /usr/bin/prometheus and \
                 the PATH); {HINT}"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

async fn start_prometheus(scrape: std::net::SocketAddr) -> Prometheus {
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
        let client = common::http_client();
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
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let resp = common::http_client()
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

    async fn query(&self, expr: &str) -> Result<Value, String> {
        self.api("query", &[("query", expr)]).await
    }

    /// The single value of an instant query, when it has exactly one.
    async fn scalar(&self, expr: &str) -> Option<f64> {
        let data = self.query(expr).await.ok()?;
        let result = data["result"].as_array()?;
        let [one] = result.as_slice() else {
            return None;
        };
        one["value"][1].as_str()?.parse().ok()
    }
}

/// Sum of every sample of `name` in a `/metrics` text.
fn metric_sum(text: &str, name: &str) -> f64 {
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
fn loadgen(server: &TestServer, args: &[&str]) -> String {
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
async fn side_traffic(server: &TestServer) {
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
    let resp = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(resp.status(), StatusCode::OK, "/readyz");
}

/// Substitutions of a Prometheus expression: built-ins and, for custom variables,
/// the regex Grafana sends for "All" (`(a|b|c)`).
fn prometheus_values(dashboard: &Value) -> HashMap<String, String> {
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

fn custom_options(v: &Value) -> Vec<String> {
    v["query"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect()
}

/// The label names the series of `metrics` carry in Prometheus.
async fn labels_of(prom: &Prometheus, metrics: &BTreeSet<String>) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for m in metrics {
        if let Ok(series) = prom.api("series", &[("match[]", m.as_str())]).await {
            for s in series.as_array().into_iter().flatten() {
                if let Some(obj) = s.as_object() {
                    labels.extend(obj.keys().filter(|k| *k != "__name__").cloned());
                }
            }
        }
        if let Some((_, extra)) = ON_FAILURE_ONLY.iter().find(|(n, _)| n == m) {
            labels.extend(extra.iter().map(|l| (*l).to_owned()));
        }
    }
    labels
}

async fn check_prometheus_target(
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
    let mut may_be_empty = false;
    for m in &refs.metrics {
        let on_failure = ON_FAILURE_ONLY.iter().any(|(n, _)| n == m);
        if !m.starts_with("flujo_") {
            return Err(format!("`{m}` is not a flujo metric"));
        }
        if exported.contains(m) {
            continue;
        }
        if on_failure && declared.contains(m) {
            may_be_empty = true;
            continue;
        }
        return Err(format!(
            "`{m}` is not exported by flujo (not among the names Prometheus scraped: {exported:?})"
        ));
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
    if result.is_empty() && !may_be_empty {
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

// ---------------------------------------------------------------------------------
// Valkey
// ---------------------------------------------------------------------------------

fn valkey_url() -> String {
    std::env::var("FLUJO_TEST_VALKEY_URL").unwrap_or_else(|_| "redis://127.0.0.1:6380".into())
}

fn valkey(url: &str) -> redis::Connection {
    let con = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(3)))
        .unwrap_or_else(|e| panic!("no Valkey answers at {url} ({e}); {HINT}"));
    let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
    con
}

fn keys_under(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Deletes every key under the prefix when dropped, even when the test failed.
struct KeysGuard {
    url: String,
    prefix: String,
}

impl Drop for KeysGuard {
    fn drop(&mut self) {
        let Ok(mut con) = redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(3)))
        else {
            return;
        };
        let keys = keys_under(&mut con, &format!("{}*", self.prefix));
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<u64> = redis::cmd("DEL").arg(chunk).query(&mut con);
        }
    }
}

fn key_type(con: &mut redis::Connection, key: &str) -> String {
    redis::cmd("TYPE")
        .arg(key)
        .query(con)
        .unwrap_or_else(|e| panic!("TYPE {key}: {e}"))
}

/// Runs a Redis-data-source query as the plugin does; returns the field names it
/// produces (hash fields, stream entry fields), or what is wrong.
fn run_redis_query(con: &mut redis::Connection, q: &Value) -> Result<BTreeSet<String>, String> {
    let s = |f: &str| q[f].as_str().unwrap_or_default().to_owned();
    let command = s("command");
    let key = s("keyName");
    let want = REDIS_COMMANDS
        .iter()
        .find(|(c, _)| *c == command)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("unsupported command {command:?}"))?;
    let keys = if key.contains(['*', '?', '[']) {
        let found = keys_under(con, &key);
        if found.is_empty() {
            return Err(format!("no key matches {key}"));
        }
        found
    } else {
        vec![key.clone()]
    };
    let mut fields = BTreeSet::new();
    for k in &keys {
        let got = key_type(con, k);
        if got != want {
            return Err(format!("{command} {k}: key is `{got}`, expected a {want}"));
        }
        let run = |con: &mut redis::Connection,
                   cmd: &mut redis::Cmd|
         -> Result<Vec<redis::Value>, String> {
            cmd.query(con).map_err(|e| format!("{command} {k}: {e}"))
        };
        match command.as_str() {
            "hgetall" => {
                let map: HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(k)
                    .query(con)
                    .map_err(|e| format!("HGETALL {k}: {e}"))?;
                if map.is_empty() {
                    return Err(format!("HGETALL {k} is empty"));
                }
                fields.extend(map.into_keys());
            }
            "hget" | "hmget" => {
                let wanted: Vec<String> =
                    s("field").split_whitespace().map(str::to_owned).collect();
                if wanted.is_empty() {
                    return Err(format!("{command} {k}: no field"));
                }
                let got: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(k)
                    .arg(&wanted)
                    .query(con)
                    .map_err(|e| format!("HMGET {k}: {e}"))?;
                for (f, v) in wanted.iter().zip(got) {
                    if v.is_none() {
                        return Err(format!("hash {k} has no field {f}"));
                    }
                    fields.insert(f.clone());
                }
            }
            "zrange" => {
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(k).arg(s("min")).arg(s("max"));
                if !s("zrangeQuery").is_empty() {
                    cmd.arg(s("zrangeQuery"));
                }
                cmd.arg("WITHSCORES");
                let got = run(con, &mut cmd)?;
                if got.is_empty() {
                    return Err(format!("ZRANGE {k} {} {} is empty", s("min"), s("max")));
                }
            }
            "xrange" | "xrevrange" => {
                // The plugin's defaults when no range is given.
                let or = |v: String, default: &str| {
                    if v.is_empty() {
                        default.to_owned()
                    } else {
                        v
                    }
                };
                let (start, end) = (or(s("start"), "-"), or(s("end"), "+"));
                let mut cmd = redis::cmd(&command.to_ascii_uppercase());
                if command == "xrange" {
                    cmd.arg(k).arg(&start).arg(&end);
                } else {
                    cmd.arg(k).arg(&end).arg(&start);
                }
                if let Some(n) = q["count"].as_u64().filter(|n| *n > 0) {
                    cmd.arg("COUNT").arg(n);
                }
                let entries: Vec<(String, Vec<String>)> =
                    cmd.query(con).map_err(|e| format!("{command} {k}: {e}"))?;
                if entries.is_empty() {
                    return Err(format!("{command} {k} is empty"));
                }
                fields.extend(["$streamId".to_owned(), "$time".to_owned()]);
                for (_, kv) in &entries {
                    fields.extend(kv.iter().step_by(2).cloned());
                }
            }
            "xlen" => {
                let n: u64 = redis::cmd("XLEN")
                    .arg(k)
                    .query(con)
                    .map_err(|e| format!("XLEN {k}: {e}"))?;
                if n == 0 {
                    return Err(format!("stream {k} is empty"));
                }
            }
            _ => unreachable!("checked against REDIS_COMMANDS"),
        }
    }
    if key.contains(['*', '?', '[']) {
        fields.insert("key".to_owned());
    }
    Ok(fields)
}

/// The fields a panel's transformations read from the query's frame.
fn fields_read_by(transformations: &[Value]) -> Vec<String> {
    let mut produced = BTreeSet::new();
    let mut read = Vec::new();
    for t in transformations {
        let o = &t["options"];
        match t["id"].as_str() {
            Some("calculateField") => {
                for side in ["left", "right"] {
                    if let Some(f) = o["binary"][side].as_str() {
                        if !produced.contains(f) && f.parse::<f64>().is_err() {
                            read.push(f.to_owned());
                        }
                    }
                }
                if let Some(alias) = o["alias"].as_str() {
                    produced.insert(alias.to_owned());
                }
            }
            Some("convertFieldType") => {
                for c in o["conversions"].as_array().into_iter().flatten() {
                    if let Some(f) = c["targetField"].as_str() {
                        read.push(f.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    read
}

/// Runs a Redis-data-source variable query (`COMMAND args…`, as typed in Grafana).
fn run_variable_query(con: &mut redis::Connection, query: &str) -> Result<Vec<String>, String> {
    let mut parts = query.split_whitespace();
    let command = parts.next().ok_or("empty variable query")?;
    redis::cmd(command)
        .arg(parts.collect::<Vec<_>>())
        .query(con)
        .map_err(|e| format!("{query}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn valkey_holds_every_dashboard_key() {
    let url = valkey_url();
    let mut con = valkey(&url);
    let t0 = Instant::now();
    let prefix = format!("dashboards-{}:", uuid::Uuid::now_v7().simple());
    let _guard = KeysGuard {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let hostport = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let store = format!("valkey://{hostport}");

    let body = async {
        let server = TestServer::start_with_args(
            &[("FLUJO__VALKEY__PREFIX", prefix.as_str())],
            &["--store", &store],
        );
        let ready = wait_until(Duration::from_secs(30), || async {
            server
                .client
                .get(server.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(
            ready,
            "flujo with {store} never ready:\n{}",
            server.stderr()
        );
        let report = loadgen(
            &server,
            &[
                "--kind",
                "mixed",
                "--rate",
                "1000",
                "--duration",
                "3",
                "--batch",
                "5",
                "--verify",
            ],
        );
        println!(
            "{:>6.2?} load applied and verified:\n{report}",
            t0.elapsed()
        );

        let all_keys = keys_under(&mut con, &format!("{prefix}*"));
        assert!(!all_keys.is_empty(), "nothing stored under {prefix}");

        let mut problems = Vec::new();
        let mut checked = BTreeSet::new();
        for (name, d) in load_dashboards() {
            // Each variable's possible values: the test's prefix, every option of a
            // custom variable, every answer of a Redis query variable.
            let mut choices: BTreeMap<String, Vec<String>> = BTreeMap::new();
            choices.insert("prefix".into(), vec![prefix.clone()]);
            for v in variables(&d) {
                let vname = v["name"].as_str().unwrap_or_default().to_owned();
                match v["type"].as_str() {
                    Some("custom") => {
                        choices.insert(vname, custom_options(v));
                    }
                    Some("query") if source_of(&v["datasource"]) == Ok(Source::Valkey) => {
                        let single: HashMap<String, String> =
                            [("prefix".to_owned(), prefix.clone())].into();
                        let query = interpolate(v["query"].as_str().unwrap_or_default(), &single);
                        match run_variable_query(&mut con, &query) {
                            Ok(values) if !values.is_empty() => {
                                choices.insert(vname, values);
                            }
                            Ok(_) => problems
                                .push(format!("{name}: variable {vname}: `{query}` has no values")),
                            Err(e) => problems.push(format!("{name}: variable {vname}: {e}")),
                        }
                    }
                    _ => {}
                }
            }
            for t in targets(&name, &d)
                .into_iter()
                .filter(|t| t.source == Source::Valkey)
            {
                // Every combination of the values of the variables the query uses.
                let mut used = BTreeSet::new();
                for field in INTERPOLATED {
                    used.extend(referenced_variables(
                        t.query[field].as_str().unwrap_or_default(),
                    ));
                }
                let mut combos: Vec<HashMap<String, String>> = vec![HashMap::new()];
                for var in &used {
                    let Some(options) = choices.get(var) else {
                        problems.push(format!("{}: no values for ${var}", t.place));
                        continue;
                    };
                    combos = combos
                        .into_iter()
                        .flat_map(|c| {
                            options.iter().map(move |o| {
                                let mut c = c.clone();
                                c.insert(var.clone(), o.clone());
                                c
                            })
                        })
                        .collect();
                }
                for values in combos {
                    let mut q = t.query.clone();
                    for field in INTERPOLATED {
                        if let Some(text) = q[field].as_str() {
                            q[field] = Value::String(interpolate(text, &values));
                        }
                    }
                    let what = format!(
                        "{}: {} {}",
                        t.place,
                        q["command"].as_str().unwrap_or("?"),
                        q["keyName"].as_str().unwrap_or("?")
                    );
                    match run_redis_query(&mut con, &q) {
                        Ok(fields) => {
                            let missing: Vec<String> = fields_read_by(&t.transformations)
                                .into_iter()
                                .filter(|f| !fields.contains(f))
                                .collect();
                            if missing.is_empty() {
                                println!("ok  {what}");
                                checked.insert(what);
                            } else {
                                problems.push(format!(
                                    "{what}: the panel computes with {missing:?}, not among {fields:?}"
                                ));
                            }
                        }
                        Err(e) => problems.push(format!("{}: {e}", t.place)),
                    }
                }
            }
        }
        assert!(
            problems.is_empty(),
            "{} Redis queries of the dashboards fail against flujo's keys (prefix {prefix}):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
        assert!(
            checked.len() >= 20,
            "only {} Redis queries checked",
            checked.len()
        );
        println!(
            "{:>6.2?} {} Redis queries answered from {} keys",
            t0.elapsed(),
            checked.len(),
            all_keys.len()
        );
    };
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {TEST_TIMEOUT:?}"));
}
