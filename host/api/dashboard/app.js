// The dashboard of `flowcraft-host serve`: a client of its HTTP API under
// /api/v1, with no build step and no dependencies. Every text that comes
// from the API (run ids, contexts, error messages: node output among them)
// is written with textContent, never parsed as HTML.

const TOKEN_KEY = 'flowcraft-token';
const PAGE_SIZE = 25;
const REFRESH_MS = 2000;
const main = document.getElementById('main');

// ---------------------------------------------------------------------------
// The API

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Thrown when the server wants a token: the login prompt is showing. */
class LoginNeeded extends Error {}

async function api(path, { method = 'GET', body } = {}) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    showLogin(token ? 'The server refused this token.' : '');
    throw new LoginNeeded();
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    throw new ApiFailure(response.status, 'not_json', `${response.status}: ${text.slice(0, 200)}`);
  }
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiFailure(response.status, error.code, error.message ?? `HTTP ${response.status}`);
  }
  return data;
}

const encode = encodeURIComponent;

// ---------------------------------------------------------------------------
// Elements

/** An element with attributes (on* are listeners) and children (strings become text). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'class') element.className = value;
    else element.setAttribute(name, value === true ? '' : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value);
  }
  for (const child of children) {
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const link = (href, ...children) => h('a', { href, 'data-link': true }, ...children);
const badge = (state) => h('span', { class: `badge ${state}`, 'data-state': state }, state);

function notice(message, ok = false) {
  const box = document.getElementById('notice');
  box.textContent = message;
  box.className = ok ? 'ok' : '';
  box.hidden = !message;
}

function time(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

// ---------------------------------------------------------------------------
// Routing

let leave = () => {};

function navigate(path) {
  history.pushState(null, '', path);
  route();
}

async function route() {
  leave();
  leave = () => {};
  notice('');
  const { pathname } = location;
  const params = new URLSearchParams(location.search);
  const run = pathname.match(/^\/runs\/(.+)$/);
  const blueprint = pathname.match(/^\/blueprints\/(.+)$/);
  try {
    if (run) await runPage(decodeURIComponent(run[1]));
    else if (blueprint) await blueprintPage(decodeURIComponent(blueprint[1]));
    else if (pathname === '/blueprints') await blueprintsPage();
    else if (pathname === '/bundles') await bundlesPage();
    else if (pathname === '/poison') await poisonPage();
    else await runsPage(params);
  } catch (error) {
    if (!(error instanceof LoginNeeded)) show(h('p', { class: 'error' }, error.message));
  }
}

function show(...children) {
  main.replaceChildren();
  append(main, children);
}

/** Runs `refresh` every REFRESH_MS while the page is shown. */
function every(refresh) {
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await refresh();
      } catch (error) {
        if (!(error instanceof LoginNeeded)) notice(error.message);
      }
    }
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  let timer = setTimeout(tick, REFRESH_MS);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---------------------------------------------------------------------------
// Login

function showLogin(problem) {
  const dialog = document.getElementById('login');
  const error = document.getElementById('login-error');
  error.textContent = problem;
  error.hidden = !problem;
  if (!dialog.open) dialog.showModal();
}

function setUpLogin() {
  const form = document.getElementById('login-form');
  form.addEventListener('submit', () => {
    sessionStorage.setItem(TOKEN_KEY, document.getElementById('login-token').value);
    document.getElementById('sign-out').hidden = false;
    route();
  });
  const signOut = document.getElementById('sign-out');
  signOut.hidden = !sessionStorage.getItem(TOKEN_KEY);
  signOut.addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    signOut.hidden = true;
    route();
  });
}

// ---------------------------------------------------------------------------
// Runs list

