//! `gravity`: the platform manager. For now it only reports its version; `up`, `down`, `ps`,
//! `logs`, `migrate` and `create-superuser` arrive with the CLI work.

use clap::Parser;

/// Gravity: run a microservice platform from one gravity.toml.
#[derive(Parser)]
#[command(name = "gravity", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("gravity {}", env!("CARGO_PKG_VERSION"));
}
