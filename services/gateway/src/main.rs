//! The `gateway` binary: serves the routes of a `gateway.toml` until SIGTERM or Ctrl-C;
//! SIGHUP, `POST /admin/reload` or an edited file reload the routes.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use gateway::config::Config;
use service_kit::telemetry;

/// Gravity's API gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (see docs/ARCHITECTURE.md for every key).
    #[arg(long, env = "GATEWAY_CONFIG", default_value = "gateway.toml")]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

/// mimalloc rather than the system allocator: proxying allocates and frees many small
/// objects across worker threads.
#[global_allocator]
static ALLOCATOR: service_kit::alloc::Mimalloc = service_kit::alloc::Mimalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _logs = telemetry::init("info");
    // Requests are served by the gateway's own threads (`[server] workers`); this runtime
    // runs the admin listener, health checks, key fetches and reloads: one thread is plenty.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
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
    // Inline (`GATEWAY_CONFIG_TOML`, as a compose export passes it), routes change only with a
    // restart; from a file (as `gravity up` and a standalone gateway use), they reload in place.
    let (config, path) = match std::env::var("GATEWAY_CONFIG_TOML") {
        Ok(text) => (Config::parse(&text, "GATEWAY_CONFIG_TOML")?, None),
        Err(_) => (Config::load(&cli.config)?, Some(cli.config.clone())),
    };
    let mut config = config;
    if let Some(raw) = std::env::var_os("GATEWAY_ADMIN_TOKEN") {
        let raw = raw
            .into_string()
            .map_err(|_| anyhow::anyhow!("GATEWAY_ADMIN_TOKEN is not valid UTF-8"))?;
        config.admin_token = Some(
            gateway::config::AdminToken::parse(&raw)
                .map_err(|e| anyhow::anyhow!("GATEWAY_ADMIN_TOKEN: {e}"))?,
        );
    }
    // The private key that signs callers' identity assertions: from the environment only,
    // like the admin token.
    let identity = match std::env::var("GATEWAY_IDENTITY_KEY") {
        Ok(raw) if !raw.trim().is_empty() => Some(std::sync::Arc::new(
            service_kit::identity::IdentitySigner::from_base64(&raw)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        _ => None,
    };
    if cli.check {
        println!("{} route(s), configuration is valid", config.routes.len());
        return Ok(());
    }
    let running = gateway::start(config, path, identity).await?;
    running.wait().await.context("serving HTTP")?;
    Ok(())
}