async function runsPage(params) {
  const status = params.get('status') ?? '';
  const blueprintId = params.get('blueprintId') ?? '';
  const cursors = [];
  let cursor = params.get('cursor') ?? '';
  const { blueprints } = await api('/api/v1/blueprints');

  const filter = (name, value) => {
    const next = new URLSearchParams(location.search);
    if (value) next.set(name, value);
    else next.delete(name);
    next.delete('cursor');
    navigate(`/?${next}`);
  };
  const statusSelect = h('select', { name: 'status', onchange: (e) => filter('status', e.target.value) },
    ['', 'running', 'awaiting', 'completed', 'failed', 'cancelled'].map((value) =>
      h('option', { value, selected: value === status }, value || 'any')));
  const blueprintSelect = h('select', { name: 'blueprintId', onchange: (e) => filter('blueprintId', e.target.value) },
    h('option', { value: '' }, 'any'),
    blueprints.map((b) => h('option', { value: b.id, selected: b.id === blueprintId }, b.id)));
  const body = h('tbody');
  const newer = h('button', { type: 'button', disabled: true }, '← Newer');
  const older = h('button', { type: 'button', disabled: true }, 'Older →');
  const count = h('span', { class: 'muted' });

  const load = async () => {
    const query = new URLSearchParams({ limit: PAGE_SIZE });
    if (status) query.set('status', status);
    if (blueprintId) query.set('blueprintId', blueprintId);
    if (cursor) query.set('cursor', cursor);
    const page = await api(`/api/v1/runs?${query}`);
    body.replaceChildren(...page.runs.map(runRow));
    if (!page.runs.length) body.append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No runs.')));
    count.textContent = `${page.runs.length} shown · refreshed ${new Date().toLocaleTimeString()}`;
    older.disabled = !page.nextCursor;
    older.onclick = () => {
      cursors.push(cursor);
      cursor = page.nextCursor;
      load();
    };
    newer.disabled = !cursors.length;
    newer.onclick = () => {
      cursor = cursors.pop();
      load();
    };
  };
  await load();
  show(
    h('h1', {}, 'Runs'),
    h('div', { class: 'toolbar' },
      h('label', {}, 'Status', statusSelect),
      h('label', {}, 'Blueprint', blueprintSelect),
      newer, older, count),
    h('table', { id: 'runs' },
      h('thead', {}, h('tr', {}, ['Run', 'Status', 'Blueprint', 'Started', 'Duration'].map((t) => h('th', {}, t)))),
      body),
  );
  leave = every(load);
}

/** How long a run took or has been going; the end of a finished run is known to the second. */
function runDuration(run) {
  if (!TERMINAL.has(run.status)) return duration(Date.now() - run.startedAt);
  const took = run.lastUpdated * 1000 - run.startedAt;
  return took < 1000 ? 'under 1 s' : duration(took);
}

function runRow(run) {
  return h('tr', { 'data-run': run.runId },
    h('td', { class: 'mono' }, link(`/runs/${encode(run.runId)}`, run.runId)),
    h('td', {}, badge(run.status)),
    h('td', {}, link(`/blueprints/${encode(run.blueprintId)}`, run.blueprintId)),
    h('td', {}, time(run.startedAt)),
    h('td', {}, runDuration(run)));
}

// ---------------------------------------------------------------------------
// One run

async function runPage(runId) {
  let selected = null;
  let stopped = false;
  const path = `/api/v1/runs/${encode(runId)}`;
  const render = (run) => {
    const select = (nodeId) => {
      selected = nodeId;
      render(run);
    };
    show(
      h('h1', {}, 'Run ', h('span', { class: 'mono' }, run.runId), ' ', badge(run.status)),
      h('p', { class: 'muted' }, 'Blueprint ', link(`/blueprints/${encode(run.blueprintId)}`, run.blueprintId),
        run.blueprintVersion !== null ? ` (version ${JSON.stringify(run.blueprintVersion)})` : ''),
      runActions(run, path, render),
      graph(run.nodes, run.edges, selected, select),
      h('div', { class: 'columns' },
        h('div', {},
          h('h2', {}, 'Nodes'),
          nodeTable(run, selected, select),
          h('h2', {}, 'Timeline'),
          timeline(run.nodes)),
        h('div', {},
          h('h2', {}, selected ? `Node ${selected}` : 'Node'),
          nodeDetails(run, selected),
          h('h2', {}, 'Context'),
          h('div', { class: 'panel json', id: 'context' }, jsonTree(run.context, true)))),
      run.errors.length ? h('div', {}, h('h2', {}, 'Errors'), errorList(run.errors)) : null,
      run.warnings.length ? h('div', {}, h('h2', {}, 'Warnings'), errorList(run.warnings)) : null,
    );
  };
  let shown = await api(path);
  render(shown);
  // Long polls while the run goes on: the API answers when it ends or
  // awaits input, or after the wait. The page is drawn again only when the
  // run changed, so that a form being filled in stays as it is.
  leave = () => { stopped = true; };
  (async () => {
    while (!stopped) {
      try {
        const run = await api(`${path}?wait=20`);
        if (stopped) return;
        if (JSON.stringify(run) !== JSON.stringify(shown)) {
          shown = run;
          render(run);
        }
        if (TERMINAL.has(run.status) || run.status === 'awaiting') {
          await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
        }
      } catch (error) {
        if (error instanceof LoginNeeded || stopped) return;
        notice(error.message);
        await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
      }
    }
  })();
}

