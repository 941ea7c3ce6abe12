//! A `valkey-server` of the test's own (for tests that kill and restart it), with
//! AOF in a temporary directory.

use super::services::{redis_connection, SERVICES_HINT};
use super::tools::on_path;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `valkey-server` binary: `FLUJO_TEST_VALKEY_SERVER`, the `PATH`, or the one
/// `scripts/services.sh` installs under `.services/venv`.
pub fn valkey_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("FLUJO_TEST_VALKEY_SERVER") {
        return path.into();
    }
    if let Some(path) = on_path("valkey-server") {
        return path;
    }
    let services = std::env::var_os("FLUJO_SERVICES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".services"));
    find_file(&services.join("venv"), "valkey-server", 8).unwrap_or_else(|| {
        panic!(
            "valkey-server not found (FLUJO_TEST_VALKEY_SERVER, PATH, {}): {SERVICES_HINT}, \
             which installs it",
            services.display()
        )
    })
}

fn find_file(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type().ok()?;
        if kind.is_file() && entry.file_name() == name {
            return Some(path);
        }
        if kind.is_dir() {
            subdirs.push(path);
        }
    }
    if depth == 0 {
        return None;
    }
    subdirs.iter().find_map(|d| find_file(d, name, depth - 1))
}

/// A `valkey-server` child with AOF (`appendfsync always`) in a temporary directory,
/// on a fixed port across restarts; killed when dropped.
pub struct OwnValkey {
    child: Option<Child>,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OwnValkey {
    /// Starts a server on a free port in a fresh temporary directory.
    pub fn start() -> OwnValkey {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = OwnValkey {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and directory; waits for PONG.
    pub fn spawn(&mut self) {
        let child = Command::new(valkey_server_bin())
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn valkey-server");
        self.child = Some(child);
        self.wait_for_pong();
    }

    /// Waits until the server answers PING (15 s at most).
    fn wait_for_pong(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pong = redis_connection(&self.url())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.as_deref() == Ok("PONG") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "own valkey-server on port {} did not start: {pong:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no final AOF rewrite.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnValkey {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A three-master Valkey Cluster of the test's own: three `valkey-server`s in
/// cluster mode on free ports (each with its cluster bus on port + 10000), the
/// slots split in three, joined with `CLUSTER MEET`; killed when dropped.
pub struct OwnCluster {
    /// The nodes, in slot order (the first holds slots 0–5460).
    pub nodes: Vec<OwnValkey>,
}

impl OwnCluster {
    /// Starts the three nodes and waits until every one reports `cluster_state:ok`.
    pub fn start() -> OwnCluster {
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        let mut nodes = Vec::new();
        while nodes.len() < ranges.len() {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            // The cluster bus listens on port + 10000: it must be free too.
            let bus_free =
                port <= 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
            if !bus_free
                || nodes
                    .iter()
                    .any(|n: &OwnValkey| n.port.abs_diff(port) == 10_000)
            {
                continue;
            }
            let dir = tempfile::tempdir().expect("temporary directory");
            let child = Command::new(valkey_server_bin())
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", "2000"])
                .args(["--appendonly", "no", "--save", ""])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn valkey-server");
            let node = OwnValkey {
                child: Some(child),
                port,
                dir,
            };
            node.wait_for_pong();
            nodes.push(node);
        }
        let connect = |n: &OwnValkey| redis_connection(&n.url()).expect("a cluster node");
        for (node, (first, last)) in nodes.iter().zip(ranges) {
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut connect(node))
                .expect("CLUSTER ADDSLOTSRANGE");
        }
        for other in &nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(other.port)
                .query(&mut connect(&nodes[0]))
                .expect("CLUSTER MEET");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connect(n))
                    .unwrap_or_default();
                let known: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut connect(n))
                    .unwrap_or_default();
                info.contains("cluster_state:ok") && known.lines().count() == 3
            });
            if ok {
                return OwnCluster { nodes };
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never reported cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `valkey+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("valkey+cluster://{}", hosts.join(","))
    }

    /// The keys each node holds (`KEYS *`, in node order).
    pub fn keys_per_node(&self) -> Vec<Vec<String>> {
        self.nodes
            .iter()
            .map(|n| {
                redis::cmd("KEYS")
                    .arg("*")
                    .query(&mut redis_connection(&n.url()).expect("a cluster node"))
                    .expect("KEYS")
            })
            .collect()
    }
}
