// Preload for Node tools that cannot send a bearer token themselves (the conformance CLI's server
// scenarios): `NODE_OPTIONS=--import=/abs/path/bearer_preload.mjs`, with
//   MCPGATE_E2E_BEARER         the access token
//   MCPGATE_E2E_BEARER_ORIGIN  e.g. http://127.0.0.1:PORT: only requests to this origin get it
// It installs an undici global dispatcher that adds `Authorization: Bearer <token>` to every
// request to that origin which has no Authorization header yet. Node's built-in fetch and the
// npm `undici` package (`undici.request`) both go through the global dispatcher, so nothing else
// in the tool changes: the Host and Origin headers it sends are left as they are.
import { Agent, setGlobalDispatcher } from "undici";

const token = process.env.MCPGATE_E2E_BEARER;
const origin = process.env.MCPGATE_E2E_BEARER_ORIGIN;

function withAuth(headers, value) {
  if (headers == null) return { authorization: value };
  if (Array.isArray(headers)) {
    const flat = headers.length > 0 && !Array.isArray(headers[0]);
    const names = flat ? headers.filter((_, i) => i % 2 === 0) : headers.map((h) => h[0]);
    if (names.some((n) => String(n).toLowerCase() === "authorization")) return headers;
    return flat ? [...headers, "authorization", value] : [...headers, ["authorization", value]];
  }
  if (typeof headers[Symbol.iterator] === "function") return withAuth([...headers], value);
  if (Object.keys(headers).some((n) => n.toLowerCase() === "authorization")) return headers;
  return { ...headers, authorization: value };
}

if (token && origin) {
  const want = new URL(origin).origin;
  const agent = new Agent().compose((dispatch) => (opts, handler) => {
    let reqOrigin = "";
    try {
      reqOrigin = new URL(String(opts.origin)).origin;
    } catch {}
    if (reqOrigin === want) opts = { ...opts, headers: withAuth(opts.headers, `Bearer ${token}`) };
    return dispatch(opts, handler);
  });
  setGlobalDispatcher(agent);
}
