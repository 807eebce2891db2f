//! `gravity`: the platform manager. Parses arguments, runs the command, maps errors to an exit
//! code. Exit codes: 0 success, 1 failure, 2 usage error (from clap).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use gravity::manifest::Manifest;

/// Gravity: run a microservice platform from one gravity.toml.
#[derive(Parser)]
#[command(name = "gravity", version, about)]
struct Cli {
    /// The platform description to use.
    #[arg(long, global = true, default_value = "gravity.toml")]
    file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check gravity.toml and print the platform it describes.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check => {
            let manifest = Manifest::load(&cli.file)?;
            println!("platform {}", manifest.name);
            for (label, infra) in [("postgres", &manifest.postgres), ("redis", &manifest.redis)] {
                if let Some(infra) = infra {
                    println!(
                        "  {label:<12} {:<24} port {}",
                        infra.image.to_string(),
                        infra.port.get()
                    );
                }
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
        }
    }
    Ok(())
}
