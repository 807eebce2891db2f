//! Versioned message templates (MiniJinja): a subject, a text part and an optional HTML part,
//! one row per key, locale and version. A version never changes once written, so a compiled
//! template is cached for the life of the process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use utoipa::ToSchema;

/// Template parts are bounded (in characters): a template is text for one message, not a
/// document store. Three parts at most this long fit the service's body limit however they
/// are written in JSON.
pub const MAX_PART: usize = 50_000;

/// One version of a template in one locale.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
pub struct Template {
    pub key: String,
    pub locale: String,
    pub version: i32,
    pub subject: String,
    pub html: Option<String>,
    #[sqlx(rename = "text_body")]
    pub text: String,
    /// Sent even to recipients who opted out (a password reset they asked for).
    pub critical: bool,
    /// What a recipient can opt out of (`general`, `account`, `security`, ...).
    pub category: String,
}

pub const COLUMNS: &str = "key, locale, version, subject, html, text_body, critical, category";

/// A template rendered with a message's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A part does not compile or does not render with the data given: the part, and
    /// MiniJinja's reason (with its line).
    #[error("{part}: {reason}")]
    Template { part: &'static str, reason: String },
}

/// A template version with its parts compiled.
pub struct Compiled {
    pub template: Template,
    env: Environment<'static>,
}

impl Compiled {
    pub fn render(&self, data: &Value) -> Result<Rendered, RenderError> {
        render_with(&self.env, self.template.html.is_some(), data)
    }
}

/// Compiled templates by (key, locale, version): a version never changes, so one kept is
/// right for the life of the process and the database is not asked for it again.
#[derive(Default)]
pub struct Cache {
    compiled: Mutex<HashMap<(String, String, i32), Arc<Compiled>>>,
}

impl Cache {
    /// The version kept, if it was compiled before.
    pub fn kept(&self, key: &str, locale: &str, version: i32) -> Option<Arc<Compiled>> {
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(key.to_owned(), locale.to_owned(), version))
            .cloned()
    }

    /// Compiles `template` and keeps it.
    pub fn keep(&self, template: Template) -> Result<Arc<Compiled>, RenderError> {
        let env = compile(&template)?;
        let id = (
            template.key.clone(),
            template.locale.clone(),
            template.version,
        );
        let compiled = Arc::new(Compiled { template, env });
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, compiled.clone());
        Ok(compiled)
    }

    /// Renders `template` with `data`, compiling it on first use.
    pub fn render(&self, template: &Template, data: &Value) -> Result<Rendered, RenderError> {
        match self.kept(&template.key, &template.locale, template.version) {
            Some(compiled) => compiled.render(data),
            None => self.keep(template.clone())?.render(data),
        }
    }
}

/// Checks that every part compiles: what `PUT` refuses.
pub fn check(template: &Template) -> Result<(), RenderError> {
    compile(template).map(|_| ())
}

/// Compiles and renders once, without caching: previews of what may not be saved.
pub fn render_once(template: &Template, data: &Value) -> Result<Rendered, RenderError> {
    let env = compile(template)?;
    render_with(&env, template.html.is_some(), data)
}

fn compile(template: &Template) -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    // A variable that is printed must be given; one only tested (`{% if name %}`) may not.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    // Names decide escaping: the HTML part escapes what it prints, the others do not.
    let parts = [
        ("subject", "subject.txt", Some(template.subject.clone())),
        ("text", "text.txt", Some(template.text.clone())),
        ("html", "body.html", template.html.clone()),
    ];
    for (part, name, source) in parts {
        if let Some(source) = source {
            env.add_template_owned(name, source)
                .map_err(|e| RenderError::Template {
                    part,
                    reason: describe(&e),
                })?;
        }
    }
    Ok(env)
}

fn render_with(env: &Environment<'_>, html: bool, data: &Value) -> Result<Rendered, RenderError> {
    let part = |part: &'static str, name: &str| -> Result<String, RenderError> {
        env.get_template(name)
            .and_then(|t| t.render(minijinja::value::Serde(data)))
            .map_err(|e| RenderError::Template {
                part,
                reason: describe(&e),
            })
    };
    // A subject is one header line: line breaks and other controls become spaces.
    let subject: String = part("subject", "subject.txt")?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Ok(Rendered {
        subject: subject.trim().to_owned(),
        text: part("text", "text.txt")?,
        html: if html {
            Some(part("html", "body.html")?)
        } else {
            None
        },
    })
}

fn describe(e: &minijinja::Error) -> String {
    match (e.detail(), e.line()) {
        (Some(detail), Some(line)) => format!("{} (line {line}): {detail}", e.kind()),
        (Some(detail), None) => format!("{}: {detail}", e.kind()),
        (None, Some(line)) => format!("{} (line {line})", e.kind()),
        (None, None) => e.kind().to_string(),
    }
}

