//! The tools: the conformance suite's `test_*` fixtures, then the fault and benchmark tools
//! mcpgate's own tests drive.

// Sampling and logging are deprecated by SEP-2577, but they are what the 2025 fixtures test.
#![allow(deprecated)]

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    sync::Arc,
    time::Duration,
};

use rmcp::{
    ErrorData, RoleServer,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
        CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult, ElicitRequest,
        ElicitRequestParams, ElicitResult, ElicitationSchema, InputRequest, InputRequiredResult,
        InputResponses, JsonObject, LoggingLevel, ProgressNotificationParam, ResourceContents,
        SamplingMessage, SamplingMessageContentBlock, Tool,
    },
    service::RequestContext,
};
use serde_json::{Value, json};

use crate::{
    catalog::{PNG_BASE64, WATCHED, WAV_BASE64},
    server::FixtureServer,
};

/// Upper bounds that keep a typo in a test from exhausting the machine.
const MAX_SLEEP_SECS: f64 = 3600.0;
const MAX_LINE_BYTES: u64 = 1 << 20;
const MAX_FLOOD_BYTES: u64 = 1 << 32;
const MAX_RESULT_BYTES: u64 = 1 << 28;

pub fn list() -> Vec<Tool> {
    let no_args = || schema(json!({ "type": "object", "properties": {} }));
    let string_arg = |name: &str, description: &str| {
        schema(json!({
            "type": "object",
            "properties": { name: { "type": "string", "description": description } },
            "required": [name],
        }))
    };
    vec![
        Tool::new("test_simple_text", "Returns simple text content", no_args()),
        Tool::new("test_image_content", "Returns a 1x1 PNG image", no_args()),
        Tool::new("test_audio_content", "Returns a short WAV clip", no_args()),
        Tool::new(
            "test_embedded_resource",
            "Returns an embedded text resource",
            no_args(),
        ),
        Tool::new(
            "test_multiple_content_types",
            "Returns text, image and resource content",
            no_args(),
        ),
        Tool::new(
            "test_tool_with_logging",
            "Sends three info log notifications while it runs",
            no_args(),
        ),
        Tool::new(
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100",
            no_args(),
        ),
        Tool::new(
            "test_error_handling",
            "Always fails with isError: true",
            no_args(),
        ),
        Tool::new(
            "test_sampling",
            "Asks the client's LLM to answer a prompt",
            string_arg("prompt", "The prompt to send to the LLM"),
        ),
        Tool::new(
            "test_elicitation",
            "Asks the user for a username and an email",
            string_arg("message", "The message to show the user"),
        ),
        Tool::new(
            "test_elicitation_sep1034_defaults",
            "Elicits a form whose every field has a default (SEP-1034)",
            no_args(),
        ),
        Tool::new(
            "test_elicitation_sep1330_enums",
            "Elicits a form with every enum variant (SEP-1330)",
            no_args(),
        ),
        Tool::new(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            schema(json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "type": "object",
                        "properties": {
                            "street": { "type": "string" },
                            "city": { "type": "string" },
                        },
                    },
                },
                "properties": {
                    "name": { "type": "string" },
                    "address": { "$ref": "#/$defs/address" },
                },
                "additionalProperties": false,
            })),
        ),
        Tool::new(
            "echo",
            "Returns its text argument as text content",
            string_arg("text", "The text to return"),
        ),
        Tool::new(
            "sleep",
            "Sleeps, then returns \"slept\"; stops early when the request is cancelled",
            schema(json!({
                "type": "object",
                "properties": {
                    "seconds": { "type": "number", "minimum": 0, "maximum": MAX_SLEEP_SECS },
                },
                "required": ["seconds"],
            })),
        ),
        Tool::new(
            "pid",
            "Returns this process's id, parent id, process group and session",
            no_args(),
        ),
        Tool::new(
            "env",
            "Returns this process's environment as structured content {vars}",
            no_args(),
        ),
        Tool::new(
            "flood",
            "Writes `lines` lines of `bytes_per_line` bytes to stderr; returns `result_bytes` \
             more bytes of text when given",
            schema(json!({
                "type": "object",
                "properties": {
                    "lines": { "type": "integer", "minimum": 0 },
                    "bytes_per_line": { "type": "integer", "minimum": 0, "maximum": MAX_LINE_BYTES },
                    "result_bytes": { "type": "integer", "minimum": 0, "maximum": MAX_RESULT_BYTES },
                },
                "required": ["lines", "bytes_per_line"],
            })),
        ),
        Tool::new(
            "crash",
            "Exits the process with code 3 without answering",
            no_args(),
        ),
        Tool::new(
            "spawn_child",
            "Starts a `sleep 1000` grandchild in this process group and returns its pid",
            no_args(),
        ),
        Tool::new(
            "http_headers",
            "Returns the HTTP request headers this call arrived with as structured content \
             {headers} (Streamable HTTP only)",
            no_args(),
        ),
        Tool::new(
            "touch_resource",
            "Changes test://watched-resource and notifies its subscribers",
            no_args(),
        ),
        Tool::new(
            "subscribed_sessions",
            "How many sessions hold a resources/subscribe on this server, as text",
            no_args(),
        ),
        Tool::new(
            "announce_tools",
            "Sends notifications/tools/list_changed to the calling session",
            no_args(),
        ),
    ]
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::default(),
    }
}

