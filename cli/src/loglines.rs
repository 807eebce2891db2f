//! The platform's log lines read back: the services' JSON lines (service-kit's telemetry:
//! `timestamp`, `level`, `message`, fields, `request_id`, `trace_id`) and the plain lines of
//! infrastructure. A [`Filter`] on level, request id, trace id and a pattern, and a one-line
//! rendering for people. `gravity logs` and the dashboard's log pane share both.

use std::{fmt::Write as _, str::FromStr};

use regex::Regex;
use serde_json::{Map, Value};

/// A log level, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("{0:?} is not a log level; use error, warn, info, debug or trace")]
    Level(String),
    #[error("--grep {pattern:?} is not a valid regular expression: {reason}")]
    Pattern { pattern: String, reason: String },
}

impl FromStr for Level {
    type Err = FilterError;

    fn from_str(raw: &str) -> Result<Self, FilterError> {
        Level::named(raw).ok_or_else(|| FilterError::Level(raw.to_owned()))
    }
}

impl Level {
    /// The level a word names, in any case: tracing's names, and the words PostgreSQL,
    /// RabbitMQ and most servers use.
    fn named(word: &str) -> Option<Level> {
        Some(match word.to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" | "debug1" | "debug2" => Level::Debug,
            "info" | "log" | "notice" | "statement" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" | "fatal" | "panic" | "critical" | "crit" => Level::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }

    /// The next level down, for a key that steps through them; `None` after trace (all).
    pub fn lower(self) -> Option<Level> {
        match self {
            Level::Error => Some(Level::Warn),
            Level::Warn => Some(Level::Info),
            Level::Info => Some(Level::Debug),
            Level::Debug => Some(Level::Trace),
            Level::Trace => None,
        }
    }

    /// The ANSI colour of the level's name.
    fn color(self) -> &'static str {
        match self {
            Level::Error => "31",
            Level::Warn => "33",
            Level::Info => "32",
            Level::Debug => "34",
            Level::Trace => "2",
        }
    }
}

/// One line of a container's output: a JSON object when a service wrote it, else text.
#[derive(Debug, Clone)]
pub struct Line {
    pub raw: String,
    json: Option<Map<String, Value>>,
}

impl Line {
    pub fn parse(raw: &str) -> Self {
        let json = raw
            .trim_start()
            .starts_with('{')
            .then(|| serde_json::from_str::<Map<String, Value>>(raw).ok())
            .flatten();
        Line {
            raw: raw.to_owned(),
            json,
        }
    }

    /// A JSON line's text field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.json.as_ref()?.get(name)?.as_str()
    }

