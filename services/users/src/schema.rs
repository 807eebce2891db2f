//! The admin's schema for custom attributes: a JSON Schema the whole `attributes` object must
//! satisfy, and per-attribute rules for who may read it, who may write it, and whether it
//! may change once set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use utoipa::ToSchema;

/// Who may read or write an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The profile's owner and admins.
    #[default]
    User,
    /// Admins only.
    Admin,
}

/// One attribute's rules; an attribute without rules is read and written by its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub read: Audience,
    #[serde(default)]
    pub write: Audience,
    /// Once set, never changed or removed (not even by an admin).
    #[serde(default)]
    pub immutable: bool,
}

/// The schema as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AttributeSchema {
    /// Grows by one with every change.
    pub version: i32,
    /// A JSON Schema (draft 2020-12 unless `$schema` says otherwise) for the `attributes`
    /// object.
    #[schema(value_type = Object)]
    pub schema: Value,
    pub rules: BTreeMap<String, Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("not a valid JSON Schema: {0}")]
    Invalid(String),
    #[error("the stored rules do not parse: {0}")]
    Rules(#[from] serde_json::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A schema ready to use. Its validator is compiled on the first check, not on load: reading
/// a profile needs only the rules.
pub struct Compiled {
    pub schema: AttributeSchema,
    validator: std::sync::OnceLock<Result<jsonschema::Validator, String>>,
}

impl Compiled {
    /// Checks now that `schema` is a JSON Schema (for a schema being set).
    pub fn new(schema: AttributeSchema) -> Result<Self, SchemaError> {
        let compiled = Self::stored(schema);
        match compiled.validator() {
            Ok(_) => Ok(compiled),
            Err(reason) => Err(SchemaError::Invalid(reason.clone())),
        }
    }

    /// A schema already in force (checked when it was set), compiled when first needed.
    fn stored(schema: AttributeSchema) -> Self {
        Self {
            schema,
            validator: std::sync::OnceLock::new(),
        }
    }

    fn validator(&self) -> &Result<jsonschema::Validator, String> {
        self.validator.get_or_init(|| {
            if !self.schema.schema.is_object() {
                return Err("must be an object (a JSON Schema document)".to_owned());
            }
            jsonschema::validator_for(&self.schema.schema).map_err(|e| e.to_string())
        })
    }

    /// Why `attributes` does not fit, one line per failure (at most 20); empty when it does.
    pub fn misfit(&self, attributes: &Value) -> Vec<String> {
        match self.validator() {
            Ok(validator) => validator
                .iter_errors(attributes)
                .take(20)
                .map(|e| e.to_string())
                .collect(),
            Err(reason) => vec![format!("the schema in force does not compile: {reason}")],
        }
    }

    pub fn rule(&self, attribute: &str) -> Rule {
        self.schema
            .rules
            .get(attribute)
            .copied()
            .unwrap_or_default()
    }

    /// The attributes `admin` (or the profile's user) may see.
    pub fn visible(&self, attributes: &Value, admin: bool) -> Value {
        let Value::Object(map) = attributes else {
            return Value::Object(Map::new());
        };
        let shown = map
            .iter()
            .filter(|(name, _)| admin || self.rule(name).read == Audience::User)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Value::Object(shown)
    }
}

/// The current schema, under a share lock when `lock` so it cannot change before the
/// caller's transaction ends.
pub async fn current(conn: &mut PgConnection, lock: bool) -> Result<Compiled, SchemaError> {
    let sql = if lock {
        "SELECT version, schema, rules FROM profile_schema FOR SHARE"
    } else {
        "SELECT version, schema, rules FROM profile_schema"
    };
    let (version, schema, rules): (i32, Value, Value) =
        sqlx::query_as(sql).fetch_one(&mut *conn).await?;
    Ok(Compiled::stored(AttributeSchema {
        version,
        schema,
        rules: serde_json::from_value(rules)?,
    }))
}

/// Schemas kept once read, by version. A version never changes (a new schema gets the next
/// number), so the kept one is right for as long as the database says its version is
/// current, whichever instance changed it: a read path asks the database for the version
/// in the statement that reads the profile, and reads the schema only when it moved.
#[derive(Default)]
pub struct Cache(arc_swap::ArcSwapOption<Compiled>);

impl Cache {
    /// The schema of `version` (or a newer one, if it changed since that was read).
    pub async fn at(
        &self,
        conn: &mut PgConnection,
        version: i32,
    ) -> Result<std::sync::Arc<Compiled>, SchemaError> {
        if let Some(kept) = self.0.load_full().filter(|c| c.schema.version == version) {
            return Ok(kept);
        }
        let read = std::sync::Arc::new(current(conn, false).await?);
        let newer = self
            .0
            .load()
            .as_ref()
            .is_none_or(|kept| kept.schema.version < read.schema.version);
        if newer {
            self.0.store(Some(read.clone()));
        }
        Ok(read)
    }
}

/// A profile that no longer fits a new schema.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Misfit {
    pub user_id: uuid::Uuid,
    pub reasons: Vec<String>,
}

