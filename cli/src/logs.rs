//! `gravity logs`: the platform's containers' output merged, each line prefixed with its
//! resource. Without `-f` the lines are merged in time order; with `-f` they are shown as they
//! come. Lines pass through a `loglines::Filter` (level, request id, trace id, pattern) and
//! are rendered for people, or written as JSON objects with `--json`.

use std::{
    io::Write as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bollard::{container::LogOutput, query_parameters::LogsOptions};
use futures_util::{stream, StreamExt as _};

use crate::{
    engine::{resource_of, Engine, EngineError},
    loglines::{Filter, Line},
    project::{Project, ProjectError},
};

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(
        "{0:?} is neither a duration (e.g. 10m, 1h30m) nor a time (e.g. 2026-11-25T10:00:00Z)"
    )]
    Since(String),
    #[error("none of the requested resources has a container; run `gravity up` first")]
    NothingRunning,
}

/// Parses `--since`: a duration back from now, or an RFC 3339 time; returns Unix seconds.
pub fn parse_since(raw: &str, now: SystemTime) -> Result<i64, LogsError> {
    let at = if let Ok(ago) = humantime::parse_duration(raw) {
        now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
    } else if let Ok(t) = humantime::parse_rfc3339_weak(raw) {
        t
    } else {
        return Err(LogsError::Since(raw.to_owned()));
    };
    Ok(at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX))
}

/// What `gravity logs` shows.
pub struct LogsOptionsArgs {
    pub resources: Vec<String>,
    pub follow: bool,
    pub since: Option<i64>,
    pub tail: Option<usize>,
    pub color: bool,
    pub filter: Filter,
    /// One JSON object per line (`resource` added) instead of rendered lines.
    pub json: bool,
}

pub async fn logs(project: &Project, args: LogsOptionsArgs) -> Result<(), LogsError> {
    for r in &args.resources {
        if !project
            .manifest
            .infrastructure
            .keys()
            .any(|i| i.as_str() == r)
        {
            project.service(r)?;
        }
    }
    let engine = Engine::connect().await?;
    let mut found: Vec<(String, String)> = engine
        .containers(project.label_filter())
        .await?
        .into_iter()
        .filter_map(|c| {
            let resource = resource_of(&c)?.to_owned();
            Some((resource, c.id?))
        })
        .filter(|(r, _)| args.resources.is_empty() || args.resources.contains(r))
        .collect();
    if found.is_empty() {
        return Err(LogsError::NothingRunning);
    }
    found.sort();
    let width = found.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    let colors = [36, 33, 32, 35, 34, 91, 92, 93, 94, 95, 96];
    let prefix = |i: usize, resource: &str| {
        if args.json {
            resource.to_owned()
        } else if args.color {
            format!(
                "\x1b[{}m{resource:<width$} |\x1b[0m ",
                colors[i % colors.len()]
            )
        } else {
            format!("{resource:<width$} | ")
        }
    };
    let options = LogsOptions {
        follow: args.follow,
        stdout: true,
        stderr: true,
        since: args.since.and_then(|s| i32::try_from(s).ok()).unwrap_or(0),
        timestamps: !args.follow,
        tail: args
            .tail
            .map_or_else(|| "all".to_owned(), |n| n.to_string()),
        ..Default::default()
    };
    let streams = found.iter().enumerate().map(|(i, (resource, id))| {
        let prefix = prefix(i, resource);
        engine
            .api()
            .logs(id, Some(options.clone()))
            .map(move |chunk| (prefix.clone(), chunk))
    });
    let mut merged = stream::select_all(streams);
    // The prefix, or in JSON the resource's name.
    let show = |out: &mut dyn std::io::Write, prefix: &str, raw: &str| -> std::io::Result<()> {
        let line = Line::parse(raw);
        if !args.filter.matches(&line) {
            return Ok(());
        }
        if args.json {
            writeln!(out, "{}", line.to_json(prefix))
        } else {
            writeln!(out, "{prefix}{}", line.render(args.color))
        }
    };
    if args.follow {
        let mut out = std::io::stdout();
        while let Some((prefix, chunk)) = merged.next().await {
            let Ok(chunk) = chunk else { continue };
            for line in text(chunk).lines() {
                if show(&mut out, &prefix, line).is_err() {
                    return Ok(());
                }
            }
            let _ = out.flush();
        }
        return Ok(());
    }
    // Not following: collect, then merge by the engine's timestamps, and show the lines
    // without them.
    let lines = merged_in_time(merged).await;
    let mut out = std::io::stdout().lock();
    for (_, prefix, line) in lines {
        if show(&mut out, &prefix, &line).is_err() {
            break;
        }
    }
    Ok(())
}

/// Every line of timestamped log streams, each with its stream's tag, in time order (lines
/// of one stream with equal timestamps keep their order), without the timestamps.
async fn merged_in_time<E>(
    mut merged: impl futures_util::Stream<Item = (String, Result<LogOutput, E>)> + Unpin,
) -> Vec<(i64, String, String)> {
    let mut lines: Vec<(i64, String, String)> = Vec::new();
    while let Some((tag, chunk)) = merged.next().await {
        let Ok(chunk) = chunk else { continue };
        for line in text(chunk).lines() {
            let (ts, rest) = line.split_once(' ').unwrap_or(("", line));
            let at = chrono::DateTime::parse_from_rfc3339(ts)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0);
            lines.push((at, tag.clone(), rest.to_owned()));
        }
    }
    lines.sort_by_key(|l| l.0);
    lines
}

/// Every line the platform's containers wrote, with each one's resource, in time order.
pub async fn all_lines(project: &Project) -> Result<Vec<(String, Line)>, LogsError> {
    let engine = Engine::connect().await?;
    let found: Vec<(String, String)> = engine
        .containers(project.label_filter())
        .await?
        .into_iter()
        .filter_map(|c| Some((resource_of(&c)?.to_owned(), c.id?)))
        .collect();
    if found.is_empty() {
        return Err(LogsError::NothingRunning);
    }
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        timestamps: true,
        tail: "all".to_owned(),
        ..Default::default()
    };
    let streams = found.iter().map(|(resource, id)| {
        let resource = resource.clone();
        engine
            .api()
            .logs(id, Some(options.clone()))
            .map(move |chunk| (resource.clone(), chunk))
    });
    let lines = merged_in_time(stream::select_all(streams)).await;
    Ok(lines
        .into_iter()
        .map(|(_, resource, raw)| (resource, Line::parse(&raw)))
        .collect())
}

fn text(chunk: LogOutput) -> String {
    String::from_utf8_lossy(&chunk.into_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_since("10m", now).unwrap(), 10_000 - 600);
        assert_eq!(parse_since("1h 30m", now).unwrap(), 10_000 - 5_400);
        assert_eq!(
            parse_since("2026-11-25T10:00:00Z", now).unwrap(),
            1_795_600_800
        );
        assert!(matches!(
            parse_since("yesterday", now),
            Err(LogsError::Since(_))
        ));
    }
}
