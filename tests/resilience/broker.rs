//! The brokers the scenarios fault: a private tansu (a process the test owns, so it
//! may SIGSTOP and SIGKILL it) and a TCP proxy in front of the shared RabbitMQ that
//! can freeze or cut what passes through it.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The tansu binary: on `PATH`, else `~/.cargo/bin/tansu` (`scripts/services.sh`
/// installs it).
fn tansu_bin() -> PathBuf {
    if let Ok(paths) = std::env::var("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let candidate = PathBuf::from(home).join(".cargo/bin/tansu");
    assert!(
        candidate.is_file(),
        "no tansu binary on PATH or in ~/.cargo/bin; run scripts/services.sh up once"
    );
    candidate
}

/// A tansu broker of the test's own, on a free loopback port, with its sqlite
/// storage in a temporary directory that outlives a kill (a restart finds the
/// topics and messages again). Killed on drop.
pub struct Tansu {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Tansu {
    /// Starts one and waits until its port accepts connections.
    pub fn start() -> Tansu {
        let addr = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut tansu = Tansu {
            dir: tempfile::tempdir().expect("tansu's directory"),
            addr,
            child: None,
        };
        tansu.spawn();
        tansu
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the process (again) on the same port and storage.
    pub fn spawn(&mut self) {
        let url = format!("tcp://{}", self.addr);
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).expect("log file");
        let child = Command::new(tansu_bin())
            .current_dir(self.dir.path())
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {} within 20 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("tansu runs").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What the proxy does with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Passes them on.
    Open,
    /// Holds them: connections stay open, nothing moves (a frozen broker).
    Frozen,
    /// Drops every connection and refuses new ones (a dead broker).
    Cut,
}

/// A TCP proxy in front of `upstream` whose [`Mode`] the test sets.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mode, _) = watch::channel(Mode::Open);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Cut {
                    continue;
                }
                let modes = modes.clone();
                tokio::spawn(async move {
                    let Ok(Ok(server)) =
                        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream))
                            .await
                    else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(
                        pump(cr, sw, modes.subscribe()),
                        pump(sr, cw, modes.subscribe())
                    );
                });
            }
        });
        FaultProxy { addr, mode, task }
    }

    /// Sets what happens to the bytes from now on.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        crate::support::via(url, self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.set(Mode::Cut);
        self.task.abort();
    }
}

/// Waits until the mode lets bytes move: `false` when the connection is cut.
async fn flowing(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *mode.borrow_and_update() {
            Mode::Open => return true,
            Mode::Cut => return false,
            Mode::Frozen => {}
        }
        if mode.changed().await.is_err() {
            return false;
        }
    }
}

/// Copies `from` to `to` while the mode lets it; returns (closing both) on EOF,
/// an error or a cut.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !flowing(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A change of mode while waiting: look at it again first.
            _ = mode.changed() => continue,
        };
        // Bytes read just before a freeze are held until the thaw.
        if !flowing(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