/** Runs `operation` after the user confirms `question`; shows the API's answer or refusal. */
async function confirmed(question, operation, done) {
  if (!confirm(question)) return;
  try {
    const answer = await operation();
    notice(`Accepted: the run is ${answer.status} now.`, true);
    done?.(answer);
  } catch (error) {
    if (!(error instanceof LoginNeeded)) notice(`Refused: ${error.message}`);
  }
}

function runActions(run, path, render) {
  const reload = async () => render(await api(path));
  const actions = h('div', { class: 'actions panel', id: 'actions' });
  if (run.status === 'running' || run.status === 'awaiting') {
    actions.append(h('button', {
      type: 'button', class: 'danger', id: 'cancel',
      onclick: () => confirmed(`Cancel run ${run.runId}?`, () => api(`${path}/cancel`, { method: 'POST' }), reload),
    }, 'Cancel run'));
  }
  if (run.status === 'failed') {
    actions.append(h('button', {
      type: 'button', class: 'primary', id: 'retry',
      onclick: () => confirmed(`Retry run ${run.runId} from its failed nodes?`,
        () => api(`${path}/retry`, { method: 'POST', body: {} }), reload),
    }, 'Retry run'));
  }
  const awaiting = Object.keys(run.awaiting ?? {});
  if (awaiting.length) actions.append(resumeForm(run, awaiting, path, reload));
  if (!actions.childElementCount) actions.append(h('span', { class: 'muted' }, 'No actions for a run that is ' + run.status + '.'));
  return actions;
}

function resumeForm(run, awaiting, path, reload) {
  const node = h('select', { name: 'nodeId' }, awaiting.map((id) => h('option', { value: id }, id)));
  const action = h('input', { name: 'action', placeholder: 'action (optional), e.g. approve' });
  const output = h('textarea', { name: 'output', placeholder: 'output as JSON (optional)' });
  const submit = (event) => {
    event.preventDefault();
    const body = { nodeId: node.value };
    if (action.value.trim()) body.action = action.value.trim();
    if (output.value.trim()) {
      try {
        body.output = JSON.parse(output.value);
      } catch (error) {
        notice(`The output is not JSON: ${error.message}`);
        return;
      }
    }
    confirmed(`Resume node ${body.nodeId} of run ${run.runId}?`,
      () => api(`${path}/resume`, { method: 'POST', body }), reload);
  };
  return h('form', { class: 'resume', id: 'resume', onsubmit: submit },
    h('strong', {}, 'Resume an awaiting node'), node, action, output,
    h('button', { type: 'submit', class: 'primary' }, 'Resume'));
}

function nodeTable(run, selected, select) {
  return h('table', { id: 'nodes' },
    h('thead', {}, h('tr', {}, ['Node', 'Uses', 'State', 'Attempts', 'Duration', 'Error'].map((t) => h('th', {}, t)))),
    h('tbody', {}, run.nodes.map((node) => h('tr', {
      class: `selectable${node.id === selected ? ' selected' : ''}`,
      'data-node': node.id,
      onclick: () => select(node.id),
    },
    h('td', { class: 'mono' }, node.id),
    h('td', { class: 'mono' }, node.uses),
    h('td', {}, badge(node.state)),
    h('td', {}, node.attempts),
    h('td', {}, node.startedAt ? duration((node.finishedAt ?? Date.now()) - node.startedAt) : ''),
    h('td', { class: 'error' }, node.error ?? '')))));
}

