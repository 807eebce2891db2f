//! `gravity create-superuser`: the first admin of the platform's auth service, made by the
//! auth service's own `create-superuser` subcommand, run inside its running container through
//! the Docker API. The auth binary owns the rules (the email's and password's policies, the
//! hashing, the schema), so Gravity links no service crate. The password travels over the
//! exec's standard input, never in an argument or the environment.

use bollard::{
    container::LogOutput,
    exec::{CreateExecOptions, StartExecResults},
};
use futures_util::StreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::io::AsyncWriteExt as _;

use crate::{
    engine::{Engine, EngineError},
    project::{Project, ProjectError},
};

/// The crate whose binary has the `create-superuser` subcommand.
const AUTH_CRATE: &str = "auth";

#[derive(Debug, thiserror::Error)]
pub enum SuperuserError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("gravity.toml has no such service built from the `auth` crate with a database")]
    NoAuthService,
    #[error("several services are built from the auth crate ({0}); name one with --service")]
    Ambiguous(String),
    #[error("the {service} service is not running; start it with `gravity up {service}`, then try again")]
    NotRunning { service: String },
    #[error("{0}")]
    Refused(String),
    #[error("running create-superuser in the {service} container: {detail}")]
    Exec { service: String, detail: String },
}

/// Creates an admin with `email` and `password` in the auth service `service` (by default the
/// one named `auth`, or the only service built from the auth crate); returns what the auth
/// service printed (its email and id).
pub async fn create_superuser(
    project: &Project,
    service: Option<&str>,
    email: &str,
    password: &SecretString,
) -> Result<String, SuperuserError> {
    let m = &project.manifest;
    let candidates: Vec<_> = m
        .services
        .iter()
        .filter(|(_, s)| s.crate_name == AUTH_CRATE && s.database.is_some())
        .map(|(name, _)| name)
        .collect();
    let chosen = match service {
        Some(wanted) => {
            project.service(wanted)?;
            candidates.iter().find(|n| n.as_str() == wanted)
        }
        None if candidates.len() == 1 => candidates.first(),
        // Several: the one named auth, or the user must say which.
        None => candidates.iter().find(|n| n.as_str() == AUTH_CRATE),
    };
    let Some(name) = chosen.copied() else {
        return Err(match (service, candidates.len()) {
            (_, 0) | (Some(_), _) => SuperuserError::NoAuthService,
            (None, _) => SuperuserError::Ambiguous(
                candidates
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        });
    };
    let engine = Engine::connect().await?;
    let container = project.container_name(name.as_str());
    let not_running = || SuperuserError::NotRunning {
        service: name.to_string(),
    };
    let inspect = engine
        .api()
        .inspect_container(&container, None)
        .await
        .map_err(|_| not_running())?;
    if !inspect.state.and_then(|s| s.running).unwrap_or(false) {
        return Err(not_running());
    }
    let failed = |detail: String| SuperuserError::Exec {
        service: name.to_string(),
        detail,
    };
    let binary = format!("/usr/local/bin/{AUTH_CRATE}");
    let exec = engine
        .api()
        .create_exec(
            &container,
            CreateExecOptions {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                cmd: Some(vec![
                    binary.as_str(),
                    "create-superuser",
                    "--email",
                    email,
                    "--password-stdin",
                ]),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(e.to_string()))?;
    let started = engine
        .api()
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return Err(failed("the engine did not attach to it".to_owned()));
    };
    let mut line = password.expose_secret().to_owned();
    line.push('\n');
    input
        .write_all(line.as_bytes())
        .await
        .map_err(|e| failed(e.to_string()))?;
    input.shutdown().await.map_err(|e| failed(e.to_string()))?;
    drop(line);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Some(chunk) = output.next().await {
        match chunk.map_err(|e| failed(e.to_string()))? {
            LogOutput::StdOut { message } => stdout.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdErr { message } => stderr.push_str(&String::from_utf8_lossy(&message)),
            _ => {}
        }
    }
    let code = engine
        .api()
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| failed(e.to_string()))?
        .exit_code;
    if code == Some(0) {
        return Ok(stdout.trim().to_owned());
    }
    // The auth service says what was wrong on its last line (`error: ...`); its log lines,
    // JSON, come before.
    let said = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('{'))
        .unwrap_or("it exited without saying why");
    Err(SuperuserError::Refused(
        said.trim().trim_start_matches("error: ").to_owned(),
    ))
}
