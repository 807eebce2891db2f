//! The dashboard's state and what each key does to it. No terminal here: keys in, state and
//! requested actions out, so it is tested without one.

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::{Row, Snapshot};
use crate::loglines::{Filter, Level, Line};

/// Lines of log kept for the selected resource.
pub const LOG_LINES: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Table above, the selected resource's log below.
    Table,
    /// The selected resource's log, full screen.
    Logs,
    /// The key list over the table.
    Help,
}

/// Something the event loop must do for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Restart {
        resource: String,
        container: String,
    },
    /// Follow this resource's log (the selection changed).
    FollowLogs(Option<String>),
}

pub struct App {
    pub snapshot: Snapshot,
    pub view: View,
    pub selected: usize,
    pub filter: String,
    /// The filter is being typed.
    pub editing_filter: bool,
    pub logs: VecDeque<Line>,
    /// Which of them the log pane shows (`gravity status --level ...`; `v` steps the level).
    pub log_filter: Filter,
    pub log_resource: Option<String>,
    /// The container whose log is followed: a restart or recreation changes it.
    pub log_container: Option<String>,
    /// A line of feedback ("restarting auth"), shown in the footer.
    pub message: String,
    pub quit: bool,
}

impl App {
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            snapshot,
            view: View::Table,
            selected: 0,
            filter: String::new(),
            editing_filter: false,
            logs: VecDeque::new(),
            log_filter: Filter::default(),
            log_resource: None,
            log_container: None,
            message: String::new(),
            quit: false,
        }
    }

    /// The rows the filter lets through.
    pub fn visible(&self) -> Vec<&Row> {
        let filter = self.filter.to_lowercase();
        self.snapshot
            .rows
            .iter()
            .filter(|r| filter.is_empty() || r.resource.to_lowercase().contains(&filter))
            .collect()
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.visible().get(self.selected).copied()
    }

    fn selected_resource(&self) -> Option<String> {
        self.selected_row().map(|r| r.resource.clone())
    }

    /// Takes a new snapshot, keeping the same resource selected.
    pub fn update(&mut self, snapshot: Snapshot) -> Option<Action> {
        let before = self.selected_resource();
        self.snapshot = snapshot;
        if let Some(name) = &before {
            if let Some(i) = self.visible().iter().position(|r| &r.resource == name) {
                self.selected = i;
            }
        }
        self.clamp();
        self.follow_if_changed()
    }

    pub fn push_log(&mut self, resource: &str, line: &str) {
        if self.log_resource.as_deref() != Some(resource) {
            return;
        }
        if self.logs.len() == LOG_LINES {
            self.logs.pop_front();
        }
        self.logs.push_back(Line::parse(line));
    }

    /// The kept lines of the followed log that the log filter lets through.
    pub fn shown_logs(&self) -> impl DoubleEndedIterator<Item = &Line> {
        self.logs.iter().filter(|l| self.log_filter.matches(l))
    }

    fn clamp(&mut self) {
        let n = self.visible().len();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    fn follow_if_changed(&mut self) -> Option<Action> {
        let now = self.selected_resource();
        let container = self.selected_row().and_then(|r| r.container_id.clone());
        if now != self.log_resource || container != self.log_container {
            self.log_resource = now.clone();
            self.log_container = container;
            self.logs.clear();
            Some(Action::FollowLogs(now))
        } else {
            None
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Esc => {
                    self.filter.clear();
                    self.editing_filter = false;
                }
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            self.clamp();
            return self.follow_if_changed();
        }
        match (self.view, key.code) {
            (_, KeyCode::Char('q')) => self.quit = true,
            (View::Help, _) => self.view = View::Table,
            (View::Logs, KeyCode::Esc | KeyCode::Char('l')) => self.view = View::Table,
            (_, KeyCode::Char('?')) => self.view = View::Help,
            (_, KeyCode::Char('l')) => self.view = View::Logs,
            (_, KeyCode::Down | KeyCode::Char('j')) => {
                if self.selected + 1 < self.visible().len() {
                    self.selected += 1;
                }
                return self.follow_if_changed();
            }
            (_, KeyCode::Up | KeyCode::Char('k')) => {
                self.selected = self.selected.saturating_sub(1);
                return self.follow_if_changed();
            }
            (_, KeyCode::Char('v')) => {
                self.log_filter.level = match self.log_filter.level {
                    None => Some(Level::Error),
                    Some(level) => level.lower(),
                };
            }
            (_, KeyCode::Char('/')) => {
                self.editing_filter = true;
                self.filter.clear();
            }
            (_, KeyCode::Esc) => self.filter.clear(),
            (_, KeyCode::Char('r')) => {
                let row = self.selected_row()?;
                let Some(container) = row.container_id.clone() else {
                    self.message = format!("{} has no container: run `gravity up`", row.resource);
                    return None;
                };
                let resource = row.resource.clone();
                self.message = format!("restarting {resource}…");
                return Some(Action::Restart {
                    resource,
                    container,
                });
            }
            _ => {}
        }
        None
    }
}
