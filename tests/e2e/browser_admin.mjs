// Drives mcpgate's admin console (/admin) in Debian's Chromium (headless, through puppeteer-core)
// the way an operator would: sign in, list users, add one, disable it, revoke a consent, rotate the
// signing key, look at the clients, sessions, upstreams and auth funnel, end an MCP session; a
// non-admin gets the 403 page. axe-core runs on every page in light and dark, and
// each page is photographed in both.
//
// Usage: node browser_admin.mjs CONFIG.json   (written by test_browser_admin.py)
//   { "base": "http://127.0.0.1:PORT", "admin": ["root", "pw"], "user": ["alice", "pw"],
//     "out": "DIR for PNGs", "chromium": "/usr/bin/chromium" }
// Prints one JSON object on stdout (the Python test asserts on it). A failed expectation throws.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const BASE = config.base;
const findings = { pages: {}, axe: {}, screenshots: [], statuses: {} };

function check(ok, what) {
  if (!ok) throw new Error(`expectation failed: ${what}`);
}

// axe's source goes in through the DevTools protocol: the page's CSP allows no script at all.
async function axe(page, name) {
  const has = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!has) await page.evaluate(AXE_SOURCE);
  findings.axe[name] = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  });
}

async function inspect(page, name) {
  const info = await page.evaluate(() => {
    const s = document.createElement('script');
    s.textContent = 'window.__inlineRan = true';
    document.body.appendChild(s);
    s.remove();
    return {
      title: document.title,
      h1: document.querySelector('h1')?.textContent,
      text: document.body.innerText,
      url: location.pathname + location.search,
      inlineScriptRan: window.__inlineRan === true,
      stylesheetApplied: getComputedStyle(document.body).display === 'flex',
      overflowsSideways: document.documentElement.scrollWidth > window.innerWidth,
      svgCount: document.querySelectorAll('svg').length,
    };
  });
  findings.pages[name] = info;
  check(!info.inlineScriptRan, `${name}: an inline script ran despite the CSP`);
  check(info.stylesheetApplied, `${name}: the stylesheet was not applied`);
  return info;
}

async function lightAndDark(page, name) {
  for (const value of ['light', 'dark']) {
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value }]);
    await inspect(page, `${name}-${value}`);
    await axe(page, `${name}-${value}`);
    const file = path.join(config.out, `${name}-${value}.png`);
    await page.screenshot({ path: file, fullPage: true });
    findings.screenshots.push(file);
  }
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
}

async function type(page, selector, text) {
  await page.focus(selector);
  await page.keyboard.type(text);
}

// Submit the form holding `selector` (a button) and wait for the next page.
async function press(page, selector) {
  const [response] = await Promise.all([page.waitForNavigation(), page.click(selector)]);
  return response;
}

async function signIn(page, [user, password]) {
  const r = await page.goto(`${BASE}/admin`);
  findings.statuses[`anonymous-${user}`] = r.status();
  check(page.url() === `${BASE}/admin/login`, `anonymous /admin went to ${page.url()}`);
  await type(page, '#username', user);
  await type(page, '#password', password);
  return press(page, 'form[action="/admin/login"] button');
}

const browser = await puppeteer.launch({
  executablePath: config.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--lang=en-US'],
});
try {
  {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    await page.goto(`${BASE}/admin/login`);
    await lightAndDark(page, 'admin-signin');
    const r = await signIn(page, config.admin);
    findings.statuses.adminSignedIn = r.status();
    check(page.url() === `${BASE}/admin`, `after sign-in: ${page.url()}`);
    await lightAndDark(page, 'admin-users');

    // Add a user.
    await type(page, '#username', 'carol');
    await type(page, '#password', 'carols-password-1');
    await press(page, 'form input[value="user.add"] ~ button');
    findings.afterAdd = await inspect(page, 'after-add');

    // Disable it, from its page.
    await page.goto(`${BASE}/admin`);
    const carol = await page.$$eval('a[href^="/admin/user?id="]', (as) => as.find((a) => a.textContent === 'carol')?.getAttribute('href'));
    check(carol, 'carol is listed');
    await page.goto(`${BASE}${carol}`);
    await press(page, 'form input[value="user.disable"] ~ button');
    findings.afterDisable = await inspect(page, 'after-disable');

    // Revoke alice's remembered consent, from her page (shot with the consent listed).
    await page.goto(`${BASE}/admin`);
    const alice = await page.$$eval('a[href^="/admin/user?id="]', (as, name) => as.find((a) => a.textContent === name)?.getAttribute('href'), config.user[0]);
    check(alice, 'alice is listed');
    await page.goto(`${BASE}${alice}`);
    await lightAndDark(page, 'admin-user');
    await press(page, 'form input[value="consent.revoke"] ~ button');
    findings.afterRevoke = await inspect(page, 'after-revoke');

    // Rotate the signing key.
    await page.goto(`${BASE}/admin/keys`);
    await press(page, 'form input[value="key.rotate"] ~ button');
    findings.afterRotate = await inspect(page, 'after-rotate');
    await lightAndDark(page, 'admin-keys');

    for (const [name, href] of [['admin-clients', '/admin/clients'], ['admin-sessions', '/admin/sessions'], ['admin-upstreams', '/admin/upstreams'], ['admin-funnel', '/admin/funnel']]) {
      const resp = await page.goto(`${BASE}${href}`);
      findings.statuses[name] = resp.status();
      await lightAndDark(page, name);
    }
    // The funnel's chart is server-drawn SVG with its numbers in a table.
    await page.goto(`${BASE}/admin/funnel`);
    findings.funnel = await inspect(page, 'funnel');
    // End the MCP session the test opened (the sessions page lists it with an End button).
    await page.goto(`${BASE}/admin/sessions`);
    findings.sessionHandles = await page.$$eval('form input[name="session"]', (inputs) => inputs.map((i) => i.value));
    check(findings.sessionHandles.length === 1, `one live session listed, got ${findings.sessionHandles.length}`);
    await press(page, 'form input[value="session.end"] ~ button');
    findings.afterEndSession = await inspect(page, 'after-end-session');
    // On a phone nothing scrolls sideways but the tables (in their own scroller).
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await page.goto(`${BASE}/admin`);
    await inspect(page, 'phone-users');
    await context.close();
  }
  {
    // A signed-in user without the admin role: the 403 page.
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    const r = await signIn(page, config.user);
    findings.statuses.nonAdmin = r.status();
    await lightAndDark(page, 'admin-forbidden');
    await context.close();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(findings));
