//! Test support shared by every service's test suite: checking that a running service answers
//! as its `/openapi.json` says, with [schemathesis](https://schemathesis.readthedocs.io), and
//! reaching the broker event tests use.
//!
//! Schemathesis is a Python program (no Rust crate generates requests from an OpenAPI document
//! and checks the answers against it), so this runs it as a child process. `scripts/test.sh`
//! installs it; `SCHEMATHESIS` names the program when it is not on `PATH`.

use std::{ffi::OsString, path::PathBuf, process::Stdio, time::Duration};

/// Why a contract run did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error(
        "cannot run schemathesis ({program:?}): {source}; `scripts/test.sh` installs it \
         (`pip install schemathesis`), or set SCHEMATHESIS to the program"
    )]
    NotRunnable {
        program: OsString,
        source: std::io::Error,
    },
    #[error("schemathesis did not finish within {0:?}")]
    TimedOut(Duration),
    #[error("schemathesis found the service disagreeing with its OpenAPI document:\n{0}")]
    Failed(String),
}

/// One schemathesis run against a service's OpenAPI document.
#[derive(Debug, Clone)]
pub struct Contract {
    schema_url: String,
    headers: Vec<String>,
    excluded_paths: Vec<String>,
    included_paths: Vec<String>,
    config: Option<PathBuf>,
}

/// Test cases generated per operation and phase.
const MAX_EXAMPLES: u32 = 30;
/// How long one run may take.
const TIMEOUT: Duration = Duration::from_secs(600);

impl Contract {
    /// Every check (`--checks all`) against every operation of the document at `schema_url`.
    pub fn new(schema_url: impl Into<String>) -> Self {
        Self {
            schema_url: schema_url.into(),
            headers: Vec::new(),
            excluded_paths: Vec::new(),
            included_paths: Vec::new(),
            config: None,
        }
    }

    /// Sends `name: value` with every request (a token, an identity).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(format!("{name}: {value}"));
        self
    }

    /// Leaves out the operations on `path` exactly as the document spells it, for an
    /// operation whose effect would stop the rest of the run (say, revoking the run's own
    /// token); the caller tests such an operation itself.
    pub fn exclude_path(mut self, path: &str) -> Self {
        self.excluded_paths.push(path.to_owned());
        self
    }

    /// Tests only the operations on `path` (repeatable), for a run that needs its own
    /// credentials.
    pub fn only_path(mut self, path: &str) -> Self {
        self.included_paths.push(path.to_owned());
        self
    }

    /// Reads a `schemathesis.toml` (per-operation exceptions, each with the reason the document
    /// states in words because a schema cannot).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// Runs schemathesis and returns its report when it found nothing.
    pub async fn run(&self) -> Result<String, ContractError> {
        let program = std::env::var_os("SCHEMATHESIS").unwrap_or_else(|| "schemathesis".into());
        let mut command = tokio::process::Command::new(&program);
        if let Some(config) = &self.config {
            command.arg("--config-file").arg(config);
        }
        command
            .arg("run")
            .arg(&self.schema_url)
            .args(["--checks", "all"])
            .args(["--max-examples", &MAX_EXAMPLES.to_string()])
            // Repeatable runs: the same seed generates the same cases.
            .args(["--seed", "17"])
            .args(["--request-timeout", "10"])
            .args(["--workers", "1"])
            // PostgreSQL's text cannot hold U+0000, so every extractor refuses it (400 or 422,
            // both documented); JSON Schema has no way to say so, and generated "valid"
            // strings would otherwise carry it.
            .args(["--generation-allow-x00", "false"])
            .args(["--generation-database", "none"])
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_HOOKS", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for header in &self.headers {
            command.args(["--header", header]);
        }
        for path in &self.excluded_paths {
            command.args(["--exclude-path", path]);
        }
        for path in &self.included_paths {
            command.args(["--include-path", path]);
        }
        let child = command
            .spawn()
            .map_err(|source| ContractError::NotRunnable {
                program: program.clone(),
                source,
            })?;
        let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| ContractError::TimedOut(TIMEOUT))?
            .map_err(|source| ContractError::NotRunnable { program, source })?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(report)
        } else {
            Err(ContractError::Failed(report))
        }
    }
}

/// The broker event tests use: `TEST_AMQP_URL`, or RabbitMQ's own default user on loopback
/// (what `scripts/dev-deps.sh` starts).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Declares `name` as `gravity up` declares a service's exchange: a durable topic exchange.
pub async fn declare_exchange(channel: &lapin::Channel, name: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..lapin::options::ExchangeDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
}

/// Waits (up to 20 s) until `queue` has a consumer, so its bindings are in place: a test's
/// first event is then not published before a subscription that is still starting can take
/// it. `false` if it never had one.
pub async fn until_consumed(connection: &lapin::Connection, queue: &str) -> bool {
    let options = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    for _ in 0..400 {
        // A passive declare of a queue not there yet closes its channel: one per look.
        if let Ok(channel) = connection.create_channel().await {
            let declared = channel
                .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
                .await;
            if declared.is_ok_and(|q| q.consumer_count() > 0) {
                let _ = channel.close(200, "seen".into()).await;
                return true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Why the OTLP receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(
        "cannot run the OTLP receiver with {program:?}: {detail}; `scripts/dev-deps.sh` \
         installs opentelemetry-proto and prints OTLP_PYTHON, the Python that has it"
    )]
    NotRunnable { program: OsString, detail: String },
}

/// A real OTLP/HTTP trace endpoint (`POST /v1/traces`, protobuf) that the spans of a test's
/// services are sent to, decoded with the OpenTelemetry project's own `opentelemetry-proto`.
///
/// Python for the same reason as schemathesis: the decoding is the reference one, not
/// this project's reading of the protocol. `OTLP_PYTHON` names the interpreter that has
/// the package (default `python3`). The receiver is stopped when this is dropped.
pub struct OtlpReceiver {
    child: std::process::Child,
    port: u16,
    spans: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl OtlpReceiver {
    /// Listens on `host` (`127.0.0.1`; `0.0.0.0` for containers to reach) on a free port.
    pub fn start(host: &str) -> Result<Self, ReceiverError> {
        use std::io::BufRead as _;
        let program: OsString = std::env::var_os("OTLP_PYTHON").unwrap_or_else(|| "python3".into());
        let not_runnable = |detail: String| ReceiverError::NotRunnable {
            program: program.clone(),
            detail,
        };
        let mut child = std::process::Command::new(&program)
            .arg("-c")
            .arg(include_str!("otlp_receiver.py"))
            .args(["--host", host])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| not_runnable(e.to_string()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(not_runnable("no output".into()));
        };
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let port = serde_json::from_str::<serde_json::Value>(&first)
            .ok()
            .and_then(|v| v["listening"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(not_runnable(format!("it did not start (said {first:?})")));
        };
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(span) = serde_json::from_str::<serde_json::Value>(&line) {
                    if span.get("span_id").is_some() {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(span);
                    }
                }
            }
        });
        Ok(Self { child, port, spans })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint's base on loopback (`/v1/traces` is the exporter's to append).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far, as the receiver printed it (`trace_id`, `span_id`,
    /// `parent_span_id`, `name`, `kind`, `service`, `attributes`, `status` ...).
    pub fn spans(&self) -> Vec<serde_json::Value> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The spans of `trace_id` once `done` holds for them, or what had arrived after
    /// `timeout` as the error.
    pub async fn trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Result<Vec<serde_json::Value>, Vec<serde_json::Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let trace: Vec<_> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            if done(&trace) {
                return Ok(trace);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(trace);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