pub async fn call(
    server: &FixtureServer,
    request: CallToolRequestParams,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let CallToolRequestParams {
        name,
        arguments,
        input_responses,
        ..
    } = request;
    let mut args = arguments.unwrap_or_default();
    let result = match name.as_ref() {
        "test_simple_text" => text("This is a simple text response for testing."),
        "test_image_content" => ok(vec![ContentBlock::image(PNG_BASE64, "image/png")]),
        "test_audio_content" => ok(vec![ContentBlock::audio(WAV_BASE64, "audio/wav")]),
        "test_embedded_resource" => ok(vec![ContentBlock::resource(ResourceContents::text(
            "This is an embedded resource content.",
            "test://embedded-resource",
        ))]),
        "test_multiple_content_types" => ok(vec![
            ContentBlock::text("Multiple content types test:"),
            ContentBlock::image(PNG_BASE64, "image/png"),
            ContentBlock::resource(
                ResourceContents::text(
                    r#"{"test":"data","value":123}"#,
                    "test://mixed-content-resource",
                )
                .with_mime_type("application/json"),
            ),
        ]),
        "test_tool_with_logging" => with_logging(server, &context).await,
        "test_tool_with_progress" => with_progress(&context).await,
        "test_error_handling" => Ok(CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )])
        .into()),
        "test_sampling" => sampling(&mut args, &context, input_responses).await,
        "test_elicitation" => elicit_user(&mut args, &context, input_responses).await,
        "test_elicitation_sep1034_defaults" => elicit_defaults(&context, input_responses).await,
        "test_elicitation_sep1330_enums" => elicit_enums(&context, input_responses).await,
        "json_schema_2020_12_tool" => text(format!("received {}", Value::Object(args))),
        "echo" => match args.remove("text") {
            // Moved, not copied: this is the benchmark's hot path.
            Some(Value::String(text)) => self::text(text),
            _ => bad_args("`text` must be a string"),
        },
        "sleep" => sleep(&args, &context).await,
        "pid" => pid(),
        "env" => env(),
        "flood" => flood(&args).await,
        "crash" => {
            eprintln!("fixture-upstream: crash tool called, exiting with code 3");
            std::process::exit(3)
        }
        "spawn_child" => spawn_child(),
        "http_headers" => http_headers(&context),
        "touch_resource" => {
            let version = server.touch_watched().await;
            text(format!("{WATCHED} is now at version {version}"))
        }
        "subscribed_sessions" => text(server.subscribed_sessions().to_string()),
        "announce_tools" => match context.peer.notify_tool_list_changed().await {
            Ok(()) => text("announced"),
            Err(e) => text(format!("not announced: {e}")),
        },
        other => {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {other}"),
                None,
            ));
        }
    };
    // Argument and execution failures are tool errors (isError), which callers can read.
    Ok(result.unwrap_or_else(Into::into))
}

