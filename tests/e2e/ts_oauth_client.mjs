// The official TypeScript SDK (@modelcontextprotocol/sdk) as an OAuth client of mcpgate in
// resource mode, with an in-memory OAuthClientProvider. The user's browser is the scripted user
// agent (idp_agent.py, run through child_process), which stops at our redirect_uri and prints it.
//
// Usage: node ts_oauth_client.mjs MCP_URL --python PY --agent idp_agent.py|local_browser.py
//                                  [--user alice] [--password PW] [--expire-wait-ms MS]
//                                  [--grant-only SCOPES] [--ops JSON]
// Flow: connect -> UnauthorizedError -> (agent logs in) -> check state -> transport.finishAuth(code)
//       -> connect again on a new transport -> tools/list, add, create_note, list_notes
//       -> corrupt the access token (what a revoked/expired one looks like to the server), or with
//          --expire-wait-ms wait that long so that it expires for real
//       -> multiply: mcpgate answers 401 invalid_token, the SDK refreshes and retries.
// --grant-only SCOPES: in the first authorization the user consents to just these scopes (the
//   authorization request's `scope` is narrowed, as a consent screen with checkboxes would).
// --ops JSON: after the authorized connect, run these operations in place of the built-in flow
//   (any MCP server), each recorded in `ops` as {op, result} or {op, error, errorClass, code}:
//   {"op": "listTools"|"listPrompts"|"listResources"|"listResourceTemplates"|"ping"},
//   {"op": "callTool", "name", "arguments"}, {"op": "readResource", "uri"},
//   {"op": "getPrompt", "name", "arguments"}. The report also has `grantedScopes` (the scope
//   of the last token) and `mcpStatuses`.
// Prints one JSON object on stdout (for pytest to check); exit 1 on failure.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const url = process.argv[2];
const python = arg("--python", "python3");
const agent = arg("--agent");
const user = arg("--user", "alice");
const password = arg("--password");
const expireWaitMs = Number(arg("--expire-wait-ms", "0"));
const grantOnly = arg("--grant-only");
const ops = arg("--ops") ? JSON.parse(arg("--ops")) : undefined;
if (!url || !agent) {
  console.error("usage: node ts_oauth_client.mjs MCP_URL --python PY --agent AGENT.py [--user U] [--password PW] [--expire-wait-ms MS] [--grant-only SCOPES] [--ops JSON]");
  process.exit(2);
}

const watchdog = setTimeout(() => {
  console.error("ts_oauth_client: timed out");
  process.exit(3);
}, 40_000 + expireWaitMs);

// Never listened on: the agent stops at this URL and hands it back, like a browser would.
const REDIRECT = `http://127.0.0.1:${20000 + (process.pid % 20000)}/callback`;

const out = { authorizationUrls: [], stateChecks: [], tokenRequests: [], unauthorizedErrors: 0 };

