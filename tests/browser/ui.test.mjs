// Browser tests of the web UI: `offshoot demo` serves a real repository with prod and a feature
// branch deployed and materialized; Debian's Chromium, driven by playwright-core, loads each page,
// filters, launches a run and watches it finish, checks the change badges, a role's refusal, a failed revision's
// diagnostics, a closed deployment, keyboard navigation and contrast, and saves screenshots under
// docs/screenshots/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { edgesThroughNodes, pathPoints } from './geometry.mjs';
import { syntheticAssets } from './layout-bench.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const binary = process.env.OFFSHOOT_BIN || join(root, 'target', 'debug', 'offshoot');
const screenshots = join(root, 'docs', 'screenshots');
let server;
let base;
let token;
let demoDir;
let browser;
let branch;

function waitForLine(child, pattern, timeoutMs) {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error('timed out waiting for ' + pattern + '\n' + seen)), timeoutMs);
    const onData = (chunk) => {
      seen += chunk.toString();
      const match = seen.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve({ match, seen });
      }
    };
    child.stdout.on('data', onData);
    child.on('exit', (code) => reject(new Error('offshoot demo exited with ' + code + '\n' + seen)));
  });
}

async function api(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return response.json();
}

before(async () => {
  demoDir = mkdtempSync(join(tmpdir(), 'offshoot-ui-'));
  server = spawn(binary, ['demo', '--dir', join(demoDir, 'repo'), '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const started = await waitForLine(server, /Offshoot is serving on (http:\/\/[0-9.:]+)/, 60000);
  base = started.match[1];
  await waitForLine(server, /Serving until Ctrl-C/, 120000);
  token = readFileSync(join(demoDir, 'repo', '.offshoot', 'api-token'), 'utf8').trim();
  const deployments = await api('GET', '/api/v1/deployments');
  branch = deployments.find((d) => d.kind === 'branch').name;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  mkdirSync(screenshots, { recursive: true });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill('SIGTERM');
  if (demoDir) rmSync(demoDir, { recursive: true, force: true });
});

async function newPage() {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.errors = errors;
  return page;
}

/// A new branch off main in `repo` with `file` written and committed; main checked out again.
function commitOnNewBranch(repo, branchName, file, text, message) {
  execFileSync('git', ['-C', repo, 'checkout', '-q', '-b', branchName, 'main']);
  writeFileSync(file, text);
  execFileSync('git', ['-C', repo, 'add', '-A']);
  execFileSync('git', ['-C', repo, '-c', 'user.name=T', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', message]);
  execFileSync('git', ['-C', repo, 'checkout', '-q', 'main']);
}

test('the deployments page lists prod and the branch with change counts, closed ones behind a toggle', async () => {
  const sha = execFileSync('git', ['-C', join(demoDir, 'repo'), 'rev-parse', 'main']).toString().trim();
  const created = await api('POST', '/api/v1/branch-deployments', { branch_name: 'feature/old-idea', commit_hash: sha, pull_request_id: '3', pull_request_url: 'javascript:alert(1)' });
  await api('POST', '/api/v1/deployments/' + created.name + '/close', { pull_request_status: 'CLOSED' });
  const page = await newPage();
  await page.goto(base + '/#/');
  const row = page.locator(`tr[data-deployment="${branch}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /feature\/eur-revenue/);
  // The same counts as the deployment page, the CLI and the pull-request comment.
  assert.match(await row.innerText(), /1 new\s+2 changed\s+1 removed\s+2 impacted downstream/);
  assert.match(await page.locator('tr[data-deployment="prod"]').innerText(), /ready/);
  assert.equal(await page.locator(`tr[data-deployment="${created.name}"]`).count(), 0, 'closed deployments are hidden');
  await page.getByLabel('Show closed').check();
  const closed = page.locator(`tr[data-deployment="${created.name}"]`);
  await closed.waitFor();
  assert.match(await closed.innerText(), /closed/);
  assert.equal(await closed.locator('a[href^="javascript"]').count(), 0, 'a hostile pull-request URL is never a link');
  await page.getByLabel('Show closed').uncheck();
  await closed.waitFor({ state: 'detached' });
  await page.screenshot({ path: join(screenshots, 'deployments.png') });
  assert.deepEqual(page.errors, []);
});

test('live updates arrive by server-sent events: a new deployment shows up with no polling', async () => {
  const page = await newPage();
  const listRequests = [];
  page.on('request', (r) => { if (new URL(r.url()).pathname === '/api/v1/deployments') listRequests.push(Date.now()); });
  await page.goto(base + '/#/');
  await page.locator(`tr[data-deployment="${branch}"]`).waitFor();
  await page.waitForTimeout(2500);
  const before = listRequests.length;
  await page.waitForTimeout(4500);
  assert.equal(listRequests.length, before, 'no polling while the event stream is open (the fallback polls every 2 s)');
  const sha = execFileSync('git', ['-C', join(demoDir, 'repo'), 'rev-parse', 'main']).toString().trim();
  execFileSync('git', ['-C', join(demoDir, 'repo'), 'branch', 'feature/live-update', sha]);
  const created = await api('POST', '/api/v1/branch-deployments', { branch_name: 'feature/live-update', commit_hash: sha, pull_request_id: '11' });
  await page.locator(`tr[data-deployment="${created.name}"]`).waitFor({ timeout: 5000 });
  assert.ok(listRequests.length > before, 'the change made the page refetch');
  assert.deepEqual(page.errors, []);
});

test('when the event stream is refused or drops, views poll, and the stream comes back', async () => {
  const page = await newPage();
  let refuse = true;
  let streams = 0;
  await page.route('**/api/v1/events', (route) => {
    streams += 1;
    return refuse ? route.abort('connectionreset') : route.continue();
  });
  const listRequests = [];
  page.on('request', (r) => { if (new URL(r.url()).pathname === '/api/v1/deployments') listRequests.push(Date.now()); });
  await page.goto(base + '/#/');
  await page.locator(`tr[data-deployment="${branch}"]`).waitFor();
  // With no stream the list polls (every 2 s) and still shows a new deployment.
  const sha = execFileSync('git', ['-C', join(demoDir, 'repo'), 'rev-parse', 'main']).toString().trim();
  execFileSync('git', ['-C', join(demoDir, 'repo'), 'branch', 'feature/polled', sha]);
  const created = await api('POST', '/api/v1/branch-deployments', { branch_name: 'feature/polled', commit_hash: sha, pull_request_id: '12' });
  await page.locator(`tr[data-deployment="${created.name}"]`).waitFor({ timeout: 6000 });
  const polled = listRequests.length;
  assert.ok(polled >= 2, 'the list was fetched again without a stream: ' + polled);
  assert.ok(streams >= 2, 'the refused stream is retried: ' + streams);
  assert.equal(await page.evaluate(() => window.offshootLive.open), false);
  // The stream is let through again: the retry (backoff up to a few seconds) opens it and polling stops.
  refuse = false;
  await page.waitForFunction(() => window.offshootLive.open, null, { timeout: 20000 });
  await page.waitForTimeout(500);
  const settled = listRequests.length;
  await page.waitForTimeout(4500);
  assert.equal(listRequests.length, settled, 'no polling once the stream is open again');
  await api('POST', '/api/v1/deployments/' + created.name + '/close', { pull_request_status: 'CLOSED' });
  await page.locator(`tr[data-deployment="${created.name}"]`).waitFor({ state: 'detached', timeout: 5000 });
  assert.deepEqual(page.errors.filter((e) => !/ERR_CONNECTION_RESET|Failed to load resource/.test(e)), []);
});

test('the event stream carries the token, so it also works when reads are private', async () => {
  const page = await newPage();
  await page.addInitScript((t) => localStorage.setItem('offshoot.token', t), token);
  const stream = page.waitForRequest((r) => new URL(r.url()).pathname === '/api/v1/events');
  await page.goto(base + '/#/');
  const request = await stream;
  assert.equal((await request.allHeaders()).authorization, 'Bearer ' + token);
  await page.waitForFunction(() => window.offshootLive.open, null, { timeout: 10000 });
  assert.deepEqual(page.errors, []);
});

test('the deployment page marks new, changed, impacted and removed assets, and filters by selection', async () => {
  const page = await newPage();
  await page.goto(base + '/#/d/shop/' + branch);
  const node = (key) => page.locator(`g.node[data-key="${key}"]`);
  await node('fct_orders').waitFor();
  assert.match(await node('weekly_revenue').getAttribute('class'), /\bnew\b/);
  assert.match(await node('fct_orders').getAttribute('class'), /\bchanged\b/);
  assert.match(await node('fct_orders').getAttribute('aria-label'), /Changed in branch: CODE_VERSION/);
  assert.match(await node('customer_lifetime_value').getAttribute('aria-label'), /Changed in branch: TAGS/);
  assert.match(await node('dim_customers').getAttribute('class'), /\bimpacted\b/);
  assert.doesNotMatch(await node('stg_orders').getAttribute('class'), /\b(new|changed|impacted)\b/, 'a formatting-only edit is not a change');
  assert.match(await page.getByText('Removed in branch').innerText(), /orders_by_country/);
  assert.match(await page.getByLabel('Change summary').innerText(), /^1 new\s+2 changed\s+1 removed\s+2 impacted downstream/);
  // Which base the branch compares with, in the header and beside the summary.
  assert.match(await page.locator('[data-compares-with]').innerText(), /^merge base [0-9a-f]{12}$/);
  assert.match(await page.locator('[data-snapshot-base]').innerText(), /^against merge base [0-9a-f]{12}$/);
  await page.screenshot({ path: join(screenshots, 'deployment.png') });

  await page.getByLabel('Filter').fill('changed_in_branch:ANY+');
  await page.getByText('5 of 13 assets match').waitFor();
  // A focus view: only the matches, laid out afresh; one hop of context on request, faded.
  await node('daily_revenue').waitFor();
  assert.equal(await page.locator('g.node').count(), 5);
  assert.equal(await node('stg_orders').count(), 0);
  await page.getByLabel('with one hop of context').check();
  await node('int_order_payments').waitFor();
  assert.match(await node('int_order_payments').getAttribute('class'), /\bcontext\b/);
  assert.equal(await node('stg_orders').count(), 0, 'two hops away');
  assert.doesNotMatch(await node('fct_orders').getAttribute('class'), /\bcontext\b/);
  await page.getByLabel('with one hop of context').uncheck();
  await page.getByRole('tab', { name: 'Table' }).click();
  assert.equal(await page.locator('tr[data-asset]').count(), 5);
  await page.screenshot({ path: join(screenshots, 'deployment-filtered-table.png') });
  await page.getByLabel('Filter').fill('changed_in_branch:CODE and');
  const error = page.getByRole('alert').filter({ hasText: 'selection error' });
  await error.waitFor();
  assert.match(await error.innerText(), /column 19/);
  assert.deepEqual(page.errors.filter((e) => !/400/.test(e)), []);

  // A removed asset opens a page of its own: the base's definition, "removed in this branch".
  await page.getByLabel('Filter').fill('');
  await page.getByRole('link', { name: 'orders_by_country' }).click();
  await page.getByText('Removed in this branch').waitFor();
  assert.match(await page.locator('[data-removed]').innerText(), /removes the asset/);
  assert.match(await page.getByRole('heading', { name: 'Definition at the base' }).locator('xpath=following-sibling::pre[1]').innerText(), /SELECT/i);
  assert.equal(await page.getByText('asset_not_found').count(), 0);
  assert.equal(await page.locator('.loading').count(), 0);
  await page.screenshot({ path: join(screenshots, 'asset-removed.png'), fullPage: true });
});

/** The drawn graph in the page: node boxes and edge polylines, in the graph's own coordinates. */
async function drawnGraph(page) {
  const drawn = await page.evaluate(() => ({
    nodes: [...document.querySelectorAll('g.node')].map((g) => {
      const [x, y] = g.getAttribute('transform').match(/-?[0-9.]+/g).map(Number);
      const rect = g.querySelector('rect');
      return { key: g.dataset.key, x, y, width: Number(rect.getAttribute('width')), height: Number(rect.getAttribute('height')) };
    }),
    edges: [...document.querySelectorAll('path.edge')].map((p) => ({ from: p.dataset.from, to: p.dataset.to, d: p.getAttribute('d') })),
  }));
  return { boxes: drawn.nodes, edges: drawn.edges.map((e) => ({ from: e.from, to: e.to, points: pathPoints(e.d) })) };
}

test('lineage edges never cross a node that is not their end: the demo, and 1,000 assets laid out in Chromium', async () => {
  const page = await newPage();
  await page.goto(base + '/#/d/shop/' + branch);
  await page.locator('g.node[data-key="customer_lifetime_value"]').waitFor();
  const demo = await drawnGraph(page);
  assert.equal(demo.boxes.length, 13);
  assert.ok(demo.edges.some((e) => e.from === 'stg_customers' && e.to === 'dim_customers'));
  assert.deepEqual(edgesThroughNodes(demo.boxes, demo.edges), []);

  // The same layout code the page runs, in the browser's engine, on a generated 1,000-asset graph.
  const assets = syntheticAssets(1000).map((a) => ({ ...a, kind: 'sql', group: 'g' }));
  const laid = await page.evaluate(async (list) => {
    const { layout } = await import('/ui/graph.js');
    const started = performance.now();
    const result = layout(list);
    return { ms: performance.now() - started, nodes: result.nodes.map((n) => ({ key: n.asset.key, x: n.x, y: n.y })), edges: result.edges };
  }, assets);
  const boxes = laid.nodes.map((n) => ({ key: n.key, x: n.x - 112, y: n.y - 23, width: 224, height: 46 }));
  assert.equal(laid.edges.length, assets.reduce((sum, a) => sum + a.deps.length, 0));
  assert.deepEqual(edgesThroughNodes(boxes, laid.edges.map((e) => ({ from: e.from, to: e.to, points: pathPoints(e.d) }))), []);
  console.log(`# 1,000-asset layout in Chromium: ${laid.ms.toFixed(0)} ms`);
  assert.deepEqual(page.errors, []);
});

test('keyboard: Tab reaches a graph node and Enter opens the asset page with its diff', async () => {
  const page = await newPage();
  await page.goto(base + '/#/d/shop/' + branch);
  await page.locator('g.node[data-key="fct_orders"]').focus();
  await page.keyboard.press('Enter');
  await page.getByText('Changes against the base').waitFor();
  assert.match(await page.locator('pre.diff').innerText(), /\+WHERE p\.amount_cents > 0/);
  assert.match(await page.locator('dl.kv').innerText(), /this branch deployment.s own table/);
  assert.match(await page.getByText('Materializations in production').locator('..').innerText(), /2700/);
  await page.screenshot({ path: join(screenshots, 'asset.png'), fullPage: true });
  assert.deepEqual(page.errors, []);
});

test('the asset page shows what the branch did to the data: rows, the bar, the removed sample', async () => {
  const page = await newPage();
  await page.goto(base + '/#/d/shop/' + branch);
  const list = page.getByRole('table', { name: 'Data changes' });
  await list.waitFor();
  const line = list.locator('tr', { hasText: 'fct_orders' });
  assert.match(await line.innerText(), /2,700 → 2,345\s+0\s+355/);
  await line.getByRole('link', { name: 'fct_orders' }).click();
  const section = page.locator('section[data-diff]');
  await section.getByText('Data changes against production').waitFor();
  const text = await section.innerText();
  assert.match(text, /2,700 rows in production → 2,345 in this branch/);
  assert.match(text, /matched by order_id \(inferred\)/);
  assert.match(text, /355 removed/);
  assert.equal(await section.locator('.diffbar .seg.removed').count(), 1);
  assert.match(await section.locator('.diffbar').getAttribute('aria-label'), /355 removed/);
  assert.ok(await section.getByRole('table', { name: 'Removed rows (sample)' }).isVisible());
  await page.screenshot({ path: join(screenshots, 'data-diff.png'), fullPage: true });
  assert.deepEqual(page.errors, []);
});

test('launching a run from the UI needs the token, then runs to success with live steps', async () => {
  const page = await newPage();
  await page.goto(base + '/#/d/shop/' + branch);
  await page.getByRole('button', { name: 'Materialize changed and downstream' }).click();
  await page.getByText('needs an API token').waitFor();
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Materialize changed and downstream' }).click();
  await page.waitForURL(/#\/runs\/\d+/);
  await page.locator('h1 .chip.succeeded').waitFor({ timeout: 60000 });
  assert.equal(await page.locator('tr[data-step]').count(), 5);
  const details = page.getByLabel('Run details');
  await details.getByText('(revision').waitFor();
  assert.match(await details.innerText(), /Started\s+\S.*ago\)\s+Duration\s+[0-9.]+ m?s\s+Commit\s+[0-9a-f]{10} /);
  await page.locator('tr[data-step="fct_orders"] button').click();
  assert.match(await page.locator('tr[data-step="fct_orders"] pre').innerText(), /rows/);
  await page.screenshot({ path: join(screenshots, 'run.png') });
  assert.deepEqual(page.errors.filter((e) => !/401/.test(e)), []);
});

test('nodes and rows show run state: built here, reading production, failed in a run', async () => {
  const repo = join(demoDir, 'repo');
  commitOnNewBranch(repo, 'feature/fails-at-runtime', join(repo, 'assets', 'marts', 'bad_column.sql'), 'SELECT no_such_column FROM stg_orders\n', 'A model that fails when built');
  const started = Date.now();
  let deployment;
  while (!(deployment = (await api('GET', '/api/v1/deployments')).find((d) => d.branch === 'feature/fails-at-runtime' && d.current_revision))) {
    assert.ok(Date.now() - started < 60000, 'the branch never served');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  let run = await api('POST', '/api/v1/deployments/' + deployment.name + '/runs', { selection: 'key:bad_column' });
  assert.ok(run.id, 'the run was launched: ' + JSON.stringify(run));
  while (!['succeeded', 'failed', 'canceled'].includes(run.status)) {
    assert.ok(Date.now() - started < 90000, 'the run never finished');
    await new Promise((resolve) => setTimeout(resolve, 200));
    run = await api('GET', '/api/v1/runs/' + run.id);
  }
  assert.equal(run.status, 'failed');

  const page = await newPage();
  await page.goto(base + '/#/d/shop/' + deployment.name);
  const node = (key) => page.locator(`g.node[data-key="${key}"]`);
  await node('bad_column').waitFor();
  assert.match(await node('bad_column').getAttribute('class'), /\bstate-failed\b/);
  assert.match(await node('bad_column').getAttribute('aria-label'), new RegExp('failed in run ' + run.id));
  assert.match(await node('bad_column').locator('text.state').textContent(), /failed/);
  assert.match(await node('fct_orders').getAttribute('class'), /\bstate-production\b/);
  // A branch whose only change is a new asset says so, and shows no zero counts.
  assert.equal((await page.getByLabel('Change summary').locator('.badge').allInnerTexts()).join('|'), '1 new');
  await page.screenshot({ path: join(screenshots, 'deployment-failed-step.png') });
  await page.getByRole('tab', { name: 'Table' }).click();
  assert.match(await page.locator('tr[data-asset="bad_column"]').innerText(), new RegExp('failed in run ' + run.id));
  assert.match(await page.locator('tr[data-asset="fct_orders"]').innerText(), /reads production.s table/);
  // The demo's branch rebuilt its changes: built here.
  await page.goto(base + '/#/d/shop/' + branch);
  await node('weekly_revenue').waitFor();
  assert.match(await node('weekly_revenue').getAttribute('class'), /\bstate-built\b/);
  assert.match(await node('weekly_revenue').locator('text.state').textContent(), /built here/);
  assert.deepEqual(page.errors, []);
});

test('a deploy token (a CI\'s) shows its role, and production refuses it naming the admin role', async () => {
  const deployToken = readFileSync(join(demoDir, 'repo', '.offshoot', 'deploy-token'), 'utf8').trim();
  const page = await newPage();
  await page.goto(base + '/#/d/shop/prod');
  await page.getByLabel('API token').fill(deployToken);
  await page.locator('#token-role').filter({ hasText: 'role: deploy' }).waitFor();
  // Told before trying, and in the API's words after.
  assert.match(await page.locator('[data-needs-role="admin"]').innerText(), /Launching runs in prod needs a token with the admin role; this token's role is deploy/);
  await page.getByLabel('Materialize').fill('key:*');
  await page.getByRole('button', { name: 'Launch run' }).click();
  const refusal = page.getByRole('alert').filter({ hasText: 'forbidden' });
  await refusal.waitFor();
  assert.match(await refusal.innerText(), /launching a run in the production deployment `prod` needs an API token with the `admin` role; this token's role is `deploy`/);
  // The same token may act on the branch: no note there.
  await page.goto(base + '/#/d/shop/' + branch);
  await page.getByRole('button', { name: 'Materialize changed and downstream' }).waitFor();
  assert.equal(await page.locator('[data-needs-role]').count(), 0);
  await page.getByLabel('API token').fill('');
  assert.deepEqual(page.errors.filter((e) => !/403/.test(e)), []);
});

test('a failed revision shows its diagnostics with path:line:col', async () => {
  const repo = join(demoDir, 'repo');
  commitOnNewBranch(repo, 'feature/broken', join(repo, 'assets', 'marts', 'broken.sql'), 'SELECT order_id FROM\nWHERE 1\n', 'Broken model');
  const page = await newPage();
  await page.goto(base + '/#/');
  const row = page.locator('tr', { hasText: 'feature/broken' });
  await row.locator('.chip.failed').waitFor({ timeout: 30000 });
  await row.locator('a').first().click();
  const alert = page.getByRole('alert').filter({ hasText: 'failed' });
  await alert.waitFor();
  assert.match(await alert.innerText(), /assets\/marts\/broken\.sql:2:1: error: SQL syntax error/);
  await page.screenshot({ path: join(screenshots, 'failed-revision.png') });
});

test('a closed deployment says closed, why, and what it last served; it offers no runs', async () => {
  const served = (await api('GET', '/api/v1/deployments/' + branch)).current_revision.commit.sha;
  // The demo watches its repository and closes deployments of branches that do not exist there.
  execFileSync('git', ['-C', join(demoDir, 'repo'), 'branch', 'feature/served-then-merged', served]);
  const created = await api('POST', '/api/v1/branch-deployments', { branch_name: 'feature/served-then-merged', commit_hash: served, pull_request_id: '9', pull_request_url: 'https://git.example/acme/shop/pull/9' });
  const started = Date.now();
  while (!(await api('GET', '/api/v1/deployments/' + created.name)).current_revision) {
    assert.ok(Date.now() - started < 60000, created.name + ' never served');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const closed = await api('POST', '/api/v1/deployments/' + created.name + '/close', { pull_request_status: 'MERGED' });
  assert.equal(closed.current_revision, null);
  assert.equal(closed.last_served_revision.number, 1);
  const lastServed = /last served revision 1 \(/;

  const page = await newPage();
  await page.goto(base + '/#/');
  await page.getByLabel('Show closed').check();
  const row = page.locator(`tr[data-deployment="${created.name}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /closed .*\(pull request merged\); last served revision 1 \(/);
  assert.doesNotMatch(await row.innerText(), /\bserving\b/);

  await row.locator('a').first().click();
  const banner = page.locator('[data-closed]');
  await banner.waitFor();
  assert.match(await banner.innerText(), /^Closed .*\(pull request merged\); last served revision 1 \(/);
  assert.match(await banner.innerText(), new RegExp(served.slice(0, 10)));
  await page.getByText('The definitions of revision 1, which served last').waitFor();
  await page.locator('g.node[data-key="fct_orders"]').waitFor();
  await page.locator('table[aria-label="Revisions"] td', { hasText: 'last served' }).waitFor();
  assert.doesNotMatch(await page.locator('main').innerText(), /\bserving\b/);
  assert.match(await page.locator('main').innerText(), lastServed);
  assert.equal(await page.getByRole('button', { name: /Materialize|Launch run/ }).count(), 0, 'a closed deployment offers no runs');
  assert.deepEqual(page.errors, []);
});

test('at 390 px wide no page scrolls sideways, and the prod page shows no branch-only controls', async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  for (const path of ['/#/', '/#/d/shop/' + branch, '/#/d/shop/prod', '/#/d/shop/' + branch + '/a/fct_orders', '/#/runs/1']) {
    await page.goto(base + path);
    await page.locator('main h1').waitFor();
    await page.waitForTimeout(300);
    const widths = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, viewport: window.innerWidth }));
    assert.ok(widths.page <= widths.viewport, `${path} is ${widths.page} px wide at ${widths.viewport} px`);
  }
  await page.goto(base + '/#/d/shop/' + branch);
  await page.locator('g.node').first().waitFor();
  await page.screenshot({ path: join(screenshots, 'deployment-390.png') });
  await page.close();

  const prod = await newPage();
  await prod.goto(base + '/#/d/shop/prod');
  await prod.locator('g.node').first().waitFor();
  assert.equal(await prod.getByText('New in branch').count(), 0);
  assert.doesNotMatch(await prod.getByLabel('Filter').getAttribute('placeholder'), /changed_in_branch/);
  assert.doesNotMatch(await prod.locator('#filter-help').innerText(), /changed_in_branch/);
  assert.deepEqual(prod.errors, []);
});

const axeSource = readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

test('accessibility: axe-core finds no serious or critical violation on any page', async () => {
  // axe is injected as a script, which the UI's content security policy rightly forbids.
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 }, bypassCSP: true });
  const pages = [
    ['/#/', 'tr[data-deployment]'],
    ['/#/d/shop/' + branch, 'g.node'],
    ['/#/d/shop/prod', 'g.node'],
    ['/#/d/shop/' + branch + '/a/fct_orders', 'pre.diff'],
    ['/#/d/shop/' + branch + '/a/orders_by_country', '[data-removed]'],
    ['/#/runs/1', 'tr[data-step]'],
  ];
  for (const [path, ready] of pages) {
    await page.goto(base + path);
    await page.locator(ready).first().waitFor();
    await page.waitForTimeout(200);
    const report = async () => {
      await page.addScriptTag({ content: axeSource });
      const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
      return result.violations.filter((v) => ['serious', 'critical'].includes(v.impact))
        .map((v) => `${v.id} (${v.impact}): ${v.help}; ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
    };
    assert.deepEqual(await report(), [], path);
    if (path === '/#/d/shop/' + branch) {
      await page.getByRole('tab', { name: 'Table' }).click();
      assert.deepEqual(await report(), [], path + ' (table)');
    }
  }
  await page.close();
});

// Last: it grows production to 1,013 assets, which the tests before it do not expect.
test('a 1,000-asset branch deployment opens on its changes, the whole graph is one click away, edges stay clean, panning is measured', async () => {
  const repo = join(demoDir, 'repo');
  const git = (...args) => execFileSync('git', ['-C', repo, '-c', 'user.name=T', '-c', 'user.email=t@example.com', ...args]);
  const generated = syntheticAssets(1000);
  mkdirSync(join(repo, 'assets', 'big'), { recursive: true });
  const write = (a, extra = '') => {
    const tables = a.deps.length ? a.deps : ['raw_orders'];
    const joins = tables.slice(1).map((t, i) => ` JOIN ${t} AS t${i + 1} ON t0.id = t${i + 1}.id`).join('');
    writeFileSync(join(repo, 'assets', 'big', a.key + '.sql'), `SELECT t0.id FROM ${tables[0]} AS t0${joins}${extra}\n`);
  };
  git('checkout', '-q', 'main');
  generated.forEach((a) => write(a));
  git('add', '-A');
  git('commit', '-q', '-m', 'A thousand models');
  const mainSha = git('rev-parse', 'HEAD').toString().trim();
  git('checkout', '-q', '-b', 'feature/big-change');
  for (const i of [100, 500, 900]) write(generated[i], ' WHERE t0.id > 0');
  git('add', '-A');
  git('commit', '-q', '-m', 'Three models filter');
  git('checkout', '-q', 'main');

  const started = Date.now();
  let big;
  for (;;) {
    assert.ok(Date.now() - started < 120000, 'the 1,000-asset deployments never served');
    const deployments = await api('GET', '/api/v1/deployments');
    const prod = deployments.find((d) => d.kind === 'production');
    big = deployments.find((d) => d.branch === 'feature/big-change');
    if (prod.current_revision && prod.current_revision.commit.sha === mainSha && big && big.current_revision) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  // The selection is evaluated against the serving revision's change set: ask until it has one
  // (a run-state or SSE refresh of the first deploy can land between the two reads).
  let selected;
  for (const waitStarted = Date.now(); ;) {
    selected = await api('GET', '/api/v1/deployments/' + big.name + '/select?selection=' + encodeURIComponent('changed_in_branch:ANY+'));
    if (selected.keys && selected.keys.length > 0) break;
    assert.ok(Date.now() - waitStarted < 60000, 'the 1,000-asset branch never had changes: ' + JSON.stringify(selected));
    await new Promise((resolve) => setTimeout(resolve, 250));
  }

  const page = await newPage();
  await page.goto(base + '/#/d/shop/' + big.name);
  await page.locator('g.node[data-key="m100"]').waitFor({ timeout: 60000 });
  assert.equal(await page.getByLabel('Filter').inputValue(), 'changed_in_branch:ANY+');
  assert.equal(await page.locator('g.node').count(), selected.keys.length);
  assert.ok(selected.keys.length < 1000, 'the focus is smaller than the graph');
  await page.getByText(`${selected.keys.length} of 1013 assets shown`).waitFor();
  await page.screenshot({ path: join(screenshots, 'deployment-1000-focus.png') });
  const focused = await drawnGraph(page);
  assert.deepEqual(edgesThroughNodes(focused.boxes, focused.edges), []);

  await page.getByRole('button', { name: 'Show the whole graph' }).click();
  await page.getByText('1013 assets ·').waitFor();
  assert.equal(await page.locator('g.node').count(), 1013);
  const whole = await drawnGraph(page);
  assert.deepEqual(edgesThroughNodes(whole.boxes, whole.edges), []);
  await page.screenshot({ path: join(screenshots, 'deployment-1000.png') });

  // Pan with the mouse (30 moves) while the page records the interval between painted frames.
  const box = await page.locator('.graph svg').boundingBox();
  await page.evaluate(() => {
    window.frameTimes = [];
    let last = performance.now();
    const tick = (now) => { window.frameTimes.push(now - last); last = now; if (!window.stopFrames) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
  });
  await page.mouse.move(box.x + box.width - 30, box.y + 30);
  await page.mouse.down();
  for (let i = 1; i <= 30; i++) {
    await page.mouse.move(box.x + box.width - 30 - i * 12, box.y + 30 + i * 4);
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(resolve)));
  }
  await page.mouse.up();
  const frames = (await page.evaluate(() => { window.stopFrames = true; return window.frameTimes.slice(1); })).sort((a, b) => a - b);
  const median = frames[Math.floor(frames.length / 2)];
  console.log(`# pan at 1,013 assets: ${frames.length} frames, median ${median.toFixed(1)} ms, p90 ${frames[Math.floor(frames.length * 0.9)].toFixed(1)} ms, worst ${frames[frames.length - 1].toFixed(1)} ms`);
  assert.match(await page.locator('.graph svg > g').getAttribute('transform'), /translate/);
  assert.ok(median < 25, 'panning a 1,000-asset graph keeps the frame rate: ' + median);
  assert.deepEqual(page.errors, []);
});

test('a merge: production catches up, each step says what it did, and the asset page says where production\'s table came from', async () => {
  const repo = join(demoDir, 'repo');
  const feature = (await api('GET', '/api/v1/deployments/' + branch)).branch;
  execFileSync('git', ['-C', repo, '-c', 'user.name=T', '-c', 'user.email=t@example.com', 'merge', '-q', '--no-edit', feature]);
  const main = execFileSync('git', ['-C', repo, 'rev-parse', 'main']).toString().trim();
  // The demo watches the repository: prod deploys the merge, then catches up.
  // Production first catches up with the 1,000 assets the test before added (one run at a
  // time per deployment: about 3 minutes in a debug build on 2 cores), then with the merge
  // (its decision made again marks some 950 steps up to date, about 2 minutes), so wait by
  // the clock.
  let run;
  let seen = 'prod never served the merge';
  for (const deadline = Date.now() + 600000; Date.now() < deadline && !run;) {
    const prod = await api('GET', '/api/v1/deployments/prod');
    if (prod.current_revision && prod.current_revision.commit.sha === main) {
      const runs = await api('GET', '/api/v1/runs?deployment=prod');
      run = runs.find((r) => r.kind === 'catch-up' && r.revision_id === prod.current_revision.id && ['succeeded', 'failed'].includes(r.status));
      seen = JSON.stringify(runs.slice(0, 5).map((r) => [r.id, r.kind, r.status, r.revision_id]));
    }
    if (!run) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(run, 'production caught up with the merge; its newest runs: ' + seen);
  const page = await newPage();
  await page.goto(base + '/#/runs/' + run.id);
  await page.getByText('Production catches up with its revision').waitFor();
  // main changed stg_payments after the fork: fct_orders is rebuilt, and says why.
  assert.match(await page.locator('tr[data-step="fct_orders"] [data-action]').innerText(), /^built \(changed; main changed upstream/);
  await page.screenshot({ path: join(screenshots, 'catch-up.png') });
  await page.goto(base + '/#/d/shop/prod/a/fct_orders');
  assert.match(await page.locator('[data-provenance]').innerText(), new RegExp('^built in prod from commit [0-9a-f]{12} \\(run ' + run.id + '\\); reading production\'s'));
  assert.deepEqual(page.errors, []);
});
