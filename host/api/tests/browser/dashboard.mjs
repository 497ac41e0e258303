// Drives the dashboard of a running `flowcraft-host serve` in headless
// Chromium, as a person would: signs in with the token, finds the runs the
// caller started (one completed, one failed, two awaiting) in the list,
// tries to resume one that was cancelled meanwhile and reads the API's
// refusal, opens the other, checks that its graph colours the waiting node
// as awaiting, resumes it through the form and waits for the page to show
// the run completed. Screenshots go to OUT_DIR. Exits non-zero naming the first
// expectation that failed.
//
// Usage: node dashboard.mjs BASE_URL TOKEN OUT_DIR
// Environment: CHROMIUM (default /usr/bin/chromium).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [base, token, outDir] = process.argv.slice(2);
if (!base || !token || !outDir) {
  console.error('usage: node dashboard.mjs BASE_URL TOKEN OUT_DIR');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

// As on this machine's closed network: no background connections.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const step = (what) => console.log(`dashboard: ${what}`);
try {
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  const confirmations = [];
  page.on('dialog', (dialog) => {
    confirmations.push(dialog.message());
    dialog.accept();
  });
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));

  step('the page asks for the token');
  await page.goto(`${base}/`);
  await page.locator('#login').waitFor({ state: 'visible' });
  await page.locator('#login-token').fill(token);
  await page.locator('#login-form button[type=submit]').click();

  step('the runs list shows the four runs with their status');
  const expected = {
    'order-done': 'completed', 'fails-1': 'failed', 'order-awaiting': 'awaiting', 'order-withdrawn': 'awaiting',
  };
  for (const [run, state] of Object.entries(expected)) {
    const badge = page.locator(`#runs tr[data-run="${run}"] .badge`);
    await badge.waitFor();
    assert.equal(await badge.getAttribute('data-state'), state, `run ${run} listed as ${state}`);
  }
  assert.equal(await page.locator('#runs tbody tr').count(), 4, 'the list holds exactly the four runs');
  await page.screenshot({ path: `${outDir}/runs-list.png`, fullPage: true });

  step('the status filter narrows the list');
  await page.locator('select[name=status]').selectOption('failed');
  await page.waitForURL(/status=failed/);
  // The list is drawn anew once the filtered page arrives.
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#runs tbody tr')];
    return rows.length === 1 && rows[0].dataset.run === 'fails-1';
  });
  await page.goto(`${base}/`);

  step('a resume the API refuses shows the API\'s reason');
  // The run is cancelled behind the page's back while its long poll is
  // held, so the page still offers the resume the API will refuse.
  await page.route('**/api/v1/runs/order-withdrawn?wait=*', () => {});
  await page.goto(`${base}/runs/order-withdrawn`);
  await page.locator('#resume').waitFor();
  const cancelled = await fetch(`${base}/api/v1/runs/order-withdrawn/cancel`, {
    method: 'POST', headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(cancelled.status, 200, 'the run is cancelled through the API');
  await page.locator('#resume button[type=submit]').click();
  await page.locator('#notice').waitFor({ state: 'visible' });
  const refusal = await page.locator('#notice').innerText();
  assert.match(refusal, /^Refused: .*awaiting/, `the API's reason is shown: ${refusal}`);
  await page.unroute('**/api/v1/runs/order-withdrawn?wait=*');
  await page.goto(`${base}/`);

  step('the awaiting run\'s graph colours its waiting node as awaiting');
  await page.locator('#runs tr[data-run="order-awaiting"] a').first().click();
  await page.waitForURL(/\/runs\/order-awaiting$/);
  const manager = page.locator('#graph g[data-node="manager"]');
  await manager.waitFor();
  assert.equal(await manager.getAttribute('data-state'), 'awaiting');
  const stroke = await manager.locator('rect').evaluate((rect) => getComputedStyle(rect).stroke);
  const awaitingColour = await page.evaluate(() =>
    getComputedStyle(document.documentElement).getPropertyValue('--awaiting').trim());
  assert.equal(stroke, hexToRgb(awaitingColour), 'the node is drawn in the awaiting colour');
  assert.equal(await page.locator('#graph g[data-node="validate"]').getAttribute('data-state'), 'completed');

  step('a click on a node shows its input and output');
  await page.locator('#graph g[data-node="price"]').click();
  const details = page.locator('#node-details');
  await details.waitFor();
  const text = await details.innerText();
  assert.match(text, /Input/);
  assert.match(text, /Output/);
  await page.screenshot({ path: `${outDir}/run-awaiting.png`, fullPage: true });

  step('resuming through the page completes the run');
  await page.locator('#resume input[name=action]').fill('approve');
  await page.locator('#resume textarea[name=output]').fill('{"approvedBy": "the browser test"}');
  await page.locator('#resume button[type=submit]').click();
  await page.locator('h1 .badge[data-state="completed"]').waitFor({ timeout: 30_000 });
  assert.ok(confirmations.some((message) => message.startsWith('Resume node manager')),
    `the resume was confirmed first (${JSON.stringify(confirmations)})`);
  await page.locator('#graph g[data-node="approve"][data-state="completed"]').waitFor();
  assert.equal(await page.locator('#graph g[data-node="reject"]').getAttribute('data-state'), 'skipped');
  await page.screenshot({ path: `${outDir}/run-completed.png`, fullPage: true });

  assert.deepEqual(pageErrors, [], 'no script errors on the pages');
  step('all expectations held');
} finally {
  await browser.close();
}

function hexToRgb(hex) {
  const value = parseInt(hex.replace('#', ''), 16);
  return `rgb(${(value >> 16) & 255}, ${(value >> 8) & 255}, ${value & 255})`;
}
