//! `flujo validate`: 0 on the embedded default and against the real services, 78
//! with the key named for a bad configuration (file, variable, flag), 69 with the
//! key named for a dependency that does not answer; and `flujo run`'s 78.

use super::support::{amqp_url, kafka_brokers, store_flag, valkey_url, TestServer, LOOPBACK_PORTS};
use super::{assert_code, closed_port, flujo, stderr, stdout};

/// The line of `text` that starts with `prefix`.
fn line_starting(text: &str, prefix: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
        .to_owned()
}

#[test]
fn the_embedded_default_validates() {
    let out = flujo(&["validate"], &[]);
    assert_code(&out, 0, "validate on the embedded default");
    let text = stdout(&out);
    assert!(
        text.contains("configuration: ok, role all, bus memory, store memory, ack accepted"),
        "{text}"
    );
    assert!(text.contains("none to reach"), "{text}");
}

#[test]
fn an_unknown_key_in_the_file_is_78_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("flujo.toml");
    std::fs::write(&file, "[http]\nadress = \"127.0.0.1:1\"\n").expect("write the file");
    let path = file.to_str().expect("utf-8 path");
    let out = flujo(&["validate", "--config", path], &[]);
    assert_code(&out, 78, "unknown key in the file");
    let err = stderr(&out);
    let line = line_starting(&err, "flujo: bad configuration: key `http.adress`");
    assert!(line.contains(path), "names the file: {line}");
}

#[test]
fn a_bad_value_from_a_variable_is_78_naming_it() {
    // A free-text value: the loader refuses it.
    let out = flujo(&["validate"], &[("FLUJO__HTTP__ADDR", "nope")]);
    assert_code(&out, 78, "FLUJO__HTTP__ADDR=nope");
    let line = line_starting(&stderr(&out), "flujo: bad configuration: key `http.addr`");
    assert!(line.contains("FLUJO__HTTP__ADDR"), "{line}");
    // A value with a list of allowed ones: still the loader's error naming the
    // variable, not a usage error about a flag nobody typed.
    let out = flujo(&["validate"], &[("FLUJO__BUS", "nats")]);
    assert_code(&out, 78, "FLUJO__BUS=nats");
    let line = line_starting(&stderr(&out), "flujo: bad configuration: key `bus`");
    assert!(
        line.contains("FLUJO__BUS") && line.contains("nats"),
        "{line}"
    );
    let out = flujo(&["validate"], &[("FLUJO__ROLE", "writer")]);
    assert_code(&out, 78, "FLUJO__ROLE=writer");
    let line = line_starting(&stderr(&out), "flujo: bad configuration: key `role`");
    assert!(line.contains("unknown role `writer`"), "{line}");
}

#[test]
fn a_bad_value_from_a_flag_is_78_naming_the_key() {
    let out = flujo(&["validate", "--http", "nope"], &[]);
    assert_code(&out, 78, "--http nope");
    let line = line_starting(&stderr(&out), "flujo: bad configuration: key `http.addr`");
    assert!(line.contains("command-line flag"), "{line}");
    // A value outside the allowed list is a usage error (2) that lists them.
    let out = flujo(&["validate", "--bus", "nats"], &[]);
    assert_code(&out, 2, "--bus nats");
    let err = stderr(&out);
    assert!(
        err.contains("invalid value 'nats'") && err.contains("memory, kafka, rabbitmq"),
        "{err}"
    );
}

#[test]
fn every_problem_gets_its_own_line() {
    let out = flujo(
        &["validate", "--role", "router"],
        &[
            ("FLUJO__SHUTDOWN__DEADLINE_SECS", "0"),
            ("FLUJO__TCP__MAX_LINE_BYTES", "0"),
        ],
    );
    assert_code(&out, 78, "three problems");
    let err = stderr(&out);
    for key in ["tcp.max_line_bytes", "shutdown.deadline_secs", "role"] {
        line_starting(&err, &format!("flujo: bad configuration: key `{key}`"));
    }
}

#[test]
fn run_exits_78_on_a_bad_configuration() {
    let args: Vec<&str> = std::iter::once("run").chain(LOOPBACK_PORTS).collect();
    let out = flujo(&args, &[("FLUJO__HTTP__NOPE", "1")]);
    assert_code(&out, 78, "run with an unknown key");
    line_starting(&stderr(&out), "flujo: bad configuration: key `http.nope`");
}