class MemoryProvider {
  constructor() {
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this._state = undefined;
    this.pendingCode = undefined;
  }
  get redirectUrl() {
    return REDIRECT;
  }
  get clientMetadata() {
    return {
      client_name: "mcpgate-e2e-ts-oauth",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() {
    this._state = randomBytes(16).toString("hex");
    return this._state;
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
    out.clientId = info.client_id;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
    (out.savedTokens ??= []).push({ access_token: tokens.access_token, scope: tokens.scope, has_refresh: !!tokens.refresh_token });
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    if (!this._verifier) throw new Error("no code verifier saved");
    return this._verifier;
  }
  redirectToAuthorization(authorizationUrl) {
    out.authorizationUrls.push(authorizationUrl.href);
    let shown = authorizationUrl;
    if (grantOnly !== undefined && out.authorizationUrls.length === 1) {
      shown = new URL(authorizationUrl.href);
      shown.searchParams.set("scope", grantOnly);
    }
    // The "browser": log in and consent, stop at our redirect_uri, print it.
    // `--password=PW`: a random password may start with "-", which argparse would take for an option.
    const agentArgs = [agent, shown.href, "--user", user, ...(password ? [`--password=${password}`] : [])];
    const final = execFileSync(python, agentArgs, {
      encoding: "utf8",
      timeout: 20_000,
    }).trim();
    const cb = new URL(final);
    if (cb.origin + cb.pathname !== REDIRECT) throw new Error(`agent stopped at ${final}, not ${REDIRECT}`);
    if (cb.searchParams.get("error")) throw new Error(`authorization error: ${final}`);
    // The SDK does not check state: we do.
    const sent = authorizationUrl.searchParams.get("state");
    const got = cb.searchParams.get("state");
    const ok = !!sent && sent === this._state && got === sent;
    out.stateChecks.push({ sent, got, ok });
    if (!ok) throw new Error(`state mismatch: sent ${sent}, expected ${this._state}, got ${got}`);
    out.callbackIss = cb.searchParams.get("iss");
    this.pendingCode = cb.searchParams.get("code");
  }
}

// Records the token endpoint requests the SDK makes (grant types), and every MCP status code.
const statuses = [];
const recordingFetch = async (input, init) => {
  const res = await fetch(input, init);
  const u = typeof input === "string" ? input : input.url ?? String(input);
  if (u.endsWith("/token") && init?.body) {
    const body = new URLSearchParams(init.body.toString());
    out.tokenRequests.push({ grant_type: body.get("grant_type"), resource: body.get("resource"), status: res.status });
  } else if (u.startsWith(url)) {
    statuses.push(res.status);
  }
  return res;
};

async function runOp(client, op) {
  switch (op.op) {
    case "listTools":
      return (await client.listTools()).tools.map((t) => t.name);
    case "listPrompts":
      return (await client.listPrompts()).prompts.map((p) => p.name);
    case "listResources":
      return (await client.listResources()).resources.map((r) => r.uri);
    case "listResourceTemplates":
      return (await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
    case "ping":
      return await client.ping();
    case "callTool":
      return await client.callTool({ name: op.name, arguments: op.arguments ?? {} });
    case "readResource":
      return await client.readResource({ uri: op.uri });
    case "getPrompt":
      return await client.getPrompt({ name: op.name, arguments: op.arguments ?? {} });
    default:
      throw new Error(`unknown op ${op.op}`);
  }
}

const provider = new MemoryProvider();
const newTransport = () => new StreamableHTTPClientTransport(new URL(url), { authProvider: provider, fetch: recordingFetch });

try {
  let client = new Client({ name: "mcpgate-e2e-ts-oauth", version: "1.0.0" });
  let transport = newTransport();
  try {
    await client.connect(transport);
    throw new Error("connected without authorization: mcpgate did not answer 401");
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    out.unauthorizedErrors += 1;
  }
  if (!provider.pendingCode) throw new Error("UnauthorizedError but the agent produced no code");
  await transport.finishAuth(provider.pendingCode);
  await transport.close().catch(() => {});

  client = new Client({ name: "mcpgate-e2e-ts-oauth", version: "1.0.0" });
  transport = newTransport();
  await client.connect(transport);
  out.sessionId = transport.sessionId ?? null;
  if (ops) {
    out.ops = [];
    for (const op of ops) {
      const entry = { op: op.op, name: op.name ?? op.uri };
      try {
        entry.result = await runOp(client, op);
      } catch (err) {
        entry.error = String(err?.message ?? err);
        entry.errorClass = err?.constructor?.name;
        entry.code = err?.code;
      }
      out.ops.push(entry);
    }
    out.mcpStatuses = statuses;
    out.grantedScopes = provider._tokens?.scope;
    await client.close();
    clearTimeout(watchdog);
    console.log(JSON.stringify(out));
    process.exit(0);
  }
  out.tools = (await client.listTools()).tools.map((t) => t.name);
  out.add = await client.callTool({ name: "add", arguments: { a: 20, b: 22 } });
  const title = `ts-oauth-${Date.now()}`;
  out.createNote = await client.callTool({ name: "create_note", arguments: { title, body: "via the TS SDK with OAuth" } });
  out.listNotes = await client.callTool({ name: "list_notes", arguments: {} });
  const noteId = JSON.parse(out.createNote.content?.[0]?.text ?? "{}").id;
  out.readNote = await client.callTool({ name: "read_note", arguments: { id: noteId } });
  out.noteTitle = title;

  // A token the server no longer accepts: 401 invalid_token -> the SDK refreshes and retries.
  const before = provider._tokens.access_token;
  if (expireWaitMs > 0) {
    out.expiresIn = provider._tokens.expires_in;
    await new Promise((r) => setTimeout(r, expireWaitMs));
  } else {
    provider._tokens = { ...provider._tokens, access_token: before.slice(0, -6) + "AAAAAA" };
  }
  out.addAfterRefresh = await client.callTool({ name: "multiply", arguments: { a: 6, b: 7 } });
  out.refreshedTokenChanged = provider._tokens.access_token !== before;
  out.mcpStatuses = statuses;
  await client.close();
  clearTimeout(watchdog);
  console.log(JSON.stringify(out));
} catch (err) {
  clearTimeout(watchdog);
  console.error("ts_oauth_client error:", err?.stack ?? err);
  out.mcpStatuses = statuses;
  console.log(JSON.stringify({ ...out, error: String(err?.message ?? err) }));
  process.exit(1);
}
