//! flujo's broker and store clients over TLS and SASL, against real servers, with
//! certificates made at test time (rcgen): a Valkey store at `valkeys://` (Debian's
//! `redis-server` with a TLS port), RabbitMQ at `amqps://` (the shared broker behind
//! a TLS-terminating proxy of the test's own), and Kafka with `sasl_ssl` SCRAM and
//! `ssl` with a client certificate (private tansu brokers, which speak SASL but not
//! TLS, advertising a TLS proxy in front of them); plus `kafka.options` reaching
//! librdkafka. Each runs `flujo run` end to end (events in, KPIs out) and `flujo
//! validate` (ok with the CA, refused without it or with a wrong password).
//!
//! # Layout
//! - this file: the servers' binaries, free ports, bounded child processes.
//! - `tls`: the test PKI and the TLS proxy.
//! - `valkey`, `rabbitmq`, `kafka`: one module per client.

#[path = "../support/mod.rs"]
mod support;

mod kafka;
mod rabbitmq;
mod tls;
mod valkey;

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{flujo_command, on_path, output_within, SERVICES_HINT};

/// Bound of every test here.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound of one `flujo validate` (each dependency check is bounded at 5 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `test` within [`TEST_TIMEOUT`].
async fn bounded(name: &str, test: impl Future<Output = ()>) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("{name} did not finish within {TEST_TIMEOUT:?}");
    }
}

/// A port free on 127.0.0.1 just now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`, or panics
/// with `what` and the tail of `log`.
fn wait_listening(port: u16, what: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            panic!(
                "{what} is not listening on {addr} (exit: {exited:?}); its log (last lines \
                 first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (SIGKILL) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with its output in `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let err = file.try_clone().expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()))
}

/// A binary: the variable `env`, else `name` on the `PATH`, else the first of
/// `fallbacks` that exists; panics with `hint` when none is found.
fn binary(env: &str, name: &str, fallbacks: &[PathBuf], hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return path.into();
    }
    on_path(name)
        .or_else(|| fallbacks.iter().find(|p| p.is_file()).cloned())
        .unwrap_or_else(|| panic!("{name} not found ({env}, PATH): {hint}"))
}

/// `flujo validate ARGS` with `envs`, run to completion in a fresh directory.
fn validate(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = flujo_command(dir.path());
    cmd.arg("validate").args(args).envs(envs.iter().copied());
    output_within(cmd, COMMAND_TIMEOUT)
}

/// Both streams of `out`, for messages.
fn streams(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts `flujo validate` exited `code` and printed a line containing every one of
/// `parts`.
fn assert_validate(out: &Output, code: i32, parts: &[&str]) {
    let all = streams(out);
    assert_eq!(out.status.code(), Some(code), "{all}");
    let found = all
        .lines()
        .any(|line| parts.iter().all(|part| line.contains(part)));
    assert!(found, "no line with all of {parts:?}:\n{all}");
}

/// The hint for a missing server binary.
fn services_hint() -> String {
    format!("{SERVICES_HINT}; scripts/test.sh installs what these tests need")
}
