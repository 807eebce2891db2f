//! Structured logs: JSON lines by default (one object per event, with the request id of the
//! request being served), human-readable with `LOG_FORMAT=pretty`.
//!
//! Lines are written by a background thread, so a request never waits on the log's I/O. The
//! writer blocks rather than drops when its buffer is full: no log line is ever lost.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};

/// Installs the global subscriber. Level from `RUST_LOG` (default `default_filter`). Keep the
/// returned guard alive until exit: dropping it flushes what is still buffered. Calling this
/// twice is harmless, which tests rely on.
pub fn init(default_filter: &str) -> WorkerGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("pretty"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if pretty {
        registry
            .with(fmt::layer().with_target(false).with_writer(writer))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init()
    };
    guard
}

/// For tests: logs only when `TEST_LOG` is set, so a passing run stays quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        // Tests end without a shutdown; the guard lives as long as the test binary.
        std::mem::forget(init("info"));
    }
}
