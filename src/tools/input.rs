//! Typed tool arguments for Cedar: a tool's input JSON Schema mapped to a Cedar record type
//! (for the generated schema) and argument values converted to Cedar values (per request).
//!
//! The mapping is total or it refuses: every schema construct either becomes a Cedar type
//! that policies can read, or the tool is refused at load with the schema path. Nothing is
//! passed untyped and nothing is dropped.
//!
//! | JSON Schema | Cedar |
//! |---|---|
//! | `string` (with or without `enum`) | `String` |
//! | `integer` | `Long` |
//! | `number` | `Long`; a value with a fractional part is refused at call time |
//! | `number` with `"format": "decimal"` | `decimal` (at most 4 fractional digits, read from the JSON literal) |
//! | `boolean` | `Bool` |
//! | `array` with `items` | `Set<items>` |
//! | `object` with `properties` | record; `required` fields required, others optional |
//! | `["T", "null"]` | `T`, optional; `null` is treated as absent |
//! | free-form objects, `oneOf`, `anyOf`, `allOf`, `not`, `$ref`, other unions | refused |

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use cedar_policy::RestrictedExpression;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::tools::ArgumentProblem;

/// Largest number of fractional digits Cedar's `decimal` holds.
const DECIMAL_PLACES: usize = 4;

/// The JSON text a call's arguments were parsed from. A parsed number is an `f64`, which has
/// lost digits (`499.99990000000001` parses to the same float as `499.9999`), so decimals are
/// read from this text, and only for tools with a decimal argument.
#[derive(Debug, Clone, Copy)]
pub struct ArgumentsText<'a> {
    /// The JSON document: a request body (checked as UTF-8 only if read).
    pub json: &'a [u8],
    /// The member names leading from the document to the arguments object.
    pub at: &'static [&'static str],
}

impl<'a> ArgumentsText<'a> {
    /// The arguments object's own text.
    fn arguments(&self) -> Option<&'a RawValue> {
        let mut raw: &'a RawValue = serde_json::from_slice(self.json).ok()?;
        for key in self.at {
            raw = serde_json::from_str::<HashMap<String, &'a RawValue>>(raw.get())
                .ok()?
                .remove(*key)?;
        }
        Some(raw)
    }
}

/// A schema construct that cannot be mapped to a Cedar type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at `{path}`: {reason}")]
pub struct MappingError {
    /// JSON pointer into the input schema.
    pub path: String,
    /// Why it cannot be mapped.
    pub reason: String,
}

/// The Cedar type of an argument value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputType {
    /// Cedar `String`.
    String,
    /// Cedar `Long`.
    Long,
    /// Cedar `decimal`.
    Decimal,
    /// Cedar `Bool`.
    Bool,
    /// Cedar `Set<T>`.
    Set(Box<InputType>),
    /// Cedar record, closed: undeclared fields are refused.
    Record(BTreeMap<String, Field>),
}

/// One record field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Its type.
    pub ty: InputType,
    /// Whether it must be present.
    pub required: bool,
}

impl InputType {
    /// Maps a tool's input schema (an object schema) to a record type.
    pub fn from_tool_schema(schema: &Value) -> Result<Self, MappingError> {
        match schema {
            Value::Object(obj) if obj.get("type").is_none_or(|t| t == "object") => {
                map_object(obj, "", true)
            }
            _ => Err(MappingError {
                path: String::new(),
                reason: "a tool's input schema must be an object schema".to_owned(),
            }),
        }
    }

