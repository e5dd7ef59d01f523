// The Offshoot web UI: deployments, one deployment (lineage with change badges, table, revisions,
// runs), one asset (definition, diff against the base, history), one run (steps, live logs).
// Preact + htm render; data comes from the REST API; a hash router keeps pages linkable.
import { html, render, useEffect, useMemo, useRef, useState } from './vendor/preact-htm.js';
import hljs from './vendor/highlight-core.js';
import sql from './vendor/highlight-sql.js';
import diffLanguage from './vendor/highlight-diff.js';
import { LineageGraph, badgeText, nodeClass, runState } from './graph.js';

hljs.registerLanguage('sql', sql);
hljs.registerLanguage('diff', diffLanguage);

// ---- API ---------------------------------------------------------------------------------------

const TOKEN_KEY = 'offshoot.token';

class ApiError extends Error {
  constructor(status, code, message, requiredRole) {
    super(message);
    this.status = status;
    this.code = code;
    this.requiredRole = requiredRole;
  }
}

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = (data && data.error) || { code: 'http_' + response.status, message: text };
    throw new ApiError(response.status, error.code, error.message, error.required_role);
  }
  return data;
}

// Token roles, in order: each can do what the ones before it can (README, "The server").
const ROLES = ['read', 'deploy', 'admin'];
const TOKEN_EVENT = 'offshoot-token';

/** The role an action on `deployment` needs: production is admin-only. */
const roleFor = (deployment) => (deployment.kind === 'production' ? 'admin' : 'deploy');

/** What the presented token may do ({token: none|valid|invalid, role, public_reads}), refreshed when the token changes. */
function useSession() {
  const [session, setSession] = useState(null);
  useEffect(() => {
    const load = () => api('GET', '/api/v1/whoami').then(setSession, () => setSession(null));
    load();
    window.addEventListener(TOKEN_EVENT, load);
    return () => window.removeEventListener(TOKEN_EVENT, load);
  }, []);
  return session;
}

/** An action's refusal, in the API's words: which role it needs, and where a token goes. */
function refusal(e) {
  if (e.status === 401) {
    const role = e.requiredRole ? ' with the ' + e.requiredRole + ' role' : '';
    return new ApiError(401, e.code, 'This needs an API token' + role + ': paste one in the header.', e.requiredRole);
  }
  if (e.status === 403) return new ApiError(403, e.code, e.message + '. Paste a token with that role in the header.', e.requiredRole);
  return e;
}

/** A note under an action the current token cannot do (nothing when no token is set: the refusal says it). */
function RoleNote({ session, needed, what }) {
  if (!session || session.token !== 'valid' || ROLES.indexOf(session.role) >= ROLES.indexOf(needed)) return null;
  return html`<p class="note" data-needs-role=${needed}>${what} needs a token with the ${needed} role; this token's role is ${session.role}.</p>`;
}

const q = (repository) => (repository ? '?repository=' + encodeURIComponent(repository) : '');
const enc = encodeURIComponent;

// ---- Live updates ------------------------------------------------------------------------------
// One server-sent event stream per page (GET /api/v1/events) says when anything changed; every
// view then refetches what it shows. The stream is read with fetch, not EventSource, so that it
// carries the token when the server keeps reads private. While it is down (refused, dropped, a
// proxy that buffers), views poll at their own intervals and the stream is retried with backoff.

const live = { open: false, listeners: new Set(), controller: null, retryMs: 1000, timer: null };
window.offshootLive = live;

function notifyLive(kind) {
  live.listeners.forEach((listener) => listener(kind));
}

/** The events named in a chunk of `text/event-stream` blocks ending in a blank line. */
function eventNames(blocks) {
  return blocks.map((block) => {
    const line = block.split(/\r?\n/).find((l) => l.startsWith('event:'));
    return line ? line.slice(6).trim() : 'message';
  });
}

async function connectLive() {
  if (live.controller || typeof fetch === 'undefined' || typeof TextDecoder === 'undefined') return;
  clearTimeout(live.timer);
  const controller = new AbortController();
  live.controller = controller;
  const headers = { Accept: 'text/event-stream' };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  try {
    const response = await fetch('/api/v1/events', { headers, signal: controller.signal, cache: 'no-store' });
    if (!response.ok || !response.body) throw new Error('events: HTTP ' + response.status);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
      const blocks = buffer.split('\n\n');
      buffer = blocks.pop();
      for (const name of eventNames(blocks)) {
        if (name === 'ready') {
          live.open = true;
          live.retryMs = 1000;
          notifyLive('open');
        } else if (name === 'change') notifyLive('change');
      }
    }
  } catch (e) {
    // Refused, dropped or aborted: views poll until the stream is back.
  }
  if (live.controller !== controller) return; // replaced by a new connection (token changed)
  live.controller = null;
  if (live.open) {
    live.open = false;
    notifyLive('closed');
  }
  live.timer = setTimeout(connectLive, live.retryMs);
  live.retryMs = Math.min(live.retryMs * 2, 30000);
}

/** A new token: the stream reconnects with it (a private server may now let it in). */
function reconnectLive() {
  const old = live.controller;
  live.controller = null;
  live.retryMs = 1000;
  if (old) old.abort();
  if (live.open) {
    live.open = false;
    notifyLive('closed');
  }
  connectLive();
}
window.addEventListener(TOKEN_EVENT, reconnectLive);

/** `task` run at most once at a time: a call while it runs asks for one more run after it, however
 * many calls come meanwhile. So a view whose fetch takes longer than changes take to arrive (a
 * 1,000-step run on a slow machine) fetches back to back, never piling requests on the server. */
function coalesced(task) {
  let running = null;
  let again = false;
  const start = () => {
    running = task().finally(() => {
      running = null;
      if (again) {
        again = false;
        start();
      }
    });
    return running;
  };
  return () => {
    if (running) {
      again = true;
      return running;
    }
    return start();
  };
}

/** Loads with `load`, then again on every live change (or every `ms` while the stream is down,
 * and only while `active`); returns [data, error, reload]. */