function nodeDetails(run, nodeId) {
  if (!nodeId) return h('p', { class: 'muted' }, 'Click a node in the graph or the table.');
  const node = run.nodes.find((n) => n.id === nodeId);
  const context = run.context ?? {};
  const field = (label, value) => value === undefined ? null : h('div', {},
    h('div', { class: 'muted' }, label), h('div', { class: 'json' }, jsonTree(value, true)));
  const errors = [...run.errors, ...run.warnings].filter((e) => e.nodeId === nodeId);
  return h('div', { class: 'panel', id: 'node-details' },
    h('p', {}, badge(node.state), ' ', h('span', { class: 'mono' }, node.uses),
      ` · ${node.attempts} attempt${node.attempts === 1 ? '' : 's'}`),
    node.startedAt ? h('p', { class: 'muted' }, `scheduled ${time(node.startedAt)}`,
      node.finishedAt ? ` · done ${time(node.finishedAt)}` : '') : null,
    field('Input', context[`_inputs.${nodeId}`]),
    field('Output', context[`_outputs.${nodeId}`]),
    field('Action', context[`_actions.${nodeId}`]),
    run.awaiting?.[nodeId] ? field('Awaiting', run.awaiting[nodeId]) : null,
    errors.length ? h('div', {}, h('div', { class: 'muted' }, 'Errors'), errorList(errors)) : null);
}

function errorList(errors) {
  return h('ul', {}, errors.map((e) => h('li', {}, h('span', { class: 'mono' }, e.nodeId), ': ',
    h('span', { class: 'error' }, e.message))));
}

function timeline(nodes) {
  const timed = nodes.filter((n) => n.startedAt).sort((a, b) => a.startedAt - b.startedAt);
  if (!timed.length) return h('p', { class: 'muted' }, 'No node has been scheduled yet.');
  const start = timed[0].startedAt;
  const end = Math.max(...timed.map((n) => n.finishedAt ?? Date.now()));
  const span = Math.max(end - start, 1);
  return h('div', { class: 'timeline panel', id: 'timeline' }, timed.map((node) => {
    const from = node.startedAt - start;
    const to = (node.finishedAt ?? Date.now()) - start;
    const bar = h('div', { class: `bar ${node.state}` });
    bar.style.left = `${(100 * from) / span}%`;
    bar.style.width = `${(100 * (to - from)) / span}%`;
    return [h('span', { class: 'mono' }, node.id), h('div', { class: 'track' }, bar),
      h('span', { class: 'muted' }, duration(to - from))];
  }));
}

// ---------------------------------------------------------------------------
// Collapsible JSON

