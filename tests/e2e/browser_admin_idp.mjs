// The admin console in proxy mode, in Debian's Chromium (headless, through puppeteer-core): the
// sign-in goes to the real oidc-provider IdP (its login and consent pages), and the admin role
// follows the IdP's `groups` claim at each sign-in. The user starts in the admin group and gets
// /admin; the script then takes the group away at the IdP (its /__admin/groups hook), signs in
// again in a fresh browser and gets the 403 page, and the first browser's console is refused too.
// axe-core runs on the console's sign-in page in light and dark; both are photographed.
//
// Usage: node browser_admin_idp.mjs CONFIG.json   (written by test_browser_admin.py)
//   { "base": "http://127.0.0.1:PORT", "idp": "http://127.0.0.1:IDP_PORT", "user": "dana",
//     "group": "mcpgate-admins", "out": "DIR for PNGs", "chromium": "/usr/bin/chromium" }
// Prints one JSON object on stdout (the Python test asserts on it). A failed expectation throws.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const BASE = config.base;
const findings = { axe: {}, screenshots: [], statuses: {}, pages: {}, steps: [] };

function check(ok, what) {
  if (!ok) throw new Error(`expectation failed: ${what}`);
}

async function axe(page, name) {
  await page.evaluate(AXE_SOURCE);
  findings.axe[name] = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  });
}

async function text(page, name) {
  const info = await page.evaluate(() => ({
    title: document.title,
    text: document.body.innerText,
    url: location.pathname + location.search,
    stylesheetApplied: getComputedStyle(document.body).display === 'flex',
  }));
  findings.pages[name] = info;
  return info;
}

async function lightAndDark(page, name) {
  for (const value of ['light', 'dark']) {
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value }]);
    const info = await text(page, `${name}-${value}`);
    check(info.stylesheetApplied, `${name}-${value}: the stylesheet was not applied`);
    await axe(page, `${name}-${value}`);
    const file = path.join(config.out, `${name}-${value}.png`);
    await page.screenshot({ path: file, fullPage: true });
    findings.screenshots.push(file);
  }
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
}

async function setGroups(groups) {
  const r = await fetch(`${config.idp}/__admin/groups`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ account: config.user, groups }),
  });
  check(r.status === 200, `setting groups at the IdP: ${r.status}`);
}

// /admin -> the console's sign-in -> its button -> the IdP's login and consent pages -> /admin.
// Returns the status of the page the browser ends on.
async function signIn(page, name, photograph) {
  await page.goto(`${BASE}/admin`);
  check(page.url() === `${BASE}/admin/login`, `anonymous /admin went to ${page.url()}`);
  if (photograph) await lightAndDark(page, name);
  let [response] = await Promise.all([page.waitForNavigation(), page.click('form[action="/admin/login"] button')]);
  for (let step = 0; step < 6 && !page.url().startsWith(BASE); step += 1) {
    check(page.url().startsWith(config.idp), `the sign-in went to ${page.url()}`);
    if (await page.$('input[name="login"]')) {
      findings.steps.push('idp-login');
      await page.type('input[name="login"]', config.user);
      await page.type('input[name="password"]', 'any password');
    } else {
      findings.steps.push('idp-consent');
    }
    [response] = await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
  }
  check(page.url() === `${BASE}/admin`, `after the IdP: ${page.url()}`);
  return response.status();
}

const browser = await puppeteer.launch({
  executablePath: config.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--lang=en-US'],
});
try {
  await setGroups(config.group);
  const first = await browser.createBrowserContext();
  const page = await first.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  findings.statuses.inGroup = await signIn(page, 'admin-signin-idp', true);
  findings.inGroup = await text(page, 'in-group');

  // Out of the group at the IdP: the next sign-in takes the role away.
  await setGroups('');
  const second = await browser.createBrowserContext();
  const again = await second.newPage();
  await again.setViewport({ width: 1280, height: 900 });
  findings.statuses.outOfGroup = await signIn(again, 'out-of-group', false);
  findings.outOfGroup = await text(again, 'out-of-group');
  const r = await page.goto(`${BASE}/admin`);
  findings.statuses.firstBrowserAfter = r.status();
  await second.close();
  await first.close();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(findings));