function usePolling(load, deps, ms, active = true) {
  const [state, setState] = useState({ data: null, error: null });
  const [streaming, setStreaming] = useState(live.open);
  const reload = useMemo(() => coalesced(() => load().then((data) => setState({ data, error: null }), (error) => setState((s) => ({ data: s.data, error })))), deps);
  useEffect(() => {
    connectLive();
    const listener = (kind) => {
      if (kind === 'change' && active && ms) reload();
      else if (kind === 'open') setStreaming(true);
      else if (kind === 'closed') setStreaming(false);
    };
    live.listeners.add(listener);
    return () => live.listeners.delete(listener);
  }, [reload, ms, active]);
  useEffect(() => { reload(); }, [reload]);
  useEffect(() => {
    if (!active || !ms || streaming) return undefined;
    const timer = setInterval(reload, ms);
    return () => clearInterval(timer);
  }, [reload, ms, active, streaming]);
  return [state.data, state.error, reload];
}

// ---- Formatting --------------------------------------------------------------------------------

function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

function duration(ms) {
  if (ms === null || ms === undefined) return '';
  return ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(1) + ' s';
}

/** Only http(s) URLs become links: a pull-request URL is user input. */
function safeUrl(url) {
  return /^https?:\/\//i.test(url || '') ? url : null;
}

function Status({ status, since }) {
  const busy = ['queued', 'deploying', 'running', 'pending'].includes(status);
  return html`<span>
    <span class=${'chip ' + status} role="status">${busy ? html`<span class="spinner" aria-hidden="true"></span>` : null}${status}${busy && since ? ' · ' + duration(Date.now() - since) : ''}</span>
    ${status === 'deploying' ? html`<div class="progress" aria-hidden="true"></div>` : null}
  </span>`;
}

/** "closed 3 d ago (pull request merged); last served revision 3 (abc123def4)": a closed deployment
 * serves nothing (its schema is dropped), so it is never shown as serving. */
// Which base the shown change summary compares with: the deployment's snapshot base as the server
// says it ("merge base abc123", "production at creation, abc123", ...), for the graph's revision.
function baseDescription(deployment, graph) {
  const snapshot = deployment.snapshot_base;
  if (!graph.base_commit) return 'no base';
  if (!snapshot) return 'previous revision ' + graph.base_commit.slice(0, 12);
  if (snapshot.commit === graph.base_commit) return snapshot.description;
  const what = { 'merge-base': 'merge base ', 'on-create': 'production at creation, ', 'on-update': 'production at last update, ' }[snapshot.condition] || '';
  return what + graph.base_commit.slice(0, 12);
}

function closedSummary(d, word = 'closed') {
  const last = d.last_served_revision;
  return word + (d.closed_at ? ' ' + ago(d.closed_at) : '') + (d.close_reason ? ' (' + d.close_reason + ')' : '') + '; '
    + (last ? 'last served revision ' + last.number + ' (' + last.commit.sha.slice(0, 10) + ')' : 'it never served');
}

