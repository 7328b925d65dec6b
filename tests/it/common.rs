use std::{net::SocketAddr, path::PathBuf, time::Duration};

use mcpgate::{
    app::App,
    config::{Config, RawConfig, RawStore},
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Bearer token sent by `mcp_post` and the helpers built on it.
    pub token: std::sync::Mutex<Option<String>>,
    /// The first user's password when the server runs in local mode.
    pub admin_password: Option<String>,
    _dir: tempfile::TempDir,
}

pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("mcpgate.db").display())
}

/// The PostgreSQL URL for tests. In CI its absence is a failure.
pub fn postgres_url() -> Option<String> {
    match std::env::var("MCPGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "MCPGATE_TEST_POSTGRES_URL must be set in CI (scripts/test.sh starts PostgreSQL)"
            );
            eprintln!("MCPGATE_TEST_POSTGRES_URL not set: skipping the PostgreSQL half");
            None
        }
    }
}

/// A new, empty PostgreSQL database on the test cluster (for servers whose
/// state must not mix with other tests', e.g. signing keys sealed under a
/// per-test key). `None` without `MCPGATE_TEST_POSTGRES_URL` outside CI.
pub async fn fresh_postgres_database(prefix: &str) -> Option<String> {
    let admin_url = postgres_url()?;
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    let db = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&db);
    Some(url.to_string())
}

/// Local users created in `dir`'s store before a server starts there (local
/// mode then creates no `admin`); returns their ids, which are the subjects
/// of their tokens.
pub async fn seed_users(dir: &std::path::Path, users: &[(&str, &str)]) -> Vec<String> {
    let store = mcpgate::store::Store::connect(&sqlite_url(dir), 1)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (name, password) in users {
        let hash = mcpgate::oauth::passwords::hash_password(password).unwrap();
        ids.push(store.create_user(name, &hash).await.unwrap().id);
    }
    store.close().await;
    ids
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut RawConfig)) -> TestServer {
        Self::start_in(tempfile::tempdir().unwrap(), edit).await
    }

    /// [`TestServer::start_with`] on a data directory prepared beforehand
    /// (e.g. with [`seed_users`]).
    pub async fn start_in(dir: tempfile::TempDir, edit: impl FnOnce(&mut RawConfig)) -> TestServer {
        Self::start_in_validated(dir, edit, |_| {}).await
    }

    /// The server's data directory (SQLite file, key file).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// `GET path` and its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A GET's body as text (`/metrics`).
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Send the shutdown signal.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn set_token(&self, token: &str) {
        *self.token.lock().unwrap() = Some(token.to_owned());
    }

    pub fn mcp_post(&self) -> reqwest::RequestBuilder {
        let request = self
            .client
            .post(self.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        match self.token.lock().unwrap().as_deref() {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Initialize a 2025-11-25 session; returns its id.
    pub async fn initialize(&self) -> String {
        let response = self
            .mcp_post()
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"it","version":"1"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let sid = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let _ = response.text().await.unwrap();
        let ack = self
            .mcp_post()
            .header("mcp-session-id", &sid)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .send()
            .await
            .unwrap();
        assert_eq!(ack.status(), 202);
        sid
    }

    /// A request on a session; returns the JSON-RPC response message
    /// (parsed from JSON or from the SSE stream).
    pub async fn session_call(&self, sid: &str, id: i64, method: &str, params: Value) -> Value {
        let (status, message) = self.session_request(sid, id, method, params).await;
        assert_eq!(status, 200, "{method}");
        message
    }

    /// Status and JSON-RPC message of a request on session `sid`, whatever
    /// the status.
    pub async fn session_request(
        &self,
        sid: &str,
        id: i64,
        method: &str,
        params: Value,
    ) -> (u16, Value) {
        let response = self
            .mcp_post()
            .header("mcp-session-id", sid)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response_message(response).await)
    }

    /// A 2026-07-28 stateless request declaring no client capabilities.
    pub async fn stateless_call(
        &self,
        id: i64,
        method: &str,
        name: Option<&str>,
        mut params: Value,
    ) -> (u16, Value) {
        params["_meta"] = json!({"io.modelcontextprotocol/clientCapabilities": {}});
        self.stateless_request(id, method, name, params).await
    }

    /// A 2026-07-28 stateless request: `params._meta` (kept as given, so its
    /// capabilities are the caller's) completed by the protocol version and
    /// client info; `name` goes into `Mcp-Name`.
    pub async fn stateless_request(
        &self,
        id: i64,
        method: &str,
        name: Option<&str>,
        mut params: Value,
    ) -> (u16, Value) {
        let meta = &mut params["_meta"];
        meta["io.modelcontextprotocol/protocolVersion"] = json!("2026-07-28");
        meta["io.modelcontextprotocol/clientInfo"] = json!({"name": "it", "version": "1"});
        let mut request = self
            .mcp_post()
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = name {
            request = request.header("mcp-name", name);
        }
        let response = request
            .json(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response_message(response).await)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// The JSON-RPC message with an `id` from a JSON or SSE response body.
pub async fn response_message(response: reqwest::Response) -> Value {
    let is_sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    if !is_sse {
        return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|m| m.get("id").is_some())
        .unwrap_or_else(|| panic!("no response in SSE body: {text}"))
}

/// The parsed JSON text content of a successful tools/call response.
pub fn tool_json(message: &Value) -> Value {
    let result = &message["result"];
    assert_eq!(result["isError"], json!(false), "{message}");
    serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap()
}

impl TestServer {
    /// [`TestServer::start_in`] with a last edit of the validated
    /// configuration: for states validation refuses, to show what else
    /// stops the attack such a setting would have allowed.
    pub async fn start_in_validated(
        dir: tempfile::TempDir,
        edit: impl FnOnce(&mut RawConfig),
        edit_config: impl FnOnce(&mut Config),
    ) -> TestServer {
        Self::start_on_clock(dir, edit, edit_config, mcpgate::clock::system()).await
    }

    /// [`TestServer::start_with`] reading the time from `clock`: tests of
    /// windows advance a [`mcpgate::clock::ManualClock`] instead of sleeping.
    pub async fn start_with_clock(
        edit: impl FnOnce(&mut RawConfig),
        clock: mcpgate::clock::SharedClock,
    ) -> TestServer {
        Self::start_on_clock(tempfile::tempdir().unwrap(), edit, |_| {}, clock).await
    }

    pub async fn start_on_clock(
        dir: tempfile::TempDir,
        edit: impl FnOnce(&mut RawConfig),
        edit_config: impl FnOnce(&mut Config),
        clock: mcpgate::clock::SharedClock,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut raw = RawConfig {
            listen: Some(addr.to_string()),
            public_url: Some(format!("http://{addr}")),
            data_dir: Some(PathBuf::from(dir.path())),
            store: RawStore {
                url: Some(sqlite_url(dir.path())),
                max_connections: None,
            },
            ..RawConfig::default()
        };
        raw.http.shutdown_grace_secs = Some(5);
        // Most suites test the transport; the default (local) is set per test.
        raw.auth.mode = Some("none".to_owned());
        edit(&mut raw);
        let mut config: Config = raw.validate().unwrap();
        edit_config(&mut config);
        let app = App::build_with_clock(&config, clock).await.unwrap();
        let admin_password = app.initial_admin_password.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            stop: Some(stop),
            task: Some(task),
            admin_password,
            token: std::sync::Mutex::new(None),
            _dir: dir,
        }
    }
}
