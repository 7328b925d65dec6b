// A real OpenID provider (npm `oidc-provider`, panva, OpenID Certified) for mcpgate's
// end-to-end tests, configured as /work/shared/reference/testing-with-real-peers.md describes.
// Headless: devInteractions serve two plain HTML forms (login, consent) that
// tests/e2e/idp_agent.py fills in.
//
// Run with Node >= 22 (tests/e2e/node_modules/node/bin/node):
//   node tests/e2e/idp/server.mjs [PORT]        PORT 0 (default) picks a free port
// Prints one JSON line on stdout when listening:
//   {"ready":true,"issuer":"http://127.0.0.1:PORT","port":PORT,...}
// Everything else (request log, provider warnings) goes to stderr.
// Environment variables and the /__admin/* endpoints are documented in tests/e2e/README.md.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider, { errors } from 'oidc-provider';
// The built-in memory adapter, over our own shared store: state (sessions, grants, tokens,
// dynamically registered clients) survives the provider rebuild that key rotation does, and
// nothing is evicted (the stock store is an LRU of 1000 entries). oidc-provider is pinned.
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';

// ------------------------------------------------------------------ configuration (env)
const env = process.env;
const list = (v) => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);
const int = (name, dflt) => {
  const v = env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number.parseInt(v, 10);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${v}`);
  return n;
};

const PORT = Number.parseInt(process.argv[2] ?? env.IDP_PORT ?? '0', 10);
const HOST = env.IDP_HOST ?? '127.0.0.1';
const MCP_RESOURCE = env.MCP_RESOURCE || 'http://127.0.0.1:18000/mcp';
const RS_SCOPES = (env.RS_SCOPES || 'notes:read notes:write calc docs:read').split(/\s+/).filter(Boolean);
const ACCESS_TOKEN_ALG = env.ACCESS_TOKEN_ALG || 'RS256';
const DEFAULT_RESOURCE = env.DEFAULT_RESOURCE === undefined ? MCP_RESOURCE : env.DEFAULT_RESOURCE;
const DEFAULT_SCOPE = env.DEFAULT_SCOPE || '';
const LOG_REQUESTS = env.IDP_LOG !== '0';

const state = {
  ttl: {
    access: int('ACCESS_TOKEN_TTL', 3600),
    refresh: int('REFRESH_TOKEN_TTL', 86400),
  },
  jwksHits: 0,
  // What clients asked for (test hooks): GET /auth per client_id, token grants per client_id and grant_type.
  counts: { authorize: {}, grants: {} },
  keySeq: 0,
  keys: [], // private JWKs; the first key of each kty signs
  // resource indicator -> { format: 'jwt'|'opaque', scope: string, audience?: string }
  resources: new Map(),
  clients: new Map(), // client_id -> static client metadata
  groups: new Map(), // account id -> its groups (the `groups` claim, profile scope); none: no claim
};

function addResource(resource, format, scope = RS_SCOPES.join(' '), audience = undefined) {
  if (!['jwt', 'opaque'].includes(format)) throw new Error(`format must be jwt or opaque, got ${format}`);
  new URL(resource); // throws on a non-absolute URL
  state.resources.set(resource, { format, scope, audience });
}
addResource(MCP_RESOURCE, 'jwt');
for (const r of list(env.EXTRA_JWT_RESOURCES)) addResource(r, 'jwt');
for (const r of list(env.OPAQUE_RESOURCES)) addResource(r, 'opaque');

function addStaticClient(meta) {
  if (!meta?.client_id) throw new Error('client_id is required');
  state.clients.set(meta.client_id, meta);
}
addStaticClient({
  // Upstream confidential client for mcpgate's proxy mode (authorization code + refresh).
  client_id: env.PROXY_CLIENT_ID || 'mcpgate-proxy',
  client_secret: env.PROXY_CLIENT_SECRET || 'mcpgate-proxy-secret',
  token_endpoint_auth_method: env.PROXY_CLIENT_AUTH_METHOD || 'client_secret_basic',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: list(env.PROXY_REDIRECT_URIS || 'http://127.0.0.1:18000/oauth/callback'),
});
addStaticClient({
  // Machine client: client_credentials only.
  client_id: env.MACHINE_CLIENT_ID || 'mcpgate-machine',
  client_secret: env.MACHINE_CLIENT_SECRET || 'mcpgate-machine-secret',
  token_endpoint_auth_method: env.MACHINE_CLIENT_AUTH_METHOD || 'client_secret_basic',
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
});
addStaticClient({
  // Resource-server client: authenticates at /token/introspection (introspects any token).
  client_id: env.RS_CLIENT_ID || 'mcpgate-rs',
  client_secret: env.RS_CLIENT_SECRET || 'mcpgate-rs-secret',
  token_endpoint_auth_method: env.RS_CLIENT_AUTH_METHOD || 'client_secret_basic',
  grant_types: [],
  response_types: [],
  redirect_uris: [],
});
if (env.STATIC_CLIENTS_JSON) {
  for (const c of JSON.parse(env.STATIC_CLIENTS_JSON)) addStaticClient(c);
}

// ------------------------------------------------------------------ keys
function generateKey(kty) {
  state.keySeq += 1;
  const suffix = crypto.randomBytes(4).toString('hex');
  if (kty === 'RSA') {
    const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
    return { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: `rsa-${state.keySeq}-${suffix}` };
  }
  if (kty === 'EC') {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'ES256', kid: `ec-${state.keySeq}-${suffix}` };
  }
  throw new Error(`kty must be RSA or EC, got ${kty}`);
}
state.keys.push(generateKey('RSA'), generateKey('EC'));

const publicJwk = ({ d, p, q, dp, dq, qi, ...pub }) => pub;
const activeKid = (kty) => state.keys.find((k) => k.kty === kty)?.kid;
const accessTokenKty = () => (ACCESS_TOKEN_ALG.startsWith('ES') ? 'EC' : 'RSA');

// ------------------------------------------------------------------ provider
const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];
const store = (() => {
  // get/set/delete with maxAge (ms), the interface the memory adapter expects.
  const m = new Map();
  let ops = 0;
  const sweep = () => {
    const now = Date.now();
    for (const [k, e] of m) if (e.exp && e.exp <= now) m.delete(k);
  };
  return {
    get(k) {
      const e = m.get(k);
      if (!e) return undefined;
      if (e.exp && e.exp <= Date.now()) { m.delete(k); return undefined; }
      return e.v;
    },
    set(k, v, opts) {
      if (++ops % 1000 === 0) sweep();
      m.set(k, { v, exp: opts?.maxAge ? Date.now() + opts.maxAge : 0 });
    },
    delete(k) { m.delete(k); },
  };
})();
const adapter = (model) => new MemoryAdapter(model, store, 0);

function findAccount(_ctx, id) {
  return {
    accountId: id,
    async claims() {
      const groups = state.groups.get(id);
      return {
        sub: id, name: id, preferred_username: id, email: `${id}@example.test`, email_verified: true,
        ...(groups ? { groups } : {}),
      };
    },
  };
}

function buildProvider(issuer) {
  const configuration = {
    adapter,
    clients: [...state.clients.values()].map((c) => structuredClone(c)),
    jwks: { keys: state.keys.map((k) => ({ ...k })) },
    cookies: { keys: COOKIE_KEYS },
    findAccount,
    scopes: ['openid', 'offline_access', ...new Set([...RS_SCOPES, ...[...state.resources.values()].flatMap((r) => r.scope.split(' '))])],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username', 'groups'],
    },
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf || DEFAULT_RESOURCE || undefined,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          const r = state.resources.get(resourceIndicator);
          if (!r) throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
          const info = { scope: r.scope, accessTokenFormat: r.format };
          if (r.audience) info.audience = r.audience;
          if (r.format === 'jwt') info.jwt = { sign: { alg: ACCESS_TOKEN_ALG } };
          return info;
        },
      },
    },
    responseTypes: ['code'],
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    clientBasedCORS: () => true,
    ttl: {
      AccessToken: () => state.ttl.access,
      ClientCredentials: () => state.ttl.access,
      RefreshToken: () => state.ttl.refresh,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 86400,
      Grant: () => Math.max(state.ttl.refresh, 86400),
    },
  };
  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (_ctx, err) => console.error('[idp] server_error', err));
  provider.on('grant.success', (ctx) => {
    const clientId = ctx.oidc.client?.clientId ?? '?';
    const grantType = ctx.oidc.params?.grant_type ?? '?';
    const perClient = (state.counts.grants[clientId] ??= {});
    perClient[grantType] = (perClient[grantType] ?? 0) + 1;
    if (LOG_REQUESTS) console.error(`[idp] grant ${grantType} client_id=${clientId}`);
  });
  for (const ev of ['grant.error', 'authorization.error', 'registration_create.error',
    'introspection.error', 'revocation.error', 'jwks.error', 'discovery.error', 'userinfo.error']) {
    provider.on(ev, (_ctx, err) => console.error(`[idp] ${ev}: ${err.error || err.name}: ${err.error_description || err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`));
  }
  return provider;
}

// ------------------------------------------------------------------ HTTP front
let issuer;
let handler; // current provider's request handler (swapped on rotation / client changes)

function rebuild() {
  handler = buildProvider(issuer).callback();
}

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(data);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function params(req, url) {
  // Admin parameters: query string, merged with a JSON or form body.
  const out = Object.fromEntries(url.searchParams);
  const raw = await readBody(req);
  if (raw.trim()) {
    if (raw.trim().startsWith('{')) Object.assign(out, JSON.parse(raw));
    else Object.assign(out, Object.fromEntries(new URLSearchParams(raw)));
  }
  return out;
}

function info() {
  return {
    issuer,
    mcp_resource: MCP_RESOURCE,
    default_resource: DEFAULT_RESOURCE || null,
    default_scope: DEFAULT_SCOPE || null,
    rs_scopes: RS_SCOPES.join(' '),
    access_token_alg: ACCESS_TOKEN_ALG,
    active_kid: activeKid(accessTokenKty()),
    kids: state.keys.map((k) => k.kid),
    jwks_hits: state.jwksHits,
    counts: state.counts,
    ttl: { access_token: state.ttl.access, refresh_token: state.ttl.refresh },
    resources: Object.fromEntries(state.resources),
    static_clients: [...state.clients.values()].map(({ client_secret, ...c }) => ({ ...c, has_secret: !!client_secret })),
  };
}

async function admin(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  try {
    switch (route) {
      case 'GET /__admin/info':
        return sendJson(res, 200, info());
      case 'GET /__admin/counts':
        return sendJson(res, 200, state.counts);
      case 'GET /__admin/jwks-hits':
        return sendJson(res, 200, { hits: state.jwksHits });
      case 'POST /__admin/jwks-hits/reset':
        state.jwksHits = 0;
        return sendJson(res, 200, { hits: 0 });
      case 'POST /__admin/rotate': {
        // Adds a new signing key of `kty` (default: the access-token key type) in front of the
        // others, so it signs from now on; `retire=1` drops the older keys of that kty from JWKS.
        const p = await params(req, url);
        const kty = (p.kty || accessTokenKty()).toUpperCase();
        const key = generateKey(kty);
        const retire = ['1', 'true', true].includes(p.retire);
        const retired = retire ? state.keys.filter((k) => k.kty === kty).map((k) => k.kid) : [];
        state.keys = [key, ...state.keys.filter((k) => !retired.includes(k.kid))];
        rebuild();
        return sendJson(res, 200, {
          kid: key.kid, kty, retired, active_kid: activeKid(accessTokenKty()), kids: state.keys.map((k) => k.kid),
        });
      }
      case 'POST /__admin/ttl': {
        const p = await params(req, url);
        for (const [field, name] of [['access', 'access_token'], ['refresh', 'refresh_token']]) {
          if (p[name] !== undefined) {
            const n = Number.parseInt(p[name], 10);
            if (!(n > 0)) throw new Error(`${name} must be a positive integer`);
            state.ttl[field] = n;
          }
        }
        return sendJson(res, 200, { access_token: state.ttl.access, refresh_token: state.ttl.refresh });
      }
      case 'POST /__admin/resources': {
        const p = await params(req, url);
        addResource(p.resource, p.format || 'jwt', p.scope || RS_SCOPES.join(' '), p.audience);
        rebuild(); // the top-level scopes list may have grown
        return sendJson(res, 200, { resources: Object.fromEntries(state.resources) });
      }
      case 'POST /__admin/clients': {
        // Adds (or replaces) a static client, e.g. once the gateway's callback URL is known.
        const p = await params(req, url);
        if (!p.client_id) throw new Error('client_id is required');
        const previous = state.clients.get(p.client_id);
        addStaticClient(p);
        try {
          const provider = buildProvider(issuer);
          await provider.Client.validate(structuredClone(p));
          handler = provider.callback();
        } catch (e) {
          if (previous) state.clients.set(p.client_id, previous); else state.clients.delete(p.client_id);
          throw new Error(`${e.error || e.name}: ${e.error_description || e.message}`);
        }
        return sendJson(res, 200, { client_id: p.client_id });
      }
      case 'POST /__admin/groups': {
        // Sets an account's groups (comma-separated; empty: member of none) for its next sign-in.
        const p = await params(req, url);
        if (!p.account) throw new Error('account is required');
        state.groups.set(p.account, list(p.groups));
        return sendJson(res, 200, { account: p.account, groups: state.groups.get(p.account) });
      }
      default:
        return sendJson(res, 404, { error: 'not_found', routes: ['GET /__admin/info', 'GET /__admin/counts', 'GET /__admin/jwks-hits', 'POST /__admin/jwks-hits/reset', 'POST /__admin/rotate', 'POST /__admin/ttl', 'POST /__admin/resources', 'POST /__admin/clients', 'POST /__admin/groups'] });
    }
  } catch (e) {
    return sendJson(res, 400, { error: 'invalid_request', error_description: String(e.message || e) });
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://idp.invalid');
  if (LOG_REQUESTS) {
    const started = Date.now();
    res.on('finish', () => console.error(`[idp] ${req.method} ${url.pathname} -> ${res.statusCode} (${Date.now() - started} ms)`));
  }
  // Endpoint URLs in discovery follow the Host header: pin them to the issuer's host.
  if (issuer) req.headers.host = new URL(issuer).host;
  if (url.pathname.startsWith('/__admin/')) {
    admin(req, res, url);
    return;
  }
  if (url.pathname === '/.well-known/oauth-authorization-server') {
    // RFC 8414: the same document as /.well-known/openid-configuration.
    req.url = `/.well-known/openid-configuration${url.search}`;
  } else if (url.pathname === '/auth' && DEFAULT_SCOPE && !url.searchParams.get('scope')) {
    // A client that requests no scope (none advertised) gets DEFAULT_SCOPE instead of access_denied.
    url.searchParams.set('scope', DEFAULT_SCOPE);
    req.url = `${url.pathname}?${url.searchParams}`;
  } else if (url.pathname === '/jwks') {
    state.jwksHits += 1;
  }
  if (url.pathname === '/auth') {
    const clientId = url.searchParams.get('client_id') ?? '?';
    state.counts.authorize[clientId] = (state.counts.authorize[clientId] ?? 0) + 1;
  }
  if (!handler) { sendJson(res, 503, { error: "starting" }); return; }
  handler(req, res);
});

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  issuer = `http://${HOST}:${port}`;
  rebuild();
  process.stdout.write(`${JSON.stringify({
    ready: true,
    issuer,
    port,
    jwks_uri: `${issuer}/jwks`,
    mcp_resource: MCP_RESOURCE,
    active_kid: activeKid(accessTokenKty()),
  })}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  });
}
