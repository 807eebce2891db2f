//! `gravity trace REQUEST_ID`: a request's path through the platform, as a tree with
//! timings, drawn from the services' structured logs. Every span is a log line carrying
//! `trace_id`, `span_id`, `parent_span_id` and `latency_ms` (its end is the line's
//! `timestamp`): the gateway's and each service's access line, and service-kit's
//! `event recorded` and `event handled` lines, which the CloudEvents `traceparent` joins
//! across the broker. `gravity up` turns those lines on (the services' `ACCESS_LOG`).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::loglines::Line;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("no log line names request or trace {0:?}; is it the X-Request-Id of a request sent since the platform started? (`gravity logs --request-id {0}` shows what there is)")]
    Unknown(String),
    #[error("request {0:?} was logged without a trace id, so its path cannot be followed")]
    NoTrace(String),
}

/// One span, as `gravity trace --json` writes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Span {
    pub resource: String,
    pub name: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    /// Milliseconds from the trace's first start.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// Its place in the tree: 0 for a root.
    pub depth: usize,
}

/// A trace: its id and spans, depth first, children in start order.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<Span>,
}

/// The trace of `wanted` (a request id, or a trace id) among the platform's log lines.
pub fn find(lines: &[(String, Line)], wanted: &str) -> Result<Trace, TraceError> {
    let is_trace = |l: &Line| l.trace_id() == Some(wanted);
    let trace_id = if lines.iter().any(|(_, l)| is_trace(l)) {
        wanted.to_owned()
    } else {
        let mut named = lines
            .iter()
            .filter(|(_, l)| l.request_id() == Some(wanted))
            .peekable();
        if named.peek().is_none() {
            return Err(TraceError::Unknown(wanted.to_owned()));
        }
        named
            .find_map(|(_, l)| l.trace_id())
            .ok_or_else(|| TraceError::NoTrace(wanted.to_owned()))?
            .to_owned()
    };
    // (start, end) in microseconds since the epoch, and the span without its offset.
    let mut found: Vec<(i64, Span)> = Vec::new();
    for (resource, line) in lines {
        if line.trace_id() != Some(trace_id.as_str()) {
            continue;
        }
        let (Some(span_id), Some(latency), Some(end)) = (
            line.field("span_id"),
            line.number("latency_ms"),
            line.field("timestamp")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        ) else {
            continue;
        };
        let start = end.timestamp_micros() - (latency * 1000.0).round() as i64;
        found.push((
            start,
            Span {
                resource: resource.clone(),
                name: name_of(line),
                span_id: span_id.to_owned(),
                parent_span_id: line.field("parent_span_id").map(str::to_owned),
                start_ms: 0.0,
                duration_ms: latency,
                depth: 0,
            },
        ));
    }
    found.sort_by_key(|(start, _)| *start);
    let first = found.first().map_or(0, |(start, _)| *start);
    let index: HashMap<&str, usize> = found
        .iter()
        .enumerate()
        .map(|(i, (_, s))| (s.span_id.as_str(), i))
        .collect();
    // Children by parent, in start order (`found` is sorted); a span whose parent is not
    // in the logs (the caller's own, outside the platform) is a root.
    let mut children: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (i, (_, span)) in found.iter().enumerate() {
        match span
            .parent_span_id
            .as_deref()
            .and_then(|p| index.get(p))
            .filter(|p| **p != i)
        {
            Some(parent) => children.entry(*parent).or_default().push(i),
            None => roots.push(i),
        }
    }
    let mut spans = Vec::with_capacity(found.len());
    let mut seen = vec![false; found.len()];
    // The roots, then whatever they do not reach (spans whose parents name each other, which
    // well-formed ids never do): every span is shown once.
    for root in roots.into_iter().chain(0..found.len()) {
        let mut stack = vec![(root, 0)];
        while let Some((i, depth)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let (start, span) = &found[i];
            spans.push(Span {
                start_ms: (start - first) as f64 / 1000.0,
                depth,
                ..span.clone()
            });
            for child in children.get(&i).into_iter().flatten().rev() {
                stack.push((*child, depth + 1));
            }
        }
    }
    Ok(Trace { trace_id, spans })
}

/// What a span line says it was: `POST /auth/api/v1/login → 200`,
/// `recorded auth.user.registered.v1`, `handled auth.user.registered.v1 (audit.auth)`.
fn name_of(line: &Line) -> String {
    match line.field("message") {
        Some("event recorded") => {
            format!(
                "recorded {}",
                line.field("event_type").unwrap_or("an event")
            )
        }
        Some("event handled") => format!(
            "{} {} ({})",
            line.field("outcome").unwrap_or("handled"),
            line.field("event_type").unwrap_or("an event"),
            line.field("queue").unwrap_or("-")
        ),
        message => {
            let status = line
                .number("status")
                .map(|s| format!(" → {s}"))
                .unwrap_or_default();
            match (line.field("method"), line.field("path")) {
                (Some(method), Some(path)) => format!("{method} {path}{status}"),
                _ => message.unwrap_or("span").to_owned(),
            }
        }
    }
}