/// The locales to try for `wanted`, best first: itself, its language, then `fallback`.
pub fn locales_for(wanted: &str, fallback: &str) -> Vec<String> {
    let mut order = vec![wanted.to_owned()];
    if let Some((language, _)) = wanted.split_once('-') {
        order.push(language.to_owned());
    }
    order.push(fallback.to_owned());
    order.dedup();
    order
}

/// The newest version of `key` in the best locale for `wanted` (see [`locales_for`]); any
/// locale when none of those has it.
pub async fn resolve(
    conn: &mut PgConnection,
    key: &str,
    wanted: &str,
    fallback: &str,
) -> Result<Option<Template>, sqlx::Error> {
    let order = locales_for(wanted, fallback);
    sqlx::query_as(&format!(
        "SELECT DISTINCT ON (locale) {COLUMNS} FROM templates WHERE key = $1
         ORDER BY locale, version DESC"
    ))
    .bind(key)
    .fetch_all(conn)
    .await
    .map(|found: Vec<Template>| {
        let rank = |t: &Template| {
            order
                .iter()
                .position(|l| l.eq_ignore_ascii_case(&t.locale))
                .unwrap_or(order.len())
        };
        found.into_iter().min_by_key(rank)
    })
}

/// One exact version.
pub async fn version(
    conn: &mut PgConnection,
    key: &str,
    locale: &str,
    version: i32,
) -> Result<Option<Template>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM templates WHERE key = $1 AND locale = $2 AND version = $3"
    ))
    .bind(key)
    .bind(locale)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// The newest version of every template in every locale.
pub async fn latest(conn: &mut PgConnection) -> Result<Vec<Template>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT DISTINCT ON (key, locale) {COLUMNS} FROM templates
         ORDER BY key, locale, version DESC"
    ))
    .fetch_all(conn)
    .await
}

/// Saves `template` as the next version of its key and locale; returns it with its number.
pub async fn save(
    conn: &mut PgConnection,
    mut template: Template,
    by: uuid::Uuid,
) -> Result<Template, sqlx::Error> {
    // Two admins saving at once: the second one's insert waits on the first one's lock and
    // takes the number after it.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("template:{}:{}", template.key, template.locale))
        .execute(&mut *conn)
        .await?;
    let version: i32 = sqlx::query_scalar(
        "INSERT INTO templates (key, locale, version, subject, html, text_body, critical, category, created_by)
         SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4, $5, $6, $7, $8
         FROM templates WHERE key = $1 AND locale = $2
         RETURNING version",
    )
    .bind(&template.key)
    .bind(&template.locale)
    .bind(&template.subject)
    .bind(&template.html)
    .bind(&template.text)
    .bind(template.critical)
    .bind(&template.category)
    .bind(by)
    .fetch_one(conn)
    .await?;
    template.version = version;
    Ok(template)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(subject: &str, text: &str, html: Option<&str>) -> Template {
        Template {
            key: "t".into(),
            locale: "en".into(),
            version: 1,
            subject: subject.into(),
            html: html.map(str::to_owned),
            text: text.into(),
            critical: false,
            category: "general".into(),
        }
    }

    #[test]
    fn html_is_escaped_text_is_not_and_a_subject_stays_one_line() {
        let t = template(
            "Hi {{ name }}",
            "Hello {{ name }}",
            Some("<p>Hello {{ name }}</p>"),
        );
        let out = Cache::default()
            .render(&t, &json!({ "name": "<b>Ann</b>\r\nBcc: x@y.z" }))
            .unwrap();
        assert_eq!(out.subject, "Hi <b>Ann</b>  Bcc: x@y.z");
        assert_eq!(out.text, "Hello <b>Ann</b>\r\nBcc: x@y.z");
        assert_eq!(
            out.html.as_deref(),
            Some("<p>Hello &lt;b&gt;Ann&lt;&#x2f;b&gt;\r\nBcc: x@y.z</p>")
        );
    }

    #[test]
    fn a_missing_variable_or_bad_syntax_is_named() {
        let t = template(
            "{% if name %}Hi {{ name }}{% endif %}",
            "Code {{ code }}",
            None,
        );
        assert_eq!(
            render_once(&t, &json!({}))
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("text")
        );
        assert_eq!(render_once(&t, &json!({ "code": 7 })).unwrap().subject, "");
        let broken = template("Hi {{ name", "x", None);
        let err = check(&broken).unwrap_err().to_string();
        assert!(err.starts_with("subject: syntax error"), "{err}");
    }

    #[test]
    fn locales_fall_back_to_the_language_then_the_default() {
        assert_eq!(locales_for("fr-CA", "en"), ["fr-CA", "fr", "en"]);
        assert_eq!(locales_for("en", "en"), ["en"]);
    }
}
