//! The `audit` binary: serve (the default) or apply migrations.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use service_kit::{config::Env, telemetry};

use audit::{config::Settings, startup};

/// Gravity's Audit service. Configured from the environment (see `config.rs`).
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
    /// Check an export (`GET /api/v1/export`) on its own: every link from its anchor, and
    /// its checkpoint's signature. Exits 0 when whole, 1 naming the first broken link.
    VerifyExport {
        /// The exported JSON lines (`-` for standard input).
        file: std::path::PathBuf,
        /// The only public key (base64url, from `GET /api/v1/key`) a checkpoint may be
        /// signed with.
        #[arg(long)]
        key: Option<String>,
    },
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
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::VerifyExport { file, key } = &command {
        return verify_export(file, key.as_deref());
    }
    let settings = Settings::from_env(&Env::from_process())?;
    match command {
        Command::VerifyExport { .. } => {}
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

fn verify_export(file: &std::path::Path, key: Option<&str>) -> anyhow::Result<()> {
    let verdict = if file.as_os_str() == "-" {
        audit::chain::verify_export(std::io::stdin().lock(), key)
    } else {
        let opened =
            std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        audit::chain::verify_export(std::io::BufReader::new(opened), key)
    }
    .map_err(anyhow::Error::msg)?;
    match &verdict.first_broken {
        None => {
            let vouched = verdict
                .checkpoint
                .as_ref()
                .map_or("no checkpoint".to_owned(), |c| {
                    format!("checkpoint {} signed by key {}", c.seq, c.key_id)
                });
            println!(
                "whole: {} records up to {} ({vouched})",
                verdict.records, verdict.head_seq
            );
            Ok(())
        }
        Some(broken) => anyhow::bail!("broken at record {}: {}", broken.seq, broken.reason),
    }
}
