//! The conformance suite's resources, prompts and completions, with the exact texts its
//! scenarios describe.

use rmcp::{
    ErrorData,
    model::{
        CompleteRequestParams, CompletionInfo, ContentBlock, GetPromptRequestParams,
        GetPromptResult, Prompt, PromptArgument, PromptMessage, Reference, Resource,
        ResourceContents, ResourceTemplate, Role,
    },
};

/// A 1x1 red PNG.
pub const PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mP4z8AAAAMBAQD3A0FDAAAAAElFTkSuQmCC";
/// Eight samples of 8 kHz, 8-bit mono silence.
pub const WAV_BASE64: &str =
    "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA==";

pub const STATIC_TEXT: &str = "test://static-text";
pub const STATIC_BINARY: &str = "test://static-binary";
pub const WATCHED: &str = "test://watched-resource";
/// Unlisted: a read of it (and a get of the prompt `echo_meta`) answers with
/// the request's `_meta` as JSON text, so a test sees what the gateway forwarded.
pub const META_ECHO: &str = "test://echo-meta";
pub const META_ECHO_PROMPT: &str = "echo_meta";
/// Unlisted: reading it (or getting the prompt `asks_sampling`) asks the
/// client to sample first, and answers `sampled: <text>`.
pub const ASKS_SAMPLING: &str = "test://asks-sampling";
pub const ASKS_SAMPLING_PROMPT: &str = "asks_sampling";
const TEMPLATE: &str = "test://template/{id}/data";
const TEMPLATE_PREFIX: &str = "test://template/";
const TEMPLATE_SUFFIX: &str = "/data";

pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(STATIC_TEXT, "static-text")
            .with_description("A static text resource")
            .with_mime_type("text/plain"),
        Resource::new(STATIC_BINARY, "static-binary")
            .with_description("A static binary resource (1x1 PNG)")
            .with_mime_type("image/png"),
        Resource::new(WATCHED, "watched-resource")
            .with_description("A resource clients may subscribe to; touch_resource changes it")
            .with_mime_type("text/plain"),
    ]
}

pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(TEMPLATE, "template-data")
            .with_description("JSON data for any {id}")
            .with_mime_type("application/json"),
    ]
}

/// `version` counts the changes made to the watched resource.
pub fn read(uri: &str, version: u64) -> Result<Vec<ResourceContents>, ErrorData> {
    let contents = match uri {
        STATIC_TEXT => {
            ResourceContents::text("This is the content of the static text resource.", uri)
        }
        STATIC_BINARY => ResourceContents::blob(PNG_BASE64, uri).with_mime_type("image/png"),
        WATCHED => {
            ResourceContents::text(format!("Watched resource content, version {version}."), uri)
        }
        _ => {
            let Some(id) = template_id(uri) else {
                return Err(ErrorData::resource_not_found(
                    format!("no resource {uri}"),
                    Some(serde_json::json!({ "uri": uri })),
                ));
            };
            let body = serde_json::json!({
                "id": id,
                "templateTest": true,
                "data": format!("Data for ID: {id}"),
            });
            ResourceContents::text(body.to_string(), uri).with_mime_type("application/json")
        }
    };
    Ok(vec![contents])
}

fn template_id(uri: &str) -> Option<&str> {
    let id = uri
        .strip_prefix(TEMPLATE_PREFIX)?
        .strip_suffix(TEMPLATE_SUFFIX)?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

pub fn prompts() -> Vec<Prompt> {
    let required = |name: &str, description: &str| {
        PromptArgument::new(name)
            .with_description(description)
            .with_required(true)
    };
    vec![
        Prompt::new(
            "test_simple_prompt",
            Some("A simple prompt without arguments"),
            None,
        ),
        Prompt::new(
            "test_prompt_with_arguments",
            Some("A prompt with two required arguments"),
            Some(vec![
                required("arg1", "First test argument"),
                required("arg2", "Second test argument"),
            ]),
        ),
        Prompt::new(
            "test_prompt_with_embedded_resource",
            Some("A prompt embedding a resource"),
            Some(vec![required(
                "resourceUri",
                "URI of the resource to embed",
            )]),
        ),
        Prompt::new(
            "test_prompt_with_image",
            Some("A prompt with image content"),
            None,
        ),
    ]
}

pub fn get_prompt(request: &GetPromptRequestParams) -> Result<GetPromptResult, ErrorData> {
    let arg = |name: &str| -> Result<&str, ErrorData> {
        request
            .arguments
            .as_ref()
            .and_then(|args| args.get(name))
            .and_then(|value| value.as_str())
            .ok_or_else(|| {
                ErrorData::invalid_params(format!("missing string argument `{name}`"), None)
            })
    };
    let messages = match request.name.as_str() {
        "test_simple_prompt" => vec![PromptMessage::new_text(
            Role::User,
            "This is a simple prompt for testing.",
        )],
        "test_prompt_with_arguments" => vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                arg("arg1")?,
                arg("arg2")?
            ),
        )],
        "test_prompt_with_embedded_resource" => vec![
            PromptMessage::new(
                Role::User,
                ContentBlock::resource(ResourceContents::text(
                    "Embedded resource content for testing.",
                    arg("resourceUri")?,
                )),
            ),
            PromptMessage::new_text(Role::User, "Please process the embedded resource above."),
        ],
        "test_prompt_with_image" => vec![
            PromptMessage::new(Role::User, ContentBlock::image(PNG_BASE64, "image/png")),
            PromptMessage::new_text(Role::User, "Please analyze the image above."),
        ],
        other => {
            return Err(ErrorData::invalid_params(
                format!("no prompt named {other}"),
                None,
            ));
        }
    };
    Ok(GetPromptResult::new(messages))
}

/// Candidates for the arguments of `test_prompt_with_arguments` and the template's `{id}`,
/// filtered by the typed prefix.
pub fn complete(request: &CompleteRequestParams) -> Result<CompletionInfo, ErrorData> {
    let candidates: &[&str] = match (&request.r#ref, request.argument.name.as_str()) {
        (Reference::Prompt(prompt), "arg1" | "arg2")
            if prompt.name == "test_prompt_with_arguments" =>
        {
            &["paris", "park", "party", "test", "testing", "text"]
        }
        (Reference::Resource(resource), "id") if resource.uri == TEMPLATE => {
            &["1", "2", "3", "42", "123"]
        }
        _ => &[],
    };
    let prefix = request.argument.value.as_str();
    let values = candidates
        .iter()
        .filter(|candidate| candidate.starts_with(prefix))
        .map(|candidate| (*candidate).to_owned())
        .collect();
    CompletionInfo::with_all_values(values).map_err(|e| ErrorData::internal_error(e, None))
}

fn meta_json(meta: &rmcp::model::RequestMetaObject) -> String {
    serde_json::to_value(meta)
        .unwrap_or(serde_json::Value::Null)
        .to_string()
}

pub fn meta_echo_contents(meta: &rmcp::model::RequestMetaObject) -> ResourceContents {
    ResourceContents::text(meta_json(meta), META_ECHO).with_mime_type("application/json")
}

pub fn meta_echo_prompt(meta: &rmcp::model::RequestMetaObject) -> GetPromptResult {
    GetPromptResult::new(vec![PromptMessage::new_text(Role::User, meta_json(meta))])
}
