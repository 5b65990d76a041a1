//! MCP tool annotations (`readOnlyHint`, `destructiveHint`, `idempotentHint`, `openWorldHint`)
//! mapped to the `Tool` entity's attributes (`readOnly`, `destructive`, `idempotent`,
//! `openWorld`), for tools learned from an upstream's `tools/list`.
//!
//! Absent or non-boolean hints take the MCP specification's defaults, which are also the
//! cautious ones: not read-only, destructive, not idempotent, open world. The specification
//! makes `destructiveHint` meaningful only for a tool that is not read-only, so a read-only
//! tool is never destructive. `idempotentHint` is kept as given (57 read-only GitHub tools say
//! `false`; assuming more than the server says would not be cautious).
//! Hints come from the upstream, not the caller; an operator's `annotations` in the config
//! override them.

use serde_json::Value;

use crate::tools::Annotations;

/// Maps an MCP tool's `annotations` object (or its absence) to the entity attributes.
pub fn from_mcp(annotations: Option<&Value>) -> Annotations {
    let hint = |name: &str| {
        annotations
            .and_then(|a| a.get(name))
            .and_then(Value::as_bool)
    };
    let read_only = hint("readOnlyHint").unwrap_or(false);
    Annotations {
        read_only,
        destructive: !read_only && hint("destructiveHint").unwrap_or(true),
        idempotent: hint("idempotentHint").unwrap_or(false),
        open_world: hint("openWorldHint").unwrap_or(true),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tuple(a: Annotations) -> (bool, bool, bool, bool) {
        (a.read_only, a.destructive, a.idempotent, a.open_world)
    }

    #[test]
    fn hints_map_with_cautious_defaults() {
        assert_eq!(tuple(from_mcp(None)), (false, true, false, true));
        assert_eq!(
            tuple(from_mcp(Some(&json!({})))),
            (false, true, false, true)
        );
        assert_eq!(
            tuple(from_mcp(Some(
                &json!({ "readOnlyHint": true, "openWorldHint": false })
            ))),
            (true, false, false, false)
        );
        assert_eq!(
            tuple(from_mcp(Some(&json!({
                "readOnlyHint": false, "destructiveHint": false, "idempotentHint": true
            })))),
            (false, false, true, true)
        );
        // A read-only tool is not destructive even if it says so.
        assert_eq!(
            tuple(from_mcp(Some(
                &json!({ "readOnlyHint": true, "destructiveHint": true })
            ))),
            (true, false, false, true)
        );
        // Non-boolean hints are ignored, not coerced.
        assert_eq!(
            tuple(from_mcp(Some(
                &json!({ "readOnlyHint": "yes", "destructiveHint": 0 })
            ))),
            (false, true, false, true)
        );
    }
}
