//! `docs`: ChatGPT deep-research style `search` and `fetch` over a folder of
//! Markdown and text files, ranked by BM25 (tantivy, in memory).
//!
//! The index is built once at start-up; ids are paths relative to the folder,
//! so they stay stable across restarts.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tantivy::{
    Index, IndexReader, TantivyDocument,
    collector::TopDocs,
    query::QueryParser,
    schema::{Field, STORED, STRING, Schema, TEXT, Value as _},
};

use super::{ToolError, ToolOutput, ToolSpec, parse_args, schema_of};

pub const NAMES: &[&str] = &["search", "fetch"];

const MAX_FILE_BYTES: u64 = 1024 * 1024;
const MAX_FILES: usize = 10_000;
const MAX_QUERY_CHARS: usize = 1_000;
const RESULT_LIMIT: usize = 10;

/// mcpgate's own guide, searchable when no folder is configured.
const BUILT_IN: &[(&str, &str)] = &[
    ("overview.md", include_str!("../../docs/guide/overview.md")),
    (
        "configuration.md",
        include_str!("../../docs/guide/configuration.md"),
    ),
    ("toolsets.md", include_str!("../../docs/guide/toolsets.md")),
    (
        "transports.md",
        include_str!("../../docs/guide/transports.md"),
    ),
    (
        "operations.md",
        include_str!("../../docs/guide/operations.md"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("search index: {0}")]
    Index(String),
}

impl From<tantivy::TantivyError> for DocsError {
    fn from(err: tantivy::TantivyError) -> Self {
        DocsError::Index(err.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub text: String,
}

pub struct DocIndex {
    docs: Vec<Document>,
    by_id: HashMap<String, usize>,
    reader: IndexReader,
    parser: QueryParser,
    ord_field: Field,
    url_base: String,
    /// The built-in guide: public product documentation, served to anyone.
    public: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// Words to look for; quoted phrases and AND/OR/- are understood.
    pub query: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchArgs {
    /// A document id from a search result.
    pub id: String,
}

pub fn specs() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "search",
            title: "Search documents",
            description: "Full-text search over the document collection. Returns JSON {\"results\": [{\"id\", \"title\", \"url\"}]}, best match first.",
            input_schema: schema_of::<SearchArgs>(),
            read_only: true,
            destructive: false,
        },
        ToolSpec {
            name: "fetch",
            title: "Fetch document",
            description: "Fetch a whole document by the id from a search result. Returns JSON {\"id\", \"title\", \"text\", \"url\", \"metadata\"}.",
            input_schema: schema_of::<FetchArgs>(),
            read_only: true,
            destructive: false,
        },
    ]
}

impl DocIndex {
    /// Index the folder, or the built-in guide when `path` is `None`.
    pub fn open(path: Option<&Path>, url_base: &str) -> Result<Self, DocsError> {
        let public = path.is_none();
        let docs = match path {
            Some(path) => read_folder(path)?,
            None => BUILT_IN
                .iter()
                .map(|(id, text)| Document {
                    id: (*id).to_owned(),
                    title: title_of(text, id),
                    text: (*text).to_owned(),
                })
                .collect(),
        };
        let mut index = Self::build(docs, url_base)?;
        index.public = public;
        Ok(index)
    }

    pub fn build(docs: Vec<Document>, url_base: &str) -> Result<Self, DocsError> {
        let mut schema = Schema::builder();
        let ord_field = schema.add_u64_field("ord", STORED);
        let title_field = schema.add_text_field("title", TEXT);
        let body_field = schema.add_text_field("body", TEXT);
        let path_field = schema.add_text_field("path", STRING);
        let index = Index::create_in_ram(schema.build());
        {
            let mut writer: tantivy::IndexWriter<TantivyDocument> = index.writer(15_000_000)?;
            for (ord, doc) in docs.iter().enumerate() {
                let mut d = TantivyDocument::default();
                d.add_u64(ord_field, ord as u64);
                d.add_text(title_field, &doc.title);
                d.add_text(body_field, &doc.text);
                d.add_text(path_field, &doc.id);
                writer.add_document(d)?;
            }
            writer.commit()?;
        }
        let reader = index.reader()?;
        let mut parser = QueryParser::for_index(&index, vec![title_field, body_field]);
        // A hit in the title says more about a document than one in its body.
        parser.set_field_boost(title_field, 2.0);
        let by_id = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        let url_base = if url_base.ends_with('/') {
            url_base.to_owned()
        } else {
            format!("{url_base}/")
        };
        Ok(DocIndex {
            docs,
            by_id,
            reader,
            parser,
            ord_field,
            url_base,
            public: false,
        })
    }

    /// Whether `/docs/{id}` may serve these documents without a token: only
    /// the built-in guide. An operator's folder is as private as `fetch`.
    pub fn is_public(&self) -> bool {
        self.public
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Document> {
        self.by_id.get(id).and_then(|i| self.docs.get(*i))
    }

    pub fn url_of(&self, id: &str) -> String {
        format!("{}{}", self.url_base, id)
    }

    /// Best matches first, at most `limit`.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<&Document>, DocsError> {
        // Lenient parsing: a stray quote or colon from a user must not fail the search.
        let (query, _ignored) = self.parser.parse_query_lenient(query);
        let searcher = self.reader.searcher();
        let hits = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut found = Vec::with_capacity(hits.len());
        for (_score, address) in hits {
            let stored: TantivyDocument = searcher.doc(address)?;
            let ord = stored.get_first(self.ord_field).and_then(|v| v.as_u64());
            if let Some(doc) = ord.and_then(|o| self.docs.get(o as usize)) {
                found.push(doc);
            }
        }
        Ok(found)
    }

    pub fn call(&self, name: &str, arguments: Map<String, Value>) -> Result<ToolOutput, ToolError> {
        match name {
            "search" => {
                let args: SearchArgs = parse_args(arguments)?;
                let query = args.query.trim();
                if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
                    return Err(ToolError::InvalidArguments(format!(
                        "query must be 1 to {MAX_QUERY_CHARS} characters"
                    )));
                }
                let results: Vec<Value> = self
                    .search(query, RESULT_LIMIT)
                    .map_err(|e| ToolError::Failed(e.to_string()))?
                    .into_iter()
                    .map(|d| json!({ "id": d.id, "title": d.title, "url": self.url_of(&d.id) }))
                    .collect();
                Ok(ToolOutput::json(json!({ "results": results })))
            }
            "fetch" => {
                let args: FetchArgs = parse_args(arguments)?;
                let doc = self.get(&args.id).ok_or_else(|| {
                    ToolError::Failed(format!("no document with id {:?}", args.id))
                })?;
                Ok(ToolOutput::json(json!({
                    "id": doc.id,
                    "title": doc.title,
                    "text": doc.text,
                    "url": self.url_of(&doc.id),
                    "metadata": { "path": doc.id, "bytes": doc.text.len() },
                })))
            }
            other => Err(ToolError::UnknownTool(other.to_owned())),
        }
    }
}

