//! A client of the newline-delimited TCP interface, and child processes bounded in
//! time.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound of waiting for one answer line over TCP.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the newline-delimited TCP interface over a raw `TcpStream`.
pub struct LineClient {
    reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl LineClient {
    /// Connects to `addr` (bounded in time).
    pub async fn connect(addr: SocketAddr) -> LineClient {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .unwrap_or_else(|_| panic!("connecting to tcp://{addr} timed out"))
                .unwrap_or_else(|e| panic!("connect to tcp://{addr}: {e}"));
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        LineClient {
            reader: tokio::io::BufReader::new(read),
            writer: write,
        }
    }

    /// Writes `bytes` as they are.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        tokio::time::timeout(LINE_TIMEOUT, self.writer.write_all(bytes))
            .await
            .expect("writing to the TCP interface timed out")
            .expect("write to the TCP interface");
    }

    /// Writes `line` and a `\n`.
    pub async fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.write_raw(&bytes).await;
    }

    /// Closes the writing half (the server sees end of input).
    pub async fn shutdown_write(&mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.writer.shutdown().await;
    }

    /// The next answer line without its `\n`, or `None` at end of stream. Panics when
    /// none comes within [`LINE_TIMEOUT`] or the line does not end with exactly `\n`.
    pub async fn try_read_line(&mut self) -> Option<String> {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        let n = tokio::time::timeout(LINE_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("no answer line within {LINE_TIMEOUT:?}"))
            .expect("read an answer line");
        if n == 0 {
            return None;
        }
        let text = line
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("answer line without its newline: {line:?}"));
        assert!(!text.contains('\r'), "an answer line holds a CR: {line:?}");
        Some(text.to_owned())
    }

    /// The next answer line; panics at end of stream.
    pub async fn read_line(&mut self) -> String {
        self.try_read_line()
            .await
            .expect("the server closed the connection instead of answering")
    }

    /// Writes `bytes` while reading `n` answer lines at the same time (so neither
    /// side waits on a full socket buffer), and returns the answers.
    pub async fn pipeline(&mut self, bytes: &[u8], n: usize) -> Vec<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (reader, writer) = (&mut self.reader, &mut self.writer);
        let write = async {
            writer
                .write_all(bytes)
                .await
                .expect("write to the TCP interface");
        };
        let read = async {
            let mut answers = Vec::with_capacity(n);
            for i in 0..n {
                let mut line = String::new();
                let got = reader
                    .read_line(&mut line)
                    .await
                    .expect("read an answer line");
                assert!(got > 0, "the server closed after {i} of {n} answers");
                let text = line
                    .strip_suffix('\n')
                    .unwrap_or_else(|| panic!("answer line without its newline: {line:?}"));
                assert!(!text.contains('\r'), "an answer line holds a CR: {line:?}");
                answers.push(text.to_owned());
            }
            answers
        };
        let within = LINE_TIMEOUT * 2;
        tokio::time::timeout(within, async { tokio::join!(write, read).1 })
            .await
            .unwrap_or_else(|_| panic!("{n} pipelined answers did not come within {within:?}"))
    }

    /// Sends `line` and returns its answer.
    pub async fn request(&mut self, line: &str) -> String {
        self.send(line).await;
        self.read_line().await
    }
}

/// A finished command's standard output, as text.
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's standard error, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a finished command's exit code, showing both streams when it differs.
pub fn assert_code(out: &std::process::Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// Runs `cmd` to completion with piped output, killing it (and failing) after `within`.
pub fn output_within(mut cmd: Command, within: Duration) -> std::process::Output {
    use std::io::Read;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out.join().unwrap_or_default();
                let stderr = err.join().unwrap_or_default();
                panic!(
                    "{cmd:?} did not finish within {within:?}; stdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
        }
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