    /// A JSON line's numeric field.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.json.as_ref()?.get(name)?.as_f64()
    }

    /// A JSON line's `level`; for a text line, a level word among its first few words
    /// (`LOG:`, `ERROR:`, `[warning]`, `FATAL`), if there is one.
    pub fn level(&self) -> Option<Level> {
        if let Some(json) = &self.json {
            return json.get("level")?.as_str().and_then(Level::named);
        }
        self.raw
            .split_whitespace()
            .take(6)
            .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
            .find_map(|w| {
                // Upper case only in plain words ("LOG:"), so a message's "error" is not taken
                // for a level; bracketed words ("[info]") in any case.
                let plain = w.chars().all(|c| !c.is_ascii_lowercase());
                (plain || self.raw.contains(&format!("[{w}]")))
                    .then(|| Level::named(w))
                    .flatten()
            })
    }

    pub fn request_id(&self) -> Option<&str> {
        self.field("request_id")
    }

    /// The W3C trace id: `trace_id`, or the trace id of a `traceparent` field.
    pub fn trace_id(&self) -> Option<&str> {
        self.field("trace_id")
            .or_else(|| self.field("traceparent")?.split('-').nth(1))
    }

    /// The line as one JSON object with `resource` added; a text line becomes its `message`.
    pub fn to_json(&self, resource: &str) -> Value {
        let mut object = self.json.clone().unwrap_or_else(|| {
            let mut m = Map::new();
            m.insert("message".into(), Value::String(self.raw.clone()));
            m
        });
        object.insert("resource".into(), Value::String(resource.to_owned()));
        Value::Object(object)
    }

    /// For people: `HH:MM:SS.mmm LEVEL message key=value ...` for a JSON line (the
    /// `target` left out), the text itself otherwise; the level coloured with `color`.
    pub fn render(&self, color: bool) -> String {
        let Some(json) = &self.json else {
            return self.raw.clone();
        };
        let mut out = String::new();
        if let Some(ts) = json.get("timestamp").and_then(Value::as_str) {
            // `2026-12-03T08:00:00.123456Z` → `08:00:00.123`
            let time = ts.split_once('T').map_or(ts, |(_, t)| t);
            out.push_str(time.get(..12).unwrap_or(time));
            out.push(' ');
        }
        let level = self.level();
        let name = level.map_or("-", Level::as_str);
        match (color, level) {
            (true, Some(l)) => {
                let _ = write!(out, "\x1b[{}m{name:<5}\x1b[0m ", l.color());
            }
            _ => {
                let _ = write!(out, "{name:<5} ");
            }
        }
        match json.get("message") {
            Some(Value::String(m)) => out.push_str(m),
            Some(other) => out.push_str(&other.to_string()),
            None => {}
        }
        for (key, value) in json {
            if matches!(key.as_str(), "timestamp" | "level" | "message" | "target") {
                continue;
            }
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if color {
                let _ = write!(out, " \x1b[2m{key}=\x1b[0m{value}");
            } else {
                let _ = write!(out, " {key}={value}");
            }
        }
        out
    }
}

/// Which lines to show; the empty filter shows every line.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// This level or a more severe one.
    pub level: Option<Level>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// Matched against the line as written.
    pub pattern: Option<Regex>,
}

impl Filter {
    /// The filter from the command line's values; a bad level or pattern is an error that
    /// says what would do.
    pub fn new(
        level: Option<&str>,
        request_id: Option<String>,
        trace_id: Option<String>,
        pattern: Option<&str>,
    ) -> Result<Filter, FilterError> {
        Ok(Filter {
            level: level.map(str::parse).transpose()?,
            request_id,
            trace_id,
            pattern: pattern
                .map(|p| {
                    Regex::new(p).map_err(|e| FilterError::Pattern {
                        pattern: p.to_owned(),
                        reason: e.to_string(),
                    })
                })
                .transpose()?,
        })
    }

    /// Whether `line` passes. A line without the level, request id or trace id a filter asks
    /// for does not.
    pub fn matches(&self, line: &Line) -> bool {
        if let Some(min) = self.level {
            if line.level().is_none_or(|l| l < min) {
                return false;
            }
        }
        if let Some(id) = &self.request_id {
            if line.request_id() != Some(id.as_str()) {
                return false;
            }
        }
        if let Some(id) = &self.trace_id {
            if !line.trace_id().is_some_and(|t| t.eq_ignore_ascii_case(id)) {
                return false;
            }
        }
        self.pattern.as_ref().is_none_or(|p| p.is_match(&line.raw))
    }

