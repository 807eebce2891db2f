//! Progress of long work, one line per resource: indicatif spinners on a terminal, plain lines
//! when standard error is not a terminal, and JSON lines on standard output with `--json`.

use std::{
    io::{IsTerminal as _, Write as _},
    sync::Arc,
    time::{Duration, Instant},
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live spinners (standard error is a terminal).
    Live,
    /// One plain line per finished step.
    Plain,
    /// One JSON object per event on standard output.
    Json,
}

impl Mode {
    /// Live on a terminal, plain lines otherwise; JSON when asked.
    pub fn detect(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stderr().is_terminal() {
            Self::Live
        } else {
            Self::Plain
        }
    }
}

#[derive(Serialize)]
struct Event<'a> {
    resource: &'a str,
    event: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    elapsed_ms: Option<u128>,
}

/// Shows the progress of many resources at once.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    multi: MultiProgress,
}

impl Reporter {
    pub fn new(mode: Mode) -> Self {
        let multi = MultiProgress::with_draw_target(match mode {
            Mode::Live => ProgressDrawTarget::stderr(),
            Mode::Plain | Mode::Json => ProgressDrawTarget::hidden(),
        });
        Self {
            inner: Arc::new(Inner { mode, multi }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Starts showing work on `resource`.
    pub fn task(&self, resource: &str, message: &str) -> Task {
        let bar = match self.inner.mode {
            Mode::Live => {
                let bar = self.inner.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {prefix:<14.bold} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(resource.to_owned());
                bar.set_message(message.to_owned());
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(bar)
            }
            Mode::Plain | Mode::Json => None,
        };
        let task = Task {
            reporter: self.clone(),
            resource: resource.to_owned(),
            bar,
            started: Instant::now(),
            finished: false,
            last_shown: std::sync::Mutex::new(Instant::now()),
        };
        task.emit("start", message, None);
        task
    }

    /// A line that belongs to no resource in particular (e.g. "built an image offline").
    pub fn note(&self, resource: &str, message: &str) {
        match self.inner.mode {
            Mode::Live => {
                let _ = self
                    .inner
                    .multi
                    .println(format!("  {resource:<14} {message}"));
            }
            Mode::Plain => eprintln!("{resource:<14} {message}"),
            Mode::Json => self.json(&Event {
                resource,
                event: "note",
                message,
                elapsed_ms: None,
            }),
        }
    }

    fn json(&self, event: &Event<'_>) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// How often plain and JSON output repeat what a long step is doing, so a log never goes
/// quiet for minutes (a first build, an image made from Debian packages).
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Work on one resource. Dropped without `done` or `fail`, it reports "interrupted".
pub struct Task {
    reporter: Reporter,
    resource: String,
    bar: Option<ProgressBar>,
    started: Instant,
    finished: bool,
    /// When plain or JSON output last showed a message of this task.
    last_shown: std::sync::Mutex<Instant>,
}

impl Task {
    /// Updates what is happening now: live on a terminal; in plain and JSON output at most
    /// every few seconds (with the time so far), so long work shows it is moving.
    pub fn message(&self, message: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.into());
            return;
        }
        let Ok(mut last) = self.last_shown.lock() else {
            return;
        };
        if last.elapsed() < PLAIN_EVERY {
            return;
        }
        *last = Instant::now();
        let message = message.into();
        match self.reporter.inner.mode {
            Mode::Live => {}
            Mode::Plain => eprintln!(
                "{:<14} … {message} ({} so far)",
                self.resource,
                human(self.started.elapsed())
            ),
            Mode::Json => self.reporter.json(&Event {
                resource: &self.resource,
                event: "progress",
                message: &message,
                elapsed_ms: Some(self.started.elapsed().as_millis()),
            }),
        }
    }

    pub fn done(mut self, outcome: &str) {
        self.finish("done", outcome, "✔");
    }

    pub fn fail(mut self, error: &str) {
        self.finish("failed", error, "✘");
    }

    fn finish(&mut self, event: &str, message: &str, mark: &str) {
        self.finished = true;
        let elapsed = self.started.elapsed();
        match &self.bar {
            Some(bar) => {
                bar.set_style(
                    ProgressStyle::with_template("{prefix} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(format!("{mark} {:<14}", self.resource));
                bar.finish_with_message(format!("{message} ({})", human(elapsed)));
            }
            None => self.emit(event, message, Some(elapsed)),
        }
    }

    fn emit(&self, event: &str, message: &str, elapsed: Option<Duration>) {
        match self.reporter.inner.mode {
            Mode::Live => {}
            Mode::Plain => {
                if let Some(elapsed) = elapsed {
                    eprintln!("{:<14} {message} ({})", self.resource, human(elapsed));
                }
            }
            Mode::Json => self.reporter.json(&Event {
                resource: &self.resource,
                event,
                message,
                elapsed_ms: elapsed.map(|e| e.as_millis()),
            }),
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if !self.finished {
            self.finish("interrupted", "interrupted", "…");
        }
    }
}

/// `1.2s`, `85ms`.
pub fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