    /// The Cedar schema syntax for this type.
    pub fn cedar_type(&self) -> String {
        match self {
            InputType::String => "String".to_owned(),
            InputType::Long => "Long".to_owned(),
            InputType::Decimal => "decimal".to_owned(),
            InputType::Bool => "Bool".to_owned(),
            InputType::Set(inner) => format!("Set<{}>", inner.cedar_type()),
            InputType::Record(fields) => {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(name, f)| {
                        format!(
                            "\"{name}\"{}: {}",
                            if f.required { "" } else { "?" },
                            f.ty.cedar_type()
                        )
                    })
                    .collect();
                format!("{{{}}}", body.join(", "))
            }
        }
    }

    /// A value of this type, for checking at load time that converted arguments conform to
    /// the generated schema: with `all_fields`, every optional record field is present and
    /// every set has one element; without, only required fields and empty sets.
    pub fn example(&self, all_fields: bool) -> Value {
        match self {
            InputType::String => Value::String("example".to_owned()),
            InputType::Long => Value::from(1),
            InputType::Decimal => serde_json::json!(1.5),
            InputType::Bool => Value::Bool(true),
            InputType::Set(inner) if all_fields => Value::Array(vec![inner.example(true)]),
            InputType::Set(_) => Value::Array(Vec::new()),
            InputType::Record(fields) => Value::Object(
                fields
                    .iter()
                    .filter(|(_, f)| all_fields || f.required)
                    .map(|(name, f)| (name.clone(), f.ty.example(all_fields)))
                    .collect(),
            ),
        }
    }

    /// Converts an argument value (already checked against the JSON Schema) to a Cedar value.
    /// A problem's `path` is a JSON pointer below `path`. Decimals are read from the value's
    /// numbers, which keep only what an `f64` holds: a call uses [`Self::to_cedar_exact`].
    pub fn to_cedar(
        &self,
        value: &Value,
        path: &str,
    ) -> Result<RestrictedExpression, ArgumentProblem> {
        self.to_cedar_exact(value, path, None)
    }

    /// [`Self::to_cedar`] reading decimals from `text`, the JSON that `value` was parsed from.
    pub fn to_cedar_exact(
        &self,
        value: &Value,
        path: &str,
        text: Option<ArgumentsText<'_>>,
    ) -> Result<RestrictedExpression, ArgumentProblem> {
        let raw = match text {
            Some(text) if self.has_decimal() => {
                Some(text.arguments().ok_or_else(|| ArgumentProblem {
                    path: String::new(),
                    message: UNREADABLE.to_owned(),
                })?)
            }
            _ => None,
        };
        self.convert(value, raw).map_err(|mut problem| {
            problem.path.insert_str(0, path);
            problem
        })
    }

    /// Whether a decimal is somewhere in this type (only then is the JSON text read).
    fn has_decimal(&self) -> bool {
        match self {
            InputType::Decimal => true,
            InputType::Set(inner) => inner.has_decimal(),
            InputType::Record(fields) => fields.values().any(|f| f.ty.has_decimal()),
            InputType::String | InputType::Long | InputType::Bool => false,
        }
    }

    /// [`Self::to_cedar`] with problems located relative to `value`, whose JSON text is `raw`
    /// when known and needed. The pointer is only built for a problem, from the failing value
    /// up: a call that converts builds none.
    fn convert(
        &self,
        value: &Value,
        raw: Option<&RawValue>,
    ) -> Result<RestrictedExpression, ArgumentProblem> {
        let problem = |message: &str| ArgumentProblem {
            path: String::new(),
            message: message.to_owned(),
        };
        match (self, value) {
            (InputType::String, Value::String(s)) => {
                Ok(RestrictedExpression::new_string(s.clone()))
            }
            (InputType::Bool, Value::Bool(b)) => Ok(RestrictedExpression::new_bool(*b)),
            (InputType::Long, Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    return Ok(RestrictedExpression::new_long(i));
                }
                match n.as_f64() {
                    // 3.0 is the integer 3; 3.5 cannot be a Cedar Long and is refused, not rounded.
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        Ok(RestrictedExpression::new_long(f as i64))
                    }
                    _ => Err(problem(
                        "not an integer: the policy sees this number as a Cedar Long",
                    )),
                }
            }
            (InputType::Decimal, Value::Number(n)) => {
                let literal = match raw {
                    Some(raw) => Cow::Borrowed(raw.get().trim()),
                    None => Cow::Owned(n.to_string()),
                };
                decimal_literal(&literal)
                    .map(RestrictedExpression::new_decimal)
                    .map_err(problem)
            }
            (InputType::Set(inner), Value::Array(items)) => {
                let raws: Option<Vec<&RawValue>> = match raw {
                    Some(raw) if inner.has_decimal() => {
                        Some(serde_json::from_str(raw.get()).map_err(|_| problem(UNREADABLE))?)
                    }
                    _ => None,
                };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_raw = child(raws.as_ref().map(|r| r.get(i).copied()))
                        .map_err(|p| p.below(&i.to_string()))?;
                    out.push(
                        inner
                            .convert(item, item_raw)
                            .map_err(|p| p.below(&i.to_string()))?,
                    );
                }
                Ok(RestrictedExpression::new_set(out))
            }
            (InputType::Record(fields), Value::Object(map)) => {
                for key in map.keys() {
                    if !fields.contains_key(key) {
                        return Err(problem("unknown field").below(key));
                    }
                }
                let raws: Option<HashMap<String, &RawValue>> = match raw {
                    Some(raw) if self.has_decimal() => {
                        Some(serde_json::from_str(raw.get()).map_err(|_| problem(UNREADABLE))?)
                    }
                    _ => None,
                };
                let mut pairs = Vec::with_capacity(fields.len());
                for (name, field) in fields {
                    match map.get(name) {
                        None | Some(Value::Null) if !field.required => {}
                        None | Some(Value::Null) => {
                            return Err(problem("required field is missing").below(name));
                        }
                        Some(v) => {
                            let field_raw = match &raws {
                                Some(raws) if field.ty.has_decimal() => {
                                    child(Some(raws.get(name).copied()))
                                        .map_err(|p| p.below(name))?
                                }
                                _ => None,
                            };
                            pairs.push((
                                name.clone(),
                                field.ty.convert(v, field_raw).map_err(|p| p.below(name))?,
                            ));
                        }
                    }
                }
                RestrictedExpression::new_record(pairs).map_err(|e| problem(&e.to_string()))
            }
            _ => Err(problem("value does not have the declared type")),
        }
    }
}

