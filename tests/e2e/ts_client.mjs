// The official TypeScript SDK (@modelcontextprotocol/sdk) as an MCP client of mcpgate.
// Usage: node ts_client.mjs URL [--sse]
// Prints one JSON object on stdout: what the server answered (for pytest to check).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";

const [url, flag] = process.argv.slice(2);
if (!url) {
  console.error("usage: node ts_client.mjs URL [--sse]");
  process.exit(2);
}
const useSse = flag === "--sse";

const watchdog = setTimeout(() => {
  console.error("ts_client: timed out");
  process.exit(3);
}, 20_000);

const client = new Client({ name: "mcpgate-e2e-ts", version: "1.0.0" });
const transport = useSse
  ? new SSEClientTransport(new URL(url))
  : new StreamableHTTPClientTransport(new URL(url));

const out = { transport: useSse ? "sse" : "streamable-http" };
try {
  await client.connect(transport);
  out.serverVersion = client.getServerVersion();
  out.serverCapabilities = client.getServerCapabilities();
  if (!useSse) {
    out.sessionId = transport.sessionId ?? null;
    out.protocolVersion = transport.protocolVersion ?? null;
  }
  const tools = await client.listTools();
  out.tools = tools.tools.map((t) => t.name);
  out.add = await client.callTool({ name: "add", arguments: { a: 2, b: 3 } });
  out.divideByZero = await client.callTool({ name: "divide", arguments: { a: 1, b: 0 } });
  const note = await client.callTool({
    name: "create_note",
    arguments: { title: `ts-${Date.now()}`, body: "from the TypeScript SDK" },
  });
  const created = JSON.parse(note.content[0].text);
  out.readNote = await client.callTool({ name: "read_note", arguments: { id: created.id } });
  out.deleteNote = await client.callTool({ name: "delete_note", arguments: { id: created.id } });
  out.createdNote = created;
  out.ping = await client.ping();
  if (!useSse) {
    await transport.terminateSession();
    out.terminated = true;
  }
  await client.close();
  clearTimeout(watchdog);
  console.log(JSON.stringify(out));
} catch (err) {
  clearTimeout(watchdog);
  console.error("ts_client error:", err?.stack ?? err);
  console.log(JSON.stringify({ ...out, error: String(err?.message ?? err) }));
  process.exit(1);
}
