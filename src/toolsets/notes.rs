//! `notes`: persistent notes in the store, each owned by the principal that
//! created it.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolError, ToolOutput, ToolSpec, parse_args, schema_of};
use crate::{
    auth::Principal,
    store::{NoteDraft, NotePatch, Store},
};

pub const NAMES: &[&str] = &[
    "create_note",
    "read_note",
    "list_notes",
    "update_note",
    "delete_note",
];

const MAX_TITLE_CHARS: usize = 200;
const MAX_BODY_BYTES: usize = 100_000;
const MAX_ID_CHARS: usize = 64;
const DEFAULT_LIST_LIMIT: i64 = 100;
const MAX_LIST_LIMIT: i64 = 500;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNote {
    /// A short title (1-200 characters).
    pub title: String,
    /// The note text (up to 100,000 bytes).
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteId {
    /// The note id returned by create_note or list_notes.
    pub id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListNotes {
    /// Maximum number of notes to return (1-500, default 100), newest first.
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNote {
    /// The note id.
    pub id: String,
    /// A new title, if it changes.
    pub title: Option<String>,
    /// A new body, if it changes.
    pub body: Option<String>,
}

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "create_note",
            title: "Create note",
            description: "Create a note owned by the caller. Returns the note with its id.",
            input_schema: schema_of::<CreateNote>(),
            read_only: false,
            destructive: false,
        },
        ToolSpec {
            name: "read_note",
            title: "Read note",
            description: "Read one of the caller's notes by id.",
            input_schema: schema_of::<NoteId>(),
            read_only: true,
            destructive: false,
        },
        ToolSpec {
            name: "list_notes",
            title: "List notes",
            description: "List the caller's notes, most recently updated first.",
            input_schema: schema_of::<ListNotes>(),
            read_only: true,
            destructive: false,
        },
        ToolSpec {
            name: "update_note",
            title: "Update note",
            description: "Change the title and/or body of one of the caller's notes.",
            input_schema: schema_of::<UpdateNote>(),
            read_only: false,
            destructive: false,
        },
        ToolSpec {
            name: "delete_note",
            title: "Delete note",
            description: "Delete one of the caller's notes by id.",
            input_schema: schema_of::<NoteId>(),
            read_only: false,
            destructive: true,
        },
    ]
}

#[derive(Clone)]
pub struct Notes {
    store: Store,
}

impl Notes {
    pub fn new(store: Store) -> Self {
        Notes { store }
    }

    pub async fn call(
        &self,
        name: &str,
        arguments: Map<String, Value>,
        principal: &Principal,
    ) -> Result<ToolOutput, ToolError> {
        let owner = principal.owner_key();
        match name {
            "create_note" => {
                let args: CreateNote = parse_args(arguments)?;
                let title = check_title(&args.title)?;
                check_body(&args.body)?;
                let note = self
                    .store
                    .create_note(
                        &owner,
                        NoteDraft {
                            title,
                            body: args.body,
                        },
                    )
                    .await?;
                Ok(ToolOutput::json(json!(note)))
            }
            "read_note" => {
                let args: NoteId = parse_args(arguments)?;
                check_id(&args.id)?;
                match self.store.get_note(&owner, &args.id).await? {
                    Some(note) => Ok(ToolOutput::json(json!(note))),
                    None => Err(not_found(&args.id)),
                }
            }
            "list_notes" => {
                let args: ListNotes = parse_args(arguments)?;
                let limit = args.limit.unwrap_or(DEFAULT_LIST_LIMIT);
                if !(1..=MAX_LIST_LIMIT).contains(&limit) {
                    return Err(ToolError::InvalidArguments(format!(
                        "limit must be between 1 and {MAX_LIST_LIMIT}"
                    )));
                }
                let notes = self.store.list_notes(&owner, limit).await?;
                Ok(ToolOutput::json(json!({ "notes": notes })))
            }
            "update_note" => {
                let args: UpdateNote = parse_args(arguments)?;
                check_id(&args.id)?;
                if args.title.is_none() && args.body.is_none() {
                    return Err(ToolError::InvalidArguments(
                        "give a new title, a new body, or both".to_owned(),
                    ));
                }
                let title = args.title.as_deref().map(check_title).transpose()?;
                if let Some(body) = &args.body {
                    check_body(body)?;
                }
                let patch = NotePatch {
                    title,
                    body: args.body,
                };
                match self.store.update_note(&owner, &args.id, patch).await? {
                    Some(note) => Ok(ToolOutput::json(json!(note))),
                    None => Err(not_found(&args.id)),
                }
            }
            "delete_note" => {
                let args: NoteId = parse_args(arguments)?;
                check_id(&args.id)?;
                if self.store.delete_note(&owner, &args.id).await? {
                    Ok(ToolOutput::json(json!({ "deleted": args.id })))
                } else {
                    Err(not_found(&args.id))
                }
            }
            other => Err(ToolError::UnknownTool(other.to_owned())),
        }
    }
}

fn not_found(id: &str) -> ToolError {
    ToolError::Failed(format!("no note with id {id:?}"))
}

fn check_title(title: &str) -> Result<String, ToolError> {
    let title = title.trim();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS {
        return Err(ToolError::InvalidArguments(format!(
            "title must be 1 to {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(title.to_owned())
}

fn check_body(body: &str) -> Result<(), ToolError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ToolError::InvalidArguments(format!(
            "body must be at most {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), ToolError> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(ToolError::InvalidArguments(format!(
            "id must be 1 to {MAX_ID_CHARS} characters"
        )));
    }
    Ok(())
}
