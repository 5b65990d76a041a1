//! A verified token's claims, kept as one compact JSON text rather than a tree of values: the
//! verified-token cache holds one per live token, and only building a principal's tags (once
//! per token, see `policy::token_parts`) reads them.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Every claim of a verified token, as a compact JSON object (keys sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims(Box<str>);

impl Claims {
    /// Keeps `claims`, encoded once.
    pub fn new(claims: Map<String, Value>) -> Self {
        Self(Value::Object(claims).to_string().into_boxed_str())
    }

    /// The claims as a map.
    pub fn to_map(&self) -> Result<Map<String, Value>, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl Default for Claims {
    fn default() -> Self {
        Self("{}".into())
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(claims: Map<String, Value>) -> Self {
        Self::new(claims)
    }
}

impl Serialize for Claims {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_round_trip_and_serialize_as_the_object() {
        let Value::Object(map) =
            json!({ "sub": "a", "n": 1, "groups": ["x"], "act": { "sub": "b" } })
        else {
            unreachable!()
        };
        let claims = Claims::new(map.clone());
        assert_eq!(claims.to_map().unwrap(), map);
        assert_eq!(serde_json::to_value(&claims).unwrap(), Value::Object(map));
        assert_eq!(Claims::default().to_map().unwrap(), Map::new());
    }
}
