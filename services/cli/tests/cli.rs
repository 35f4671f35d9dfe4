//! The `hookfleet` binary driven as a subprocess against a running fleet
//! (real broker and database, one per test), checked by what a user sees:
//! its output and its exit code.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hookfleet_tests::{Options, Receiver, Reply, TestApp, eventually};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, Command};

/// How long a test waits for something to arrive: a bound, not a timing
/// assertion.
const PATIENCE: Duration = Duration::from_secs(30);

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What a finished run printed and how it exited.
#[derive(Debug)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "failed: {self:?}");
        self
    }
}

/// The binary, configured for `app` through the environment only: a home
/// that does not exist (the CLI only reads a config file there, and
/// writes nothing), so no config file of the machine's gets in. Only the
/// one base URL: the ledger's calls go through the producer.
fn hookfleet(app: &TestApp) -> Command {
    let home = std::env::temp_dir().join(format!("hookfleet-cli-{}", uuid::Uuid::new_v4()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookfleet"));
    command
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("HOOKFLEET_CLI_CONFIG")
        .env_remove("HOOKFLEET_WEBHOOK_SECRET")
        .env("HOOKFLEET_URL", app.producer_url(""))
        .env_remove("HOOKFLEET_LEDGER_URL")
        .env("HOOKFLEET_TOKEN", &app.token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(mut command: Command, stdin: Option<&str>) -> Ran {
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("start hookfleet");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("hookfleet finished")
        .expect("hookfleet ran");
    Ran {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn run(app: &TestApp, args: &[&str]) -> Ran {
    let mut command = hookfleet(app);
    command.args(args);
    finish(command, None).await
}

/// A long-running command (`listen`, `tail`) with its output as lines.
struct Running {
    _child: Child,
    stdout: Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Lines<BufReader<tokio::process::ChildStderr>>,
}

fn start(app: &TestApp, args: &[&str]) -> Running {
    let mut command = hookfleet(app);
    command.args(args);
    let mut child = command.spawn().expect("start hookfleet");
    let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    Running {
        _child: child,
        stdout,
        stderr,
    }
}

/// The next line; panics if none comes within [`PATIENCE`].
async fn next_line<R: AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>) -> String {
    tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable output")
        .expect("the command is still running")
}

/// Lines until one contains `needle`; returns that one.
async fn line_with<R: AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>, needle: &str) -> String {
    loop {
        let line = next_line(lines).await;
        if line.contains(needle) {
            return line;
        }
    }
}

/// An endpoint created through the CLI; returns its id.
async fn create_endpoint(app: &TestApp, url: &str, types: &str, secret: &str) -> String {
    let created = run(
        app,
        &[
            "endpoints",
            "create",
            url,
            "-t",
            types,
            "--secret",
            secret,
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    created["id"].as_str().expect("an endpoint id").to_owned()
}

/// Sends an event through the CLI; returns its id.
async fn send_event(app: &TestApp, event_type: &str, payload: &str) -> String {
    let accepted = run(app, &["events", "send", event_type, payload, "-o", "json"])
        .await
        .ok()
        .json();
    accepted["id"].as_str().expect("an event id").to_owned()
}

/// Polls `events show` until the event's delivery is in `state`.
async fn wait_for_state(app: &TestApp, event: &str, state: &str) -> Value {
    eventually(PATIENCE, || async {
        let shown = run(app, &["events", "show", event, "-o", "json"]).await;
        if shown.code != 0 {
            return None;
        }
        let shown = shown.json();
        (shown["deliveries"][0]["state"] == state).then_some(shown)
    })
    .await
    .unwrap_or_else(|| panic!("{event} never reached {state}"))
}

/// A fleet without retries, an endpoint answering 500 (through the CLI,
/// with SECRET) and one event whose delivery to it is exhausted.
async fn exhausted_delivery() -> (TestApp, Receiver, String, String) {
    let app = TestApp::spawn_with(Options {
        retry_schedule: hookfleet_tests::Durations::default(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let endpoint = create_endpoint(&app, &receiver.url("/h"), "order.*", SECRET).await;
    let event = send_event(&app, "order.created", r#"{"n": 1}"#).await;
    wait_for_state(&app, &event, "exhausted").await;
    (app, receiver, endpoint, event)
}

/// `hookfleet listen` on a free port with SECRET, and the URL it announced.
async fn listen_with_secret(app: &TestApp) -> (Running, String) {
    let mut listen = start(app, &["listen", "--port", "0", "--secret", SECRET]);
    let first = next_line(&mut listen.stdout).await;
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    (listen, url)
}

fn temp_file(contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("hookfleet-cli-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, contents).expect("write a temporary file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_is_created_ordered_and_rate_limited_and_shows_it() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let created = run(
        &app,
        &[
            "endpoints",
            "create",
            "http://127.0.0.1:9/hook",
            "-t",
            "order.*",
            "--ordered",
            "--rate-limit",
            "50",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(created["ordered"], true);
    assert_eq!(created["rate_limit"], 50);
    let id = created["id"].as_str().unwrap().to_owned();

    let shown = run(&app, &["endpoints", "show", &id]).await.ok();
    assert!(shown.stdout.contains("yes, per ordering key"), "{shown:?}");
    assert!(shown.stdout.contains("50/s"), "{shown:?}");

    let updated = run(
        &app,
        &[
            "endpoints",
            "update",
            &id,
            "--no-rate-limit",
            "--ordered",
            "false",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(updated["ordered"], false);
    assert_eq!(updated["rate_limit"], Value::Null);

    let refused = run(&app, &["endpoints", "update", &id, "--rate-limit", "10001"]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("rate_limit"),
        "the API's refusal names the field: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_go_through_their_whole_life_in_table_and_json() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let created = run(
        &app,
        &[
            "endpoints",
            "create",
            "http://127.0.0.1:9/hook",
            "-t",
            "order.*,invoice.paid",
            "-H",
            "x-team=payments",
            "--description",
            "orders",
            "--secret",
            SECRET,
        ],
    )
    .await
    .ok();
    assert!(
        created.stdout.contains("http://127.0.0.1:9/hook"),
        "{created:?}"
    );
    assert!(created.stdout.contains("order.*, invoice.paid"));
    // Header values are sealed and never shown again; the name is.
    assert!(created.stdout.contains("x-team=****"), "{created:?}");
    assert!(!created.stdout.contains("payments"), "{created:?}");
    assert!(
        created
            .stdout
            .contains(&format!("{SECRET}  (shown only now)"))
    );
    let id = created
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .expect("an id line")
        .trim()
        .to_owned();
    assert!(id.starts_with("ep_"), "{id}");

    let listed = run(&app, &["endpoints", "list"]).await.ok();
    let header = listed.stdout.lines().next().unwrap();
    assert!(header.starts_with("ID") && header.contains("URL") && header.contains("STATE"));
    let row = listed.stdout.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        row.contains("http://127.0.0.1:9/hook") && row.contains("enabled"),
        "{row}"
    );
    let listed = run(&app, &["endpoints", "list", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);

    let updated = run(
        &app,
        &[
            "endpoints",
            "update",
            &id,
            "--endpoint-url",
            "http://127.0.0.1:10/new",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(updated["url"], "http://127.0.0.1:10/new");
    assert_eq!(updated["description"], "orders", "what was not given stays");

    let disabled = run(
        &app,
        &["endpoints", "disable", &id, "--reason", "maintenance"],
    )
    .await
    .ok();
    assert!(
        disabled.stdout.contains("disabled (maintenance)"),
        "{disabled:?}"
    );
    let shown = run(&app, &["endpoints", "show", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["enabled"], false);
    assert_eq!(shown["disabled_reason"], "maintenance");
    let enabled = run(&app, &["endpoints", "enable", &id]).await.ok();
    assert!(enabled.stdout.contains("state:") && enabled.stdout.contains("enabled"));

    let rotated = run(&app, &["endpoints", "rotate-secret", &id, "-o", "json"])
        .await
        .ok()
        .json();
    let secret = rotated["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret != SECRET);

    let deleted = run(&app, &["endpoints", "delete", &id]).await.ok();
    assert_eq!(deleted.stdout.trim(), format!("deleted {id}"));
    let gone = run(&app, &["endpoints", "show", &id]).await;
    assert_eq!(gone.code, 1);
    assert_eq!(
        gone.stderr.trim(),
        format!("error: not_found: endpoint {id:?} does not exist")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_from_an_argument_a_file_and_stdin_are_delivered() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    create_endpoint(&app, &receiver.url("/hook"), "order.*", SECRET).await;

    // The argument's bytes reach the receiver as given.
    let from_argument = run(
        &app,
        &["events", "send", "order.created", r#"{"b": 1,  "a": 2}"#],
    )
    .await
    .ok();
    let first = from_argument
        .stdout
        .trim()
        .strip_prefix("accepted ")
        .and_then(|rest| rest.strip_suffix(" (order.created)"))
        .unwrap_or_else(|| panic!("{from_argument:?}"))
        .to_owned();
    let file = temp_file("{\"from\": \"file\"}\n");
    let second = run(
        &app,
        &[
            "events",
            "send",
            "order.paid",
            "--file",
            file.to_str().unwrap(),
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    let _ = std::fs::remove_file(&file);
    let mut command = hookfleet(&app);
    command.args(["events", "send", "order.shipped", "-", "-o", "json"]);
    let third = finish(command, Some(r#"{"from": "stdin"}"#))
        .await
        .ok()
        .json();

    let received = receiver.wait_for(3, PATIENCE).await;
    let bodies: Vec<String> = received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        bodies.contains(&r#"{"b": 1,  "a": 2}"#.to_owned()),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(&r#"{"from": "file"}"#.to_owned()),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(&r#"{"from": "stdin"}"#.to_owned()),
        "{bodies:?}"
    );

    for event in [
        first.as_str(),
        second["id"].as_str().unwrap(),
        third["id"].as_str().unwrap(),
    ] {
        wait_for_state(&app, event, "succeeded").await;
    }
    let shown = run(&app, &["events", "show", &first]).await.ok();
    assert!(shown.stdout.contains("order.created"));
    let header = shown
        .stdout
        .lines()
        .find(|l| l.starts_with("ENDPOINT"))
        .expect("the deliveries table");
    assert!(header.contains("STATE") && header.contains("ATTEMPTS"));
    let delivery = shown
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("ENDPOINT"))
        .nth(1)
        .unwrap();
    assert!(
        delivery.contains("succeeded") && delivery.contains("200"),
        "{delivery}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_listed_by_endpoint_state_and_time_and_replay_sends_again() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: hookfleet_tests::Durations::default(),
        ..Options::default()
    })
    .await;
    let good = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.set_default(Reply::Status(500));
    let good_endpoint = create_endpoint(&app, &good.url("/ok"), "order.*", SECRET).await;
    let bad_endpoint = create_endpoint(&app, &bad.url("/down"), "order.*", SECRET).await;
    let event = send_event(&app, "order.created", r#"{"n": 1}"#).await;
    eventually(PATIENCE, || async {
        // Not in the ledger yet: a 404, exit 1.
        let shown = run(&app, &["events", "show", &event, "-o", "json"]).await;
        let shown = (shown.code == 0).then(|| shown.json())?;
        let states: Vec<&str> = shown["deliveries"]
            .as_array()?
            .iter()
            .filter_map(|d| d["state"].as_str())
            .collect();
        (states.len() == 2 && !states.contains(&"pending")).then_some(())
    })
    .await
    .expect("both deliveries ended");

    // All endpoints, as a table.
    let all = run(&app, &["attempts", "list"]).await.ok();
    assert!(all.stdout.lines().next().unwrap().starts_with("STARTED"));
    assert!(all.stdout.contains(&good_endpoint) && all.stdout.contains(&bad_endpoint));
    // By state, across endpoints.
    let exhausted = run(
        &app,
        &["attempts", "list", "--state", "exhausted", "-o", "json"],
    )
    .await
    .ok()
    .json();
    let data = exhausted["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["endpoint_id"], bad_endpoint.as_str());
    assert_eq!(data[0]["status_code"], 500);
    // By endpoint and state.
    let none = run(
        &app,
        &[
            "attempts",
            "list",
            "--endpoint",
            &good_endpoint,
            "--state",
            "exhausted",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    // By time: a duration ago, or RFC 3339.
    let recent = run(
        &app,
        &[
            "attempts",
            "list",
            "--endpoint",
            &good_endpoint,
            "--since",
            "1h",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(recent["data"].as_array().unwrap().len(), 1);
    let future = run(
        &app,
        &[
            "attempts",
            "list",
            "--since",
            "2099-01-01T00:00:00Z",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(future["data"].as_array().unwrap().len(), 0);

    // Replay to the good endpoint only: it gets the event a second time.
    let replayed = run(&app, &["replay", &event, "--endpoint", &good_endpoint])
        .await
        .ok();
    assert!(
        replayed
            .stdout
            .starts_with(&format!("replayed {event} to 1 endpoint(s)")),
        "{replayed:?}"
    );
    assert!(replayed.stdout.contains(&good_endpoint));
    assert_eq!(good.wait_for(2, PATIENCE).await.len(), 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_follows_the_progress_until_done() {
    let (app, receiver, endpoint, event) = exhausted_delivery().await;

    receiver.set_default(Reply::Status(200));
    let recovered = run(
        &app,
        &[
            "recover",
            "--endpoint",
            &endpoint,
            "--since",
            "2000-01-01T00:00:00Z",
        ],
    )
    .await
    .ok();
    // Not a terminal: progress as lines on stderr, the result on stdout.
    assert!(
        recovered
            .stderr
            .lines()
            .last()
            .unwrap()
            .ends_with(": 1/1 sent"),
        "{recovered:?}"
    );
    let result = recovered.stdout.trim();
    assert!(result.starts_with("recovery rcv_"), "{result}");
    assert!(
        result.ends_with(": done, 1 of 1 event(s) resent"),
        "{result}"
    );
    wait_for_state(&app, &event, "succeeded").await;
    assert!(receiver.wait_for(2, PATIENCE).await.len() >= 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_lists_an_exhausted_delivery_and_requeues_it() {
    let (app, receiver, endpoint, event) = exhausted_delivery().await;

    let listed = eventually(PATIENCE, || async {
        let listed = run(&app, &["dlq", "list"]).await.ok();
        listed
            .stdout
            .starts_with("1 message(s) parked")
            .then_some(listed)
    })
    .await
    .expect("the dead delivery is parked");
    let row = listed
        .stdout
        .lines()
        .find(|l| l.contains(&event))
        .expect("a row for the event");
    assert!(row.contains("task") && row.contains(&endpoint), "{row}");
    assert!(row.contains("exhausted"), "{row}");

    receiver.set_default(Reply::Status(200));
    let requeued = run(&app, &["dlq", "requeue", "--all"]).await.ok();
    assert!(
        requeued.stdout.starts_with("1 message(s) requeued"),
        "{requeued:?}"
    );
    wait_for_state(&app, &event, "succeeded").await;
    let empty = run(&app, &["dlq", "list", "-o", "json"]).await.ok().json();
    assert_eq!(empty["data"].as_array().unwrap().len(), 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_exit_1_and_usage_errors_exit_2_each_in_one_line() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let one_line = |ran: &Ran| {
        assert_eq!(ran.stderr.lines().count(), 1, "{ran:?}");
        assert!(ran.stdout.is_empty(), "{ran:?}");
    };

    // The API said no.
    let missing = run(&app, &["events", "show", "evt_nope"]).await;
    assert_eq!(missing.code, 1);
    one_line(&missing);
    assert!(
        missing.stderr.starts_with("error: not_found: "),
        "{missing:?}"
    );
    let bad_token = run(&app, &["endpoints", "list", "--token", "hf_wrong"]).await;
    assert_eq!(bad_token.code, 1);
    one_line(&bad_token);
    assert!(
        bad_token.stderr.starts_with("error: unauthorized: "),
        "{bad_token:?}"
    );
    let invalid = run(&app, &["endpoints", "create", "not a url", "-t", "*"]).await;
    assert_eq!(invalid.code, 1);
    assert!(
        invalid.stderr.starts_with("error: invalid_field: url"),
        "{invalid:?}"
    );
    // Nothing listens there.
    let closed = run(&app, &["endpoints", "list", "--url", "http://127.0.0.1:9"]).await;
    assert_eq!(closed.code, 1);
    one_line(&closed);
    assert!(
        closed
            .stderr
            .starts_with("error: unreachable: http://127.0.0.1:9/v1/endpoints"),
        "{closed:?}"
    );

    // Usage: clap's own, and what only running finds out.
    let unknown = run(&app, &["endpoints", "frobnicate"]).await;
    assert_eq!(unknown.code, 2);
    one_line(&unknown);
    assert!(
        unknown
            .stderr
            .starts_with("error: usage: unrecognized subcommand 'frobnicate'"),
        "{unknown:?}"
    );
    let no_payload = run(&app, &["events", "send", "order.created"]).await;
    assert_eq!(no_payload.code, 2);
    let mut command = hookfleet(&app);
    command
        .args(["endpoints", "list"])
        .env_remove("HOOKFLEET_TOKEN");
    let no_token = finish(command, None).await;
    assert_eq!(no_token.code, 2);
    one_line(&no_token);
    assert!(
        no_token.stderr.starts_with("error: usage: no API token"),
        "{no_token:?}"
    );
    let no_file = run(
        &app,
        &["events", "send", "a.b", "--file", "/no/such/payload.json"],
    )
    .await;
    assert_eq!(no_file.code, 2);
    one_line(&no_file);
    assert!(no_file.stderr.contains("/no/such/payload.json"));
    let not_json = run(&app, &["events", "send", "a.b", "{oops"]).await;
    assert_eq!(not_json.code, 2);
    let bad_since = run(&app, &["attempts", "list", "--since", "last tuesday"]).await;
    assert_eq!(bad_since.code, 2);
    assert!(
        bad_since.stderr.starts_with("error: usage: --since"),
        "{bad_since:?}"
    );

    // A config file stands in for the environment; a flag or variable wins.
    let config = temp_file(&format!(
        "url = \"{}\"\nledger_url = \"{}\"\ntoken = \"{}\"\n",
        app.producer_url(""),
        app.ledger_url(""),
        app.token
    ));
    let mut command = hookfleet(&app);
    command
        .args(["endpoints", "list", "--config", config.to_str().unwrap()])
        .env_remove("HOOKFLEET_TOKEN")
        .env_remove("HOOKFLEET_URL")
        .env_remove("HOOKFLEET_LEDGER_URL");
    let from_file = finish(command, None).await;
    assert_eq!(from_file.code, 0, "{from_file:?}");
    let mut command = hookfleet(&app);
    command
        .args(["endpoints", "list", "--config", config.to_str().unwrap()])
        .env("HOOKFLEET_TOKEN", "hf_wrong");
    assert_eq!(finish(command, None).await.code, 1);
    let _ = std::fs::remove_file(&config);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_receives_a_real_delivery_and_reports_it_verified() {
    let app = TestApp::spawn().await;
    let (mut listen, url) = listen_with_secret(&app).await;
    create_endpoint(&app, &format!("{url}webhook"), "order.*", SECRET).await;
    let event = send_event(
        &app,
        "order.created",
        r#"{"order_id": 42, "total": "19.99"}"#,
    )
    .await;

    let header = line_with(&mut listen.stdout, &event).await;
    assert!(header.contains("POST /webhook"), "{header}");
    assert!(header.contains(" 200 "), "{header}");
    assert!(header.contains("order.created"), "{header}");
    assert!(header.ends_with(" verified"), "{header}");
    let mut payload = Vec::new();
    loop {
        let line = next_line(&mut listen.stdout).await;
        let end = line == "}";
        payload.push(line);
        if end {
            break;
        }
    }
    assert_eq!(
        payload.join("\n"),
        "{\n  \"order_id\": 42,\n  \"total\": \"19.99\"\n}"
    );
    wait_for_state(&app, &event, "succeeded").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_with_the_wrong_secret_reports_not_verified_and_answers_401() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: hookfleet_tests::Durations::default(),
        ..Options::default()
    })
    .await;
    let (mut listen, url) = listen_with_secret(&app).await;
    // The endpoint signs with a secret of its own.
    let other = hookfleet_signing::SigningSecret::generate().expose();
    create_endpoint(&app, &format!("{url}webhook"), "*", &other).await;
    let event = send_event(&app, "order.created", r#"{"n": 1}"#).await;

    let header = line_with(&mut listen.stdout, &event).await;
    assert!(header.contains(" 401 "), "{header}");
    assert!(
        header.contains("not verified (no signature matches the secret)"),
        "{header}"
    );
    assert_eq!(next_line(&mut listen.stdout).await, "{");
    // The receiver refused it, so the delivery failed.
    let shown = wait_for_state(&app, &event, "exhausted").await;
    assert_eq!(shown["deliveries"][0]["last_status_code"], 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_a_line_for_each_new_delivery() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let endpoint = create_endpoint(&app, &receiver.url("/h"), "order.*", SECRET).await;
    // Already delivered before tail starts: not printed.
    let before = send_event(&app, "order.created", r#"{"n": 0}"#).await;
    wait_for_state(&app, &before, "succeeded").await;

    let mut tail = start(&app, &["tail", "--interval", "200ms"]);
    let ready = next_line(&mut tail.stderr).await;
    assert!(
        ready.starts_with("following deliveries of every endpoint"),
        "{ready}"
    );
    let event = send_event(&app, "order.created", r#"{"n": 1}"#).await;
    let line = next_line(&mut tail.stdout).await;
    assert!(
        line.contains(&event),
        "the first line is the new delivery: {line}"
    );
    assert!(
        line.contains("succeeded") && line.contains(" 200 ") && line.contains(&endpoint),
        "{line}"
    );
    assert!(!line.contains(&before));

    // JSON lines for scripts.
    let mut json_tail = start(&app, &["tail", "--interval", "200ms", "-o", "json"]);
    next_line(&mut json_tail.stderr).await;
    let third = send_event(&app, "order.created", r#"{"n": 2}"#).await;
    let line: Value = serde_json::from_str(&next_line(&mut json_tail.stdout).await).unwrap();
    assert_eq!(line["event_id"], third.as_str());
    assert_eq!(line["result"], "succeeded");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_are_put_listed_shown_enforced_and_deleted() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let schema = temp_file(
        r#"{"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "integer"}}}"#,
    );
    let example = temp_file(r#"{"order_id": 42}"#);
    let put = run(
        &app,
        &[
            "event-types",
            "put",
            "order.created",
            "--schema",
            schema.to_str().unwrap(),
            "--description",
            "An order was placed.",
            "--example",
            example.to_str().unwrap(),
        ],
    )
    .await
    .ok();
    assert!(put.stdout.contains("order.created"), "{put:?}");
    assert!(put.stdout.contains("\"order_id\""), "{put:?}");

    // A new version without a schema.
    run(
        &app,
        &["event-types", "put", "order.created", "--deprecated"],
    )
    .await
    .ok();
    let listed = run(&app, &["event-types", "list"]).await.ok();
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("order.created"))
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert!(row.contains(" 2 "), "{row}");
    let shown = run(
        &app,
        &["event-types", "show", "order.created", "-o", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);
    assert_eq!(shown["versions"][0]["schema"]["required"][0], "order_id");

    // Back to the schema: the API refuses a payload that breaks it, and the
    // CLI says where.
    run(
        &app,
        &[
            "event-types",
            "put",
            "order.created",
            "--schema",
            schema.to_str().unwrap(),
        ],
    )
    .await
    .ok();
    let refused = run(
        &app,
        &["events", "send", "order.created", r#"{"order_id": "x"}"#],
    )
    .await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.starts_with("error: invalid_payload: ")
            && refused.stderr.contains("/order_id: "),
        "{refused:?}"
    );

    // A schema that does not compile: exit 1, with the reason.
    let bad = temp_file(r#"{"type": "strnig"}"#);
    let refused = run(
        &app,
        &[
            "event-types",
            "put",
            "bad.one",
            "--schema",
            bad.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.starts_with("error: invalid_schema: "),
        "{refused:?}"
    );

    let document = run(&app, &["event-types", "openapi"]).await.ok().json();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["webhooks"]["order.created"].is_object());

    run(&app, &["event-types", "delete", "order.created"])
        .await
        .ok();
    let gone = run(&app, &["event-types", "show", "order.created"]).await;
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.starts_with("error: not_found: "), "{gone:?}");
    for file in [schema, example, bad] {
        let _ = std::fs::remove_file(file);
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_go_through_their_whole_life_and_their_events_name_them() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    create_endpoint(&app, &receiver.url("/h"), "github.*", SECRET).await;
    let created = run(&app, &["sources", "create", "monorepo", "--kind", "github"])
        .await
        .ok();
    let field = |name: &str| {
        created
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} line: {created:?}"))
            .trim()
            .to_owned()
    };
    let id = field("id");
    assert!(id.starts_with("src_"), "{id}");
    assert_eq!(field("kind"), "github");
    assert_eq!(
        field("ingest url"),
        app.producer_url(&format!("/v1/inbound/{id}"))
    );
    let secret = field("secret")
        .strip_suffix("(shown only now)")
        .expect("the secret, once")
        .trim()
        .to_owned();

    let listed = run(&app, &["sources", "list"]).await.ok();
    let row = listed.stdout.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        row.contains("monorepo") && row.contains("github.*"),
        "{row}"
    );
    let shown = run(&app, &["sources", "show", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["name"], "monorepo");
    assert!(shown.get("secret").is_none());
    let updated = run(&app, &["sources", "update", &id, "--type-prefix", "gh"])
        .await
        .ok();
    assert!(updated.stdout.contains("gh.*"), "{updated:?}");
    let nothing = run(&app, &["sources", "update", &id]).await;
    assert_eq!(nothing.code, 2);

    // Stripe issues its secret: leaving it out is the API's 400.
    let refused = run(&app, &["sources", "create", "billing", "--kind", "stripe"]).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.starts_with("error: missing_field: secret"),
        "{refused:?}"
    );

    // A GitHub delivery through the source, signed with its secret, is an
    // event that names the source.
    let update = run(&app, &["sources", "update", &id, "--type-prefix", "github"])
        .await
        .ok();
    assert!(update.stdout.contains("github.*"));
    let body = br#"{"zen": "Design for failure."}"#;
    let signature = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let accepted: Value = reqwest::Client::new()
        .post(app.producer_url(&format!("/v1/inbound/{id}")))
        .header("x-github-event", "ping")
        .header("x-github-delivery", "d-1")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = accepted["id"].as_str().expect("accepted").to_owned();
    assert_eq!(accepted["type"], "github.ping");
    wait_for_state(&app, &event, "succeeded").await;
    let shown = run(&app, &["events", "show", &event]).await.ok();
    assert!(
        shown.stdout.contains(&format!("source:   {id}")),
        "{shown:?}"
    );

    let rotated = run(
        &app,
        &[
            "sources",
            "rotate-secret",
            &id,
            "--secret",
            "new",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(rotated["secret"], "new");
    let deleted = run(&app, &["sources", "delete", &id]).await.ok();
    assert_eq!(deleted.stdout.trim(), format!("deleted {id}"));
    let gone = run(&app, &["sources", "show", &id]).await;
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.starts_with("error: not_found"), "{gone:?}");

    // An endpoint can be an AMQP destination instead of a URL.
    let destination = run(
        &app,
        &[
            "endpoints",
            "create",
            "-t",
            "github.*",
            "--amqp-exchange",
            "billing",
        ],
    )
    .await
    .ok();
    assert!(
        destination
            .stdout
            .contains("amqp exchange billing key {type}"),
        "{destination:?}"
    );
    // On another broker: its URL is shown with the password masked.
    let elsewhere = run(
        &app,
        &[
            "endpoints",
            "create",
            "-t",
            "github.*",
            "--amqp-exchange",
            "billing",
            "--amqp-broker-url",
            "amqp://app:s3cret@127.0.0.1:5672/billing",
        ],
    )
    .await
    .ok();
    assert!(
        elsewhere
            .stdout
            .contains("at amqp://app:***@127.0.0.1:5672/billing"),
        "{elsewhere:?}"
    );
    assert!(!elsewhere.stdout.contains("s3cret"), "{elsewhere:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_issued_listed_and_revoked_with_the_admin_token() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let admin = |args: &[&str]| {
        let mut command = hookfleet(&app);
        command
            .env("HOOKFLEET_ADMIN_TOKEN", &app.admin_token)
            .arg("tokens")
            .args(args);
        finish(command, None)
    };
    let issued = admin(&["issue", &app.tenant, "--expires", "30d", "-o", "json"])
        .await
        .ok()
        .json();
    let token = issued["token"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    assert!(issued["expires_at"].is_string(), "{issued}");

    let listed = admin(&["list", &app.tenant]).await.ok();
    assert!(listed.stdout.contains(&id), "{}", listed.stdout);
    assert!(!listed.stdout.contains(&token), "a listing shows a token");

    let mut with_new = hookfleet(&app);
    with_new
        .env("HOOKFLEET_TOKEN", &token)
        .args(["endpoints", "list"]);
    finish(with_new, None).await.ok();

    let revoked = admin(&["revoke", &app.tenant, &id]).await.ok();
    assert!(revoked.stdout.contains(&id), "{}", revoked.stdout);
    let mut with_revoked = hookfleet(&app);
    with_revoked
        .env("HOOKFLEET_TOKEN", &token)
        .args(["endpoints", "list"]);
    let refused = finish(with_revoked, None).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("unauthorized"), "{refused:?}");

    // The wrong admin token is an API error, said in one line.
    let mut wrong = hookfleet(&app);
    wrong
        .env("HOOKFLEET_ADMIN_TOKEN", "nope")
        .args(["tokens", "list", &app.tenant]);
    let wrong = finish(wrong, None).await;
    assert_eq!(wrong.code, 1, "{wrong:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_open_prints_a_link_that_opens_a_limited_session() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let endpoint = create_endpoint(&app, "http://127.0.0.1:9/hook", "order.paid", SECRET).await;
    let ran = run(
        &app,
        &[
            "portal",
            "open",
            "--expires-in",
            "10m",
            "--endpoint",
            &endpoint,
            "--read-only",
        ],
    )
    .await
    .ok();
    let link = ran.stdout.trim();
    let prefix = app.producer_url("/portal/#session=");
    assert!(link.starts_with(&prefix), "{link}");
    assert!(ran.stderr.contains("works until"), "{}", ran.stderr);
    let token = &link[prefix.len()..];
    let page = reqwest::get(link).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let session = hookfleet_tests::client_with_token(token);
    let seen = session
        .get(app.producer_url(&format!("/v1/endpoints/{endpoint}")))
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 200);
    let write = session
        .post(app.producer_url(&format!("/v1/endpoints/{endpoint}/disable")))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403);
    let json = run(&app, &["portal", "open", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(json["read_only"], false);
    assert!(
        json["url"]
            .as_str()
            .unwrap()
            .starts_with("/portal/#session=hfs_")
    );
    let refused = run(&app, &["portal", "open", "--expires-in", "2d"]).await;
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("expires_in"), "{}", refused.stderr);
    app.shutdown().await;
}
