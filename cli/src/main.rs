//! `gravity`: the platform manager. Parses arguments, runs the command, maps errors to an exit
//! code. Exit codes: 0 success, 1 failure, 2 usage error (from clap), 130 interrupted.

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use gravity::{
    compose,
    down::{self, Confirm},
    logs::{self, LogsOptionsArgs},
    migrate,
    progress::{self, Mode, Reporter},
    project::Project,
    ps, superuser,
    up::{self, UpOptions},
};

/// Gravity runs a microservice platform described by one gravity.toml: PostgreSQL, Redis and
/// the platform's services, as containers on the local Docker Engine.
///
/// Start with `gravity up`; `gravity ps` shows what runs, `gravity logs -f` follows it, and
/// `gravity down` stops it (keeping its data).
#[derive(Parser)]
#[command(
    name = "gravity",
    version,
    about,
    long_about,
    after_help = "Examples:\n  gravity up                      bring everything up (again: only what changed)\n  gravity up auth --json          auth and what it depends on; JSON events for scripts\n  gravity logs -f --since 10m     follow every resource's log\n  printf '%s\\n' \"$PW\" | gravity create-superuser --email a@b.c --password-stdin\n  gravity down --volumes --yes    remove everything, data included"
)]
struct Cli {
    /// The platform description to use.
    #[arg(long, global = true, default_value = "gravity.toml")]
    file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

/// Which log lines to show (`gravity logs`, and the dashboard's log pane).
#[derive(clap::Args, Debug)]
struct LogFilterArgs {
    /// Only lines at this level or a more severe one: error, warn, info, debug, trace.
    #[arg(long)]
    level: Option<String>,
    /// Only the lines of this request (its X-Request-Id).
    #[arg(long)]
    request_id: Option<String>,
    /// Only the lines of this W3C trace (the 32 hex digits of a traceparent).
    #[arg(long)]
    trace_id: Option<String>,
    /// Only lines matching this regular expression.
    #[arg(long)]
    grep: Option<String>,
}

impl LogFilterArgs {
    fn parse(self) -> Result<gravity::loglines::Filter, gravity::loglines::FilterError> {
        gravity::loglines::Filter::new(
            self.level.as_deref(),
            self.request_id,
            self.trace_id,
            self.grep.as_deref(),
        )
    }
}

#[derive(Subcommand)]
enum EventsAction {
    /// Send parked messages back to the queues they were parked from, as first attempts.
    Replay {
        /// Only this queue's (`orders.payments`, or its parking queue `orders.payments.parked`).
        #[arg(long)]
        queue: Option<String>,
        /// Only the event with this id.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Check gravity.toml and print the platform it describes.
    Check,
    /// Bring the platform (or some services and what they depend on) up, healthy.
    ///
    /// Creates the network and data volumes, gets the images (pulled, or built from Debian
    /// packages when no registry is reachable), starts PostgreSQL and Redis, creates each
    /// service's own database and role, applies migrations, builds the services with one
    /// `cargo build`, and starts them in dependency order, waiting for each to be healthy.
    /// Running it again changes only what changed; it never deletes data.
    Up {
        /// Services to start (with their dependencies); all when none is named.
        services: Vec<String>,
        /// Print one JSON object per event on standard output instead of progress lines.
        #[arg(long)]
        json: bool,
        /// Seconds one resource may take to become healthy.
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        timeout: u64,
    },
    /// Remove the platform's containers and network. Data volumes are kept unless --volumes.
    Down {
        /// Also delete the data volumes (asks for confirmation unless --yes).
        #[arg(long)]
        volumes: bool,
        /// Do not ask before deleting data volumes.
        #[arg(long, requires = "volumes")]
        yes: bool,
        /// Print events as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Messages the services' consumers parked after giving up on them (handler failures past
    /// their retries, messages no handler can take), with the reason; `replay` sends them
    /// back once the cause is fixed.
    Events {
        #[command(subcommand)]
        action: Option<EventsAction>,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
    /// A request's path through the platform as a tree with timings (the gateway, each
    /// service, the events it published and their consumers), from the services' logs.
    Trace {
        /// The request's id (its X-Request-Id), or a trace id.
        id: String,
        /// The spans as JSON, depth first, each with its depth and offset.
        #[arg(long)]
        json: bool,
    },
    /// The mail the platform sent, as the mail catcher caught it: a list, newest first, or
    /// one message (its envelope and text; `--raw` for all of it).
    Mail {
        /// A message's ID from the list, or `latest`.
        id: Option<String>,
        /// Only mail to this address.
        #[arg(long)]
        to: Option<String>,
        /// How many to list.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=5000))]
        limit: u32,
        /// The message as received: every header and MIME part.
        #[arg(long, requires = "id")]
        raw: bool,
        /// Print JSON instead of a table or text.
        #[arg(long)]
        json: bool,
    },
    /// Show each resource's state, health and port.
    Ps {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A live dashboard of the running platform: state, health, uptime, restarts, ports, CPU,
    /// memory, request rate, error rate and p99 latency, and the selected resource's log.
    ///
    /// Keys: ↑↓ or j/k select, l log full screen, r restart, / filter, ? help, q quit. Prints
    /// one plain table instead with --once, or when standard output is not a terminal.
    Status {
        /// Print one table and exit.
        #[arg(long)]
        once: bool,
        /// Print one JSON snapshot and exit.
        #[arg(long)]
        json: bool,
        /// Which lines the log pane shows.
        #[command(flatten)]
        filter: LogFilterArgs,
    },
    /// Show the platform's logs, merged, each line prefixed with its resource.
    Logs {
        /// Resources to show (services, postgres, redis); all when none is named.
        resources: Vec<String>,
        /// Keep following new output.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only output since this long ago (10m, 1h30m) or this time (2026-11-25T10:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Only the last N lines of each resource.
        #[arg(long, short = 'n')]
        tail: Option<usize>,
        /// Never colour the prefixes.
        #[arg(long)]
        no_color: bool,
        #[command(flatten)]
        filter: LogFilterArgs,
        /// One JSON object per line, with the resource's name in `resource`.
        #[arg(long)]
        json: bool,
    },
    /// Apply each service's pending migrations, or list them with --status.
    #[command(args_conflicts_with_subcommands = true)]
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
        /// Only this service.
        service: Option<String>,
        /// List migrations and whether they are applied; change nothing.
        #[arg(long)]
        status: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create an admin account in the auth service. The password is asked twice without
    /// echo, or read from standard input with --password-stdin; never from the command line.
    CreateSuperuser {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (first line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// The auth service to create it in, when gravity.toml has several.
        #[arg(long)]
        service: Option<String>,
    },
    /// Create something new from the workspace's templates.
    New {
        #[command(subcommand)]
        what: NewWhat,
    },
    /// Export the platform in another tool's format.
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Print a shell completion script (e.g. `gravity completions bash > /etc/bash_completion.d/gravity`).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Write a new, empty, timestamped migration: migrations/SERVICE/<timestamp>_NAME.sql.
    New { service: String, name: String },
}

#[derive(Subcommand)]
enum NewWhat {
    /// A new service from templates/service/: services/NAME and migrations/NAME, the crate
    /// added to the workspace, and [services.NAME] (own database, next free port, gateway
    /// route) added to gravity.toml with its comments kept. Never overwrites a file.
    Service {
        /// Lowercase kebab-case, e.g. `inventory` or `user-profiles`.
        name: String,
        /// The host port (default: the first free one from 8001).
        #[arg(long)]
        port: Option<u16>,
        /// List what would be written, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ExportFormat {
    /// A docker-compose file equivalent to the running platform (run `gravity up` first).
    Compose {
        /// Where to write it; `-` for standard output.
        #[arg(long, short = 'o', default_value = "docker-compose.yml")]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // Do not wait for blocking tasks (hashing, lock waits) once the command is over.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match outcome {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("\ninterrupted: nothing is lost; run the command again to finish");
            ExitCode::from(130)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let load = || Project::load(&cli.file);
    match cli.command {
        Command::Check => check(&cli.file),
        Command::Up {
            services,
            json,
            timeout,
        } => {
            let project = load()?;
            let started = Instant::now();
            let reporter = Reporter::new(Mode::detect(json));
            let options = UpOptions {
                services,
                health_timeout: Duration::from_secs(timeout),
            };
            let summary = up::up(&project, &options, &reporter).await?;
            let changed = summary
                .changes
                .values()
                .filter(|c| **c != gravity::containers::Change::Unchanged)
                .count();
            let elapsed = progress::human(started.elapsed());
            match reporter.mode() {
                Mode::Json => println!(
                    "{}",
                    serde_json::json!({"event": "up", "platform": project.name(), "changed": changed, "elapsed_ms": started.elapsed().as_millis()})
                ),
                _ if changed == 0 => eprintln!(
                    "platform {} is up, nothing changed ({elapsed})",
                    project.name()
                ),
                _ => eprintln!(
                    "platform {} is up: {changed} container(s) changed ({elapsed})",
                    project.name()
                ),
            }
            Ok(())
        }
        Command::Down { volumes, yes, json } => {
            let project = load()?;
            let reporter = Reporter::new(Mode::detect(json));
            let confirm = volumes.then(|| {
                if yes {
                    Confirm::Yes
                } else if std::io::stdin().is_terminal() {
                    let expected = project.name().to_owned();
                    Confirm::Ask(Some(Box::new(move |question: &str| {
                        eprint!("{question}");
                        let _ = std::io::stderr().flush();
                        let mut answer = String::new();
                        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == expected
                    })))
                } else {
                    Confirm::Ask(None)
                }
            });
            let removed = down::down(&project, confirm, &reporter).await?;
            if reporter.mode() != Mode::Json {
                eprintln!(
                    "platform {} is down: {} container(s) removed, {}",
                    project.name(),
                    removed.containers.len(),
                    if removed.volumes.is_empty() {
                        "data kept".to_owned()
                    } else {
                        format!("{} volume(s) deleted", removed.volumes.len())
                    }
                );
            }
            Ok(())
        }
        Command::Events { action, json } => {
            let project = load()?;
            match action {
                None => {
                    let parked = gravity::events::parked(&project).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&parked)?);
                    } else {
                        print!("{}", gravity::events::table(&parked));
                    }
                }
                Some(EventsAction::Replay { queue, id }) => {
                    let which = gravity::infra::Which {
                        queue: queue.as_deref(),
                        id: id.as_deref(),
                    };
                    let replayed = gravity::events::replay(&project, which).await?;
                    if json {
                        println!("{}", serde_json::json!({ "replayed": replayed }));
                    } else {
                        println!("{replayed} message(s) sent back to their queues");
                    }
                }
            }
            Ok(())
        }
        Command::Trace { id, json } => {
            let project = load()?;
            let lines = logs::all_lines(&project).await?;
            let trace = gravity::trace::find(&lines, &id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&trace)?);
            } else {
                print!("{}", trace.render());
            }
            Ok(())
        }
        Command::Mail {
            id,
            to,
            limit,
            raw,
            json,
        } => {
            let project = load()?;
            let catcher = gravity::mail::Catcher::find(&project).await?;
            match id {
                None => {
                    let rows = catcher.list(to.as_deref(), limit).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    } else {
                        print!("{}", gravity::mail::table(&rows));
                    }
                }
                Some(id) if raw => print!("{}", catcher.raw(&id, to.as_deref()).await?),
                Some(id) => {
                    let mail = catcher.show(&id, to.as_deref()).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&mail)?);
                    } else {
                        print!("{}", gravity::mail::render(&mail));
                    }
                }
            }
            Ok(())
        }
        Command::Ps { json } => {
            let project = load()?;
            let rows = ps::ps(&project).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", ps::table(&rows));
            }
            Ok(())
        }
        Command::Status { once, json, filter } => {
            let project = load()?;
            let filter = filter.parse()?;
            gravity::status::status(
                &project,
                gravity::status::Output::choose(once, json),
                filter,
            )
            .await?;
            Ok(())
        }
        Command::Logs {
            resources,
            follow,
            since,
            tail,
            no_color,
            filter,
            json,
        } => {
            let filter = filter.parse()?;
            let project = load()?;
            let since = since
                .map(|s| logs::parse_since(&s, SystemTime::now()))
                .transpose()?;
            let color = !no_color
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none();
            logs::logs(
                &project,
                LogsOptionsArgs {
                    resources,
                    follow,
                    since,
                    tail,
                    color,
                    filter,
                    json,
                },
            )
            .await?;
            Ok(())
        }
        Command::Migrate {
            action: Some(MigrateAction::New { service, name }),
            ..
        } => {
            let project = load()?;
            let path = migrate::new_migration(&project, &service, &name, chrono::Utc::now())?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Migrate {
            action: None,
            service,
            status,
            json,
        } => {
            let project = load()?;
            let report = migrate::migrate(&project, service.as_deref(), status).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            for s in report {
                println!(
                    "{} (database {}): {} applied now",
                    s.service, s.database, s.applied_now
                );
                for m in s.migrations {
                    let state = match (m.applied, m.changed) {
                        (true, false) => "applied",
                        (true, true) => "applied, file changed since",
                        (false, _) => "pending",
                    };
                    println!("  {:<16} {:<28} {state}", m.version, m.description);
                }
            }
            Ok(())
        }
        Command::CreateSuperuser {
            email,
            password_stdin,
            service,
        } => {
            let project = load()?;
            let password = read_password(password_stdin)?;
            let said = superuser::create_superuser(&project, service.as_deref(), &email, &password)
                .await?;
            println!("{said}");
            Ok(())
        }
        Command::New {
            what:
                NewWhat::Service {
                    name,
                    port,
                    dry_run,
                },
        } => new_service(&cli.file, name, port, dry_run),
        Command::Export {
            format: ExportFormat::Compose { output },
        } => {
            let project = load()?;
            let text = compose::export(&project).await?;
            if output.as_os_str() == "-" {
                print!("{text}");
            } else {
                gravity::project::write_private(&output, &text)
                    .with_context(|| format!("writing {}", output.display()))?;
                eprintln!(
                    "wrote {} (it holds the platform's passwords; keep it private)",
                    output.display()
                );
            }
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "gravity", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn new_service(
    file: &std::path::Path,
    name: String,
    port: Option<u16>,
    dry_run: bool,
) -> anyhow::Result<()> {
    use gravity::scaffold;
    let project = Project::load(file)?;
    let request = scaffold::NewService { name, port };
    let plan = scaffold::plan(&project, file, &request, chrono::Utc::now())?;
    let shown = |p: &std::path::Path| scaffold::shown(&project, p);
    let (create, edit) = if dry_run {
        ("would create", "would edit")
    } else {
        scaffold::apply(&plan)?;
        ("created", "edited")
    };
    for f in &plan.creates {
        println!("{create} {}", shown(&f.path));
    }
    for e in &plan.edits {
        println!("{edit} {}: {}", shown(&e.path), e.summary);
    }
    if dry_run {
        println!("dry run: nothing was written");
        return Ok(());
    }
    let name = &plan.name;
    println!();
    println!(
        "service {name}: port {}, database {}{}",
        plan.port.get(),
        plan.database,
        plan.route
            .as_deref()
            .map(|r| format!(", through the gateway at {r}/..."))
            .unwrap_or_default()
    );
    println!("next:");
    println!(
        "  cargo test -p {name}     test it (scripts/test.sh -p {name} starts PostgreSQL first)"
    );
    println!("  gravity up               start the platform with it");
    Ok(())
}

/// The new admin's password: the first line of standard input, or asked twice without echo.
/// The auth service applies its password policy.
fn read_password(from_stdin: bool) -> anyhow::Result<secrecy::SecretString> {
    use std::io::Read as _;
    let raw = if from_stdin {
        let mut buf = String::new();
        std::io::stdin()
            .take(4096)
            .read_to_string(&mut buf)
            .context("reading the password from standard input")?;
        buf.lines().next().unwrap_or("").to_owned()
    } else {
        let first = rpassword::prompt_password("password: ").context("reading the password")?;
        let second =
            rpassword::prompt_password("password (again): ").context("reading the password")?;
        if first != second {
            anyhow::bail!("the two passwords differ; run the command again");
        }
        first
    };
    if raw.is_empty() {
        anyhow::bail!("no password given; type one, or pipe it with --password-stdin");
    }
    Ok(secrecy::SecretString::from(raw))
}

fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let project = gravity::project::Project::load(file)?;
    let manifest = &project.manifest;
    // Checked with passwords made up here: the platform's own are not needed to check it.
    let mut secrets = gravity::project::Secrets::default();
    project.complete_secrets(&mut secrets);
    let plan = gravity::plan::Plan::build(&project, &secrets);
    gravity::gateway::check(&plan).map_err(anyhow::Error::msg)?;
    println!("platform {}", manifest.name);
    for (name, infra) in &manifest.infrastructure {
        println!(
            "  {:<12} {:<24} port {}  ({})",
            name.as_str(),
            infra.image.to_string(),
            infra.port.get(),
            infra.kind.title()
        );
    }
    for (name, spec) in &manifest.services {
        let name = name.to_string();
        let deps: Vec<&str> = spec.depends_on.iter().map(|d| d.as_str()).collect();
        println!(
            "  {name:<12} crate {:<15} port {}  depends on: {}",
            spec.crate_name,
            spec.port.get(),
            deps.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