#[test]
fn an_unreachable_store_is_69_naming_store() {
    let port = closed_port();
    let url = format!("valkey://:s3cret@127.0.0.1:{port}");
    let out = flujo(&["validate", "--store", &url], &[]);
    assert_code(&out, 69, "closed Valkey port");
    let err = stderr(&out);
    let line = line_starting(&err, &format!("store: valkey://:****@127.0.0.1:{port}: "));
    assert!(line.to_lowercase().contains("refused"), "{line}");
    assert!(!err.contains("s3cret"), "the password is masked:\n{err}");
}

#[test]
fn an_unreachable_broker_is_69_naming_its_key() {
    let port = closed_port();
    let brokers = format!("127.0.0.1:{port}");
    let out = flujo(&["validate", "--bus", "kafka", "--kafka", &brokers], &[]);
    assert_code(&out, 69, "closed Kafka port");
    line_starting(&stderr(&out), &format!("kafka.brokers: {brokers}: "));

    let amqp = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let out = flujo(&["validate", "--bus", "rabbitmq", "--amqp", &amqp], &[]);
    assert_code(&out, 69, "closed RabbitMQ port");
    line_starting(
        &stderr(&out),
        &format!("rabbitmq.url: amqp://guest:****@127.0.0.1:{port}/%2f: "),
    );
}

#[test]
fn only_the_dependencies_of_the_roles_are_reached() {
    // A receiver forwards to the router: its URL is the only dependency, even with
    // a Kafka bus and a Valkey store configured on closed ports.
    let port = closed_port();
    let closed = format!("127.0.0.1:{port}");
    let out = flujo(
        &[
            "validate",
            "--role",
            "receiver",
            "--bus",
            "kafka",
            "--kafka",
            &closed,
            "--store",
            &format!("valkey://{closed}"),
            "--router-url",
            &format!("http://{closed}"),
        ],
        &[],
    );
    assert_code(&out, 69, "closed router");
    let err = stderr(&out);
    line_starting(&err, &format!("router_url: http://{closed}: "));
    assert!(
        !err.contains("kafka.brokers") && !err.contains("store:"),
        "a receiver needs neither the brokers nor the store:\n{err}"
    );

    let server = TestServer::start(&[]);
    let out = flujo(
        &[
            "validate",
            "--role",
            "receiver",
            "--router-url",
            &server.grpc_uri(),
        ],
        &[],
    );
    assert_code(&out, 0, "a live router");
    line_starting(&stdout(&out), "router_url: ");
}

#[test]
fn the_real_services_validate() {
    let store = store_flag(&valkey_url());
    let out = flujo(
        &[
            "validate",
            "--bus",
            "kafka",
            "--kafka",
            &kafka_brokers(),
            "--store",
            &store,
        ],
        &[],
    );
    assert_code(
        &out,
        0,
        "Kafka and Valkey of the test services (scripts/services.sh up)",
    );
    let text = stdout(&out);
    line_starting(&text, &format!("kafka.brokers: {}: ok, ", kafka_brokers()));
    let line = line_starting(&text, "store: ");
    assert!(line.contains("ok, PONG"), "{line}");

    let out = flujo(
        &["validate", "--bus", "rabbitmq", "--amqp", &amqp_url()],
        &[],
    );
    assert_code(&out, 0, "RabbitMQ of the test services");
    let line = line_starting(&stdout(&out), "rabbitmq.url: ");
    assert!(
        line.contains(":****@") && line.contains("ok, queue"),
        "{line}"
    );
}

#[test]
fn a_store_url_the_client_refuses_is_78() {
    let out = flujo(&["validate", "--store", "valkey://h:port"], &[]);
    assert_code(&out, 78, "validate with an unparsable store URL");
    line_starting(&stderr(&out), "store: valkey://h:port: not a valkey URL");
    let args = [
        &["run"][..],
        &LOOPBACK_PORTS,
        &["--store", "valkey://h:port"],
    ]
    .concat();
    let out = flujo(&args, &[]);
    assert_code(&out, 78, "run with an unparsable store URL");
    assert!(stderr(&out).contains("bad store URL"), "{}", stderr(&out));
}
