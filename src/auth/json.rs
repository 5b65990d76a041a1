//! Stage 1 helper: strict JSON for token parts. Duplicate member names are refused, and
//! nesting depth, member counts and array lengths are bounded while parsing, before any
//! claim is looked at.
//!
//! Why duplicates are refused: RFC 7519 §4 lets a parser reject them, and parsers disagree on
//! which duplicate wins (first or last). A token whose meaning depends on the parser is an
//! attack on whichever component reads it differently, so we refuse rather than pick one.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Deepest nesting accepted in a token header or claims set (the object itself is depth 1).
/// Room for a full `act` chain plus structured claims; far below serde_json's own limit.
pub const MAX_DEPTH: usize = 16;

/// Most members accepted in one JSON object of a token part (header or claims).
pub const MAX_MEMBERS: usize = 64;

/// Most items accepted in one JSON array of a token part.
pub const MAX_ARRAY_ITEMS: usize = 256;

/// Why a token part is not acceptable JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictJsonError {
    /// Not JSON, or trailing data after the value.
    Syntax,
    /// An object names the same member twice.
    DuplicateKey,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// An object or array with more entries than allowed.
    TooManyEntries,
}

const DUPLICATE: &str = "toolgate:duplicate-key";
const TOO_DEEP: &str = "toolgate:too-deep";
const TOO_MANY: &str = "toolgate:too-many";

/// Parses `bytes` as one JSON value under the strict rules.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict { depth: 1 }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            // Our own errors carry a marker; anything else is a syntax error.
            let text = e.to_string();
            if text.starts_with(DUPLICATE) {
                StrictJsonError::DuplicateKey
            } else if text.starts_with(TOO_DEEP) {
                StrictJsonError::TooDeep
            } else if text.starts_with(TOO_MANY) {
                StrictJsonError::TooManyEntries
            } else {
                StrictJsonError::Syntax
            }
        })?;
    Ok(value)
}

struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(TOO_DEEP));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict {
            depth: self.depth + 1,
        })? {
            if items.len() == MAX_ARRAY_ITEMS {
                return Err(de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(TOO_DEEP));
        }
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            if map.len() == MAX_MEMBERS {
                return Err(de::Error::custom(TOO_MANY));
            }
            let value = access.next_value_seed(Strict {
                depth: self.depth + 1,
            })?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_depth_and_counts_are_refused() {
        assert!(parse(br#"{"a":1,"b":[1,2,{"c":null}]}"#).is_ok());
        assert_eq!(
            parse(br#"{"a":1,"a":2}"#),
            Err(StrictJsonError::DuplicateKey)
        );
        assert_eq!(
            parse(br#"{"x":{"a":1,"a":1}}"#),
            Err(StrictJsonError::DuplicateKey)
        );
        let deep = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(parse(deep.as_bytes()), Err(StrictJsonError::TooDeep));
        let ok = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(ok.as_bytes()).is_ok());
        let many: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("\"k{i}\":0")).collect();
        let many = format!("{{{}}}", many.join(","));
        assert_eq!(parse(many.as_bytes()), Err(StrictJsonError::TooManyEntries));
        assert_eq!(parse(b"{} x"), Err(StrictJsonError::Syntax));
        assert_eq!(parse(b"1e400"), Err(StrictJsonError::Syntax));
    }
}