/// Replaces the schema (locking it against concurrent profile writes) and checks every
/// profile against it; the new schema and the profiles that no longer fit (at most `max`
/// listed, all counted).
pub async fn replace(
    conn: &mut PgConnection,
    schema: Value,
    rules: BTreeMap<String, Rule>,
    max: usize,
) -> Result<(AttributeSchema, Vec<Misfit>, i64), SchemaError> {
    let (version,): (i32,) = sqlx::query_as("SELECT version FROM profile_schema FOR UPDATE")
        .fetch_one(&mut *conn)
        .await?;
    let compiled = Compiled::new(AttributeSchema {
        version: version + 1,
        schema,
        rules,
    })?;
    sqlx::query(
        "UPDATE profile_schema SET version = $1, schema = $2, rules = $3, updated_at = now()",
    )
    .bind(compiled.schema.version)
    .bind(&compiled.schema.schema)
    .bind(serde_json::to_value(&compiled.schema.rules)?)
    .execute(&mut *conn)
    .await?;
    let mut misfits = Vec::new();
    let mut count = 0i64;
    let mut after = uuid::Uuid::nil();
    loop {
        let page: Vec<(uuid::Uuid, Value)> = sqlx::query_as(
            "SELECT user_id, attributes FROM profiles WHERE user_id > $1 ORDER BY user_id LIMIT 1000",
        )
        .bind(after)
        .fetch_all(&mut *conn)
        .await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        for (user_id, attributes) in &page {
            let reasons = compiled.misfit(attributes);
            if !reasons.is_empty() {
                count += 1;
                if misfits.len() < max {
                    misfits.push(Misfit {
                        user_id: *user_id,
                        reasons,
                    });
                }
            }
        }
    }
    Ok((compiled.schema, misfits, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compiled() -> Compiled {
        Compiled::new(AttributeSchema {
            version: 2,
            schema: json!({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}),
            rules: BTreeMap::from([(
                "risk".to_owned(),
                Rule {
                    read: Audience::Admin,
                    write: Audience::Admin,
                    immutable: false,
                },
            )]),
        })
        .unwrap()
    }

    #[test]
    fn attributes_are_checked_against_the_schema() {
        let c = compiled();
        assert!(c.misfit(&json!({"age": 3})).is_empty());
        assert_eq!(c.misfit(&json!({"age": -1})).len(), 1);
    }

    #[test]
    fn admin_only_attributes_are_hidden_from_the_user() {
        let c = compiled();
        let all = json!({"age": 3, "risk": "high"});
        assert_eq!(c.visible(&all, false), json!({"age": 3}));
        assert_eq!(c.visible(&all, true), all);
    }

    #[test]
    fn a_schema_that_is_not_one_is_refused() {
        let bad = AttributeSchema {
            version: 1,
            schema: json!({"type": "no-such-type"}),
            rules: BTreeMap::new(),
        };
        assert!(Compiled::new(bad).is_err());
    }
}