/// A tool's outcome: the response, or the tool error result to answer with instead.
type Outcome = Result<CallToolResponse, CallToolResult>;

fn ok(content: Vec<ContentBlock>) -> Outcome {
    Ok(CallToolResult::success(content).into())
}

fn text(text: impl Into<String>) -> Outcome {
    ok(vec![ContentBlock::text(text)])
}

fn bad_args(message: impl Into<String>) -> Outcome {
    Err(CallToolResult::error(vec![ContentBlock::text(message)]))
}

fn take_string(args: &mut JsonObject, key: &str) -> Result<String, CallToolResult> {
    match args.remove(key) {
        Some(Value::String(value)) => Ok(value),
        _ => Err(CallToolResult::error(vec![ContentBlock::text(format!(
            "`{key}` must be a string"
        ))])),
    }
}

fn get_u64(args: &JsonObject, key: &str, max: u64) -> Result<Option<u64>, CallToolResult> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => Err(CallToolResult::error(vec![ContentBlock::text(format!(
                "`{key}` must be an integer from 0 to {max}"
            ))])),
        },
    }
}

async fn with_logging(server: &FixtureServer, context: &RequestContext<RoleServer>) -> Outcome {
    let steps = [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ];
    for (i, message) in steps.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.log(&context.peer, LoggingLevel::Info, message).await;
    }
    text("Tool with logging executed successfully")
}

async fn with_progress(context: &RequestContext<RoleServer>) -> Outcome {
    let token = context.meta.get_progress_token();
    for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(token) = &token {
            let param = ProgressNotificationParam::new(token.clone(), progress).with_total(100.0);
            // A client that went away cannot be told; the call still completes.
            if let Err(err) = context.peer.notify_progress(param).await {
                eprintln!("fixture-upstream: progress notification failed: {err}");
            }
        }
    }
    text("Tool with progress executed successfully")
}

/// Protocol 2026-07-28 forbids server-to-client requests: the input is asked for with an
/// `InputRequiredResult` and arrives in the retried call's `inputResponses`.
fn uses_input_required(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|version| !version.has_initialize())
}

/// The key of the one input request each interactive tool makes.
const INPUT_KEY: &str = "input";

fn input_required(request: InputRequest) -> Outcome {
    let requests = BTreeMap::from([(INPUT_KEY.to_owned(), request)]);
    Ok(InputRequiredResult::from_input_requests(requests).into())
}

fn input_response<T: serde::de::DeserializeOwned>(
    responses: Option<InputResponses>,
) -> Option<Result<T, CallToolResult>> {
    let value = responses?.remove(INPUT_KEY)?;
    Some(serde_json::from_value(value).map_err(|err| {
        CallToolResult::error(vec![ContentBlock::text(format!(
            "malformed input response: {err}"
        ))])
    }))
}

async fn sampling(
    args: &mut JsonObject,
    context: &RequestContext<RoleServer>,
    responses: Option<InputResponses>,
) -> Outcome {
    let prompt = take_string(args, "prompt")?;
    let supported = context
        .client_capabilities()
        .is_some_and(|caps| caps.sampling.is_some());
    if !supported {
        return bad_args("the client does not support sampling");
    }
    let params = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 100);
    let result: CreateMessageResult = if uses_input_required(context) {
        match input_response(responses) {
            Some(result) => result?,
            None => {
                return input_required(InputRequest::CreateMessage(CreateMessageRequest::new(
                    params,
                )));
            }
        }
    } else {
        context.peer.create_message(params).await.map_err(|err| {
            CallToolResult::error(vec![ContentBlock::text(format!("sampling failed: {err}"))])
        })?
    };
    text(format!("LLM response: {}", sampled_text(result)))
}

/// The text blocks of a sampling answer, joined.
pub(crate) fn sampled_text(result: rmcp::model::CreateMessageResult) -> String {
    result
        .message
        .content
        .into_vec()
        .into_iter()
        .filter_map(|block| match block {
            SamplingMessageContentBlock::Text(text) => Some(text.text),
            _ => None,
        })
        .collect()
}

