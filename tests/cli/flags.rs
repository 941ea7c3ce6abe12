//! Help, completions, variables and log precedence, as a user sees them.

use super::support::{flujo_command, START_TIMEOUT};
use super::{assert_code, flujo, flujo_in, stderr, stdout};
use std::io::{BufRead, BufReader, Read};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[test]
fn help_lists_the_allowed_values_and_the_variables() {
    for command in ["run", "validate", "config"] {
        let out = flujo(&[command, "--help"], &[]);
        assert_code(&out, 0, "--help");
        let help = stdout(&out);
        for wanted in [
            // allowed values, each with its meaning
            "receiver",
            "router",
            "consumer",
            "memory",
            "kafka",
            "rabbitmq",
            "durable",
            "accepted",
            "json",
            "valkey://",
            // one variable per setting, as the configuration reads it
            "[env: FLUJO__CONFIG]",
            "[env: FLUJO__ROLE]",
            "[env: FLUJO__BUS]",
            "[env: FLUJO__KAFKA__BROKERS]",
            "[env: FLUJO__RABBITMQ__URL]",
            "[env: FLUJO__STORE]",
            "[env: FLUJO__HTTP__ADDR]",
            "[env: FLUJO__GRPC__ADDR]",
            "[env: FLUJO__TCP__ADDR]",
            "[env: FLUJO__ROUTER_URL]",
            "[env: FLUJO__ROUTER_CA_FILE]",
            "[env: FLUJO__ACK]",
            "[env: FLUJO__LOG__LEVEL]",
            "[env: FLUJO__LOG__FORMAT]",
        ] {
            assert!(
                help.contains(wanted),
                "`flujo {command} --help` lacks {wanted:?}:\n{help}"
            );
        }
    }
    // Values set in the environment are not shown (URLs carry passwords).
    let out = flujo(
        &["run", "--help"],
        &[("FLUJO__RABBITMQ__URL", "amqp://u:s3cret@h/")],
    );
    assert!(!stdout(&out).contains("s3cret"), "{}", stdout(&out));
    let short = stdout(&flujo(&["run", "-h"], &[]));
    assert!(
        short.contains("[possible values: all, receiver, router, consumer]"),
        "{short}"
    );
}

#[test]
fn completions_print_a_script_per_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _flujo"),
        ("zsh", "#compdef flujo"),
        ("fish", "complete -c flujo"),
        ("elvish", "edit:completion:arg-completer[flujo]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = flujo(&["completions", shell], &[]);
        assert_code(&out, 0, shell);
        let script = stdout(&out);
        assert!(
            script.contains(marker),
            "{shell}: no {marker:?} in\n{script}"
        );
        assert!(
            script.contains("validate"),
            "{shell} completes the commands"
        );
    }
    // bash completes the allowed values of --bus.
    let bash = stdout(&flujo(&["completions", "bash"], &[]));
    assert!(bash.contains("memory kafka rabbitmq"), "{bash}");
    let out = flujo(&["completions", "tcsh"], &[]);
    assert_code(&out, 2, "an unknown shell is a usage error");
}

/// The TOML `flujo config` prints with `envs`, run in `dir`.
fn config_with(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> toml::Table {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    let out = flujo_in(dir, &all, envs);
    assert_code(&out, 0, "flujo config");
    stdout(&out).parse().expect("flujo config prints TOML")
}

fn bus_of(config: &toml::Table) -> &str {
    config["bus"].as_str().expect("bus is text")
}

#[test]
fn both_config_variables_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let new = dir.path().join("new.toml");
    let old = dir.path().join("old.toml");
    std::fs::write(&new, "bus = \"kafka\"\n").expect("write");
    std::fs::write(&old, "bus = \"rabbitmq\"\n").expect("write");
    let new = new.to_str().expect("utf-8 path");
    let old = old.to_str().expect("utf-8 path");
    let cases = [
        (vec![("FLUJO__CONFIG", new)], "kafka"),
        (vec![("FLUJO_CONFIG", old)], "rabbitmq"),
        (vec![("FLUJO__CONFIG", new), ("FLUJO_CONFIG", old)], "kafka"),
    ];
    for (envs, bus) in cases {
        let config = config_with(dir.path(), &[], &envs);
        assert_eq!(bus_of(&config), bus, "{envs:?}");
    }
    // The flag wins over both; the variable is not taken for a config key.
    let flag = config_with(dir.path(), &["--config", old], &[("FLUJO__CONFIG", new)]);
    assert_eq!(bus_of(&flag), "rabbitmq");
    // A variable naming a missing file fails as --config does.
    let out = flujo(
        &["validate"],
        &[("FLUJO__CONFIG", "/nonexistent/flujo.toml")],
    );
    assert_code(&out, 78, "missing file");
    assert!(
        stderr(&out).contains("/nonexistent/flujo.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn file_then_variable_then_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("flujo.toml"),
        "bus = \"kafka\"\nrole = \"all\"\n",
    )
    .expect("write");
    assert_eq!(bus_of(&config_with(dir.path(), &[], &[])), "kafka");
    let env = [
        ("FLUJO__BUS", "rabbitmq"),
        ("FLUJO__ROLE", "router,consumer"),
    ];
    let from_env = config_with(dir.path(), &[], &env);
    assert_eq!(bus_of(&from_env), "rabbitmq", "the variable beats the file");
    assert_eq!(from_env["role"].as_str(), Some("router,consumer"));
    let flagged = config_with(dir.path(), &["--bus", "memory", "--role", "all"], &env);
    assert_eq!(bus_of(&flagged), "memory", "the flag beats the variable");
    assert_eq!(flagged["role"].as_str(), Some("all"));
    let listed = config_with(dir.path(), &["--role", "consumer,router"], &[]);
    assert_eq!(listed["role"].as_str(), Some("router,consumer"));
}

/// Runs `flujo run` on port 0 with `envs` and `args` until it prints its listening
/// line, stops it with SIGTERM and returns its exit status and everything it wrote
/// to stderr.
fn run_and_stop(envs: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = flujo_command(dir.path())
        .args(["run", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .args(["--tcp", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flujo run");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err_pipe.read_to_string(&mut text);
        text
    });
    let out_pipe = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = loop {
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.starts_with("flujo listening") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    if !listening {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "flujo run did not start:\n{}",
            errors.join().unwrap_or_default()
        );
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flujo run did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, errors.join().expect("stderr reader"))
}

#[test]
fn the_log_level_flag_wins_over_rust_log() {
    // RUST_LOG beats the variable: the drain's info lines are logged...
    let (status, err) = run_and_stop(&[("RUST_LOG", "info"), ("FLUJO__LOG__LEVEL", "warn")], &[]);
    assert!(status.success(), "{status}\n{err}");
    assert!(
        err.contains("drained; bye"),
        "RUST_LOG=info logs the drain:\n{err}"
    );
    // ...and the flag beats RUST_LOG: not one info (or debug, trace) line.
    let (status, err) = run_and_stop(&[("RUST_LOG", "trace")], &["--log-level", "warn"]);
    assert!(status.success(), "{status}\n{err}");
    assert!(
        !err.contains("INFO") && !err.contains("DEBUG") && !err.contains("TRACE"),
        "--log-level warn must silence RUST_LOG=trace:\n{err}"
    );
}
