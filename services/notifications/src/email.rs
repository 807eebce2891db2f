//! Mail over SMTP (lettre), through a pool of connections to one server.

use std::time::Duration;

use lettre::{
    message::{
        header::{ContentType, HeaderName, HeaderValue},
        Mailbox, MultiPart, SinglePart,
    },
    transport::smtp::PoolConfig,
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};
use secrecy::ExposeSecret as _;

use crate::{config::SmtpSettings, templates::Rendered};

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took it; its answer.
    Sent(String),
    /// Worth trying again later (a 4xx answer, a connection that failed); why.
    Retry(String),
    /// The server refused it for good (a 5xx answer), or it cannot be built; why.
    Failed(String),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of message ids: the sender's.
    domain: String,
}

fn refused_login(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .is_some_and(|code| matches!(u16::from(code), 530 | 534 | 535 | 538))
}

/// One mail to send.
pub struct Mail<'a> {
    pub id: uuid::Uuid,
    pub to: &'a str,
    pub content: &'a Rendered,
    /// The RFC 8058 one-click unsubscribe URL.
    pub unsubscribe: &'a str,
}

#[derive(Debug, thiserror::Error)]
#[error("SMTP_URL is not a usable SMTP URL: {0}")]
pub struct BadUrl(String);

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, BadUrl> {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.url.expose_secret())
                // lettre's message would quote the URL, password included.
                .map_err(|e| BadUrl(e.to_string().replace(settings.url.expose_secret(), "…")))?
                .timeout(Some(settings.timeout))
                .pool_config(
                    PoolConfig::new()
                        .max_size(settings.connections)
                        .idle_timeout(Duration::from_secs(60)),
                )
                .build();
        let domain = settings.from.email.domain().to_owned();
        Ok(Self {
            transport,
            from: settings.from.clone(),
            domain,
        })
    }

    pub async fn send(&self, mail: Mail<'_>) -> Outcome {
        let message = match self.build(&mail) {
            Ok(m) => m,
            Err(reason) => return Outcome::Failed(reason),
        };
        match self.transport.send(message).await {
            Ok(answer) => Outcome::Sent(
                format!(
                    "{} {}",
                    answer.code(),
                    answer.message().collect::<Vec<_>>().join(" ")
                )
                .trim()
                .to_owned(),
            ),
            // A refused login (530, 534, 535, 538) is about this service's credentials, not
            // the message: worth sending again once they are fixed.
            Err(e) if e.is_permanent() && !refused_login(&e) => Outcome::Failed(e.to_string()),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    fn build(&self, mail: &Mail<'_>) -> Result<Message, String> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| format!("the address {:?} cannot receive mail: {e}", mail.to))?;
        let header = |name: &'static str, value: String| {
            HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
        };
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.content.subject.clone())
            .message_id(Some(format!("<{}@{}>", mail.id, self.domain)))
            .raw_header(header(
                "List-Unsubscribe",
                format!("<{}>", mail.unsubscribe),
            ))
            .raw_header(header(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".to_owned(),
            ));
        let text = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(mail.content.text.clone());
        let built = match &mail.content.html {
            Some(html) => builder.multipart(
                MultiPart::alternative().singlepart(text).singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html.clone()),
                ),
            ),
            None => builder.singlepart(text),
        };
        built.map_err(|e| format!("the message cannot be built: {e}"))
    }
}
