//! Fuzz target: the JSON Schema → Cedar mapping of a tool's input schema and the conversion
//! of arguments to Cedar values (`src/tools/input.rs`).
//!
//! Input: a JSON array `[schema, arguments]`, or any JSON value as the schema (with `{}` as
//! the arguments).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use toolgate::policy::{InputType, action_declaration, schema_from_parts};

/// The schema stub the generated action declarations are checked against.
const STUB: &str = include_str!("../../schemas/toolgate.cedarschema");

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (schema, arguments) = match value {
        Value::Array(mut pair) if pair.len() == 2 => {
            let arguments = pair.pop().unwrap_or_default();
            (pair.pop().unwrap_or_default(), arguments)
        }
        other => (other, json!({})),
    };
    let Ok(input) = InputType::from_tool_schema(&schema) else {
        return;
    };
    let _ = input.to_cedar(&arguments, "");
    // A mapped schema must give a Cedar schema that parses, and values of its own type must
    // convert: otherwise a tool is accepted that no policy set can load or no call can pass.
    let declaration = action_declaration("fuzz___tool", &input);
    if let Err(e) = schema_from_parts(STUB, &declaration) {
        panic!("mapped schema does not parse as Cedar: {e}\n{declaration}");
    }
    for all_fields in [false, true] {
        let example = input.example(all_fields);
        if let Err(e) = input.to_cedar(&example, "") {
            panic!(
                "example {example} of {} does not convert: {e:?}",
                input.cedar_type()
            );
        }
    }
});
