//! YAML written for readers of YAML 1.1 (docker-compose 1.x, Prometheus): through an emitter
//! that quotes what such readers would take for booleans or numbers (Redis's
//! `--appendonly yes` must stay the string "yes").

use serde::Serialize;

/// `value` as a YAML document (without the leading `---`), each string passed through
/// `literal` first (compose doubles every `$`).
pub fn to_string(value: &impl Serialize, literal: fn(&str) -> String) -> Result<String, String> {
    let value = serde_json::to_value(value).map_err(|e| e.to_string())?;
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out)
        .dump(&to_yaml(value, literal))
        .map_err(|e| e.to_string())?;
    Ok(format!("{}\n", out.trim_start_matches("---").trim_start()))
}

fn to_yaml(value: serde_json::Value, literal: fn(&str) -> String) -> yaml_rust2::Yaml {
    use serde_json::Value;
    use yaml_rust2::Yaml;
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(b),
        Value::Number(n) => n
            .as_i64()
            .map(Yaml::Integer)
            .unwrap_or_else(|| Yaml::Real(n.to_string())),
        Value::String(s) => Yaml::String(literal(&s)),
        Value::Array(items) => Yaml::Array(
            items
                .into_iter()
                .map(|item| to_yaml(item, literal))
                .collect(),
        ),
        Value::Object(map) => Yaml::Hash(
            map.into_iter()
                .map(|(k, v)| (Yaml::String(k), to_yaml(v, literal)))
                .collect(),
        ),
    }
}
