//! `calc`: arithmetic on two numbers. Results that are not finite numbers
//! (division by zero, overflow) are tool errors the caller can read.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolError, ToolOutput, ToolSpec, parse_args, schema_of};

pub const NAMES: &[&str] = &["add", "subtract", "multiply", "divide"];

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Operands {
    /// The first operand.
    pub a: f64,
    /// The second operand.
    pub b: f64,
}

pub fn specs() -> Vec<ToolSpec> {
    let schema = schema_of::<Operands>();
    [
        ("add", "Add", "Add two numbers: a + b."),
        ("subtract", "Subtract", "Subtract two numbers: a - b."),
        ("multiply", "Multiply", "Multiply two numbers: a * b."),
        (
            "divide",
            "Divide",
            "Divide two numbers: a / b. Division by zero is an error.",
        ),
    ]
    .into_iter()
    .map(|(name, title, description)| ToolSpec {
        name,
        title,
        description,
        input_schema: schema.clone(),
        read_only: true,
        destructive: false,
    })
    .collect()
}

pub fn call(name: &str, arguments: Map<String, Value>) -> Result<ToolOutput, ToolError> {
    let Operands { a, b } = parse_args(arguments)?;
    let result = compute(name, a, b)?;
    Ok(ToolOutput {
        text: format_number(result),
        structured: Some(json!({ "result": result })),
    })
}

pub fn compute(name: &str, a: f64, b: f64) -> Result<f64, ToolError> {
    let result = match name {
        "add" => a + b,
        "subtract" => a - b,
        "multiply" => a * b,
        "divide" => {
            if b == 0.0 {
                return Err(ToolError::Failed(
                    "division by zero: b must not be 0".to_owned(),
                ));
            }
            a / b
        }
        other => return Err(ToolError::UnknownTool(other.to_owned())),
    };
    if result.is_finite() {
        Ok(result)
    } else {
        Err(ToolError::Failed(format!(
            "{name}({a}, {b}) overflows a 64-bit float"
        )))
    }
}

/// Whole numbers print without a fraction (`5`, not `5.0`).
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn arithmetic() {
        assert_eq!(
            call("add", args(json!({"a": 2, "b": 3}))).unwrap().text,
            "5"
        );
        assert_eq!(
            call("subtract", args(json!({"a": 2, "b": 3})))
                .unwrap()
                .text,
            "-1"
        );
        assert_eq!(
            call("multiply", args(json!({"a": 1.5, "b": 2})))
                .unwrap()
                .text,
            "3"
        );
        assert_eq!(
            call("divide", args(json!({"a": 1, "b": 4}))).unwrap().text,
            "0.25"
        );
        assert_eq!(
            call("add", args(json!({"a": 2, "b": 3})))
                .unwrap()
                .structured,
            Some(json!({"result": 5.0}))
        );
    }

    #[test]
    fn division_by_zero_is_a_tool_error() {
        let err = call("divide", args(json!({"a": 1, "b": 0}))).unwrap_err();
        assert!(
            matches!(err, ToolError::Failed(ref m) if m.contains("division by zero")),
            "{err}"
        );
    }

    #[test]
    fn overflow_is_a_tool_error() {
        let err = call("multiply", args(json!({"a": 1e308, "b": 1e308}))).unwrap_err();
        assert!(matches!(err, ToolError::Failed(_)));
    }

    #[test]
    fn bad_arguments_are_invalid_params() {
        for bad in [
            json!({"a": "x", "b": 1}),
            json!({"a": 1}),
            json!({"a": 1, "b": 2, "c": 3}),
        ] {
            let err = call("add", args(bad)).unwrap_err();
            assert!(matches!(err, ToolError::InvalidArguments(_)), "{err}");
        }
    }

    #[test]
    fn schema_requires_both_operands() {
        let schema = schema_of::<Operands>();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["a", "b"]));
    }
}