function ErrorBox({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert">${error.message}${error.code ? ' (' + error.code + ')' : ''}</p>`;
}

// An asset's kind as people say it: "sql", "command", or what a dbt or Dagster asset is made with.
const kindLabel = (a) => (a.kind === 'tool' && a.kinds && a.kinds.length ? a.kinds.join(', ') : a.kind);
const codeLanguage = (a) => (a.kind === 'sql' || (a.kinds || []).includes('dbt') ? 'sql' : a.kind === 'command' ? 'shell' : 'plaintext');

function Highlighted({ code, language }) {
  const highlighted = useMemo(() => (hljs.getLanguage(language) ? hljs.highlight(code || '', { language }).value : null), [code, language]);
  if (highlighted === null) return html`<pre><code>${code}</code></pre>`;
  // hljs escapes the code it returns; nothing else is injected as HTML.
  return html`<pre class=${language === 'diff' ? 'diff' : ''}><code dangerouslySetInnerHTML=${{ __html: highlighted }}></code></pre>`;
}

// ---- Pages -------------------------------------------------------------------------------------

function Deployments() {
  const [showClosed, setShowClosed] = useState(false);
  const [deployments, error] = usePolling(() => api('GET', '/api/v1/deployments?include_closed=' + showClosed), [showClosed], 2000);
  return html`
    <h1>Deployments</h1>
    <p class="sub">Production and one branch deployment per open pull request. Updates live.</p>
    <div class="toolbar">
      <label><input type="checkbox" checked=${showClosed} onChange=${(e) => setShowClosed(e.target.checked)} /> Show closed</label>
    </div>
    <${ErrorBox} error=${error && refusal(error)} />
    ${!deployments ? html`<p class="loading">Loading…</p>` : html`
    <table aria-label="Deployments">
      <thead><tr><th>Deployment</th><th>Branch / pull request</th><th>Head commit</th><th>Latest revision</th><th>Changes</th></tr></thead>
      <tbody>
        ${deployments.map((d) => {
          const latest = d.latest_revision;
          const current = d.current_revision;
          const url = d.pull_request && safeUrl(d.pull_request.url);
          return html`<tr class=${d.status} data-deployment=${d.name}>
            <td><a href=${'#/d/' + enc(d.repository) + '/' + enc(d.name)}>${d.name}</a>${d.kind === 'production' ? html` <span class="chip open">production</span>` : ''}
              ${d.status === 'closed' ? html` <span class="chip closed">closed</span>` : ''}</td>
            <td><span class="mono">${d.branch}</span>
              ${d.pull_request ? html`<div>${url ? html`<a href=${url} rel="noreferrer noopener">PR ${d.pull_request.id || ''}</a>` : 'PR ' + d.pull_request.id}
                <span class=${'chip ' + d.pull_request.status.toLowerCase()}>${d.pull_request.status.toLowerCase()}</span></div>` : ''}</td>
            <td>${latest ? html`<span class="mono">${latest.commit.sha.slice(0, 10)}</span> ${latest.commit.message}
              <div class="note">${latest.commit.author_name} · ${ago(latest.commit.time * 1000)}</div>` : html`<span class="note">none yet</span>`}</td>
            <td>${latest ? html`<${Status} status=${latest.status} since=${latest.started_at || latest.queued_at} />` : ''}
              ${d.status === 'closed' ? html`<div class="note">${closedSummary(d)}</div>`
                : latest && latest.status === 'failed' ? html`<div class="note">${current ? 'revision ' + current.number + ' keeps serving' : 'nothing serving'}</div>` : ''}</td>
            <td>${current && d.kind === 'branch' ? html`<${Counts} counts=${current.counts} />` : html`<span class="note">${current ? plural(current.asset_count, 'asset') : ''}</span>`}</td>
          </tr>`;
        })}
      </tbody>
    </table>`}`;
}

/** "1 step", "2 steps". */
const plural = (n, word) => n + ' ' + word + (n === 1 ? '' : 's');

/** A revision's change counts (the server's one definition: new, changed, removed, impacted are
 * disjoint), zero counts left out; "no changes" when all are zero. */
function Counts({ counts, label, children }) {
  if (!counts) return html`<span class="note">no base to compare with</span>`;
  const shown = [['new', 'new', 'new'], ['changed', 'changed', 'changed'], ['removed', 'removed', 'removed'], ['impacted', 'impacted', 'impacted downstream']]
    .filter(([field]) => counts[field] > 0);
  return html`<div class="counts" aria-label=${label}>
    ${shown.length ? shown.map(([field, cls, words]) => html`<span class=${'badge ' + cls}>${counts[field]} ${words}</span>`) : html`<span class="note">no changes</span>`}
    ${children}</div>`;
}

function Diagnostics({ revision }) {
  if (!revision || revision.status !== 'failed') return null;
  return html`<div class="error" role="alert">
    <strong>Revision ${revision.number} (${revision.commit.sha.slice(0, 10)}) failed:</strong> ${revision.error}
    ${revision.diagnostics ? html`<ul>${revision.diagnostics.map((d) => html`<li class="mono">${d.path}:${d.line}:${d.column}: error: ${d.message}${d.hint ? html`<br /><span class="note">= hint: ${d.hint}</span>` : ''}</li>`)}</ul>` : ''}
  </div>`;
}

function LaunchControls({ deployment, onLaunched }) {
  const session = useSession();
  const needed = roleFor(deployment);
  const [selection, setSelection] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const launch = async (text) => {
    setBusy(true);
    setError(null);
    try {
      const run = await api('POST', '/api/v1/deployments/' + enc(deployment.name) + '/runs' + q(deployment.repository), { selection: text });
      onLaunched(run);
    } catch (e) {
      setError(refusal(e));
    } finally {
      setBusy(false);
    }
  };
  const isBranch = deployment.kind === 'branch';
  const title = 'needs a token with the ' + needed + ' role';
  return html`<div class="toolbar">
      ${isBranch ? html`<button class="primary" title=${title} disabled=${busy || !deployment.current_revision} onClick=${() => launch('changed_in_branch:ANY+')}>Materialize changed and downstream</button>` : ''}
      <label for="launch-selection">Materialize</label>
      <input id="launch-selection" class="selection" type="text" placeholder=${isBranch ? 'key:fct_orders+' : 'key:*'} value=${selection} onInput=${(e) => setSelection(e.target.value)} />
      <button title=${title} disabled=${busy || !selection || !deployment.current_revision} onClick=${() => launch(selection)}>Launch run</button>
    </div><${RoleNote} session=${session} needed=${needed} what=${'Launching runs in ' + deployment.name} /><${ErrorBox} error=${error} />`;
}

function ChangeBadge({ asset }) {
  const cls = nodeClass(asset);
  if (!cls || cls === 'source') return null;
  return html`<span class=${'badge ' + cls}>${badgeText(asset)}</span>`;
}

function AssetTable({ assets, highlight, base, isBranch }) {
  const rows = highlight ? assets.filter((a) => highlight.has(a.key)) : assets;
  return html`<table aria-label="Assets">
    <thead><tr><th>Asset</th><th>Group</th><th>Kind</th><th>Change</th><th>State</th><th>Upstream</th></tr></thead>
    <tbody>${rows.map((a) => {
      const state = runState(a, isBranch);
      return html`<tr data-asset=${a.key} data-state=${state.cls}>
      <td><a href=${base + '/a/' + enc(a.key)}>${a.key}</a></td><td>${a.group}</td><td>${kindLabel(a)}</td>
      <td><${ChangeBadge} asset=${a} /></td>
      <td><span class=${'state ' + state.cls}>${a.last_step && ['running', 'queued', 'failed'].includes(state.cls) ? html`<a href=${'#/runs/' + a.last_step.run_id}>${state.long}</a>` : state.long}</span></td>
      <td>${a.deps.length}</td></tr>`;
    })}</tbody>
  </table>`;
}

const EMPTY = [];
const CHANGED_AND_DOWNSTREAM = 'changed_in_branch:ANY+';
/** Branch deployments with more assets than this open on their changes and downstream. */
const FOCUS_ABOVE = 150;

/** What the lineage draws for a filter: only the matches, optionally with their direct upstream
 * and downstream as context (drawn faded); everything when there is no filter. */
function focusView(assets, matches, withContext) {
  if (!matches) return { assets, context: null };
  const context = new Set();
  if (withContext) {
    for (const a of assets) {
      const deps = a.deps.filter((d) => matches.has(d));
      if (matches.has(a.key)) a.deps.forEach((d) => { if (!matches.has(d)) context.add(d); });
      else if (deps.length) context.add(a.key);
    }
  }
  return { assets: assets.filter((a) => matches.has(a.key) || context.has(a.key)), context };
}

function Deployment({ repository, name }) {
  const base = '#/d/' + enc(repository) + '/' + enc(name);
  const [deployment, error, reloadDeployment] = usePolling(() => api('GET', '/api/v1/deployments/' + enc(name) + q(repository)), [repository, name], 2000);
  // The graph shows the serving revision or, once closed, the one that served last (the same one:
  // a close alone need not reload it).
  const shownRevision = deployment && (deployment.current_revision || deployment.last_served_revision);
  const servingId = shownRevision && shownRevision.id;
  const [runs, , reloadRuns] = usePolling(() => api('GET', '/api/v1/runs?limit=10&deployment=' + enc(name) + (repository ? '&repository=' + enc(repository) : '')), [repository, name], 3000);
  const running = !!(runs && runs.some((r) => ['queued', 'running'].includes(r.status)));
  // Fetched once the deployment says which revision serves (not before and again after), again
  // when that changes, and every 1.5 s while a run is active, for the nodes' run states.
  const graphKey = deployment ? 'revision ' + (servingId || 'none') : null;
  const [graph, graphError] = usePolling(() => (graphKey ? api('GET', '/api/v1/deployments/' + enc(name) + '/graph' + q(repository)) : Promise.resolve(null)), [repository, name, graphKey], running ? 1500 : 0);
  const [revisions] = usePolling(() => api('GET', '/api/v1/deployments/' + enc(name) + '/revisions' + q(repository)), [repository, name], 3000);
  const [filter, setFilter] = useState('');
  const [highlight, setHighlight] = useState(null);
  const [filterError, setFilterError] = useState(null);
  const [view, setView] = useState('graph');
  const [withContext, setWithContext] = useState(false);
  const focusDecided = useRef(false);

  useEffect(() => {
    if (!filter.trim()) {
      setHighlight(null);
      setFilterError(null);
      return undefined;
    }
    const timer = setTimeout(() => {
      api('GET', '/api/v1/deployments/' + enc(name) + '/select?selection=' + enc(filter) + (repository ? '&repository=' + enc(repository) : ''))
        .then((answer) => { setHighlight(new Set(answer.keys)); setFilterError(null); })
        .catch((e) => { setHighlight(new Set()); setFilterError(e); });
    }, 200);
    return () => clearTimeout(timer);
  }, [filter, name, repository, servingId]);

  const assets = (graph && graph.assets) || EMPTY;
  // A large branch deployment opens on what the branch touches; the whole graph is one click away.
  useEffect(() => {
    if (!graph || !deployment || focusDecided.current) return;
    focusDecided.current = true;
    if (deployment.kind === 'branch' && assets.length > FOCUS_ABOVE && assets.some((a) => a.reasons)) setFilter(CHANGED_AND_DOWNSTREAM);
  }, [graph, deployment]);
  const focus = useMemo(() => focusView(assets, highlight, withContext), [assets, highlight, withContext]);

  if (!deployment) return html`<${ErrorBox} error=${error} /><p class="loading">Loading…</p>`;
  const url = deployment.pull_request && safeUrl(deployment.pull_request.url);
  const isBranch = deployment.kind === 'branch';
  // Until the filter's answer (or the decision to focus) arrives, draw nothing rather than a
  // 1,000-asset graph about to be replaced.
  const selecting = (filter.trim() && !highlight && !filterError) || (!focusDecided.current && graph && isBranch && assets.length > FOCUS_ABOVE);
  const open = (key) => { location.hash = base + '/a/' + enc(key); };
  const closed = deployment.status === 'closed';
  return html`
    <p class="note"><a href="#/">Deployments</a> /</p>
    <h1>${deployment.name} ${closed ? html`<span class="chip closed">closed</span>` : ''}</h1>
    <p class="sub">${deployment.kind === 'production' ? 'Production' : 'Branch deployment'} of <span class="mono">${deployment.branch}</span>
      ${deployment.snapshot_base ? html` · compares with <span data-compares-with>${deployment.snapshot_base.description}</span>` : ''}
      ${deployment.pull_request ? html` · ${url ? html`<a href=${url} rel="noreferrer noopener">pull request ${deployment.pull_request.id}</a>` : 'pull request ' + deployment.pull_request.id} (${deployment.pull_request.status.toLowerCase()})` : ''}</p>
    ${closed ? html`<p class="note" data-closed>${closedSummary(deployment, 'Closed')}.
      Its warehouse objects are dropped: nothing serves and no run can start until it is reopened.</p>` : ''}
    <${ErrorBox} error=${error} />
    <${Diagnostics} revision=${deployment.latest_revision} />
    ${deployment.latest_revision && ['queued', 'deploying'].includes(deployment.latest_revision.status) ? html`<p>Deploying ${deployment.latest_revision.commit.sha.slice(0, 10)}: <${Status} status=${deployment.latest_revision.status} since=${deployment.latest_revision.started_at || deployment.latest_revision.queued_at} /></p>` : ''}
    ${deployment.status === 'open' ? html`<${LaunchControls} deployment=${deployment} onLaunched=${(run) => { location.hash = '#/runs/' + run.id; reloadRuns(); reloadDeployment(); }} />` : ''}
    ${deployment.kind === 'branch' && graph && graph.revision ? html`<${Counts} counts=${graph.revision.counts} label="Change summary">
      <span class="note" data-snapshot-base>against ${baseDescription(deployment, graph)}</span><//>` : ''}
    ${graph && graph.removed.length ? html`<p>Removed in branch: ${graph.removed.map((k) => html`<a class="badge removed mono" href=${base + '/a/' + enc(k)}>${k}</a> `)}</p>` : ''}
    <div class="toolbar">
      <label for="filter">Filter</label>
      <input id="filter" class="selection" type="text" placeholder=${isBranch ? CHANGED_AND_DOWNSTREAM : 'group:marts+'} value=${filter} onInput=${(e) => setFilter(e.target.value)}
             aria-describedby="filter-help" />
      <label><input type="checkbox" checked=${withContext} onChange=${(e) => setWithContext(e.target.checked)} /> with one hop of context</label>
      ${filter ? html`<button type="button" onClick=${() => setFilter('')}>Show the whole graph</button>` : ''}
      <span id="filter-help" class="note">${highlight ? highlight.size + ' of ' + assets.length + ' assets match' : 'selection syntax: key:, group:, tag:, kind:' + (isBranch ? ', changed_in_branch:ANY' : '') + ', +sel, sel+, and, or, not'}</span>
    </div>
    ${filterError ? html`<pre class="error" role="alert">${filterError.message}</pre>` : ''}
    <div class="tabs" role="tablist">
      <button role="tab" aria-selected=${view === 'graph'} onClick=${() => setView('graph')}>Lineage</button>
      <button role="tab" aria-selected=${view === 'table'} onClick=${() => setView('table')}>Table</button>
    </div>
    <${ErrorBox} error=${graphError} />
    ${closed && graph && graph.revision ? html`<p class="note">The definitions of revision ${graph.revision.number}, which served last; the deployment is closed.</p>` : ''}
    ${!graph || selecting ? html`<p class="loading">Loading the graph…</p>` : !graph.revision ? html`<p class="note">${closed ? 'Nothing served before it closed.' : 'No revision is serving yet.'}</p>` :
      view === 'graph' ? html`<div class="legend">${isBranch ? html`<span class="badge new">New in branch</span><span class="badge changed">Changed in branch</span><span class="badge impacted">Impacted</span>` : ''}<span>${highlight ? focus.assets.length + ' of ' + assets.length + ' assets shown' : assets.length + ' assets'} · drag to pan, wheel to zoom</span></div>
        <${LineageGraph} assets=${focus.assets} context=${focus.context} onOpen=${open} isBranch=${isBranch} />` :
      html`<${AssetTable} assets=${assets} highlight=${highlight} base=${base} isBranch=${isBranch} />`}
    <div class="grid2">
      <section><h2>Revisions</h2>
        <table aria-label="Revisions"><thead><tr><th>#</th><th>Status</th><th>Commit</th><th>Deploy time</th></tr></thead>
          <tbody>${(revisions || []).map((r) => html`<tr><td>${r.number}</td><td><${Status} status=${r.status} since=${r.started_at || r.queued_at} />
            ${shownRevision && r.id === shownRevision.id ? html` <span class="note">${closed ? 'last served' : 'serving'}</span>` : ''}</td>
            <td><span class="mono">${r.commit.sha.slice(0, 10)}</span> ${r.commit.message}<div class="note">${r.commit.author_name} · ${ago(r.queued_at)}${r.error ? ' · ' + r.error : ''}</div></td>
            <td>${duration(r.duration_ms)}</td></tr>`)}</tbody></table>
      </section>
      <section><h2>Runs</h2>
        <table aria-label="Runs"><thead><tr><th>Run</th><th>Status</th><th>Selection</th><th>Started</th></tr></thead>
          <tbody>${(runs || []).map((r) => html`<tr><td><a href=${'#/runs/' + r.id}>${r.id}</a></td><td><${Status} status=${r.status} since=${r.started_at} /></td>
            <td class="mono">${r.selection}</td><td>${ago(r.created_at)}</td></tr>`)}</tbody></table>
      </section>
    </div>
    ${!closed ? html`<${Schedules} deployment=${deployment} runsKey=${(runs || []).map((r) => r.id + r.status).join()} />` : ''}
    ${isBranch && !closed ? html`<${DataChanges} repository=${repository} name=${name} base=${base} runsKey=${(runs || []).map((r) => r.id + r.status).join()} />` : ''}`;
}

/// The deployment's schedules: on or off (a branch's can be switched), the next tick and the
/// last ticks with their runs; "Tick now" runs one (`/api/v1/deployments/{name}/schedules`).
function Schedules({ deployment, runsKey }) {
  const session = useSession();
  const needed = roleFor(deployment);
  const path = '/api/v1/deployments/' + enc(deployment.name) + '/schedules';
  const [schedules, loadError, reload] = usePolling(() => api('GET', path + q(deployment.repository)), [deployment.repository, deployment.name, runsKey], 15000);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  if (loadError) return html`<section><h2>Schedules</h2><${ErrorBox} error=${loadError} /></section>`;
  if (!schedules || schedules.length === 0) return '';
  const isBranch = deployment.kind === 'branch';
  const act = async (schedule, action) => {
    setBusy(true);
    setError(null);
    try {
      await api('POST', path + '/' + enc(schedule) + '/' + action + q(deployment.repository), {});
      reload();
    } catch (e) {
      setError(refusal(e));
    } finally {
      setBusy(false);
    }
  };
  const when = (ms) => ms == null ? '–' : new Date(ms).toISOString().replace('.000Z', 'Z');
  const title = 'needs a token with the ' + needed + ' role';
  return html`<section data-schedules><h2>Schedules</h2>
    ${isBranch ? html`<p class="note">A branch deployment's schedules are off until switched on here; production's always run.</p>` : ''}
    <table aria-label="Schedules"><thead><tr><th>Schedule</th><th>When</th><th>Selection</th><th>Next tick</th><th>Last ticks</th><th></th></tr></thead>
      <tbody>${schedules.map((s) => html`<tr data-schedule=${s.name}><td>${s.name} <span class=${'chip ' + (s.enabled ? 'open' : 'closed')}>${s.enabled ? 'on' : 'off'}</span><div class="note">${s.defined_in}</div>${s.problem ? html`<div class="error">not run: ${s.problem}</div>` : ''}</td>
        <td class="mono">${s.cron}<div class="note">${s.timezone}</div></td><td class="mono">${s.selection}</td>
        <td>${s.enabled ? when(s.next_tick_at) : html`<span class="note">off</span>`}</td>
        <td>${s.ticks.length === 0 ? html`<span class="note">none yet</span>` : html`<ul class="ticks">${s.ticks.map((t) => html`<li>${when(t.tick_at)} ${t.manual ? '(now) ' : ''}
          ${t.run_id ? html`<a href=${'#/runs/' + t.run_id}>run ${t.run_id}</a> <${Status} status=${t.run_status} />` : html`<${Status} status=${t.status} />`}
          ${t.missed ? html` <span class="note">caught up ${t.missed} missed</span>` : ''}${t.message ? html`<div class="note">${t.message}</div>` : ''}</li>`)}</ul>`}</td>
        <td>${isBranch ? html`<button title=${title} disabled=${busy} onClick=${() => act(s.name, s.enabled ? 'off' : 'on')}>${s.enabled ? 'Switch off' : 'Switch on'}</button> ` : ''}
          <button title=${title} disabled=${busy} onClick=${() => act(s.name, 'tick')}>Tick now</button></td></tr>`)}</tbody></table>
    <${RoleNote} session=${session} needed=${needed} what=${'Changing schedules of ' + deployment.name} /><${ErrorBox} error=${error} />
  </section>`;
}

/// One line per asset this branch built: what its runs did to the data against production's.
function DataChanges({ repository, name, base, runsKey }) {
  const [summaries, error] = usePolling(() => api('GET', '/api/v1/deployments/' + enc(name) + '/data-diffs' + q(repository)), [repository, name, runsKey], 0);
  if (error) return html`<section><h2>Data changes</h2><${ErrorBox} error=${error} /></section>`;
  if (!summaries) return '';
  const diffs = summaries.diffs;
  return html`<section data-diffs><h2>Data changes against production</h2>
    ${diffs.length === 0 ? html`<p class="note">Nothing built in this branch yet: every asset reads production\u2019s table.</p>` : html`
    <table aria-label="Data changes"><thead><tr><th>Asset</th><th>Rows (production → branch)</th><th>Added</th><th>Removed</th><th>Changed</th><th>Columns</th></tr></thead>
      <tbody>${diffs.map((d) => html`<tr><td><a href=${base + '/a/' + enc(d.asset)}>${d.asset}</a></td>
        <td>${d.state === 'new_in_branch' ? 'new · ' + thousands(d.branch_rows) : thousands(d.production_rows) + ' → ' + thousands(d.branch_rows)}</td>
        <td>${thousands(d.only_in_branch)}</td><td>${thousands(d.only_in_production)}</td>
        <td>${d.key_source === 'none' ? html`<span class="note">no key</span>` : thousands(d.changed)}${d.sampled ? html` <span class="note">(sampled)</span>` : ''}</td>
        <td>${d.columns_added || d.columns_removed ? '+' + d.columns_added + ' −' + d.columns_removed : ''}</td></tr>`)}</tbody></table>`}
  </section>`;
}

function MapChanges({ label, change }) {
  if (!change) return null;
  const rows = [
    ...Object.entries(change.added).map(([k, v]) => html`<li>added <code>${k}</code> = <code>${v}</code></li>`),
    ...Object.entries(change.changed).map(([k, v]) => html`<li>changed <code>${k}</code>: <code>${v.old}</code> → <code>${v.new}</code></li>`),
    ...Object.entries(change.removed).map(([k, v]) => html`<li>removed <code>${k}</code> (was <code>${v}</code>)</li>`),
  ];
  return html`<h3>${label}</h3><ul>${rows}</ul>`;
}

function History({ title, rows }) {
  return html`<section><h2>${title}</h2>${rows.length === 0 ? html`<p class="note">Never materialized.</p>` : html`
    <table><thead><tr><th>Run</th><th>Commit</th><th>Rows</th><th>Duration</th><th>When</th></tr></thead>
    <tbody>${rows.map((m) => html`<tr><td><a href=${'#/runs/' + m.run_id}>${m.run_id}</a></td><td class="mono">${m.commit.slice(0, 10)}</td>
      <td>${m.row_count ?? ''}</td><td>${duration(m.duration_ms)}</td><td>${ago(m.created_at)}</td></tr>`)}</tbody></table>`}</section>`;
}

const thousands = (n) => n == null ? '–' : Number(n).toLocaleString('en-US');

/// What this branch did to the asset's data: its table against production's (the warehouse
/// computes it; `GET .../assets/{key}/data-diff`).
function DataDiff({ repository, name, assetKey }) {
  const [diff, error] = usePolling(() => api('GET', '/api/v1/deployments/' + enc(name) + '/assets/' + enc(assetKey) + '/data-diff' + q(repository)), [repository, name, assetKey], 15000);
  if (error) return html`<section><h2>Data changes</h2><${ErrorBox} error=${error} /></section>`;
  if (!diff) return html`<section><h2>Data changes</h2><p class="loading">Comparing with production…</p></section>`;
  const states = { new_in_branch: 'New in this branch: production has no table to compare with.', not_built_in_branch: 'Not built in this branch: it reads production\u2019s table.', not_built: 'Neither this branch nor production has a table yet.' };
  if (diff.state !== 'compared') return html`<section data-diff><h2>Data changes</h2><p class="note">${states[diff.state]}</p></section>`;
  const rows = diff.rows || { only_in_production: 0, only_in_branch: 0, changed: 0, equal: 0 };
  const total = rows.equal + rows.changed + rows.only_in_branch + rows.only_in_production || 1;
  const parts = [['equal', rows.equal, 'equal'], ['changed', rows.changed, 'changed'], ['added', rows.only_in_branch, 'added'], ['removed', rows.only_in_production, 'removed']];
  const keyed = diff.key.source !== 'none';
  const schema = diff.schema;
  const cell = (v) => v == null ? html`<span class="note">NULL</span>` : v;
  const sampleTable = (label, columns, list) => list.length ? html`<h3>${label}</h3><div class="scroll"><table aria-label=${label}><thead><tr>${columns.map((c) => html`<th>${c}</th>`)}</tr></thead>
    <tbody>${list.map((r) => html`<tr>${r.map((v) => html`<td class="mono">${cell(v)}</td>`)}</tr>`)}</tbody></table></div>` : '';
  return html`<section data-diff><h2>Data changes against production</h2>
    <p>${thousands(diff.production_rows)} rows in production → ${thousands(diff.branch_rows)} in this branch · ${keyed ? html`matched by <code>${diff.key.columns.join(', ')}</code> (${diff.key.source})` : 'compared as whole rows (no key)'} · the branch’s table of ${diff.branch_run == null ? 'no recorded run' : 'run ' + diff.branch_run} against production’s of ${diff.production_run == null ? 'no recorded run' : 'run ' + diff.production_run}</p>
    <div class="diffbar" role="img" aria-label=${parts.map(([l, n]) => n + ' ' + l).join(', ')}>${parts.filter(([, n]) => n > 0).map(([l, n, c]) => html`<span class=${'seg ' + c} style=${'width:' + (100 * n / total) + '%'} title=${thousands(n) + ' ' + l}></span>`)}</div>
    <p class="legend">${parts.map(([l, n, c]) => html`<span><span class=${'swatch ' + c}></span>${thousands(n)} ${l}</span> `)}</p>
    ${schema.added.length || schema.removed.length || schema.type_changed.length || schema.order_changed ? html`<h3>Schema</h3><ul>
      ${schema.added.map((c) => html`<li>column added <code>${c.name}</code> ${c.data_type}</li>`)}
      ${schema.removed.map((c) => html`<li>column removed <code>${c.name}</code> ${c.data_type}</li>`)}
      ${schema.type_changed.map((c) => html`<li>type of <code>${c.name}</code>: ${c.production} → ${c.branch}</li>`)}
      ${schema.order_changed ? html`<li>column order changed</li>` : ''}</ul>` : ''}
    ${keyed ? html`<h3>Columns</h3><table aria-label="Columns"><thead><tr><th>Column</th><th>Matched rows equal</th><th>Sum (production → branch)</th><th>NULLs</th></tr></thead><tbody>
      ${diff.columns.map((c) => html`<tr><td class="mono">${c.name}</td>
        <td>${c.equal_share == null ? '' : html`<span class="match"><span style=${'width:' + (100 * c.equal_share) + '%'}></span></span> ${(100 * c.equal_share).toFixed(1)}%`}</td>
        <td class="mono">${c.production ? cell(c.production.sum) : ''}${c.production ? ' → ' : ''}${c.branch ? cell(c.branch.sum) : ''}</td>
        <td>${c.production ? c.production.nulls + ' → ' + c.branch.nulls : ''}</td></tr>`)}</tbody></table>` : ''}
    ${diff.notes.map((n) => html`<p class="note">${n}</p>`)}
    ${sampleTable('Added rows (sample)', diff.samples.columns, diff.samples.added)}
    ${sampleTable('Removed rows (sample)', diff.samples.columns, diff.samples.removed)}
    ${diff.samples.changed.length ? html`<h3>Changed rows (sample)</h3><div class="scroll"><table aria-label="Changed rows (sample)"><thead><tr>${diff.key.columns.map((c) => html`<th>${c}</th>`)}${diff.samples.changed_columns.map((c) => html`<th>${c}</th>`)}</tr></thead>
      <tbody>${diff.samples.changed.map((r) => html`<tr>${r.key.map((v) => html`<td class="mono">${cell(v)}</td>`)}${r.cells.map((c) => c.changed
        ? html`<td class="mono changed-cell"><del>${cell(c.production)}</del> <ins>${cell(c.branch)}</ins></td>` : html`<td class="mono">${cell(c.branch)}</td>`)}</tr>`)}</tbody></table></div>` : ''}
  </section>`;
}

function Asset({ repository, name, assetKey }) {
  const base = '#/d/' + enc(repository) + '/' + enc(name);
  const [asset, error] = usePolling(() => api('GET', '/api/v1/deployments/' + enc(name) + '/assets/' + enc(assetKey) + q(repository)), [repository, name, assetKey], 5000);
  if (!asset) return html`<p class="note"><a href="#/">Deployments</a> / <a href=${base}>${name}</a> /</p><${ErrorBox} error=${error} />${error ? '' : html`<p class="loading">Loading…</p>`}`;
  const change = asset.change;
  const link = (key) => html`<a href=${base + '/a/' + enc(key)}>${key}</a> `;
  const source = { branch: 'this branch deployment\u2019s own table (rebuilt here)', production: 'production\u2019s table (not rebuilt in this deployment)', none: 'nowhere yet: not materialized in this deployment or production' }[asset.data];
  const readsFrom = asset.removed ? 'production\u2019s table, if it still has one (this branch no longer defines the asset)' : source;
  return html`
    <p class="note"><a href="#/">Deployments</a> / <a href=${base}>${name}</a> /</p>
    <h1>${asset.key} ${asset.removed ? html`<span class="badge removed">Removed in this branch</span>` : change ? html`<span class=${'badge ' + (change.reasons.includes('NEW') ? 'new' : 'changed')}>${change.reasons.includes('NEW') ? 'New in branch' : 'Changed in branch: ' + change.reasons.join(', ')}</span>` : ''}
      ${asset.impacted_via ? html`<span class="badge impacted">Impacted via ${asset.impacted_via.join(' → ')}</span>` : ''}</h1>
    <p class="sub">${asset.description || ''}</p>
    ${asset.removed ? html`<p class="note" data-removed>This branch removes the asset: its definition below is the base's (merge-base commit), and the assets listed downstream read it there. Nothing builds it in this deployment.</p>` : ''}
    <dl class="kv">
      <dt>Reads come from</dt><dd>${readsFrom}</dd>
      ${asset.provenance ? html`<dt>Provenance</dt><dd data-provenance>${asset.provenance.summary}${asset.provenance.matches_definition ? '' : html` <span class="note">(built from another definition than this revision's: it is rebuilt or promoted at the next catch-up)</span>`}</dd>` : ''}
      <dt>Kind · group</dt><dd>${kindLabel(asset)} · ${asset.group}</dd>
      <dt>Defined in</dt><dd class="mono">${asset.path}</dd>
      <dt>Code version</dt><dd class="mono">${asset.code_version_derived ? 'derived ' + asset.code_version.slice(0, 12) : asset.code_version}</dd>
      ${asset.partitions ? html`<dt>Partitions</dt><dd>${asset.partitions}</dd>` : ''}
      <dt>Upstream</dt><dd>${asset.upstream.length ? asset.upstream.map(link) : html`<span class="note">none</span>`}</dd>
      <dt>${asset.removed ? 'Downstream at the base' : 'Downstream'}</dt><dd>${asset.downstream.length ? asset.downstream.map(link) : html`<span class="note">none</span>`}</dd>
      <dt>Tags</dt><dd>${Object.entries(asset.tags).map(([k, v]) => html`<code>${k}=${v}</code> `)}</dd>
      ${Object.keys(asset.metadata).length ? html`<dt>Metadata</dt><dd>${Object.entries(asset.metadata).map(([k, v]) => html`<code>${k}=${v}</code> `)}</dd>` : ''}
      ${(asset.untracked_metadata || []).length ? html`<dt>Not tracked</dt><dd class="note" title="offshoot.toml: [project] untracked_metadata">changes to ${asset.untracked_metadata.map((k) => html`<code>${k}</code> `)}are not changes of the asset</dd>` : ''}
    </dl>
    ${change && !change.reasons.includes('NEW') && !asset.removed ? html`<section><h2>Changes against the base</h2>
      ${change.details.code ? html`<h3>Code</h3>
        <p class="note">Code version ${change.details.code.derived ? 'derived ' + change.details.code.old_version.slice(0, 12) + ' → ' + change.details.code.new_version.slice(0, 12) : change.details.code.old_version + ' → ' + change.details.code.new_version}${change.details.code.diff ? '' : '; the code itself is unchanged'}</p>
        ${change.details.code.diff ? html`<${Highlighted} code=${change.details.code.diff} language="diff" />` : ''}` : ''}
      ${change.details.dependencies ? html`<h3>Dependencies</h3><ul>${change.details.dependencies.added.map((k) => html`<li>added ${link(k)}</li>`)}${change.details.dependencies.removed.map((k) => html`<li>removed <code>${k}</code></li>`)}</ul>` : ''}
      ${change.details.partitions ? html`<h3>Partitions</h3><p><code>${change.details.partitions.old || 'none'}</code> → <code>${change.details.partitions.new || 'none'}</code></p>` : ''}
      <${MapChanges} label="Tags" change=${change.details.tags} />
      <${MapChanges} label="Metadata" change=${change.details.metadata} />
    </section>` : ''}
    <h2>${asset.removed ? 'Definition at the base' : 'Definition'}</h2>
    ${asset.kind === 'source' ? html`<p class="note">A source: read from production, never built by Offshoot.</p>` : html`<${Highlighted} code=${asset.code} language=${codeLanguage(asset)} />`}
    ${name !== 'prod' && !asset.removed && asset.kind !== 'source' ? html`<${DataDiff} repository=${repository} name=${name} assetKey=${asset.key} />` : ''}
    <div class="grid2">
      <${History} title="Materializations in this deployment" rows=${asset.materializations} />
      ${asset.production_materializations.length || name !== 'prod' ? html`<${History} title="Materializations in production" rows=${asset.production_materializations} />` : ''}
    </div>`;
}

function Run({ id }) {
  const [finished, setFinished] = useState(false);
  const [run, error, reload] = usePolling(() => api('GET', '/api/v1/runs/' + enc(id)), [id], 1000, !finished);
  const [open, setOpen] = useState({});
  const [cancelError, setCancelError] = useState(null);
  const session = useSession();
  useEffect(() => { if (run && ['succeeded', 'failed', 'canceled'].includes(run.status)) setFinished(true); }, [run]);
  // The commit a run builds is its revision's.
  const revisionsPath = run ? '/api/v1/deployments/' + enc(run.deployment) + '/revisions' + q(run.repository) : null;
  const [revisions] = usePolling(() => (revisionsPath ? api('GET', revisionsPath) : Promise.resolve(null)), [revisionsPath], 0);
  if (!run) return html`<${ErrorBox} error=${error} />${error ? '' : html`<p class="loading">Loading…</p>`}`;
  const revision = revisions && revisions.find((r) => r.id === run.revision_id);
  const cancel = () => api('POST', '/api/v1/runs/' + enc(id) + '/cancel', {}).then(reload, (e) => setCancelError(refusal(e)));
  const needed = run.deployment === 'prod' ? 'admin' : 'deploy';
  const active = ['queued', 'running'].includes(run.status);
  return html`
    <p class="note"><a href="#/">Deployments</a> / <a href=${'#/d/' + enc(run.repository) + '/' + enc(run.deployment)}>${run.deployment}</a> /</p>
    <h1>Run ${run.id} <${Status} status=${run.status} since=${run.started_at} /></h1>
    <p class="sub">${run.kind === 'catch-up' ? html`Production catches up with its revision: each asset is promoted from a branch that built it exactly as production would (no code runs) or rebuilt` : html`<span class="mono">${run.selection}</span>`} · ${plural(run.steps.length, 'step')}${run.error ? ' · ' + run.error : ''}</p>
    <dl class="kv" aria-label="Run details">
      <dt>Started</dt><dd>${run.started_at ? html`<time datetime=${new Date(run.started_at).toISOString()}>${new Date(run.started_at).toLocaleString()}</time> (${ago(run.started_at)})` : 'not yet (queued ' + ago(run.created_at) + ')'}</dd>
      <dt>Duration</dt><dd>${run.started_at ? duration((run.finished_at || Date.now()) - run.started_at) + (run.finished_at ? '' : ' so far') : ''}</dd>
      <dt>Commit</dt><dd>${revision ? html`<span class="mono">${revision.commit.sha.slice(0, 10)}</span> ${revision.commit.message} <span class="note">(revision ${revision.number})</span>` : ''}</dd>
    </dl>
    ${active ? html`<div class="toolbar"><button class="danger" title=${'needs a token with the ' + needed + ' role'} onClick=${cancel}>Cancel run</button></div>
      <${RoleNote} session=${session} needed=${needed} what="Canceling this run" />` : ''}
    <${ErrorBox} error=${cancelError} />
    <table aria-label="Steps"><thead><tr><th>Step</th><th>Status</th><th>Rows</th><th>Duration</th><th>Log</th></tr></thead>
      <tbody>${run.steps.map((s) => html`<tr data-step=${s.asset_key}>
        <td><a href=${'#/d/' + enc(run.repository) + '/' + enc(run.deployment) + '/a/' + enc(s.asset_key)}>${s.asset_key}</a>${s.action ? html`<div class="note" data-action>${s.action}</div>` : ''}${s.error ? html`<div class="note">${s.error}</div>` : ''}</td>
        <td><${Status} status=${s.status} since=${s.started_at} /></td><td>${s.row_count ?? ''}</td><td>${duration(s.duration_ms)}</td>
        <td>${s.log ? html`<button aria-expanded=${!!open[s.asset_key]} onClick=${() => setOpen({ ...open, [s.asset_key]: !open[s.asset_key] })}>${open[s.asset_key] ? 'Hide' : 'Show'} log</button>` : ''}
          ${open[s.asset_key] || s.status === 'running' ? html`<pre aria-live="polite">${s.log}</pre>` : ''}</td></tr>`)}</tbody></table>`;
}

// ---- Shell and router --------------------------------------------------------------------------

/** The token for actions (and for reads when the server keeps them private), with its role. */
function TokenField() {
  const [token, setToken] = useState(localStorage.getItem(TOKEN_KEY) || '');
  const session = useSession();
  const save = (value) => {
    setToken(value);
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
    window.dispatchEvent(new Event(TOKEN_EVENT));
  };
  const privateReads = session && !session.public_reads;
  const placeholder = privateReads ? 'needed to see deployments' : 'needed to launch runs';
  const status = !session || session.token === 'none' ? '' : session.token === 'valid' ? 'role: ' + session.role : 'not a token of this server';
  return html`<div class="token"><label for="token">API token</label>
    <input id="token" type="password" autocomplete="off" placeholder=${placeholder} value=${token} onInput=${(e) => save(e.target.value.trim())} />
    ${status ? html`<span class="note" id="token-role" role="status">${status}</span>` : ''}</div>`;
}

function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (parts[0] === 'd' && parts.length >= 3) {
    if (parts[3] === 'a' && parts[4]) return { page: 'asset', repository: parts[1], name: parts[2], key: parts[4] };
    return { page: 'deployment', repository: parts[1], name: parts[2] };
  }
  if (parts[0] === 'runs' && parts[1]) return { page: 'run', id: parts[1] };
  return { page: 'deployments' };
}

function App() {
  const [route, setRoute] = useState(parseRoute(location.hash));
  useEffect(() => {
    const onHash = () => { setRoute(parseRoute(location.hash)); window.scrollTo(0, 0); };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  let page;
  if (route.page === 'deployment') page = html`<${Deployment} key=${route.repository + '/' + route.name} repository=${route.repository} name=${route.name} />`;
  else if (route.page === 'asset') page = html`<${Asset} key=${route.name + '/' + route.key} repository=${route.repository} name=${route.name} assetKey=${route.key} />`;
  else if (route.page === 'run') page = html`<${Run} key=${route.id} id=${route.id} />`;
  else page = html`<${Deployments} />`;
  return html`
    <header class="top"><a class="brand" href="#/">Offshoot</a>
      <nav aria-label="Main"><a href="#/">Deployments</a><a href="/api/v1/openapi.json">API</a></nav>
      <${TokenField} /></header>
    <main id="main">${page}</main>`;
}

const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
