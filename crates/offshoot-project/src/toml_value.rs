//! Canonical text for TOML values used as metadata, so equal values compare equal.

use toml::Value;

/// Strings as they are; everything else in TOML notation with sorted table keys.
pub fn canonical(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => notation(other),
    }
}

fn notation(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(notation).collect::<Vec<_>>().join(", "))
        }
        Value::Table(table) => {
            let mut entries: Vec<(&String, &Value)> = table.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> =
                entries.iter().map(|(k, v)| format!("{k} = {}", notation(v))).collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}