fn read_folder(root: &Path) -> Result<Vec<Document>, DocsError> {
    let read_err = |path: &Path, e: std::io::Error| DocsError::Read {
        path: path.to_owned(),
        reason: e.kind().to_string(),
    };
    let mut docs = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| read_err(&dir, e))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            // file_type does not follow links: a link cannot lead the index outside the folder.
            let kind = entry.file_type().map_err(|e| read_err(&path, e))?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let is_text = [".md", ".markdown", ".txt"]
                .iter()
                .any(|ext| name.ends_with(ext));
            if !kind.is_file() || !is_text {
                continue;
            }
            let size = entry.metadata().map_err(|e| read_err(&path, e))?.len();
            if size > MAX_FILE_BYTES {
                tracing::warn!(path = %path.display(), size, "skipping document larger than 1 MiB");
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                tracing::warn!(path = %path.display(), "skipping document that is not UTF-8");
                continue;
            };
            let id = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let title = title_of(&text, &id);
            docs.push(Document { id, title, text });
            if docs.len() >= MAX_FILES {
                tracing::warn!(max = MAX_FILES, "document folder truncated");
                return Ok(docs);
            }
        }
    }
    docs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(docs)
}

/// The first Markdown heading, else the file name without extension.
fn title_of(text: &str, id: &str) -> String {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("# ").map(|t| t.trim().to_owned()))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            let file = id.rsplit('/').next().unwrap_or(id);
            file.rsplit_once('.')
                .map_or(file, |(stem, _)| stem)
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, title: &str, text: &str) -> Document {
        Document {
            id: id.into(),
            title: title.into(),
            text: text.into(),
        }
    }

    fn index() -> DocIndex {
        DocIndex::build(
            vec![
                doc(
                    "a.md",
                    "Refresh tokens",
                    "Refresh token rotation revokes the family on reuse.",
                ),
                doc(
                    "b.md",
                    "Transports",
                    "Streamable HTTP and legacy SSE. A refresh is mentioned once.",
                ),
                doc("c.md", "Calculator", "add subtract multiply divide"),
            ],
            "https://h/docs",
        )
        .unwrap()
    }

    #[test]
    fn ranks_by_relevance() {
        let idx = index();
        let hits = idx.search("refresh token", 10).unwrap();
        assert_eq!(hits.first().map(|d| d.id.as_str()), Some("a.md"));
        assert!(hits.iter().any(|d| d.id == "b.md"));
        assert!(!hits.iter().any(|d| d.id == "c.md"));
    }

    #[test]
    fn search_tool_shape() {
        let idx = index();
        let args = json!({"query": "divide"}).as_object().cloned().unwrap();
        let out = idx.call("search", args).unwrap();
        let v: Value = serde_json::from_str(&out.text).unwrap();
        assert_eq!(
            v["results"][0],
            json!({"id": "c.md", "title": "Calculator", "url": "https://h/docs/c.md"})
        );
    }

    #[test]
    fn malformed_query_is_tolerated() {
        let idx = index();
        assert!(idx.search("\"unbalanced title:(", 10).is_ok());
    }

    #[test]
    fn fetch_unknown_id_is_a_tool_error() {
        let idx = index();
        let args = json!({"id": "nope.md"}).as_object().cloned().unwrap();
        assert!(matches!(idx.call("fetch", args), Err(ToolError::Failed(_))));
        let args = json!({"id": "a.md"}).as_object().cloned().unwrap();
        let v: Value = serde_json::from_str(&idx.call("fetch", args).unwrap().text).unwrap();
        assert_eq!(v["title"], "Refresh tokens");
        assert_eq!(v["metadata"]["path"], "a.md");
    }

    #[test]
    fn built_in_guide_is_searchable() {
        let idx = DocIndex::open(None, "http://x/docs/").unwrap();
        assert_eq!(idx.len(), BUILT_IN.len());
        assert!(!idx.search("configuration", 5).unwrap().is_empty());
    }

    #[test]
    fn folder_ids_are_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/x.md"), "# Xylophone\nmusic").unwrap();
        std::fs::write(dir.path().join("y.txt"), "plain yak").unwrap();
        std::fs::write(dir.path().join("z.bin"), "ignored").unwrap();
        let idx = DocIndex::open(Some(dir.path()), "http://x/").unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get("sub/x.md").unwrap().title, "Xylophone");
        assert_eq!(idx.get("y.txt").unwrap().title, "y");
    }
}
