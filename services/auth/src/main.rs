//! The `auth` binary: serve (the default), create the first admin, or rotate signing keys.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use auth::{accounts, config::Settings, keys, startup};
use clap::{Parser, Subcommand};
use service_kit::{
    config::Env,
    password::{read_new_password, PasswordHasher},
    telemetry, Email,
};

/// Gravity's auth service. Configured from the environment (see docs/ARCHITECTURE.md).
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
    /// Create an admin account. The password is asked twice without echo, or read from
    /// standard input with --password-stdin; it is never taken from the command line.
    CreateSuperuser {
        #[arg(long)]
        email: String,
        /// Read the password from standard input (first line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Add a new signing key; older keys keep verifying until the tokens they signed expire.
    RotateKeys,
    /// Apply pending database migrations and exit.
    Migrate,
}

/// mimalloc rather than the system allocator: a request allocates and frees many small
/// objects across worker threads, where glibc's allocator spent a tenth of the CPU time.
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
            startup::migrate(&db).await?;
            println!("migrations applied");
        }
        Command::RotateKeys => {
            let db = settings.service.database.pool()?;
            startup::migrate(&db).await?;
            // Old keys outlive the longest-lived access token they may have signed, plus slack.
            let retire_after = settings.tokens.access_ttl + Duration::from_secs(60);
            let kid = keys::rotate(&db, retire_after).await?;
            println!(
                "new signing key {kid}; older keys retire in {}s",
                retire_after.as_secs()
            );
        }
        Command::CreateSuperuser {
            email,
            password_stdin,
        } => {
            let email = Email::parse(&email).context("--email")?;
            let password = read_new_password(password_stdin)?;
            let db = settings.service.database.pool()?;
            startup::migrate(&db).await?;
            let hasher = PasswordHasher::owasp()?;
            match accounts::create_superuser(&db, &hasher, &email, &password).await {
                Ok(user) => println!("created admin {} ({})", user.email, user.id),
                Err(auth::error::AuthError::EmailTaken) => {
                    anyhow::bail!("an account with email {email} already exists; pick another email or reset its password")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
