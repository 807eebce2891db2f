//! Profiles: what one is, the rules its fields follow, how a JSON Merge Patch (RFC 7396)
//! changes one, and how it is stored. Nothing else touches the `profiles` table.

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::schema::{Audience, Compiled};

/// A profile as the caller sees it (attributes only admins may read are left out for the
/// profile's own user).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Profile {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    /// An `http(s)` URL of the user's picture.
    pub avatar_url: Option<String>,
    /// A BCP 47 language tag, e.g. `en-GB`.
    pub locale: Option<String>,
    /// An IANA time zone, e.g. `Europe/Paris`.
    pub time_zone: Option<String>,
    #[schema(value_type = Object)]
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    pub attributes: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str =
    "user_id, email, display_name, avatar_url, locale, time_zone, attributes, created_at, updated_at";

impl Row {
    pub fn seen_by(&self, schema: &Compiled, admin: bool) -> Profile {
        Profile {
            user_id: self.user_id,
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            avatar_url: self.avatar_url.clone(),
            locale: self.locale.clone(),
            time_zone: self.time_zone.clone(),
            attributes: schema.visible(&self.attributes, admin),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// The fields a merge patch applies to.
    fn document(&self) -> Value {
        serde_json::json!({
            "display_name": self.display_name,
            "avatar_url": self.avatar_url,
            "locale": self.locale,
            "time_zone": self.time_zone,
            "attributes": self.attributes,
        })
    }
}

/// Why a patch cannot be applied.
#[derive(Debug, PartialEq)]
pub enum PatchError {
    /// Fields that failed their rules, with the reason.
    Invalid(Vec<(String, String)>),
    /// An attribute only admins may write.
    Forbidden(String),
}

/// The fields a patch may name.
const FIELDS: [&str; 5] = [
    "display_name",
    "avatar_url",
    "locale",
    "time_zone",
    "attributes",
];

/// A checked change: the new values and which fields changed.
#[derive(Debug)]
pub struct Change {
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    pub attributes: Value,
    pub changed: Vec<String>,
}

/// A text field: null or empty removes it; `trim` (free text) drops surrounding blanks, a
/// code (locale, URL, time zone) must come without them.
fn text(
    value: &Value,
    field: &str,
    max: usize,
    trim: bool,
    errors: &mut Vec<(String, String)>,
) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => {
            let s = if trim { s.trim() } else { s.as_str() };
            if s.is_empty() {
                return None;
            }
            if s.chars().count() > max {
                errors.push((
                    field.to_owned(),
                    format!("must be at most {max} characters"),
                ));
            } else if s.chars().any(char::is_control) {
                errors.push((
                    field.to_owned(),
                    "must not contain control characters".to_owned(),
                ));
            }
            Some(s.to_owned())
        }
        _ => {
            errors.push((field.to_owned(), "must be a string or null".to_owned()));
            None
        }
    }
}

/// A BCP 47 tag's shape: a 2–3 letter language, then subtags of 1–8 letters or digits.
fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    (2..=3).contains(&language.len())
        && language.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Applies `patch` (RFC 7396) to `row` as `admin` or the profile's user, under `schema`.
pub fn apply(
    row: &Row,
    patch: &Value,
    schema: &Compiled,
    admin: bool,
) -> Result<Change, PatchError> {
    let Value::Object(fields) = patch else {
        return Err(PatchError::Invalid(vec![(
            "body".to_owned(),
            "must be a JSON object (a merge patch)".to_owned(),
        )]));
    };
    let mut errors = Vec::new();
    for name in fields.keys() {
        if !FIELDS.contains(&name.as_str()) {
            errors.push((name.clone(), "is not a field of a profile".to_owned()));
        }
    }
    let empty = Map::new();
    let attribute_patch = match fields.get("attributes") {
        None => &empty,
        Some(Value::Object(map)) => map,
        Some(Value::Null) => {
            errors.push((
                "attributes".to_owned(),
                "cannot be removed; patch each attribute".to_owned(),
            ));
            &empty
        }
        Some(_) => {
            errors.push(("attributes".to_owned(), "must be an object".to_owned()));
            &empty
        }
    };
    for (name, value) in attribute_patch {
        let rule = schema.rule(name);
        if rule.write == Audience::Admin && !admin {
            return Err(PatchError::Forbidden(name.clone()));
        }
        let current = row.attributes.get(name).filter(|v| !v.is_null());
        if rule.immutable && current.is_some_and(|c| c != value) {
            errors.push((
                format!("attributes.{name}"),
                "cannot change once set".to_owned(),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(PatchError::Invalid(errors));
    }
    let before = row.document();
    let mut after = before.clone();
    json_patch::merge(&mut after, patch);

    let display_name = text(
        &after["display_name"],
        "display_name",
        100,
        true,
        &mut errors,
    );
    let avatar_url = text(&after["avatar_url"], "avatar_url", 2000, false, &mut errors);
    if let Some(url) = &avatar_url {
        let ok = !url.chars().any(char::is_whitespace)
            && url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            errors.push(("avatar_url".to_owned(), "must be an http(s) URL".to_owned()));
        }
    }
    let locale = text(&after["locale"], "locale", 35, false, &mut errors);
    if locale.as_deref().is_some_and(|l| !is_language_tag(l)) {
        errors.push((
            "locale".to_owned(),
            "must be a BCP 47 language tag, e.g. en-GB".to_owned(),
        ));
    }
    let time_zone = text(&after["time_zone"], "time_zone", 64, false, &mut errors);
    if time_zone
        .as_deref()
        .is_some_and(|z| chrono_tz::Tz::from_str(z).is_err())
    {
        errors.push((
            "time_zone".to_owned(),
            "must be an IANA time zone, e.g. Europe/Paris".to_owned(),
        ));
    }
    let attributes = after["attributes"].clone();
    for reason in schema.misfit(&attributes) {
        errors.push(("attributes".to_owned(), reason));
    }
    if !errors.is_empty() {
        return Err(PatchError::Invalid(errors));
    }
    let mut changed = Vec::new();
    for field in ["display_name", "avatar_url", "locale", "time_zone"] {
        let new = match field {
            "display_name" => &display_name,
            "avatar_url" => &avatar_url,
            "locale" => &locale,
            _ => &time_zone,
        };
        if before[field].as_str() != new.as_deref() {
            changed.push(field.to_owned());
        }
    }
    let old_attributes = before["attributes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let new_attributes = attributes.as_object().cloned().unwrap_or_default();
    for name in old_attributes.keys().chain(new_attributes.keys()) {
        let key = format!("attributes.{name}");
        if old_attributes.get(name) != new_attributes.get(name) && !changed.contains(&key) {
            changed.push(key);
        }
    }
    Ok(Change {
        display_name,
        avatar_url,
        locale,
        time_zone,
        attributes,
        changed,
    })
}

pub async fn find(
    conn: &mut PgConnection,
    user_id: Uuid,
    lock: bool,
) -> Result<Option<Row>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM profiles WHERE user_id = $1{lock}"
    ))
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

/// A profile with the version of the attribute schema in force when it was read.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Found {
    #[sqlx(flatten)]
    pub row: Row,
    pub schema_version: i32,
}

