// Debian's Chromium (headless, puppeteer-core) as the users' browsers of test_upstream_user_auth.py:
// one isolated browser context (its own cookies) per user, kept for the whole test.
//
// Usage: node browser_connect.mjs CHROMIUM
// Reads one JSON command per line on stdin, answers one JSON line on stdout each:
//   {"op": "sign_in", "who": "alice", "url": AUTHORIZE_URL, "redirect": REDIRECT_URI,
//    "username": "alice", "password": "..."}
//     -> mcpgate's own sign-in and consent pages (typed and clicked); {"callback": URL?code=...}
//        (the request to the client's redirect URI is answered here, as its callback server would)
//   {"op": "connect", "who": "alice", "url": CONNECT_LINK, "idp_user": "alice-at-idp", "done": PREFIX}
//     -> follows a connect link: mcpgate's connect page, the IdP's sign-in and consent pages,
//        until a page under PREFIX (mcpgate's /connect/callback) has loaded;
//        {"status": first response's status, "url": where it ended, "text": the page's text, "steps": [...]}
//   {"op": "quit"}
import readline from 'node:readline';
import puppeteer from 'puppeteer-core';

const browser = await puppeteer.launch({
  executablePath: process.argv[2],
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run', '--lang=en-US'],
});
const contexts = new Map();

async function pageOf(who, redirect) {
  if (!contexts.has(who)) contexts.set(who, await browser.createBrowserContext());
  const page = await contexts.get(who).newPage();
  page.setDefaultTimeout(15_000);
  page.callbacks = [];
  if (redirect) {
    await page.setRequestInterception(true);
    page.on('request', (req) => {
      if (req.url().startsWith(redirect)) {
        page.callbacks.push(req.url());
        req.respond({ status: 200, contentType: 'text/plain', body: 'the client got its answer' });
      } else {
        req.continue();
      }
    });
  }
  return page;
}

async function submit(page, selector) {
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
}

async function signIn(cmd) {
  const page = await pageOf(cmd.who, cmd.redirect);
  try {
    await page.goto(cmd.url, { waitUntil: 'load' });
    if (await page.$('form[action="/login"] input[name="username"]')) {
      await page.type('input[name="username"]', cmd.username);
      await page.type('input[name="password"]', cmd.password);
      await submit(page, 'form[action="/login"] button[type="submit"]');
    }
    await Promise.all([
      page.waitForRequest((r) => r.url().startsWith(cmd.redirect)),
      page.click('form[action="/consent"] button[name="decision"][value="approve"]'),
    ]);
    return { callback: page.callbacks.at(-1) };
  } finally {
    await page.close();
  }
}

async function connect(cmd) {
  const page = await pageOf(cmd.who);
  const steps = [];
  try {
    const first = await page.goto(cmd.url, { waitUntil: 'load' });
    // The first answer of mcpgate's connect page: a redirect (the browser went on) or a page.
    const chain = first.request().redirectChain();
    const status = chain.length ? chain[0].response().status() : first.status();
    steps.push(`GET connect link -> ${status}`);
    for (let i = 0; i < 6 && !page.url().startsWith(cmd.done) && status < 400; i += 1) {
      if (await page.$('input[name="login"]')) {
        steps.push(`IdP sign-in at ${new URL(page.url()).pathname}`);
        await page.type('input[name="login"]', cmd.idp_user);
        await page.type('input[name="password"]', 'any-password');
        await submit(page, 'button[type="submit"]');
      } else if (await page.$('form button[type="submit"]')) {
        steps.push(`IdP consent at ${new URL(page.url()).pathname}`);
        await submit(page, 'form button[type="submit"]');
      } else {
        break;
      }
    }
    const text = await page.evaluate(() => document.body.innerText);
    return { status, url: page.url(), text, steps };
  } finally {
    await page.close();
  }
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  const cmd = JSON.parse(line);
  if (cmd.op === 'quit') break;
  let answer;
  try {
    answer = cmd.op === 'sign_in' ? await signIn(cmd) : await connect(cmd);
  } catch (e) {
    answer = { error: String(e && e.stack ? e.stack : e) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await browser.close();