async fn elicit_user(
    args: &mut JsonObject,
    context: &RequestContext<RoleServer>,
    responses: Option<InputResponses>,
) -> Outcome {
    let message = take_string(args, "message")?;
    let schema = json!({
        "type": "object",
        "properties": {
            "username": { "type": "string", "description": "User's response" },
            "email": { "type": "string", "description": "User's email address" },
        },
        "required": ["username", "email"],
    });
    elicit(context, responses, message, schema, "User response").await
}

/// SEP-1034: a default for every primitive type.
async fn elicit_defaults(
    context: &RequestContext<RoleServer>,
    responses: Option<InputResponses>,
) -> Outcome {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "default": "John Doe" },
            "age": { "type": "integer", "default": 30 },
            "score": { "type": "number", "default": 95.5 },
            "status": {
                "type": "string",
                "enum": ["active", "inactive", "pending"],
                "default": "active",
            },
            "verified": { "type": "boolean", "default": true },
        },
    });
    let message = "Please review your profile (every field has a default)".to_owned();
    elicit(context, responses, message, schema, "Elicitation completed").await
}

/// SEP-1330: the five enum shapes, untitled and titled, single and multi-select, and the
/// legacy `enumNames`.
async fn elicit_enums(
    context: &RequestContext<RoleServer>,
    responses: Option<InputResponses>,
) -> Outcome {
    let titled = |pairs: &[(&str, &str)]| -> Value {
        pairs
            .iter()
            .map(|(value, title)| json!({ "const": value, "title": title }))
            .collect()
    };
    let schema = json!({
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "enum": ["option1", "option2", "option3"],
            },
            "titledSingle": {
                "type": "string",
                "oneOf": titled(&[
                    ("value1", "First Option"),
                    ("value2", "Second Option"),
                    ("value3", "Third Option"),
                ]),
            },
            "legacyEnum": {
                "type": "string",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"],
            },
            "untitledMulti": {
                "type": "array",
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] },
            },
            "titledMulti": {
                "type": "array",
                "items": {
                    "anyOf": titled(&[
                        ("value1", "First Choice"),
                        ("value2", "Second Choice"),
                        ("value3", "Third Choice"),
                    ]),
                },
            },
        },
    });
    let message = "Please pick from each list".to_owned();
    elicit(context, responses, message, schema, "Elicitation completed").await
}

async fn elicit(
    context: &RequestContext<RoleServer>,
    responses: Option<InputResponses>,
    message: String,
    schema: Value,
    label: &str,
) -> Outcome {
    let supported = context
        .client_capabilities()
        .is_some_and(|caps| caps.elicitation.is_some());
    if !supported {
        return bad_args("the client does not support elicitation");
    }
    let Value::Object(schema) = schema else {
        return bad_args("internal: schema is not an object");
    };
    let requested_schema = ElicitationSchema::from_json_schema(schema).map_err(|err| {
        CallToolResult::error(vec![ContentBlock::text(format!(
            "internal: bad elicitation schema: {err}"
        ))])
    })?;
    let params = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message,
        requested_schema,
    };
    let result: ElicitResult = if uses_input_required(context) {
        match input_response(responses) {
            Some(result) => result?,
            None => return input_required(InputRequest::Elicitation(ElicitRequest::new(params))),
        }
    } else {
        context
            .peer
            .create_elicitation(params)
            .await
            .map_err(|err| {
                CallToolResult::error(vec![ContentBlock::text(format!(
                    "elicitation failed: {err}"
                ))])
            })?
    };
    let action = serde_json::to_value(&result.action).unwrap_or(Value::Null);
    let action = action.as_str().unwrap_or("unknown");
    let content = result.content.unwrap_or(Value::Null);
    text(format!("{label}: action={action}, content={content}"))
}