/// `find` for reading: the profile and the schema's version in one round trip (the schema
/// itself comes from `schema::Cache`).
pub async fn find_with_schema_version(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<Found>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS}, (SELECT version FROM profile_schema) AS schema_version
         FROM profiles WHERE user_id = $1"
    ))
    .bind(user_id)
    .fetch_optional(conn)
    .await
}

pub async fn save(
    conn: &mut PgConnection,
    user_id: Uuid,
    change: &Change,
) -> Result<Row, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE profiles SET display_name = $2, avatar_url = $3, locale = $4, time_zone = $5,
                attributes = $6, updated_at = now()
         WHERE user_id = $1 RETURNING {COLUMNS}"
    ))
    .bind(user_id)
    .bind(&change.display_name)
    .bind(&change.avatar_url)
    .bind(&change.locale)
    .bind(&change.time_zone)
    .bind(&change.attributes)
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::schema::{AttributeSchema, Rule};

    fn row() -> Row {
        Row {
            user_id: Uuid::nil(),
            email: "a@b.c".into(),
            display_name: Some("Ada".into()),
            avatar_url: None,
            locale: None,
            time_zone: None,
            attributes: json!({"team": "core", "badge": 7}),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn schema() -> Compiled {
        Compiled::new(AttributeSchema {
            version: 1,
            schema: json!({"type": "object", "properties": {"team": {"type": "string"}}}),
            rules: BTreeMap::from([
                (
                    "badge".to_owned(),
                    Rule {
                        read: Audience::User,
                        write: Audience::User,
                        immutable: true,
                    },
                ),
                (
                    "risk".to_owned(),
                    Rule {
                        read: Audience::Admin,
                        write: Audience::Admin,
                        immutable: false,
                    },
                ),
            ]),
        })
        .unwrap()
    }

    #[test]
    fn a_merge_patch_sets_removes_and_reports_what_changed() {
        let change = apply(
            &row(),
            &json!({"display_name": null, "locale": "en-GB", "time_zone": "Europe/Paris", "attributes": {"team": "web"}}),
            &schema(),
            false,
        )
        .unwrap();
        assert_eq!(change.display_name, None);
        assert_eq!(change.locale.as_deref(), Some("en-GB"));
        assert_eq!(change.attributes, json!({"team": "web", "badge": 7}));
        assert_eq!(
            change.changed,
            ["display_name", "locale", "time_zone", "attributes.team"]
        );
    }

    #[test]
    fn rules_and_the_schema_are_enforced() {
        let s = schema();
        assert_eq!(
            apply(&row(), &json!({"attributes": {"risk": "low"}}), &s, false).unwrap_err(),
            PatchError::Forbidden("risk".into())
        );
        assert!(apply(&row(), &json!({"attributes": {"risk": "low"}}), &s, true).is_ok());
        assert!(matches!(
            apply(&row(), &json!({"attributes": {"badge": 8}}), &s, true),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(&row(), &json!({"attributes": {"team": 1}}), &s, false),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(&row(), &json!({"time_zone": "Mars/Olympus"}), &s, false),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(&row(), &json!({"avatar_url": "javascript:x"}), &s, false),
            Err(PatchError::Invalid(_))
        ));
        assert!(matches!(
            apply(&row(), &json!({"email": "x@y.z"}), &s, false),
            Err(PatchError::Invalid(_))
        ));
    }
}
