//! `gravity mail`: the mail the platform sent, as its mail catcher caught it (the instance
//! whose kind is `mail`). Reached on the catcher's published HTTP port through the part of
//! Mailpit's API that Gravity's offline catcher answers too.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{
    engine::{resource_of, Engine, EngineError},
    infra::MAIL_KIND,
    project::Project,
};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("gravity.toml has no mail catcher; add one ([infrastructure.mail] with a port) and run `gravity up`")]
    NoCatcher,
    #[error("the mail catcher {0} is not running; run `gravity up` first")]
    NotRunning(String),
    #[error("the mail catcher {0} publishes no HTTP port; recreate it with `gravity down` then `gravity up`")]
    NotPublished(String),
    #[error("no mail {0}; `gravity mail` lists what was caught")]
    NoSuchMail(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the mail catcher on 127.0.0.1:{port}: {detail}")]
    Http { port: u16, detail: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Address {
    #[serde(default)]
    pub name: String,
    pub address: String,
}

/// A caught message as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Summary {
    #[serde(rename = "ID")]
    pub id: String,
    pub from: Option<Address>,
    #[serde(default)]
    pub to: Vec<Address>,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub created: String,
}

/// A caught message with its text and HTML parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Caught {
    #[serde(flatten)]
    pub summary: Summary,
    #[serde(default)]
    pub text: String,
    #[serde(default, rename = "HTML")]
    pub html: String,
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    messages: Vec<Summary>,
}

/// The running catcher's HTTP API.
pub struct Catcher {
    port: u16,
    http: reqwest::Client,
}

impl Catcher {
    pub async fn find(project: &Project) -> Result<Self, MailError> {
        let manifest = &project.manifest;
        let (name, infra) = manifest
            .infrastructure
            .iter()
            .find(|(_, infra)| infra.kind.name() == MAIL_KIND)
            .ok_or(MailError::NoCatcher)?;
        let engine = Engine::connect().await?;
        let found = engine.containers(project.label_filter()).await?;
        let container = found
            .iter()
            .find(|c| {
                resource_of(c) == Some(name.as_str())
                    && c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
            })
            .ok_or_else(|| MailError::NotRunning(name.to_string()))?;
        let ui = infra.kind.ui().map(|ui| ui.port);
        let port = container
            .ports
            .iter()
            .flatten()
            .find(|p| Some(p.private_port) == ui)
            .and_then(|p| p.public_port)
            .ok_or_else(|| MailError::NotPublished(name.to_string()))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| MailError::Http {
                port,
                detail: e.to_string(),
            })?;
        Ok(Self { port, http })
    }

    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, MailError> {
        let error = |e: reqwest::Error| MailError::Http {
            port: self.port,
            detail: e.to_string(),
        };
        self.http
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .query(query)
            .send()
            .await
            .map_err(error)
    }

    /// Newest first; only those to `to` when given.
    pub async fn list(&self, to: Option<&str>, limit: u32) -> Result<Vec<Summary>, MailError> {
        let limit = ("limit", limit.to_string());
        let response = match to {
            Some(address) => {
                let query = ("query", format!("to:{address}"));
                self.get("/api/v1/search", &[query, limit]).await?
            }
            None => self.get("/api/v1/messages", &[limit]).await?,
        };
        let listing: Listing = response
            .error_for_status()
            .map_err(|e| self.http_error(e))?
            .json()
            .await
            .map_err(|e| self.http_error(e))?;
        Ok(listing.messages)
    }

    /// One message; `latest` is the newest (to `to`, when given).
    pub async fn show(&self, id: &str, to: Option<&str>) -> Result<Caught, MailError> {
        let id = self.resolve(id, to).await?;
        let response = self.get(&format!("/api/v1/message/{id}"), &[]).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(MailError::NoSuchMail(id));
        }
        response
            .error_for_status()
            .map_err(|e| self.http_error(e))?
            .json()
            .await
            .map_err(|e| self.http_error(e))
    }

    /// One message as received: headers and MIME parts.
    pub async fn raw(&self, id: &str, to: Option<&str>) -> Result<String, MailError> {
        let id = self.resolve(id, to).await?;
        let response = self.get(&format!("/api/v1/message/{id}/raw"), &[]).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(MailError::NoSuchMail(id));
        }
        response
            .error_for_status()
            .map_err(|e| self.http_error(e))?
            .text()
            .await
            .map_err(|e| self.http_error(e))
    }

    async fn resolve(&self, id: &str, to: Option<&str>) -> Result<String, MailError> {
        // IDs go into a URL path: anything but letters, digits and dashes is not one.
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || id.is_empty() {
            return Err(MailError::NoSuchMail(id.to_owned()));
        }
        if id != "latest" {
            return Ok(id.to_owned());
        }
        self.list(to, 1)
            .await?
            .into_iter()
            .next()
            .map(|s| s.id)
            .ok_or_else(|| {
                MailError::NoSuchMail(to.map_or("yet".to_owned(), |a| format!("to {a}")))
            })
    }

    fn http_error(&self, e: reqwest::Error) -> MailError {
        MailError::Http {
            port: self.port,
            detail: e.to_string(),
        }
    }
}

/// The listing as a table, newest first.
pub fn table(rows: &[Summary]) -> String {
    if rows.is_empty() {
        return "no mail caught\n".to_owned();
    }
    let mut out = format!("{:<30} {:<21} {:<32} SUBJECT\n", "ID", "RECEIVED", "TO");
    for row in rows {
        let to: Vec<&str> = row.to.iter().map(|a| a.address.as_str()).collect();
        let _ = writeln!(
            out,
            "{:<30} {:<21} {:<32} {}",
            row.id,
            row.created.chars().take(19).collect::<String>(),
            to.join(", "),
            row.subject
        );
    }
    out
}

/// One message for reading: its envelope, then its text part.
pub fn render(mail: &Caught) -> String {
    let who = |a: &Address| {
        if a.name.is_empty() {
            a.address.clone()
        } else {
            format!("{} <{}>", a.name, a.address)
        }
    };
    let to: Vec<String> = mail.summary.to.iter().map(who).collect();
    format!(
        "From: {}\nTo: {}\nSubject: {}\nReceived: {}\n\n{}\n",
        mail.summary.from.as_ref().map(who).unwrap_or_default(),
        to.join(", "),
        mail.summary.subject,
        mail.summary.created,
        mail.text.trim_end()
    )
}
