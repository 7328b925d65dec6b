// The TypeScript SDK calling a tool of a not-yet-connected user_auth upstream through mcpgate.
// Usage: node ts_connect_first.mjs MCP_URL TOKEN TOOL
// Prints one JSON object: the call's result, or the error's code, message and data.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, tool] = process.argv.slice(2);
const watchdog = setTimeout(() => {
  console.error("ts_connect_first: timed out");
  process.exit(3);
}, 20_000);
const client = new Client({ name: "mcpgate-e2e-ts-connect", version: "1.0.0" });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const out = {};
try {
  await client.connect(transport);
  out.capabilities = client.getServerCapabilities() ? "ok" : "none";
  try {
    out.result = await client.callTool({ name: tool, arguments: {} });
  } catch (e) {
    out.error = { code: e.code, message: e.message, data: e.data ?? null };
  }
  await client.close();
} catch (e) {
  out.fatal = String(e);
}
clearTimeout(watchdog);
console.log(JSON.stringify(out));