impl ArgumentProblem {
    /// The same problem seen from the parent: `/segment` (escaped as RFC 6901 asks) is put in
    /// front of the pointer.
    fn below(mut self, segment: &str) -> Self {
        self.path
            .insert_str(0, &format!("/{}", escape_pointer(segment)));
        self
    }
}

/// A JSON Pointer reference token (RFC 6901): `~` and `/` escaped.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Why an argument's JSON text could not be followed; it is the text the value was parsed
/// from, so this is a broker bug, and the call is refused rather than decided on a float.
const UNREADABLE: &str = "cannot read the argument's JSON text";

/// The text of one member or item, when the parent's text was read (`Some`): it must be there.
fn child(found: Option<Option<&RawValue>>) -> Result<Option<&RawValue>, ArgumentProblem> {
    match found {
        None => Ok(None),
        Some(Some(raw)) => Ok(Some(raw)),
        Some(None) => Err(ArgumentProblem {
            path: String::new(),
            message: UNREADABLE.to_owned(),
        }),
    }
}

/// Renders a JSON number literal as a Cedar decimal literal, or says why it is not one. The
/// literal's own digits are checked, so nothing is rounded: more than 4 fractional digits,
/// an exponent or a value outside Cedar's range (an `i64` scaled by 10^4) is refused.
pub fn decimal_literal(number: &str) -> Result<String, &'static str> {
    if number.contains(['e', 'E']) {
        return Err("not representable as a Cedar decimal: write it without an exponent");
    }
    let (sign, unsigned) = match number.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", number),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let frac_part = frac_part.trim_end_matches('0');
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !digits(int_part) || !digits(frac_part) {
        return Err("not a JSON number");
    }
    if frac_part.len() > DECIMAL_PLACES {
        return Err(
            "not representable as a Cedar decimal: more than 4 fractional digits (refused, not rounded)",
        );
    }
    let out_of_range = "not representable as a Cedar decimal: outside -922337203685477.5808 to 922337203685477.5807";
    // The value in units of 10^-4, as Cedar holds it; 30 digits cannot overflow an i128.
    let scaled = format!("{int_part}{frac_part:0<DECIMAL_PLACES$}");
    if scaled.len() > 30 {
        return Err(out_of_range);
    }
    let magnitude: i128 = scaled.parse().map_err(|_| out_of_range)?;
    let value = if sign.is_empty() {
        magnitude
    } else {
        -magnitude
    };
    if i64::try_from(value).is_err() {
        return Err(out_of_range);
    }
    let frac = if frac_part.is_empty() { "0" } else { frac_part };
    Ok(format!("{sign}{int_part}.{frac}"))
}

