//! Environment overrides: `TOOLGATE__SECTION__KEY=value` applied to the parsed TOML table
//! before it is read into the typed config.

use super::{ConfigError, ENV_PREFIX};

/// Applies `TOOLGATE__A__B=value` to `table["a"]["b"]`. The value is read as a TOML value
/// when it parses as one (numbers, booleans, arrays), otherwise as a string.
pub(super) fn apply_env_override(
    table: &mut toml::Table,
    var: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let env_error = |reason: &str| ConfigError::Env {
        var: var.to_owned(),
        reason: reason.to_owned(),
    };
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(env_error("empty key segment"));
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));

    let mut root = toml::Value::Table(std::mem::take(table));
    let result = set_path(&mut root, &path, value).map_err(env_error);
    if let toml::Value::Table(t) = root {
        *table = t;
    }
    result
}

fn set_path(
    node: &mut toml::Value,
    path: &[String],
    value: toml::Value,
) -> Result<(), &'static str> {
    let Some((head, rest)) = path.split_first() else {
        return Err("no key");
    };
    let child = match node {
        toml::Value::Table(t) => {
            if rest.is_empty() {
                t.insert(head.clone(), value);
                return Ok(());
            }
            t.entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        }
        toml::Value::Array(items) => {
            let index: usize = head
                .parse()
                .map_err(|_| "array elements are addressed by index")?;
            let item = items.get_mut(index).ok_or("array index out of range")?;
            if rest.is_empty() {
                *item = value;
                return Ok(());
            }
            item
        }
        _ => return Err("key path goes through a non-table value"),
    };
    set_path(child, rest, value)
}
