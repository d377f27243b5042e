// The dashboard, end to end, in headless Chromium driven by playwright-core.
//
// Started by tests/it/ui_browser.rs, which runs the real `hookline serve`, a loopback receiver
// that answers 404 to the first attempt of the first event, two tenants and their
// subscriptions, and waits until the first tenant's subscription is blocked. This script is a
// person at the browser: anonymous pages show nothing; sign in with the admin key; find the
// subscription by its URL; see `blocked` and the 404; open the delivery; press Resubmit; see
// the rest delivered; the operational notifications (blocked, then recovered) on the overview
// and /ui/notifications, the system tenant `_hookline` marked as such for the admin; a tenant key
// cannot see the other tenant, nor the system tenant. No page may hold a secret, and
// the browser must report no error (a Content-Security-Policy violation would be one).
// Screenshots of each page go to $SHOTS. Exits non-zero at the first failed expectation.
//
// Environment: BASE, ADMIN_KEY, TENANT_KEY, SUB_URL, SUB_ID, OTHER_SUB_ID, EVENTS (count),
// OPS_URL (the operator's notification receiver), SECRETS (JSON array), SHOTS, CHROMIUM
// (default /usr/bin/chromium), USER_DATA_DIR.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing environment variable ${name}`);
  return v;
};
const BASE = env('BASE');
const SHOTS = env('SHOTS');
const SECRETS = JSON.parse(env('SECRETS'));
const EVENTS = Number(env('EVENTS'));
const OPS_URL = env('OPS_URL');
const SYSTEM = '_hookline';
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
  "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

function expect(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
  console.log(`ok - ${what}`);
}

