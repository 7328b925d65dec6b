// Drives mcpgate's own sign-in, consent and error pages in Debian's Chromium (headless, through
// puppeteer-core; nothing is downloaded) the way a person would, checks what they see and do, runs
// axe-core on every page in light and dark, and takes screenshots.
//
// Usage: node browser_pages.mjs CONFIG.json   (written by test_browser_pages.py)
//   { "base": "http://127.0.0.1:PORT", "users": {"alice": "pw", "bob": "pw"},
//     "out": "DIR for PNGs", "chromium": "/usr/bin/chromium" }
// Prints one JSON object on stdout: the steps' findings (the Python test asserts on them) and the
// codes/verifiers of the flows that reached the client, so the test can redeem them at /token.
// Any failed expectation throws: exit code 1 with the reason on stderr.
import { readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const BASE = config.base;
const REDIRECT = 'http://127.0.0.1:9/callback';
const VIEWPORTS = {
  desktop: { width: 1280, height: 860, deviceScaleFactor: 1 },
  phone: { width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true },
};
const findings = { pages: {}, axe: {}, flows: {}, screenshots: [], redirectUri: REDIRECT };

function check(ok, what) {
  if (!ok) throw new Error(`expectation failed: ${what}`);
}

const b64url = (buf) => buf.toString('base64url');

async function register() {
  const r = await fetch(`${BASE}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: 'Claude Desktop',
      redirect_uris: [REDIRECT],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
    }),
  });
  check(r.status === 201, `registration answered ${r.status}`);
  return (await r.json()).client_id;
}

function authorizeUrl(clientId) {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const state = b64url(randomBytes(8));
  const q = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: REDIRECT, code_challenge: challenge,
    code_challenge_method: 'S256', state, scope: 'notes:read notes:write docs:read', resource: `${BASE}/mcp`,
  });
  return { url: `${BASE}/authorize?${q}`, verifier, state };
}

// The client's redirect URI is answered here, as the client's own callback server would.
async function newPage(context, viewport) {
  const page = await context.newPage();
  await page.setViewport(VIEWPORTS[viewport]);
  await page.setRequestInterception(true);
  page.callbacks = [];
  page.on('request', (req) => {
    if (req.url().startsWith(REDIRECT)) {
      page.callbacks.push(req.url());
      req.respond({ status: 200, contentType: 'text/plain', body: 'the client got its answer' });
    } else {
      req.continue();
    }
  });
  return page;
}

async function scheme(page, value) {
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value }]);
}

// axe-core in the page. The pages' CSP forbids every script (default-src 'none'), so axe is not
// added as a <script> (that would be blocked, rightly): its source is evaluated through the
// DevTools protocol (Runtime.evaluate), which the page's CSP does not govern; the page itself
// keeps its CSP for everything else (see the inline-script probe in `inspect`).
async function axe(page, name) {
  const has = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!has) await page.evaluate(AXE_SOURCE);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  });
  findings.axe[name] = result;
  return result;
}

// Everything a page shows about itself that the test asserts on, plus the CSP probe.
async function inspect(page, name) {
  // The browser applies `autofocus` in a later rendering step, not at load:
  // on a page that has an autofocus field, give it a moment, so the focus
  // check reads the page and not a race (the check itself is unchanged).
  await page
    .waitForFunction(
      () => !document.querySelector('[autofocus]') || (document.activeElement && document.activeElement !== document.body),
      { timeout: 2000 },
    )
    .catch(() => {});
  const info = await page.evaluate(() => {
    const q = (s) => document.querySelector(s);
    // An inline script must not run under the pages' CSP.
    const s = document.createElement('script');
    s.textContent = 'window.__inlineRan = true';
    document.body.appendChild(s);
    s.remove();
    const button = q('.button');
    return {
      title: document.title,
      h1: q('h1')?.textContent,
      text: document.body.innerText,
      url: location.pathname + location.search,
      inlineScriptRan: window.__inlineRan === true,
      stylesheetApplied: getComputedStyle(document.body).display === 'flex',
      buttonBackground: button ? getComputedStyle(button).backgroundColor : null,
      bodyBackground: getComputedStyle(document.body).backgroundColor,
      overflowsSideways: document.documentElement.scrollWidth > window.innerWidth,
      forms: [...document.forms].map((f) => f.getAttribute('action')),
      labels: [...document.querySelectorAll('input:not([type=hidden])')].map((i) => ({
        id: i.id, label: i.labels && i.labels[0] ? i.labels[0].textContent.trim() : null,
        invalid: i.getAttribute('aria-invalid'), describedBy: i.getAttribute('aria-describedby'),
      })),
      focused: document.activeElement ? document.activeElement.id || document.activeElement.name || document.activeElement.tagName : null,
      signinError: q('#signin-error')?.textContent ?? null,
    };
  });
  findings.pages[name] = info;
  check(!info.inlineScriptRan, `${name}: an inline script ran despite the CSP`);
  check(info.stylesheetApplied, `${name}: the stylesheet was not applied`);
  return info;
}

async function shoot(page, name) {
  const file = path.join(config.out, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  findings.screenshots.push(file);
}

// Every look of a page: axe and a screenshot, light then dark.
async function lightAndDark(page, name, { screenshots = true } = {}) {
  for (const value of ['light', 'dark']) {
    await scheme(page, value);
    const info = await inspect(page, `${name}-${value}`);
    await axe(page, `${name}-${value}`);
    if (screenshots) await shoot(page, `${name}-${value}`);
    findings.pages[`${name}-${value}`].bodyBackground = info.bodyBackground;
  }
  await scheme(page, 'light');
}

// Tab through the page from the top; the order of the focusable controls.
async function tabOrder(page, max = 12) {
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  const order = [];
  for (let i = 0; i < max; i += 1) {
    await page.keyboard.press('Tab');
    const d = await page.evaluate(() => {
      const e = document.activeElement;
      if (!e || e === document.body) return null;
      const form = e.form ? e.form.getAttribute('action') : '';
      return `${e.tagName.toLowerCase()}:${e.id || e.name || ''}:${e.value && e.tagName === 'BUTTON' ? e.value : ''}:${form}`;
    });
    if (d === null || order.includes(d)) break;
    order.push(d);
  }
  return order;
}

async function signIn(page, user, password) {
  // By keyboard, as a person would: the user name field has the focus.
  await page.focus('#username');
  await page.keyboard.down('Control');
  await page.keyboard.press('KeyA');
  await page.keyboard.up('Control');
  await page.keyboard.type(user);
  await page.keyboard.press('Tab');
  await page.keyboard.type(password);
  await Promise.all([page.waitForNavigation(), page.keyboard.press('Enter')]);
}

const browser = await puppeteer.launch({
  executablePath: config.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--lang=en-US'],
});
try {
  const clientId = await register();
  findings.clientId = clientId;
  const users = Object.entries(config.users);
  const [[alice, alicePw], [bob, bobPw]] = users;

  // ---- desktop: sign-in (wrong password first), consent, "not you?", approve
  {
    const context = await browser.createBrowserContext();
    const page = await newPage(context, 'desktop');
    const flow = authorizeUrl(clientId);
    const r = await page.goto(flow.url);
    check(r.status() === 200, `sign-in page answered ${r.status()}`);
    findings.signinHeaders = r.headers();
    const signin = await inspect(page, 'signin');
    check(signin.focused === 'username', `the user name field has the focus (got ${signin.focused})`);
    await lightAndDark(page, 'signin');

    await signIn(page, alice, 'not-the-password');
    const failed = await inspect(page, 'signin-error');
    check(failed.signinError && /Wrong user name or password/.test(failed.signinError), 'the sign-in error is shown');
    check(failed.focused === 'password', `after a failure the password field has the focus (got ${failed.focused})`);
    await lightAndDark(page, 'signin-error');

    await signIn(page, alice, alicePw);
    const consent = await inspect(page, 'consent');
    check(consent.url.startsWith('/consent?request='), `consent at ${consent.url}`);
    findings.consentTabOrder = await tabOrder(page);
    await lightAndDark(page, 'consent');

    // "Not you? Sign out": back to the sign-in page of the same request; bob signs in instead.
    await Promise.all([page.waitForNavigation(), page.click('form[action="/logout"] button')]);
    const again = await inspect(page, 'signed-out');
    check(again.url.startsWith('/login?request='), `after sign-out at ${again.url}`);
    await signIn(page, bob, bobPw);
    await inspect(page, 'consent-bob');
    await page.click('#remember');
    await Promise.all([
      page.waitForRequest((req) => req.url().startsWith(REDIRECT)),
      page.click('button[value="approve"]'),
    ]);
    check(page.callbacks.length === 1, 'approve: the client got one answer');
    findings.flows.approve = { callback: page.callbacks[0], verifier: flow.verifier, state: flow.state };
    await context.close();
  }

  // ---- phone: sign-in and consent at 390 px, then deny
  {
    const context = await browser.createBrowserContext();
    const page = await newPage(context, 'phone');
    const flow = authorizeUrl(clientId);
    await page.goto(flow.url);
    await lightAndDark(page, 'phone-signin');
    await signIn(page, alice, alicePw);
    await lightAndDark(page, 'phone-consent');
    await Promise.all([
      page.waitForRequest((req) => req.url().startsWith(REDIRECT)),
      page.click('button[value="deny"]'),
    ]);
    check(page.callbacks.length === 1, 'deny: the client got one answer');
    findings.flows.deny = { callback: page.callbacks[0], state: flow.state };
    await context.close();
  }

  // ---- error pages: an unknown client, and a redirect URI that is not registered
  {
    const context = await browser.createBrowserContext();
    for (const viewport of ['desktop', 'phone']) {
      const page = await newPage(context, viewport);
      let r = await page.goto(`${BASE}/authorize?response_type=code&client_id=no-such-client`);
      findings.errorStatus = r.status();
      await lightAndDark(page, `${viewport === 'phone' ? 'phone-' : ''}error`, { screenshots: viewport === 'desktop' });
      const bad = authorizeUrl(clientId).url.replace(encodeURIComponent(REDIRECT), encodeURIComponent('https://attacker.example/cb'));
      r = await page.goto(bad);
      findings.badRedirectStatus = r.status();
      await inspect(page, `${viewport}-bad-redirect`);
      await page.close();
    }
    await context.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(findings));
