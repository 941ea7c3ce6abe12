//! `loadtest/locustfile.py` against the real binary: Locust runs headless for a few
//! seconds (20 users, sales and tweets, the seeds' forms and flujo's) against a
//! `flujo run` on 127.0.0.1:0, and every request must succeed. Locust comes from
//! the test venv (`.services/venv`, `pip install locust`, done by `scripts/test.sh`),
//! or from `FLUJO_TEST_LOCUST`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{find_tool, output_within, TestServer};

fn locust_binary() -> PathBuf {
    find_tool(
        "FLUJO_TEST_LOCUST",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(".services/venv/bin/locust"),
        "locust",
        "run `scripts/test.sh`, which installs locust into .services/venv with pip",
    )
}

/// The rows of a Locust `*_stats.csv`, by request name (`Aggregated` is the total).
fn stats(csv: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let mut rows = BTreeMap::new();
    for line in lines {
        // Names hold no commas here (see the locustfile), so a plain split is enough.
        let cells: Vec<&str> = line.split(',').collect();
        let row: BTreeMap<String, String> = header
            .iter()
            .zip(&cells)
            .map(|(h, c)| ((*h).to_owned(), c.trim_matches('"').to_owned()))
            .collect();
        let name = row.get("Name").cloned().unwrap_or_default();
        rows.insert(name, row);
    }
    rows
}

fn count(row: &BTreeMap<String, String>, column: &str) -> u64 {
    row.get(column)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no integer `{column}` in {row:?}"))
}

#[tokio::test]
async fn locust_sales_and_tweets_users_see_no_failure() {
    let locust = locust_binary();
    let server = TestServer::start(&[]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let prefix = dir.path().join("locust");
    let locustfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/locustfile.py");

    let mut cmd = Command::new(&locust);
    cmd.arg("-f")
        .arg(&locustfile)
        // Long enough that a cold start (a fresh venv compiles Locust's modules on
        // its first import) still leaves every user time to send.
        .args(["--headless", "-u", "20", "-r", "10", "-t", "15s"])
        .args(["--host", &server.url("")])
        .arg("--only-summary")
        .arg("--csv")
        .arg(&prefix)
        .args(["--stop-timeout", "5", "--loglevel", "WARNING"])
        .current_dir(dir.path())
        .env("NO_PROXY", "127.0.0.1")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
    let out = tokio::task::spawn_blocking(move || output_within(cmd, Duration::from_secs(90)))
        .await
        .expect("locust task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let read = |suffix: &str| {
        let path = format!("{}_{suffix}.csv", prefix.display());
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("read {path}: {e}\nlocust stdout:\n{stdout}\nstderr:\n{stderr}")
        })
    };
    let rows = stats(&read("stats"));
    let failures = read("failures");
    println!("{stderr}");

    let total = rows
        .get("Aggregated")
        .unwrap_or_else(|| panic!("no Aggregated row in the stats: {rows:?}"));
    let requests = count(total, "Request Count");
    let failed = count(total, "Failure Count");
    assert_eq!(
        failed,
        0,
        "{failed} of {requests} Locust requests failed:\n{failures}\nflujo's log:\n{}",
        server.stderr()
    );
    assert!(
        out.status.success(),
        "locust exited with {}:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(requests > 0, "Locust sent no request:\n{stdout}");
    for name in [
        "/purchase",
        "/v1/sales [array]",
        "/input",
        "/v1/tweets [array]",
    ] {
        let row = rows
            .get(name)
            .unwrap_or_else(|| panic!("Locust sent no `{name}` request: {rows:?}"));
        assert!(count(row, "Request Count") > 0, "{name}: {row:?}");
    }

    // What the users sent is what flujo stored.
    let sales = server.get_ok("/v1/kpis/sales").await;
    let tweets = server.get_ok("/v1/kpis/tweets").await;
    assert!(
        sales["total"]["count"].as_u64().unwrap_or(0) > 0,
        "no sale stored: {sales}"
    );
    assert!(
        tweets["total"]["count"].as_u64().unwrap_or(0) > 0,
        "no tweet stored: {tweets}"
    );
}
