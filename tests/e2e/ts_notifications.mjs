// The official TypeScript SDK holding a session's GET stream on one replica while the messages
// for it are raised on another (a gateway in front of the fixture upstream).
// Usage: node ts_notifications.mjs SDK_URL OTHER_URL
// The SDK connects to SDK_URL (its GET stream is there); plain POSTs on the same session go to
// OTHER_URL: resources/subscribe + touch_resource (resources/updated raised there) and
// announce_tools (tools/list_changed from that replica's upstream link). Prints one JSON object:
// what the SDK's notification handlers saw.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  ResourceUpdatedNotificationSchema,
  ToolListChangedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const [sdkUrl, otherUrl] = process.argv.slice(2);
if (!sdkUrl || !otherUrl) {
  console.error("usage: node ts_notifications.mjs SDK_URL OTHER_URL");
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error("ts_notifications: timed out");
  process.exit(3);
}, 20_000);

// Resolved when the SDK's GET stream has been answered (the replica has claimed it).
let streamOpen;
const getStreamOpen = new Promise((resolve) => (streamOpen = resolve));
const watchingFetch = async (url, init) => {
  const response = await fetch(url, init);
  if ((init?.method ?? "GET") === "GET" && response.ok) streamOpen(response.status);
  return response;
};

const seen = { toolListChanged: 0, resourceUpdated: [] };
const waiters = [];
const changed = () => waiters.splice(0).forEach((w) => w());
const next = (what, ms = 10_000) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    waiters.push(() => {
      clearTimeout(timer);
      resolve();
    });
  });

const client = new Client({ name: "mcpgate-e2e-ts-notifications", version: "1.0.0" });
client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
  seen.toolListChanged += 1;
  changed();
});
client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
  seen.resourceUpdated.push(n.params.uri);
  changed();
});
const transport = new StreamableHTTPClientTransport(new URL(sdkUrl), { fetch: watchingFetch });

// One JSON-RPC request on the session, sent to the other replica.
let nextId = 1000;
async function elsewhere(method, params) {
  const response = await fetch(otherUrl, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-session-id": transport.sessionId,
      "mcp-protocol-version": transport.protocolVersion,
    },
    body: JSON.stringify({ jsonrpc: "2.0", id: nextId++, method, params }),
  });
  const text = await response.text();
  if (!response.ok || !text.includes('"result"')) {
    throw new Error(`${method} on the other replica: ${response.status} ${text}`);
  }
}

const out = {};
try {
  await client.connect(transport);
  out.sessionId = transport.sessionId;
  out.getStatus = await getStreamOpen;
  await elsewhere("resources/subscribe", { uri: "test://watched-resource" });
  let arrived = next("resources/updated");
  await elsewhere("tools/call", { name: "touch_resource", arguments: {} });
  await arrived;
  arrived = next("tools/list_changed");
  await elsewhere("tools/call", { name: "announce_tools", arguments: {} });
  await arrived;
  out.seen = seen;
  await transport.terminateSession();
  await client.close();
  clearTimeout(watchdog);
  console.log(JSON.stringify(out));
} catch (err) {
  clearTimeout(watchdog);
  console.error("ts_notifications error:", err?.stack ?? err);
  console.log(JSON.stringify({ ...out, seen, error: String(err?.message ?? err) }));
  process.exit(1);
}
