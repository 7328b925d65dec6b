// The official TypeScript SDK across two replicas (a gateway in front of the fixture upstream):
// 1. a tools/call whose POST stream breaks after its first event (the connection is aborted)
//    is resumed by the SDK itself with GET + Last-Event-ID, which goes to the other replica;
// 2. a sampling request raised by the first replica's upstream link is answered by the SDK's
//    handler with a POST that goes to the other replica.
// Usage: node ts_resume.mjs POST_URL OTHER_URL
// Requests go to POST_URL; GETs and the client's answers to OTHER_URL (as a balancer might send
// them). Prints one JSON object: what came back and which requests went where.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const [postUrl, otherUrl] = process.argv.slice(2);
if (!postUrl || !otherUrl) {
  console.error("usage: node ts_resume.mjs POST_URL OTHER_URL");
  process.exit(2);
}
const watchdog = setTimeout(() => {
  console.error("ts_resume: timed out");
  process.exit(3);
}, 40_000);

const out = { broken: 0, resumes: [], answersPosted: [] };

/** The POST stream of the `sleep` call: passes its first event with an id, then breaks. */
function breakAfterFirstId(response, controller) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let sawId = false;
  const body = new ReadableStream({
    async pull(c) {
      if (sawId) {
        controller.abort();
        out.broken += 1;
        c.error(new Error("connection lost (ts_resume)"));
        return;
      }
      const { value, done } = await reader.read();
      if (done) {
        c.close();
        return;
      }
      c.enqueue(value);
      sawId = /(^|\n)id:/.test(decoder.decode(value));
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

const balancer = async (url, init) => {
  const method = init?.method ?? "GET";
  const headers = new Headers(init?.headers);
  if (method === "GET") {
    const lastEventId = headers.get("last-event-id");
    const response = await fetch(otherUrl, init);
    if (lastEventId) out.resumes.push({ lastEventId, status: response.status });
    return response;
  }
  let message = {};
  try {
    message = JSON.parse(init?.body ?? "{}");
  } catch {}
  if (method === "POST" && message.method === undefined && message.id !== undefined) {
    // The client's answer to a server request.
    out.answersPosted.push(message.id);
    return fetch(otherUrl, init);
  }
  if (message.method === "tools/call" && message.params?.name === "sleep") {
    const controller = new AbortController();
    const response = await fetch(postUrl, { ...init, signal: controller.signal });
    return breakAfterFirstId(response, controller);
  }
  return fetch(postUrl, init);
};

const client = new Client(
  { name: "mcpgate-e2e-ts-resume", version: "1.0.0" },
  { capabilities: { sampling: {} } },
);
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  role: "assistant",
  content: { type: "text", text: "four" },
  model: "e2e-model",
}));
const transport = new StreamableHTTPClientTransport(new URL(postUrl), {
  fetch: balancer,
  reconnectionOptions: {
    initialReconnectionDelay: 200,
    maxReconnectionDelay: 2000,
    reconnectionDelayGrowFactor: 1.5,
    maxRetries: 5,
  },
});
try {
  await client.connect(transport);
  out.sessionId = transport.sessionId;
  const slept = await client.callTool({ name: "sleep", arguments: { seconds: 2 } });
  out.slept = slept.content?.[0]?.text;
  const sampled = await client.callTool({
    name: "test_sampling",
    arguments: { prompt: "what is 2+2?" },
  });
  out.sampled = sampled.content?.[0]?.text;
  await client.close();
} catch (e) {
  out.error = String(e?.stack ?? e);
}
clearTimeout(watchdog);
console.log(JSON.stringify(out));
process.exit(out.error ? 1 : 0);
