//! Headless Chromium on the page, through `tests/clients/kpi_page.py` (Selenium and
//! Debian's chromedriver): one JSON command a line on its stdin, one JSON answer a
//! line on its stdout.

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

/// How long the browser may take to start and show a live page.
const OPEN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a command may take beyond its own timeout.
const COMMAND_SLACK: Duration = Duration::from_secs(30);
/// How long the page may take to show what was sent.
pub const SHOW_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL_HINT: &str =
    "scripts/test.sh installs Debian's chromium and chromium-driver and Selenium into .services/venv";

/// A headless Chromium showing the page; closed (and the process reaped) on drop.
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Opens `url` and waits until its stream is live.
    pub fn open(url: &str) -> Browser {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = python();
        let chromium = find_tool(
            "FLUJO_TEST_CHROMIUM",
            Path::new("/usr/bin/chromium"),
            "chromium",
            INSTALL_HINT,
        );
        let chromedriver = find_tool(
            "FLUJO_TEST_CHROMEDRIVER",
            Path::new("/usr/bin/chromedriver"),
            "chromedriver",
            INSTALL_HINT,
        );
        let selenium = Command::new(&python)
            .args(["-c", "import selenium"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}); {INSTALL_HINT}", python.display()));
        assert!(
            selenium.status.success(),
            "{} cannot import selenium; {INSTALL_HINT}, or set FLUJO_TEST_PYTHON",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(root.join("tests/clients/kpi_page.py"))
            .arg(url)
            .arg("--chromium")
            .arg(&chromium)
            .arg("--chromedriver")
            .arg(&chromedriver)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err_pipe = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut browser = Browser {
            stdin: child.stdin.take(),
            child,
            answers,
            stderr,
        };
        let ready = browser.answer(OPEN_TIMEOUT);
        assert_eq!(
            ready["ready"],
            json!(true),
            "the page never went live: {ready}\n{}",
            browser.stderr()
        );
        browser
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    fn answer(&mut self, within: Duration) -> Value {
        match self.answers.recv_timeout(within) {
            Ok(line) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the driver script wrote {line:?} ({e})")),
            Err(e) => panic!(
                "no answer from the driver script within {within:?} ({e}); stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Sends one command and returns its answer.
    pub fn command(&mut self, command: Value, within: Duration) -> Value {
        let stdin = self.stdin.as_mut().expect("the browser is open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to the driver script: {e}\n{}", self.stderr()));
        self.answer(within + COMMAND_SLACK)
    }

    /// Waits until each element `data-testid` shows its text (thousands separators
    /// aside); panics with what the page shows when it does not within
    /// [`SHOW_TIMEOUT`].
    pub fn expect(&mut self, want: &BTreeMap<String, String>) -> Value {
        let answer = self.command(
            json!({"expect": want, "timeout": SHOW_TIMEOUT.as_secs()}),
            SHOW_TIMEOUT,
        );
        if answer["ok"] != json!(true) {
            let wrong: Vec<String> = want
                .iter()
                .filter(|(id, text)| {
                    let shown = answer["seen"][id.as_str()]
                        .as_str()
                        .map(|t| t.replace(',', ""));
                    shown != Some(text.replace(',', ""))
                })
                .map(|(id, text)| {
                    format!("{id}: shows {} for {text:?}", answer["seen"][id.as_str()])
                })
                .collect();
            panic!(
                "the page does not show what was sent within {SHOW_TIMEOUT:?}:\n{}",
                wrong.join("\n")
            );
        }
        answer
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End of input: the script closes Chromium and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