impl Trace {
    /// The tree for people: one line per span, indented under its parent, with its start
    /// (from the trace's first) and its duration.
    pub fn render(&self) -> String {
        let total = self
            .spans
            .iter()
            .map(|s| s.start_ms + s.duration_ms)
            .fold(0.0, f64::max);
        let mut out = format!(
            "trace {} · {} spans · {total:.1} ms\n",
            self.trace_id,
            self.spans.len()
        );
        let labels: Vec<String> = self
            .spans
            .iter()
            .map(|s| {
                let indent = if s.depth == 0 {
                    String::new()
                } else {
                    format!("{}└─ ", "   ".repeat(s.depth - 1))
                };
                format!("{indent}{}  {}", s.resource, s.name)
            })
            .collect();
        let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        for (label, span) in labels.iter().zip(&self.spans) {
            let pad = width - label.chars().count();
            out.push_str(&format!(
                "{label}{}  +{:>8.1} ms {:>8.1} ms\n",
                " ".repeat(pad),
                span.start_ms,
                span.duration_ms
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(resource: &str, json: serde_json::Value) -> (String, Line) {
        (resource.to_owned(), Line::parse(&json.to_string()))
    }

    #[test]
    fn a_request_is_followed_from_the_gateway_through_an_event_to_its_consumers() {
        let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
        let lines = vec![
            line(
                "auth",
                serde_json::json!({"timestamp": "2026-12-03T10:00:00.010000Z", "level": "INFO",
                    "message": "request", "request_id": "r1", "trace_id": trace,
                    "span_id": "b", "parent_span_id": "a", "method": "POST",
                    "path": "/api/v1/register", "status": 201, "latency_ms": 8.0}),
            ),
            line(
                "auth",
                serde_json::json!({"timestamp": "2026-12-03T10:00:00.008000Z", "message": "event recorded",
                    "request_id": "r1", "trace_id": trace, "span_id": "c", "parent_span_id": "b",
                    "event_type": "auth.user.registered.v1", "latency_ms": 1.0}),
            ),
            line(
                "gateway",
                serde_json::json!({"timestamp": "2026-12-03T10:00:00.011000Z", "message": "request",
                    "request_id": "r1", "trace_id": trace, "span_id": "a", "method": "POST",
                    "path": "/auth/api/v1/register", "status": 201, "latency_ms": 10.0}),
            ),
            line(
                "notifications",
                serde_json::json!({"timestamp": "2026-12-03T10:00:00.030000Z", "message": "event handled",
                    "request_id": "e1", "trace_id": trace, "span_id": "e", "parent_span_id": "c",
                    "event_type": "auth.user.registered.v1", "queue": "notifications.auth", "latency_ms": 5.0}),
            ),
            line(
                "audit",
                serde_json::json!({"timestamp": "2026-12-03T10:00:00.020000Z", "message": "event handled",
                    "request_id": "e2", "trace_id": trace, "span_id": "d", "parent_span_id": "c",
                    "event_type": "auth.user.registered.v1", "queue": "audit.auth", "latency_ms": 2.0}),
            ),
            // Not a span (no latency), and another trace.
            line(
                "auth",
                serde_json::json!({"timestamp": "2026-12-03T10:00:00.005000Z", "message": "registered",
                    "request_id": "r1", "trace_id": trace}),
            ),
            line(
                "auth",
                serde_json::json!({"timestamp": "2026-12-03T10:00:00.005000Z", "message": "request",
                    "request_id": "r2", "trace_id": "0af7651916cd43dd8448eb211c80319c",
                    "span_id": "z", "latency_ms": 1.0}),
            ),
        ];
        for wanted in ["r1", trace] {
            let found = find(&lines, wanted).unwrap();
            assert_eq!(found.trace_id, trace);
            let tree: Vec<(usize, &str, &str, f64)> = found
                .spans
                .iter()
                .map(|s| (s.depth, s.resource.as_str(), s.name.as_str(), s.start_ms))
                .collect();
            assert_eq!(
                tree,
                [
                    (0, "gateway", "POST /auth/api/v1/register → 201", 0.0),
                    (1, "auth", "POST /api/v1/register → 201", 1.0),
                    (2, "auth", "recorded auth.user.registered.v1", 6.0),
                    (
                        3,
                        "audit",
                        "handled auth.user.registered.v1 (audit.auth)",
                        17.0
                    ),
                    (
                        3,
                        "notifications",
                        "handled auth.user.registered.v1 (notifications.auth)",
                        24.0
                    ),
                ]
            );
            let shown = found.render();
            assert!(shown.contains("5 spans · 29.0 ms"), "{shown}");
            assert!(shown.contains("      └─ audit  handled"), "{shown}");
        }
        assert!(matches!(find(&lines, "nope"), Err(TraceError::Unknown(_))));
    }

    #[test]
    fn a_failed_handling_is_named_so_and_spans_naming_each_other_are_all_shown() {
        let trace = "0af7651916cd43dd8448eb211c80319c";
        let span = |id: &str, parent: &str, ms: u32, extra: serde_json::Value| {
            let mut json = serde_json::json!({
                "timestamp": format!("2026-12-03T10:00:00.{ms:03}000Z"),
                "trace_id": trace, "span_id": id, "parent_span_id": parent, "latency_ms": 1.0,
            });
            if let (Some(json), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
                json.extend(extra.clone());
            }
            line("audit", json)
        };
        let lines = vec![
            span("a", "b", 5, serde_json::json!({"message": "request"})),
            span("b", "a", 6, serde_json::json!({"message": "request"})),
            span(
                "c",
                "a",
                7,
                serde_json::json!({"message": "event handled", "outcome": "failed",
                    "event_type": "auth.user.deleted.v1", "queue": "audit.auth"}),
            ),
        ];
        let found = find(&lines, trace).unwrap();
        let ids: Vec<(&str, usize)> = found
            .spans
            .iter()
            .map(|s| (s.span_id.as_str(), s.depth))
            .collect();
        assert_eq!(ids, [("a", 0), ("b", 1), ("c", 1)]);
        assert_eq!(
            found.spans[2].name,
            "failed auth.user.deleted.v1 (audit.auth)"
        );
    }
}
