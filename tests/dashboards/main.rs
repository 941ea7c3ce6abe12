//! The Grafana dashboards in `dashboards/` against what flujo really produces.
//!
//! - `dashboards_are_well_formed` (no services): every file parses, panel ids and
//!   grid positions are sane, every data source is one of the two documented ones
//!   (`${prometheus}`, `${valkey}`), every `$variable` is defined, every metric an
//!   expression names is one flujo exports (`flujo_actors::metrics::ALL`).
//! - `prometheus_answers_every_dashboard_query`: flujo (all-in-one, memory) scraped
//!   every second by a real Prometheus (`/usr/bin/prometheus`, Debian's `prometheus`
//!   package, installed by `scripts/test.sh`); after a load with rejected and
//!   duplicate events, every Prometheus expression of the three dashboards is run
//!   through `/api/v1/query`: none may error, every metric it names must be one
//!   flujo exports, every label it groups or filters by must exist, and each must
//!   return data.
//! - `fresh_flujo_exports_every_dashboard_series`: flujo just started, nothing sent,
//!   scraped by Prometheus: every series selector of every Prometheus expression
//!   (metric name and label matchers, variables as Grafana sends "All") matches at
//!   least one series, carrying every label the expression groups by. A panel on a
//!   fresh deployment shows 0, never "no data".
//! - `valkey_holds_every_dashboard_key`: flujo with `--store valkey://…` under a
//!   random key prefix on the shared Valkey (`scripts/services.sh up`); after a
//!   verified load, every Redis-data-source query of the dashboards is run as the
//!   plugin would run it: every key must exist with the right type and hold data,
//!   every hash field a panel computes with must be there.

mod prometheus;
#[path = "../support/mod.rs"]
mod support;
mod valkey_keys;

#[allow(unused_imports)]
use prometheus::*;
#[allow(unused_imports)]
use valkey_keys::*;

use support::*;
#[path = "../support/promql.rs"]
mod promql;

use flujo_actors::metrics::{MetricSpec, ALL};
use promql::promql_refs;
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

/// Metric series flujo declares (`flujo_actors::metrics::ALL`, histograms expanded to
/// their `_bucket`, `_sum` and `_count` series).
fn declared_metrics() -> BTreeSet<String> {
    let names: BTreeSet<String> = ALL.iter().flat_map(MetricSpec::series).collect();
    assert!(
        names.len() >= 20,
        "found only {} metrics in flujo_actors::metrics::ALL: {names:?}",
        names.len(),
    );
    names
}

// ---------------------------------------------------------------------------------
// Static checks
// ---------------------------------------------------------------------------------

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