/// Keywords whose meaning a Cedar type cannot carry; a schema using them is refused.
const UNSUPPORTED_KEYWORDS: &[&str] = &[
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "$ref",
    "if",
    "patternProperties",
];

fn map_schema(schema: &Value, path: &str) -> Result<(InputType, bool), MappingError> {
    let refuse = |reason: String| MappingError {
        path: path.to_owned(),
        reason,
    };
    let Value::Object(obj) = schema else {
        return Err(refuse(
            "untyped schema (`true`, `false` or not an object)".to_owned(),
        ));
    };
    for keyword in UNSUPPORTED_KEYWORDS {
        if obj.contains_key(*keyword) {
            return Err(refuse(format!(
                "`{keyword}` cannot be mapped to a Cedar type"
            )));
        }
    }
    let (type_name, nullable) = match obj.get("type") {
        Some(Value::String(t)) => (t.as_str(), false),
        Some(Value::Array(types)) => {
            let non_null: Vec<&str> = types
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            match non_null.as_slice() {
                [single] if types.len() == 2 => (*single, true),
                _ => {
                    return Err(refuse(
                        "a union of types cannot be mapped to a Cedar type".to_owned(),
                    ));
                }
            }
        }
        None => match obj.get("enum") {
            Some(Value::Array(values))
                if !values.is_empty() && values.iter().all(Value::is_string) =>
            {
                ("string", false)
            }
            _ => return Err(refuse("schema without `type`".to_owned())),
        },
        Some(_) => return Err(refuse("`type` is neither a string nor an array".to_owned())),
    };
    let ty = match type_name {
        "string" => InputType::String,
        "integer" => InputType::Long,
        "number" => match obj.get("format").and_then(Value::as_str) {
            Some("decimal") => InputType::Decimal,
            _ => InputType::Long,
        },
        "boolean" => InputType::Bool,
        "array" => {
            let items = obj
                .get("items")
                .ok_or_else(|| refuse("array without `items`".to_owned()))?;
            let (inner, _) = map_schema(items, &format!("{path}/items"))?;
            InputType::Set(Box::new(inner))
        }
        "object" => map_object(obj, path, false)?,
        other => {
            return Err(refuse(format!(
                "type `{other}` cannot be mapped to a Cedar type"
            )));
        }
    };
    Ok((ty, nullable))
}

fn map_object(
    obj: &serde_json::Map<String, Value>,
    path: &str,
    top_level: bool,
) -> Result<InputType, MappingError> {
    let refuse = |reason: &str| MappingError {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    for keyword in UNSUPPORTED_KEYWORDS {
        if obj.contains_key(*keyword) {
            return Err(refuse(&format!(
                "`{keyword}` cannot be mapped to a Cedar type"
            )));
        }
    }
    let properties = match obj.get("properties") {
        None => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => return Err(refuse("`properties` is not an object")),
    };
    let has_properties = properties.is_some_and(|p| !p.is_empty());
    if !has_properties && !top_level {
        // A free-form object cannot be a Cedar record: no policy could read it.
        return Err(refuse(
            "an object without declared `properties` cannot be mapped to a Cedar record",
        ));
    }
    if matches!(obj.get("additionalProperties"), Some(Value::Object(_))) {
        return Err(refuse(
            "`additionalProperties` with a schema (a map) cannot be mapped to a Cedar record",
        ));
    }
    let required: Vec<&str> = match obj.get("required") {
        None => Vec::new(),
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(refuse("`required` is not an array")),
    };
    let mut fields = BTreeMap::new();
    if let Some(properties) = properties {
        for (name, schema) in properties {
            let child = format!("{path}/properties/{}", escape_pointer(name));
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_control() || c == '"' || c == '\\')
            {
                return Err(MappingError {
                    path: child,
                    reason: "property name cannot be a Cedar attribute".to_owned(),
                });
            }
            let (ty, nullable) = map_schema(schema, &child)?;
            fields.insert(
                name.clone(),
                Field {
                    ty,
                    required: required.contains(&name.as_str()) && !nullable,
                },
            );
        }
    }
    Ok(InputType::Record(fields))
}

#[cfg(test)]
mod tests;
