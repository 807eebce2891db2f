//! Draws the dashboard from `App`: a table of resources, the selected one's log, a footer of
//! keys; the log full screen; the key list. Down is red and says DOWN, so it reads without
//! colour too.

use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap},
    Frame,
};

use super::{
    app::{App, View},
    model::{human_bytes, human_duration, queue_columns, queue_header, upstream_columns, Row},
};

pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let area = frame.area();
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, app);
    match app.view {
        View::Logs => draw_logs(frame, body, app),
        View::Table | View::Help => {
            let rows = app.snapshot.rows.len() as u16;
            let mut gateway = gateway_lines(app);
            let broker = broker_lines(app);
            let title = match (gateway.is_empty(), broker.is_empty()) {
                (false, false) => " gateway routes · broker queues ",
                (true, false) => " broker queues ",
                _ => " gateway routes ",
            };
            gateway.extend(broker);
            // The gateway pane gives way to the log when the terminal is short.
            let gateway_height = if gateway.is_empty() {
                0
            } else {
                u16::try_from(gateway.len())
                    .unwrap_or(u16::MAX)
                    .saturating_add(2)
                    .min(12)
            };
            let [table, routes, logs] = Layout::vertical([
                Constraint::Length(rows + 3),
                Constraint::Length(gateway_height),
                Constraint::Min(3),
            ])
            .areas(body);
            draw_table(frame, table, app);
            if gateway_height > 0 {
                frame.render_widget(
                    Paragraph::new(gateway)
                        .block(Block::default().borders(Borders::ALL).title(title)),
                    routes,
                );
            }
            draw_logs(frame, logs, app);
        }
    }
    draw_footer(frame, footer, app);
    if app.view == View::Help {
        draw_help(frame, area);
    }
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let up = app.snapshot.rows.iter().filter(|r| r.is_up()).count();
    let total = app.snapshot.rows.len();
    let mut spans = vec![
        Span::styled(
            format!(" gravity status · {} ", app.snapshot.platform),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!(" {up}/{total} up "),
            Style::default().fg(if up == total {
                Color::Green
            } else {
                Color::Red
            }),
        ),
    ];
    if let Some(e) = &app.snapshot.error {
        spans.push(Span::styled(
            format!(" engine: {e}"),
            Style::default().fg(Color::Red),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn state_style(row: &Row) -> Style {
    if row.state == "not created" {
        Style::default().fg(Color::DarkGray)
    } else if !row.is_up() {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else if row.health == "starting" {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default().fg(Color::Green)
    }
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let dash = || "-".to_owned();
    let header = TableRow::new(
        [
            "RESOURCE", "STATE", "HEALTH", "UPTIME", "RST", "PORT", "CPU%", "MEMORY", "REQ/S",
            "ERR%", "P99",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    let rows: Vec<TableRow<'_>> = app
        .visible()
        .into_iter()
        .map(|r| {
            TableRow::new(vec![
                Cell::from(r.resource.clone()),
                Cell::from(r.state_words()).style(state_style(r)),
                Cell::from(if r.health.is_empty() {
                    "-".to_owned()
                } else {
                    r.health.clone()
                }),
                Cell::from(r.uptime_secs.map(human_duration).unwrap_or_else(dash)),
                Cell::from(r.restarts.to_string()),
                Cell::from(r.port.map(|p| p.to_string()).unwrap_or_else(dash)),
                Cell::from(
                    r.cpu_percent
                        .map(|c| format!("{c:.1}"))
                        .unwrap_or_else(dash),
                ),
                Cell::from(r.memory_bytes.map(human_bytes).unwrap_or_else(dash)),
                Cell::from(
                    r.requests_per_sec
                        .map(|v| format!("{v:.1}"))
                        .unwrap_or_else(dash),
                ),
                Cell::from(
                    r.error_rate
                        .map(|v| format!("{:.1}", v * 100.0))
                        .unwrap_or_else(dash),
                ),
                Cell::from(r.p99_ms.map(|v| format!("{v:.1}ms")).unwrap_or_else(dash)),
            ])
        })
        .collect();
    let title = if app.filter.is_empty() && !app.editing_filter {
        " resources ".to_owned()
    } else {
        format!(" resources matching /{} ", app.filter)
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(14),
            Constraint::Length(17),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(9),
        ],
    )
    .header(header)
    .block(Block::default().borders(Borders::ALL).title(title))
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .highlight_symbol("› ");
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// One line per gateway (its limits and keys), then one per route upstream, its state in
/// colour and words.
fn gateway_lines(app: &App) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for g in &app.snapshot.gateways {
        let mut head = vec![Span::styled(
            format!("{} ", g.service),
            Style::default().add_modifier(Modifier::BOLD),
        )];
        if let Some(e) = g.error.as_ref().or(g.reload_error.as_ref()) {
            head.push(Span::styled(e.clone(), Style::default().fg(Color::Red)));
        } else {
            head.push(Span::raw(format!(
                "{} route(s) · limits {}",
                g.routes.len(),
                g.rate_limit_backend
            )));
            match g.keys_loaded {
                Some(true) => head.push(Span::raw(" · token keys loaded")),
                Some(false) => head.push(Span::styled(
                    " · token keys NOT LOADED",
                    Style::default().fg(Color::Red),
                )),
                None => {}
            }
        }
        lines.push(Line::from(head));
        for r in &g.routes {
            for u in &r.upstreams {
                let style = if !u.is_serving() {
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else if u.breaker == "half_open" {
                    Style::default().fg(Color::Yellow)
                } else {
                    Style::default().fg(Color::Green)
                };
                lines.push(Line::from(vec![
                    Span::raw(upstream_columns(r, u)),
                    Span::styled(format!("{:<13}", u.state_words()), style),
                    Span::raw(format!(" {} in flight", u.in_flight)),
                ]));
            }
        }
    }
    lines
}

/// One line per broker (its queues and what its dead-letter queues hold), then one per queue,
/// dead-letter queues that hold messages in red and in words.
fn broker_lines(app: &App) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for b in &app.snapshot.brokers {
        let mut head = vec![Span::styled(
            format!("{} ", b.resource),
            Style::default().add_modifier(Modifier::BOLD),
        )];
        if let Some(e) = &b.error {
            head.push(Span::styled(e.clone(), Style::default().fg(Color::Red)));
        } else {
            let (dlqs, parked) = b.dead_letters();
            head.push(Span::raw(format!(
                "{} queue(s) · {dlqs} dead-letter queue(s) ",
                b.queues.len()
            )));
            let style = if parked > 0 {
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::default().fg(Color::Green)
            };
            head.push(Span::styled(format!("holding {parked} message(s)"), style));
        }
        lines.push(Line::from(head));
        if !b.queues.is_empty() {
            lines.push(Line::from(Span::styled(
                queue_header(),
                Style::default().add_modifier(Modifier::DIM),
            )));
        }
        for q in &b.queues {
            let mut line = vec![Span::raw(queue_columns(q))];
            if q.dead_letter {
                let style = if q.messages > 0 {
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                } else {
                    Style::default().fg(Color::Yellow)
                };
                line.push(Span::styled("  dead-letter", style));
            }
            lines.push(Line::from(line));
        }
    }
    lines
}

fn draw_logs(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let filter = app.log_filter.describe();
    let title = match (&app.log_resource, filter.is_empty()) {
        (Some(r), true) => format!(" log: {r} "),
        (Some(r), false) => format!(" log: {r} ({filter}) "),
        (None, _) => " log ".to_owned(),
    };
    let height = area.height.saturating_sub(2) as usize;
    // The last `height` lines the filter lets through, rendered as `gravity logs` does.
    let mut lines: Vec<Line<'_>> = app
        .shown_logs()
        .rev()
        .take(height)
        .map(|l| Line::from(l.render(false)))
        .collect();
    lines.reverse();
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(title))
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let text = if app.editing_filter {
        format!(" filter: /{}▏ (Enter keeps, Esc clears)", app.filter)
    } else if !app.message.is_empty() {
        format!(" {}", app.message)
    } else {
        " ↑↓/jk select · l logs · v log level · r restart · / filter · ? help · q quit".to_owned()
    };
    frame.render_widget(
        Paragraph::new(text).style(Style::default().fg(Color::Gray)),
        area,
    );
}

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let lines = [
        "Keys",
        "",
        "↑ ↓ or j k   select a resource",
        "l            its log full screen (l or Esc back)",
        "v            log level shown: error, warn, info, debug, all",
        "r            restart it (through the Docker Engine)",
        "/            filter resources by name (Esc clears)",
        "?            this help (any key closes)",
        "q            quit",
        "",
        "Refreshes every second, and at once when a container",
        "starts, stops or dies. REQ/S, ERR% and P99 cover the last",
        "refresh and leave out health checks and metric scrapes.",
    ];
    let width = 62.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width.saturating_sub(width)) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines.map(Line::from).to_vec())
            .block(Block::default().borders(Borders::ALL).title(" help ")),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::status::{app::Action, model::Snapshot};

    fn row(resource: &str, state: &str, health: &str) -> Row {
        Row {
            resource: resource.to_owned(),
            kind: "service",
            state: state.to_owned(),
            exit_code: (state == "exited").then_some(137),
            health: health.to_owned(),
            uptime_secs: (state == "running").then_some(3725),
            restarts: 2,
            port: Some(8000),
            cpu_percent: Some(1.25),
            memory_bytes: Some(45 * 1024 * 1024),
            requests_per_sec: Some(120.0),
            error_rate: Some(0.025),
            p99_ms: Some(4.2),
            container_id: Some(format!("id-{resource}")),
        }
    }

    fn app() -> App {
        let mut app = App::new(Snapshot {
            platform: "shop".to_owned(),
            rows: vec![
                row("postgres", "running", "healthy"),
                row("redis", "running", "healthy"),
                row("auth", "exited", ""),
                row("orders", "not created", ""),
            ],
            error: None,
            gateways: Vec::new(),
            brokers: Vec::new(),
        });
        app.log_resource = Some("postgres".to_owned());
        app.push_log("postgres", "database system is ready");
        app
    }

    fn render(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn the_table_shows_every_resource_and_a_down_one_in_words_and_red() {
        let app = app();
        let text = render(&app, 120, 24);
        assert!(text.contains("gravity status · shop"), "{text}");
        assert!(text.contains("2/4 up"), "{text}");
        for expected in [
            "postgres", "redis", "auth", "orders", "healthy", "1h02m", "45.0 MiB",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        assert!(text.contains("DOWN (exit 137)"), "{text}");
        assert!(text.contains("not created"), "{text}");
        assert!(
            text.contains("120.0") && text.contains("2.5") && text.contains("4.2ms"),
            "{text}"
        );
        assert!(text.contains("log: postgres"), "{text}");
        assert!(text.contains("database system is ready"), "{text}");

        let mut terminal = Terminal::new(TestBackend::new(120, 24)).unwrap();
        terminal.draw(|f| draw(f, &app)).unwrap();
        let buffer = terminal.backend().buffer();
        let (x, y) = (0..24u16)
            .flat_map(|y| (0..120u16).map(move |x| (x, y)))
            .find(|&(x, y)| buffer[(x, y)].symbol() == "D" && buffer[(x + 1, y)].symbol() == "O")
            .unwrap();
        assert_eq!(buffer[(x, y)].fg, Color::Red);
    }

    #[test]
    fn keys_select_filter_show_help_and_logs_and_ask_for_restarts() {
        let mut app = app();
        assert_eq!(
            app.on_key(key('j')),
            Some(Action::FollowLogs(Some("redis".to_owned())))
        );
        app.on_key(key('j'));
        assert_eq!(app.selected_row().unwrap().resource, "auth");
        assert_eq!(
            app.on_key(key('r')),
            Some(Action::Restart {
                resource: "auth".to_owned(),
                container: "id-auth".to_owned()
            })
        );

        app.on_key(key('?'));
        let text = render(&app, 100, 30);
        assert!(
            text.contains("restart it (through the Docker Engine)"),
            "{text}"
        );
        app.on_key(key('x'));
        assert_eq!(app.view, View::Table);

        app.on_key(key('/'));
        for c in "red".chars() {
            app.on_key(key(c));
        }
        app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        let text = render(&app, 120, 24);
        assert!(text.contains("matching /red"), "{text}");
        assert!(text.contains("redis") && !text.contains("orders"), "{text}");

        app.on_key(key('l'));
        app.push_log("redis", "Ready to accept connections");
        let text = render(&app, 80, 12);
        assert!(text.contains("log: redis"), "{text}");
        assert!(text.contains("Ready to accept connections"), "{text}");
        assert!(!text.contains("RESOURCE"), "the log is full screen: {text}");

        app.on_key(key('q'));
        assert!(app.quit);
    }

    #[test]
    fn the_gateway_pane_shows_each_upstream_and_a_failing_one_in_words_and_red() {
        use crate::status::model::{Gateway, GatewayRoute, GatewayUpstream};
        let upstream = |url: &str, breaker: &str| GatewayUpstream {
            url: url.to_owned(),
            healthy: true,
            breaker: breaker.to_owned(),
            ejected_for_ms: None,
            in_flight: 3,
        };
        let mut app = app();
        app.snapshot.gateways = vec![Gateway {
            service: "gateway".to_owned(),
            rate_limit_backend: "redis".to_owned(),
            keys_loaded: Some(true),
            reload_error: None,
            routes: vec![
                GatewayRoute {
                    name: "auth".to_owned(),
                    prefix: "/auth".to_owned(),
                    access: "optional".to_owned(),
                    upstreams: vec![upstream("http://auth:8000", "closed")],
                },
                GatewayRoute {
                    name: "orders".to_owned(),
                    prefix: "/orders".to_owned(),
                    access: "token".to_owned(),
                    upstreams: vec![upstream("http://orders:8001", "open")],
                },
            ],
            error: None,
        }];
        let text = render(&app, 120, 30);
        for expected in [
            "gateway routes",
            "2 route(s) · limits redis · token keys loaded",
            "/auth",
            "http://auth:8000",
            "serving",
            "http://orders:8001",
            "BREAKER OPEN",
            "3 in flight",
            "log: postgres",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        terminal.draw(|f| draw(f, &app)).unwrap();
        let buffer = terminal.backend().buffer();
        let (x, y) = (0..30u16)
            .flat_map(|y| (0..110u16).map(move |x| (x, y)))
            .find(|&(x, y)| {
                (0..7).all(|i| buffer[(x + i, y)].symbol() == &"BREAKER"[i as usize..][..1])
            })
            .unwrap();
        assert_eq!(buffer[(x, y)].fg, Color::Red);

        let plain = crate::status::model::table(&app.snapshot);
        assert!(
            plain.contains("gateway: 2 route(s), limits redis"),
            "{plain}"
        );
        assert!(
            plain
                .lines()
                .any(|l| l.contains("orders") && l.contains("BREAKER OPEN")),
            "{plain}"
        );
    }

    #[test]
    fn the_broker_pane_shows_queues_and_dead_letters_holding_messages_in_red() {
        use crate::{infra::BrokerQueue, status::model::Broker};
        let queue = |name: &str, messages, dead_letter: bool| BrokerQueue {
            name: name.to_owned(),
            messages,
            consumers: u64::from(!dead_letter),
            publish_rate: 12.5,
            deliver_rate: 12.0,
            dead_letter,
        };
        let mut app = app();
        app.snapshot.brokers = vec![Broker {
            resource: "rabbitmq".to_owned(),
            queues: vec![
                queue("orders.payments", 7, false),
                queue("orders.payments.parked", 3, true),
            ],
            error: None,
        }];
        let text = render(&app, 120, 30);
        for expected in [
            "broker queues",
            "2 queue(s) · 1 dead-letter queue(s) holding 3 message(s)",
            "orders.payments",
            "CONSUMERS",
            "12.5",
            "dead-letter",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        terminal.draw(|f| draw(f, &app)).unwrap();
        let buffer = terminal.backend().buffer();
        // The queue's marker, after the header's "dead-letter queue(s)".
        let (x, y) = (0..30u16)
            .flat_map(|y| (0..108u16).map(move |x| (x, y)))
            .rfind(|&(x, y)| {
                (0..11).all(|i| buffer[(x + i, y)].symbol() == &"dead-letter"[i as usize..][..1])
            })
            .unwrap();
        assert_eq!(buffer[(x, y)].fg, Color::Red);

        let plain = crate::status::model::table(&app.snapshot);
        assert!(
            plain.contains("rabbitmq: 2 queue(s), 1 dead-letter queue(s) holding 3 message(s)"),
            "{plain}"
        );
        assert!(
            plain
                .lines()
                .any(|l| l.contains("orders.payments.parked") && l.contains("dead-letter")),
            "{plain}"
        );
    }

    #[test]
    fn the_log_pane_renders_json_lines_and_v_steps_the_level_shown() {
        let mut app = app();
        app.push_log(
            "postgres",
            r#"{"timestamp":"2026-12-03T08:00:00.123456Z","level":"INFO","message":"all good"}"#,
        );
        app.push_log(
            "postgres",
            r#"{"timestamp":"2026-12-03T08:00:01.5Z","level":"WARN","message":"pool exhausted","waiting":3}"#,
        );
        app.on_key(key('l'));
        let text = render(&app, 100, 12);
        assert!(text.contains("08:00:00.123 INFO  all good"), "{text}");
        assert!(text.contains("WARN  pool exhausted waiting=3"), "{text}");
        assert!(!text.contains("\"level\""), "rendered, not raw: {text}");

        app.on_key(key('v'));
        let text = render(&app, 100, 12);
        assert!(text.contains("level ≥ error"), "{text}");
        assert!(!text.contains("pool exhausted"), "{text}");
        app.on_key(key('v'));
        let text = render(&app, 100, 12);
        assert!(text.contains("level ≥ warn"), "{text}");
        assert!(text.contains("pool exhausted"), "{text}");
        assert!(!text.contains("all good"), "{text}");
        for _ in 0..4 {
            app.on_key(key('v'));
        }
        assert_eq!(app.log_filter.level, None, "after trace, every line again");
        assert!(render(&app, 100, 12).contains("all good"));
    }

    #[test]
    fn a_small_terminal_still_draws() {
        let text = render(&app(), 30, 6);
        assert!(text.contains("gravity"), "{text}");
    }
}