async fn sleep(args: &JsonObject, context: &RequestContext<RoleServer>) -> Outcome {
    let duration = args
        .get("seconds")
        .and_then(Value::as_f64)
        .filter(|secs| (0.0..=MAX_SLEEP_SECS).contains(secs))
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok());
    let Some(duration) = duration else {
        return bad_args(format!(
            "`seconds` must be a number from 0 to {MAX_SLEEP_SECS}"
        ));
    };
    tokio::select! {
        () = tokio::time::sleep(duration) => text("slept"),
        () = context.ct.cancelled() => {
            // Tests look for this line to see that the cancellation reached the upstream.
            eprintln!("fixture-upstream: sleep cancelled");
            text("cancelled")
        }
    }
}

fn pid() -> Outcome {
    let pid = std::process::id();
    // Fields 4-6 of /proc/self/stat, after the parenthesised command name (which may hold
    // spaces): ppid, process group, session. Absent off Linux.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let mut fields = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse::<u32>().ok());
    let mut next = || fields.next().flatten();
    let (ppid, pgid, sid) = (next(), next(), next());
    let mut result = CallToolResult::success(vec![ContentBlock::text(pid.to_string())]);
    result.structured_content = Some(json!({ "pid": pid, "ppid": ppid, "pgid": pgid, "sid": sid }));
    Ok(result.into())
}

fn env() -> Outcome {
    let vars: JsonObject = std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                Value::String(value.to_string_lossy().into_owned()),
            )
        })
        .collect();
    Ok(CallToolResult::structured(json!({ "vars": vars })).into())
}

async fn flood(args: &JsonObject) -> Outcome {
    let lines = get_u64(args, "lines", u64::MAX)?;
    let bytes_per_line = get_u64(args, "bytes_per_line", MAX_LINE_BYTES)?;
    let result_bytes = get_u64(args, "result_bytes", MAX_RESULT_BYTES)?;
    let (Some(lines), Some(bytes_per_line)) = (lines, bytes_per_line) else {
        return bad_args("`lines` and `bytes_per_line` are required");
    };
    if lines.saturating_mul(bytes_per_line + 1) > MAX_FLOOD_BYTES {
        return bad_args(format!("at most {MAX_FLOOD_BYTES} bytes of flood"));
    }
    // Blocking writes: a reader that does not drain stderr stalls this thread, not the runtime.
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut line = vec![b'x'; usize::try_from(bytes_per_line).unwrap_or_default()];
        line.push(b'\n');
        let mut out = BufWriter::new(std::io::stderr().lock());
        for _ in 0..lines {
            out.write_all(&line)?;
        }
        out.flush()
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return bad_args(format!("writing to stderr failed: {err}")),
        Err(err) => return bad_args(format!("flood task failed: {err}")),
    }
    let mut content = vec![ContentBlock::text(format!("flooded {lines}"))];
    if let Some(n) = result_bytes {
        content.push(ContentBlock::text(
            "y".repeat(usize::try_from(n).unwrap_or_default()),
        ));
    }
    ok(content)
}

fn spawn_child() -> Outcome {
    let spawned = std::process::Command::new("sleep")
        .arg("1000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        Ok(mut child) => {
            let pid = child.id();
            // Reaped in the background so it never lingers as a zombie; the tool does not wait.
            std::thread::spawn(move || child.wait());
            let mut result = CallToolResult::success(vec![ContentBlock::text(pid.to_string())]);
            result.structured_content = Some(json!({ "pid": pid }));
            Ok(result.into())
        }
        Err(err) => bad_args(format!("spawning `sleep 1000` failed: {err}")),
    }
}

/// The request's headers, names lowercased; repeated headers are joined with ", ".
fn http_headers(context: &RequestContext<RoleServer>) -> Outcome {
    let Some(parts) = context.extensions.get::<http::request::Parts>() else {
        return bad_args("no HTTP request: this session is not served over Streamable HTTP");
    };
    let mut headers = JsonObject::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    // The request's `_meta` too, so a test can see what the gateway forwarded
    // there (a `traceparent`, say).
    let meta = serde_json::to_value(&context.meta).unwrap_or(Value::Null);
    Ok(CallToolResult::structured(json!({ "headers": headers, "meta": meta })).into())
}