    /// What the filter keeps, in words (the dashboard's log pane title).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = self.level {
            parts.push(format!("level ≥ {}", l.as_str().to_ascii_lowercase()));
        }
        if let Some(id) = &self.request_id {
            parts.push(format!("request {id}"));
        }
        if let Some(id) = &self.trace_id {
            parts.push(format!("trace {id}"));
        }
        if let Some(p) = &self.pattern {
            parts.push(format!("/{}/", p.as_str()));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = r#"{"timestamp":"2026-12-03T08:00:00.123456Z","level":"WARN","message":"slow query","elapsed_ms":812,"target":"users::profiles","request_id":"r-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#;
    const GATEWAY: &str = r#"{"timestamp":"2026-12-03T08:00:00.2Z","level":"INFO","message":"request","request_id":"r-2","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;
    const POSTGRES: &str = "2026-12-03 08:00:00.123 UTC [1] ERROR:  relation \"x\" does not exist";
    const RABBIT: &str = "2026-12-03 08:00:00.123456+00:00 [warning] <0.1.0> disk alarm";
    const PLAIN: &str = "starting; no error so far";

    fn keeps(filter: &Filter) -> Vec<&'static str> {
        [SERVICE, GATEWAY, POSTGRES, RABBIT, PLAIN]
            .into_iter()
            .filter(|l| filter.matches(&Line::parse(l)))
            .collect()
    }

    #[test]
    fn levels_come_from_json_and_from_the_words_servers_write() {
        let levels: Vec<Option<Level>> = [SERVICE, GATEWAY, POSTGRES, RABBIT, PLAIN]
            .into_iter()
            .map(|l| Line::parse(l).level())
            .collect();
        assert_eq!(
            levels,
            [
                Some(Level::Warn),
                Some(Level::Info),
                Some(Level::Error),
                Some(Level::Warn),
                None
            ]
        );
    }

    #[test]
    fn each_filter_keeps_only_what_it_names() {
        let f = |level, request: Option<&str>, trace: Option<&str>, grep| {
            Filter::new(
                level,
                request.map(str::to_owned),
                trace.map(str::to_owned),
                grep,
            )
            .unwrap()
        };
        assert_eq!(keeps(&Filter::default()).len(), 5);
        assert_eq!(
            keeps(&f(Some("warn"), None, None, None)),
            [SERVICE, POSTGRES, RABBIT]
        );
        assert_eq!(keeps(&f(Some("ERROR"), None, None, None)), [POSTGRES]);
        assert_eq!(keeps(&f(None, Some("r-2"), None, None)), [GATEWAY]);
        assert_eq!(
            keeps(&f(
                None,
                None,
                Some("0AF7651916CD43DD8448EB211C80319C"),
                None
            )),
            [GATEWAY],
            "from a traceparent, in any case"
        );
        assert_eq!(
            keeps(&f(
                None,
                None,
                Some("4bf92f3577b34da6a3ce929d0e0e4736"),
                None
            )),
            [SERVICE]
        );
        assert_eq!(
            keeps(&f(None, None, None, Some("does not|disk"))),
            [POSTGRES, RABBIT]
        );
        assert_eq!(
            keeps(&f(Some("info"), Some("r-1"), None, Some("slow"))),
            [SERVICE],
            "all of them at once"
        );
        assert!(keeps(&f(Some("error"), Some("r-1"), None, None)).is_empty());
    }

    #[test]
    fn bad_levels_and_patterns_say_what_would_do() {
        let level = Filter::new(Some("loud"), None, None, None).unwrap_err();
        assert!(level.to_string().contains("error, warn, info"), "{level}");
        let pattern = Filter::new(None, None, None, Some("(")).unwrap_err();
        assert!(pattern.to_string().contains("--grep \"(\""), "{pattern}");
    }

    #[test]
    fn json_lines_render_as_one_readable_line_and_text_as_itself() {
        assert_eq!(
            Line::parse(SERVICE).render(false),
            "08:00:00.123 WARN  slow query elapsed_ms=812 request_id=r-1 trace_id=4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(Line::parse(SERVICE)
            .render(true)
            .contains("\x1b[33mWARN \x1b[0m"));
        assert_eq!(Line::parse(POSTGRES).render(true), POSTGRES);
        let json = Line::parse(POSTGRES).to_json("postgres");
        assert_eq!(json["resource"], "postgres");
        assert_eq!(json["message"], POSTGRES);
        assert_eq!(Line::parse(SERVICE).to_json("users")["elapsed_ms"], 812);
    }
}
