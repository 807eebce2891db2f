//! `gravity status`: a live terminal dashboard of the running platform (ratatui), or, with
//! `--once`/`--json` or when standard output is not a terminal, one plain table.
//!
//! Three tasks feed one loop: the collector (a snapshot every `REFRESH`, and at once when
//! the Engine reports a container of the platform starting, stopping or dying), the log
//! follower of the selected resource, and the terminal's key and resize events. The screen is
//! redrawn only when one of them brings something, so an idle dashboard costs little.

pub mod app;
pub mod collector;
pub mod model;
pub mod ui;

use std::{collections::HashMap, io::IsTerminal as _, sync::Arc, time::Duration};

use bollard::query_parameters::{EventsOptions, LogsOptions, RestartContainerOptions};
use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, Notify};

use self::{
    app::{Action, App},
    collector::Collector,
    model::Snapshot,
};
use crate::{
    engine::{Engine, EngineError},
    loglines::Filter,
    project::Project,
};

/// How often the dashboard refreshes when nothing happens.
pub const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// How `gravity status` shows the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Live,
    Table,
    Json,
}

impl Output {
    pub fn choose(once: bool, json: bool) -> Self {
        if json {
            Self::Json
        } else if once || !std::io::stdout().is_terminal() {
            Self::Table
        } else {
            Self::Live
        }
    }
}

/// `log_filter` chooses the lines the live dashboard's log pane shows.
pub async fn status(
    project: &Project,
    output: Output,
    log_filter: Filter,
) -> Result<(), StatusError> {
    let engine = Engine::connect().await?;
    let mut collector = Collector::new(engine.clone(), project.clone());
    if output != Output::Live {
        // CPU and request rates are differences: two snapshots, one refresh apart.
        collector.snapshot().await;
        tokio::time::sleep(REFRESH).await;
        let snapshot = collector.snapshot().await;
        if output == Output::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(&snapshot).unwrap_or_default()
            );
        } else {
            print!("{}", model::table(&snapshot));
        }
        return Ok(());
    }
    live(project, engine, collector, log_filter).await
}

enum Update {
    Snapshot(Snapshot),
    Log(String, String),
    Message(String),
}

async fn live(
    project: &Project,
    engine: Engine,
    collector: Collector,
    log_filter: Filter,
) -> Result<(), StatusError> {
    let (tx, mut rx) = mpsc::channel::<Update>(1024);
    let refresh = Arc::new(Notify::new());
    let collect = tokio::spawn(collect_loop(collector, tx.clone(), refresh.clone()));
    let watch = tokio::spawn(watch_events(
        engine.clone(),
        project.label_filter(),
        refresh.clone(),
    ));

    let mut terminal = ratatui::init();
    // Restores the terminal however this function ends, Ctrl-C from outside included.
    let _restore = RestoreTerminal;
    let mut app = App::new(Snapshot {
        platform: project.name().to_owned(),
        ..Snapshot::default()
    });
    app.log_filter = log_filter;
    let mut keys = EventStream::new();
    let mut follower: Option<tokio::task::JoinHandle<()>> = None;
    let result = loop {
        if let Err(e) = terminal.draw(|f| ui::draw(f, &app)) {
            break Err(e);
        }
        let action = tokio::select! {
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => app.on_key(key),
                Some(Ok(_)) => None,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            update = rx.recv() => match update {
                Some(Update::Snapshot(s)) => app.update(s),
                Some(Update::Log(resource, line)) => {
                    app.push_log(&resource, &line);
                    None
                }
                Some(Update::Message(m)) => {
                    app.message = m;
                    refresh.notify_one();
                    None
                }
                None => break Ok(()),
            },
        };
        if app.quit {
            break Ok(());
        }
        match action {
            Some(Action::FollowLogs(resource)) => {
                if let Some(f) = follower.take() {
                    f.abort();
                }
                let container = resource.as_ref().and_then(|r| {
                    app.snapshot
                        .rows
                        .iter()
                        .find(|row| &row.resource == r)
                        .and_then(|row| row.container_id.clone())
                });
                if let (Some(resource), Some(container)) = (resource, container) {
                    follower = Some(tokio::spawn(follow_logs(
                        engine.clone(),
                        resource,
                        container,
                        tx.clone(),
                    )));
                }
            }
            Some(Action::Restart {
                resource,
                container,
            }) => {
                let engine = engine.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let result = engine
                        .api()
                        .restart_container(
                            &container,
                            Some(RestartContainerOptions {
                                t: Some(10),
                                ..Default::default()
                            }),
                        )
                        .await;
                    let message = match result {
                        Ok(()) => format!("{resource} restarted"),
                        Err(e) => format!("restarting {resource} failed: {e}"),
                    };
                    let _ = tx.send(Update::Message(message)).await;
                });
            }
            None => {}
        }
    };
    collect.abort();
    watch.abort();
    if let Some(f) = follower {
        f.abort();
    }
    result.map_err(StatusError::Terminal)
}

struct RestoreTerminal;

impl Drop for RestoreTerminal {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn collect_loop(mut collector: Collector, tx: mpsc::Sender<Update>, refresh: Arc<Notify>) {
    loop {
        let snapshot = collector.snapshot().await;
        if tx.send(Update::Snapshot(snapshot)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = refresh.notified() => {}
        }
    }
}

/// Wakes the collector when a container of the platform changes state.
async fn watch_events(
    engine: Engine,
    mut filters: HashMap<String, Vec<String>>,
    refresh: Arc<Notify>,
) {
    filters.insert("type".to_owned(), vec!["container".to_owned()]);
    loop {
        let mut events = engine.api().events(Some(EventsOptions {
            filters: Some(filters.clone()),
            ..Default::default()
        }));
        while let Some(Ok(_)) = events.next().await {
            refresh.notify_one();
        }
        // The stream ended (engine restarted?): the periodic refresh goes on; retry later.
        tokio::time::sleep(REFRESH).await;
    }
}

async fn follow_logs(
    engine: Engine,
    resource: String,
    container: String,
    tx: mpsc::Sender<Update>,
) {
    let mut stream = engine.api().logs(
        &container,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            tail: "200".to_owned(),
            ..Default::default()
        }),
    );
    while let Some(Ok(chunk)) = stream.next().await {
        let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
        for line in text.lines() {
            if tx
                .send(Update::Log(resource.clone(), line.to_owned()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
