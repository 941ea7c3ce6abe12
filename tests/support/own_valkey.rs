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