async function noSecrets(page, where) {
  const html = await page.content();
  for (const s of SECRETS) {
    if (html.includes(s)) throw new Error(`a secret is rendered on ${where}`);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

/// Polls `f` until it returns true or `ms` pass.
async function eventually(what, f, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await f()) return expect(true, what);
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function signIn(page, key) {
  await page.goto(`${BASE}/ui/login`);
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${BASE}/ui/`);
}

mkdirSync(SHOTS, { recursive: true });
const context = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run',
  ],
});
const errors = [];
let failed = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));

  // Anonymous: every page sends to the sign-in form, and shows no data.
  for (const path of ['/ui/', '/ui/subscriptions', `/ui/subscriptions/${env('SUB_ID')}`]) {
    await page.goto(`${BASE}${path}`);
    expect(page.url().startsWith(`${BASE}/ui/login`), `anonymous ${path} lands on the sign-in page`);
    // The requested path comes back only as the form's hidden `next`; no data does.
    const html = await page.content();
    const text = await page.locator('body').innerText();
    expect(!html.includes(env('SUB_URL')) && !text.includes(env('SUB_ID')), `anonymous ${path} shows no data`);
  }
  await shot(page, 'login');

  // The admin signs in; the overview has the policy and the counts.
  const overview = await (async () => {
    await page.goto(`${BASE}/ui/login`);
    await page.getByLabel('API key').fill(env('ADMIN_KEY'));
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${BASE}/ui/`),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    return resp;
  })();
  expect(overview.headers()['content-security-policy'] === CSP, 'the overview carries the strict CSP');
  expect(await page.getByTestId('tile-blocked').locator('.n').innerText() === '1', 'the overview counts one blocked subscription');
  expect(await page.evaluate(() => typeof window.htmx) === 'object', 'htmx runs under the policy');
  const latest = page.getByTestId('notice-row');
  expect(await latest.count() === 1 && (await latest.innerText()).includes('blocked'),
    'the overview lists the blocked notification');
  await noSecrets(page, 'overview');
  await shot(page, 'overview');

  // The notifications: the operator's receiver (a subscription of the system tenant) and the
  // blocked notification about the subscription.
  await page.getByRole('link', { name: 'Notifications' }).click();
  const receiver = page.getByTestId('receiver-row');
  expect(await receiver.count() === 1 && (await receiver.innerText()).includes(OPS_URL),
    "the operator's receiver is listed");
  expect((await page.getByTestId('notice-row').innerText()).includes(env('SUB_URL')),
    'the notification names the subscription it is about');
  await noSecrets(page, 'notifications');
  await shot(page, 'notifications');
  // Among the subscriptions, the system tenant's is marked as what it is.
  await page.goto(`${BASE}/ui/subscriptions?tenant=${SYSTEM}`);
  const sys = page.getByTestId('subscription-row');
  expect(await sys.count() === 1 && await sys.getByTestId('system-badge').count() === 1,
    'the receiver is marked as the system tenant\'s');
  await sys.getByRole('link', { name: OPS_URL }).click();
  expect((await page.getByTestId('receiver-of').innerText()).includes('every tenant'),
    "the receiver's page says whose notifications it gets");
  await noSecrets(page, 'a receiver');
  await shot(page, 'system-receiver');

  // Find the subscription by its URL.
  await page.getByRole('link', { name: 'Subscriptions' }).click();
  await page.getByLabel('URL or id contains').fill(new URL(env('SUB_URL')).pathname);
  await page.getByRole('button', { name: 'Filter' }).click();
  const row = page.getByTestId('subscription-row');
  expect(await row.count() === 1, 'the search finds exactly the subscription');
  expect(await row.getByTestId('state').innerText() === 'blocked', 'its state badge says blocked');
  expect(await row.getByTestId('last-code').innerText() === '404', 'its last HTTP code is 404');
  await noSecrets(page, 'subscriptions');
  await shot(page, 'subscriptions');

  // Its page: the head-of-line panel names the delivery, the attempt and the code.
  await row.getByRole('link', { name: env('SUB_URL') }).click();
  const head = page.getByTestId('head-of-line');
  const summary = await head.getByTestId('head-summary').innerText();
  expect(/Blocked on dlv_\d+/.test(summary), `the panel says what it is blocked on ("${summary.split('\n')[0]}")`);
  expect(/attempt 1, last HTTP 404/.test(summary), 'the panel gives the attempt and the last HTTP code');
  await noSecrets(page, 'subscription');
  await shot(page, 'subscription-blocked');

  // The delivery: the seed's MDB fields first.
  await head.getByRole('link', { name: /^dlv_/ }).click();
  expect(await page.getByTestId('delivery-status').innerText() === 'failed', 'the delivery is failed');
  expect(await page.getByTestId('delivery-code').innerText() === '404', 'with HTTP code 404');
  expect(await page.getByTestId('delivery-attempts').innerText() === '1', 'after 1 attempt');
  await noSecrets(page, 'delivery');
  await shot(page, 'delivery');
  await page.goBack();

  // Resubmit from the panel; the queue drains in order.
  await page.getByTestId('head-of-line').getByRole('button', { name: 'Resubmit' }).click();
  expect((await page.getByTestId('flash').innerText()).startsWith('Resubmitted'), 'the page confirms the resubmit');
  await eventually('the head-of-line panel shows nothing waiting (htmx refresh)', async () =>
    (await page.getByTestId('head-summary').innerText()).includes('Nothing is waiting'));
  expect(await page.getByTestId('sub-state').innerText() === 'active', 'the subscription is active again');
  await page.getByLabel('Status').selectOption('delivered');
  await page.getByRole('button', { name: 'Filter' }).click();
  expect(await page.getByTestId('delivery-row').count() === EVENTS, `all ${EVENTS} deliveries are delivered`);
  await shot(page, 'subscription-recovered');
  await page.goto(`${BASE}/ui/notifications`);
  await eventually('the recovered notification follows the blocked one', async () => {
    await page.reload();
    const rows = await page.getByTestId('notice-row').allInnerTexts();
    return rows.length === 2 && rows[0].includes('recovered') && rows[1].includes('blocked');
  });

  // Sign out; a tenant key sees only its own tenant.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(`${BASE}/ui/login`);
  await signIn(page, env('TENANT_KEY'));
  const other = await page.goto(`${BASE}/ui/subscriptions/${env('OTHER_SUB_ID')}`);
  expect(other.status() === 404, "another tenant's subscription answers 404");
  await shot(page, 'tenant-404');
  await page.goto(`${BASE}/ui/subscriptions`);
  const list = await page.content();
  expect(list.includes(env('SUB_ID')) && !list.includes(env('OTHER_SUB_ID')), 'the tenant lists only its own subscriptions');
  expect(!list.includes(SYSTEM) && !list.includes(OPS_URL), 'the tenant does not see the system tenant');
  await noSecrets(page, 'tenant list');
  await shot(page, 'tenant-subscriptions');
  await page.getByRole('link', { name: 'Notifications' }).click();
  const theirs = await page.content();
  expect(await page.getByTestId('notice-row').count() === 2, 'the tenant sees the notifications about its subscription');
  expect(!theirs.includes(SYSTEM) && !theirs.includes(OPS_URL), "but not the operator's receiver");
  await shot(page, 'tenant-notifications');
  await page.getByRole('link', { name: 'Transforms' }).click();
  expect((await page.locator('h1').innerText()).startsWith('Transforms'), 'the transforms page opens');
  await shot(page, 'transforms');

  // What happened to transaction tx-2: found, delivered.
  await page.getByRole('link', { name: 'Find' }).click();
  await page.getByLabel('Value').fill('tx-2');
  await page.getByRole('button', { name: 'Find' }).click();
  const trace = page.getByTestId('trace-row');
  expect(await trace.count() === 1, 'the tenant finds its event by transactionId');
  expect((await trace.innerText()).includes('delivered'), 'and sees it delivered');
  await shot(page, 'find');

  // The 404 page is the only error a browser may log (a navigation that answered 404).
  const unexpected = errors.filter((e) => !/status of 404/.test(e));
  expect(unexpected.length === 0, `the browser logged no error (${unexpected.join(' | ')})`);
} catch (e) {
  failed = true;
  console.error(`not ok - ${e.message}`);
  try { await shot(context.pages()[0], 'failure'); } catch {}
} finally {
  await context.close();
}
process.exit(failed ? 1 : 0);
