//! The `notifications` binary: serve (the default) or apply migrations.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use service_kit::{config::Env, telemetry};

use notifications::{config::Settings, startup};

/// Gravity's Notifications service. Configured from the environment (see `config.rs`).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
}

/// mimalloc rather than the system allocator: a request allocates and frees many small
/// objects across worker threads, where glibc's allocator is markedly slower.
#[global_allocator]
static ALLOCATOR: service_kit::alloc::Mimalloc = service_kit::alloc::Mimalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _logs = telemetry::init("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env(&Env::from_process())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = startup::Application::build(settings).await?;
            app.run_until_stopped().await.context("serving HTTP")?;
        }
        Command::Migrate => {
            let db = settings.service.database.pool()?;
            service_kit::app::migrate(&db, &startup::MIGRATOR).await?;
            println!("migrations applied");
        }
    }
    Ok(())
}
