//! `valkey_holds_every_dashboard_key`: every Redis-data-source query of the
//! dashboards run as the plugin would, after a verified load into Valkey.

use super::*;

pub(crate) fn valkey(url: &str) -> redis::Connection {
    let con = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(3)))
        .unwrap_or_else(|e| panic!("no Valkey answers at {url} ({e}); {HINT}"));
    let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
    con
}

pub(crate) fn key_type(con: &mut redis::Connection, key: &str) -> String {
    redis::cmd("TYPE")
        .arg(key)
        .query(con)
        .unwrap_or_else(|e| panic!("TYPE {key}: {e}"))
}

/// Runs a Redis-data-source query as the plugin does; returns the field names it
/// produces (hash fields, stream entry fields), or what is wrong.
pub(crate) fn run_redis_query(
    con: &mut redis::Connection,
    q: &Value,
) -> Result<BTreeSet<String>, String> {
    let s = |f: &str| q[f].as_str().unwrap_or_default().to_owned();
    let command = s("command");
    let key = s("keyName");
    let want = REDIS_COMMANDS
        .iter()
        .find(|(c, _)| *c == command)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("unsupported command {command:?}"))?;
    let keys = if key.contains(['*', '?', '[']) {
        let found = scan_keys(con, &key).expect("SCAN");
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
pub(crate) fn fields_read_by(transformations: &[Value]) -> Vec<String> {
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
pub(crate) fn run_variable_query(
    con: &mut redis::Connection,
    query: &str,
) -> Result<Vec<String>, String> {
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
            let answer = server.get("/readyz").await;
            answer.is_ok_and(|r| r.status().is_success())
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

        let all_keys = scan_keys(&mut con, &format!("{prefix}*")).expect("SCAN");
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
