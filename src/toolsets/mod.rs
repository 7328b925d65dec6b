//! Built-in toolsets: the tools mcpgate serves itself. Domain code only: no
//! rmcp or axum types here; `mcp/` adapts these to the protocol.

pub mod calc;
pub mod docs;
pub mod notes;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{auth::Principal, store::StoreError};

/// A tool as listed to clients.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub input_schema: Map<String, Value>,
    pub read_only: bool,
    pub destructive: bool,
}

/// A successful tool result: JSON that is both the text content and the
/// structured content of the MCP result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub text: String,
    pub structured: Option<Value>,
}

impl ToolOutput {
    pub fn json(value: Value) -> Self {
        ToolOutput {
            text: value.to_string(),
            structured: Some(value),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No tool of that name: a protocol error (JSON-RPC -32602).
    #[error("unknown tool: {0}")]
    UnknownTool(String),
    /// Arguments that do not match the schema: JSON-RPC -32602.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool ran and failed in a way the caller should read (`isError`).
    #[error("{0}")]
    Failed(String),
    /// The store could not be reached; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The enabled toolsets, looked up by tool name.
#[derive(Clone)]
pub struct Toolbox {
    calc: bool,
    notes: Option<notes::Notes>,
    docs: Option<Arc<docs::DocIndex>>,
    specs: Arc<Vec<ToolSpec>>,
}

impl Toolbox {
    pub fn new(calc: bool, notes: Option<notes::Notes>, docs: Option<Arc<docs::DocIndex>>) -> Self {
        let mut specs = Vec::new();
        if docs.is_some() {
            specs.extend(docs::specs());
        }
        if notes.is_some() {
            specs.extend(notes::specs());
        }
        if calc {
            specs.extend(calc::specs());
        }
        Toolbox {
            calc,
            notes,
            docs,
            specs: Arc::new(specs),
        }
    }

    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    pub fn docs(&self) -> Option<&Arc<docs::DocIndex>> {
        self.docs.as_ref()
    }

    pub async fn call(
        &self,
        name: &str,
        arguments: Map<String, Value>,
        principal: &Principal,
    ) -> Result<ToolOutput, ToolError> {
        if self.calc && calc::NAMES.contains(&name) {
            return calc::call(name, arguments);
        }
        if let Some(notes) = &self.notes
            && notes::NAMES.contains(&name)
        {
            return notes.call(name, arguments, principal).await;
        }
        if let Some(docs) = &self.docs
            && docs::NAMES.contains(&name)
        {
            return docs.call(name, arguments);
        }
        Err(ToolError::UnknownTool(name.to_owned()))
    }
}

/// Deserialize tool arguments, turning serde's message into a -32602 error.
pub(crate) fn parse_args<T: DeserializeOwned>(
    arguments: Map<String, Value>,
) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|e| ToolError::InvalidArguments(e.to_string()))
}

/// The JSON Schema object for an argument type.
pub(crate) fn schema_of<T: schemars::JsonSchema>() -> Map<String, Value> {
    match serde_json::to_value(schemars::schema_for!(T)) {
        Ok(Value::Object(map)) => map,
        _ => {
            let mut map = Map::new();
            map.insert("type".to_owned(), Value::String("object".to_owned()));
            map
        }
    }
}