function jsonTree(value, open = false, key = null) {
  const label = key === null ? [] : [h('span', { class: 'key' }, JSON.stringify(key)), ': '];
  if (value === null || typeof value !== 'object') {
    const kind = typeof value === 'string' ? 'string' : typeof value === 'number' ? 'number' : 'literal';
    return h('div', {}, label, h('span', { class: kind }, JSON.stringify(value) ?? 'undefined'));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const [opening, closing] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
  if (!entries.length) return h('div', {}, label, opening + closing);
  return h('details', { class: 'json', open },
    h('summary', {}, label, `${opening} ${entries.length} ${Array.isArray(value) ? 'items' : 'keys'} ${closing}`),
    entries.map(([k, v]) => jsonTree(v, false, Array.isArray(value) ? null : k)));
}

// ---------------------------------------------------------------------------
// The graph: nodes in columns by their longest path from a start node

const NODE_WIDTH = 150;
const NODE_HEIGHT = 44;
const COLUMN = 240;
const ROW = 66;

/** Each node's column: the longest path to it from a node without incoming edges, back edges left out. */
function columns(nodes, edges) {
  const ids = nodes.map((n) => n.id);
  const outgoing = new Map(ids.map((id) => [id, []]));
  const incoming = new Map(ids.map((id) => [id, 0]));
  for (const edge of edges) {
    if (!outgoing.has(edge.source) || !outgoing.has(edge.target)) continue;
    outgoing.get(edge.source).push(edge.target);
    incoming.set(edge.target, incoming.get(edge.target) + 1);
  }
  // Depth-first from the roots marks the edges that close a loop.
  const back = new Set();
  const state = new Map();
  const visit = (id) => {
    state.set(id, 'open');
    for (const next of outgoing.get(id)) {
      if (state.get(next) === 'open') back.add(`${id}\u0000${next}`);
      else if (!state.has(next)) visit(next);
    }
    state.set(id, 'done');
  };
  const roots = ids.filter((id) => incoming.get(id) === 0);
  for (const id of [...roots, ...ids]) if (!state.has(id)) visit(id);
  const column = new Map(ids.map((id) => [id, 0]));
  // Longest path over the remaining acyclic graph (at most one pass per node).
  for (let pass = 0; pass < ids.length; pass++) {
    let changed = false;
    for (const edge of edges) {
      if (back.has(`${edge.source}\u0000${edge.target}`) || !column.has(edge.source) || !column.has(edge.target)) continue;
      const wanted = column.get(edge.source) + 1;
      if (wanted > column.get(edge.target)) {
        column.set(edge.target, wanted);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return { column, back };
}

function graph(nodes, edges, selected, select) {
  const { column, back } = columns(nodes, edges);
  const rows = new Map();
  const position = new Map();
  for (const node of nodes) {
    const c = column.get(node.id);
    const r = rows.get(c) ?? 0;
    rows.set(c, r + 1);
    position.set(node.id, { x: 20 + c * COLUMN, y: 20 + r * ROW });
  }
  const width = 40 + (Math.max(0, ...column.values()) * COLUMN) + NODE_WIDTH;
  const height = 40 + (Math.max(1, ...rows.values()) - 1) * ROW + NODE_HEIGHT + 30;
  const svg = s('svg', { class: 'graph', id: 'graph', viewBox: `0 0 ${width} ${height}`, height: String(height) });
  for (const edge of edges) {
    const from = position.get(edge.source);
    const to = position.get(edge.target);
    if (!from || !to) continue;
    const x1 = from.x + NODE_WIDTH;
    const y1 = from.y + NODE_HEIGHT / 2;
    const x2 = to.x;
    const y2 = to.y + NODE_HEIGHT / 2;
    const loop = back.has(`${edge.source}\u0000${edge.target}`);
    const d = loop
      ? `M ${from.x + NODE_WIDTH / 2} ${from.y + NODE_HEIGHT} C ${from.x + NODE_WIDTH / 2} ${height}, ${to.x + NODE_WIDTH / 2} ${height}, ${to.x + NODE_WIDTH / 2} ${to.y + NODE_HEIGHT}`
      : `M ${x1} ${y1} C ${x1 + 40} ${y1}, ${x2 - 40} ${y2}, ${x2} ${y2}`;
    svg.append(s('path', { class: 'edge', d }));
    if (edge.action) {
      svg.append(s('text', { class: 'edge-label', x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, 'text-anchor': 'middle' }, clip(edge.action, 14)));
    }
  }
  for (const node of nodes) {
    const { x, y } = position.get(node.id);
    const state = node.state ?? 'pending';
    svg.append(s('g', {
      class: `node state-${state}${node.id === selected ? ' selected' : ''}`,
      'data-node': node.id,
      'data-state': state,
      transform: `translate(${x} ${y})`,
      onclick: () => select?.(node.id),
    },
    s('title', {}, `${node.id} (${node.uses}): ${state}`),
    s('rect', { width: NODE_WIDTH, height: NODE_HEIGHT, rx: 6 }),
    s('text', { x: 10, y: 18 }, clip(node.id, 20)),
    s('text', { class: 'uses', x: 10, y: 34 }, clip(node.uses, 22))));
  }
  return svg;
}

function clip(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

// ---------------------------------------------------------------------------
// Blueprints, bundles, poison

async function blueprintsPage() {
  const { blueprints } = await api('/api/v1/blueprints');
  show(h('h1', {}, 'Blueprints'),
    h('table', { id: 'blueprints' },
      h('thead', {}, h('tr', {}, ['Blueprint', 'Version new runs start with', 'Loaded versions', 'Nodes', 'Runs'].map((t) => h('th', {}, t)))),
      h('tbody', {}, blueprints.map((b) => h('tr', {},
        h('td', { class: 'mono' }, link(`/blueprints/${encode(b.id)}`, b.id)),
        h('td', { class: 'mono' }, JSON.stringify(b.version)),
        h('td', { class: 'mono' }, b.versions.map((v) => JSON.stringify(v)).join(', ')),
        h('td', {}, b.nodes),
        h('td', {}, link(`/?blueprintId=${encode(b.id)}`, 'runs')))))));
}

async function blueprintPage(id) {
  const { blueprint, versions } = await api(`/api/v1/blueprints/${encode(id)}`);
  const nodes = blueprint.nodes.map((n) => ({ id: n.id, uses: n.uses, state: 'pending' }));
  show(h('h1', {}, 'Blueprint ', h('span', { class: 'mono' }, blueprint.id)),
    h('p', { class: 'muted' }, `Loaded versions: ${versions.map((v) => JSON.stringify(v)).join(', ')} · `,
      link(`/?blueprintId=${encode(blueprint.id)}`, 'its runs')),
    graph(nodes, blueprint.edges ?? [], null, null),
    h('h2', {}, 'Definition'),
    h('div', { class: 'panel json' }, jsonTree(blueprint, true)));
}

async function bundlesPage() {
  const { bundles, problems, pinnedRunsComplete } = await api('/api/v1/bundles');
  show(h('h1', {}, 'Bundles'),
    h('table', { id: 'bundles' },
      h('thead', {}, h('tr', {}, ['Bundle', 'Digest', 'Node types', 'Grants', 'Pinned runs'].map((t) => h('th', {}, t)))),
      h('tbody', {}, bundles.map((b) => h('tr', {},
        h('td', {}, h('strong', {}, b.name), ` ${b.version}`, h('div', { class: 'muted mono' }, b.file ?? '')),
        h('td', { class: 'mono', title: b.digest }, clip(b.digest, 22)),
        h('td', { class: 'mono' }, b.nodeTypes.join(', ')),
        h('td', { class: 'mono' }, grantText(b.grants)),
        h('td', {}, b.pinnedRuns.length
          ? b.pinnedRuns.map((run) => h('div', { class: 'mono' }, link(`/runs/${encode(run)}`, run)))
          : h('span', { class: 'muted' }, 'none')))))),
    pinnedRunsComplete ? null : h('p', { class: 'muted' }, 'Pinned runs are of the newest 1,000 live runs.'),
    problems.length ? h('div', {}, h('h2', {}, 'Bundles that failed to load'),
      h('ul', {}, problems.map((p) => h('li', {}, h('span', { class: 'mono' }, p.file ?? ''), ': ',
        h('span', { class: 'error' }, p.error))))) : null);
}

function grantText(grants) {
  const parts = [];
  if (grants.config?.length) parts.push(`config: ${grants.config.join(', ')}`);
  if (grants.http?.length) parts.push(`http: ${grants.http.join(', ')}`);
  return parts.length ? parts.join('; ') : 'none';
}

async function poisonPage() {
  const { messages } = await api('/api/v1/poison');
  const replay = h('button', {
    type: 'button', class: 'primary', id: 'replay', disabled: !messages.length,
    onclick: async () => {
      if (!confirm(`Move all ${messages.length} poison messages back to the job queue?`)) return;
      try {
        const answer = await api('/api/v1/poison/replay', { method: 'POST', body: {} });
        const count = Array.isArray(answer.replayed) ? answer.replayed.length : answer.replayed;
        notice(`Replayed ${count} message${count === 1 ? '' : 's'}.`, true);
        await poisonPage();
      } catch (error) {
        if (!(error instanceof LoginNeeded)) notice(`Refused: ${error.message}`);
      }
    },
  }, 'Replay all');
  show(h('h1', {}, 'Poison messages'),
    h('div', { class: 'toolbar' }, replay),
    messages.length
      ? h('table', { id: 'poison' },
        h('thead', {}, h('tr', {}, ['Dead-lettered', 'Message', 'Reason'].map((t) => h('th', {}, t)))),
        h('tbody', {}, messages.map((m) => h('tr', { 'data-message': m.id },
          h('td', {}, time(m.at)),
          h('td', { class: 'mono' }, m.body),
          h('td', { class: 'error' }, m.reason)))))
      : h('p', { class: 'muted' }, 'No poison messages.'));
}

// ---------------------------------------------------------------------------
// Start

document.addEventListener('click', (event) => {
  const anchor = event.target.closest('a[data-link]');
  if (!anchor || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(anchor.getAttribute('href'));
});
window.addEventListener('popstate', route);
setUpLogin();
route();
