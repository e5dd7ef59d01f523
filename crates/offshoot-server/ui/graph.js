// The lineage graph: a layered left-to-right DAG, drawn as SVG, with pan (drag,
// arrow keys), zoom (wheel, +/- keys, buttons) and keyboard-focusable nodes.
import { html, useEffect, useMemo, useRef, useState } from './vendor/preact-htm.js';

const NODE_WIDTH = 224;
const NODE_HEIGHT = 46;

const RANK_GAP = 80;
const ROW_GAP = 14;
// A long edge passes each rank between its ends through a slot of its own, this tall: thinner
// than a node, so long edges do not stretch the graph as much as nodes do.
const LANE_HEIGHT = 8;
const LANE_GAP = 6;
const SWEEPS = 6;
const STRAIGHTEN_PASSES = 8;
const READABLE_SCALE = 0.6;

/**
 * A layered (Sugiyama-style) left-to-right layout: ranks by longest path from the sources (with
 * sources pulled next to their first reader); every edge longer than one rank is cut into a chain
 * of *lanes*, placeholders that take a slot in each rank it crosses; order within each rank by
 * barycenter sweeps over nodes and lanes together; then vertical positions that keep each rank's
 * order and spacing while pulling every slot towards its neighbours (straighter edges).
 *
 * An edge is drawn as horizontal-tangent curves in the gaps between ranks, joined by straight
 * runs through its lanes, so it never enters the column of a rank except in its own slot: it
 * cannot cross a node that is not one of its ends (the browser test checks the geometry).
 * Chosen over elkjs and dagre by measurement (ARCHITECTURE.md, BENCHMARKS.md). Returns {nodes,
 * edges, width, height}; node x/y are centres, each edge has {from, to, d} with d an SVG path.
 */
export function layout(assets) {
  const count = assets.length;
  const index = new Map(assets.map((a, i) => [a.key, i]));
  const parents = assets.map((a) => a.deps.filter((d) => index.has(d)).map((d) => index.get(d)));
  const children = assets.map(() => []);
  parents.forEach((ps, i) => ps.forEach((p) => children[p].push(i)));

  // Topological order (Kahn); the server only serves acyclic graphs.
  const indegree = parents.map((ps) => ps.length);
  const order = [];
  const ready = indegree.flatMap((d, i) => (d === 0 ? [i] : []));
  while (ready.length) {
    const v = ready.pop();
    order.push(v);
    for (const c of children[v]) if (--indegree[c] === 0) ready.push(c);
  }
  const rank = new Array(count).fill(0);
  for (const v of order) for (const c of children[v]) rank[c] = Math.max(rank[c], rank[v] + 1);
  for (let i = order.length - 1; i >= 0; i--) {
    const v = order[i];
    if (parents[v].length === 0 && children[v].length) rank[v] = Math.min(...children[v].map((c) => rank[c])) - 1;
  }

  // Slots: 0..count-1 are the nodes, the rest are lanes. up/down are the slot's neighbours in the
  // rank before and after; chains[e] lists the slots edge e passes through, ends included.
  const up = assets.map(() => []);
  const down = assets.map(() => []);
  const slotRank = rank.slice();
  const edges = [];
  const chains = [];
  parents.forEach((ps, v) => ps.forEach((p) => {
    const chain = [p];
    let previous = p;
    for (let r = rank[p] + 1; r < rank[v]; r++) {
      const lane = slotRank.length;
      slotRank.push(r);
      up.push([previous]);
      down.push([]);
      down[previous].push(lane);
      chain.push(lane);
      previous = lane;
    }
    down[previous].push(v);
    up[v].push(previous);
    chain.push(v);
    chains.push(chain);
    edges.push({ from: assets[p].key, to: assets[v].key });
  }));
  const slots = slotRank.length;
  const isLane = (s) => s >= count;

  const layers = [];
  for (const v of order) (layers[rank[v]] ||= []).push(v);
  for (let s = count; s < slots; s++) (layers[slotRank[s]] ||= []).push(s);
  const position = new Float64Array(slots);
  const key = new Float64Array(slots);
  const place = (layer) => layer.forEach((s, i) => { position[s] = i; });
  layers.forEach((layer) => layer && place(layer));
  const barycenter = (s, neighbours) => {
    const list = neighbours[s];
    if (!list.length) return position[s];
    let sum = 0;
    for (const n of list) sum += position[n];
    return sum / list.length;
  };
  for (let sweep = 0; sweep < SWEEPS; sweep++) {
    const downwards = sweep % 2 === 0;
    const sequence = downwards ? [...layers.keys()] : [...layers.keys()].reverse();
    for (const r of sequence) {
      const layer = layers[r];
      if (!layer) continue;
      const neighbours = downwards ? up : down;
      for (const s of layer) key[s] = barycenter(s, neighbours);
      layer.sort((a, b) => key[a] - key[b] || position[a] - position[b]);
      place(layer);
    }
  }

  // Vertical positions: stack each rank, then alternately pull each slot to the mean of its
  // neighbours and push overlapping slots apart in order (never reordering), so the ordering
  // above, and with it the routing, stays intact.
  const height = (s) => (isLane(s) ? LANE_HEIGHT : NODE_HEIGHT);
  const gapAfter = (a, b) => (isLane(a) && isLane(b) ? LANE_GAP : ROW_GAP);
  const y = new Float64Array(slots);
  for (const layer of layers) {
    if (!layer) continue;
    let top = 0;
    layer.forEach((s, i) => {
      if (i) top += gapAfter(layer[i - 1], s);
      y[s] = top + height(s) / 2;
      top += height(s);
    });
    const shift = top / 2;
    for (const s of layer) y[s] -= shift;
  }
  const wanted = new Float64Array(slots);
  const widest = Math.max(0, ...layers.map((layer) => (layer ? layer.length : 0)));
  const forward = new Float64Array(widest);
  const backward = new Float64Array(widest);
  for (let pass = 0; pass < STRAIGHTEN_PASSES; pass++) {
    const neighbours = pass % 2 === 0 ? up : down;
    for (const layer of layers) {
      if (!layer) continue;
      for (const s of layer) {
        const list = neighbours[s].length ? neighbours[s] : neighbours === up ? down[s] : up[s];
        if (!list.length) { wanted[s] = y[s]; continue; }
        let sum = 0;
        for (const n of list) sum += y[n];
        wanted[s] = sum / list.length;
      }
      // Push apart downwards from the wanted places, then upwards, and take the middle: a cheap
      // approximation of the closest order-preserving placement.
      const n = layer.length;
      for (let i = 0; i < n; i++) forward[i] = backward[i] = wanted[layer[i]];
      for (let i = 1; i < n; i++) {
        const least = forward[i - 1] + height(layer[i - 1]) / 2 + gapAfter(layer[i - 1], layer[i]) + height(layer[i]) / 2;
        if (forward[i] < least) forward[i] = least;
      }
      for (let i = n - 2; i >= 0; i--) {
        const most = backward[i + 1] - height(layer[i + 1]) / 2 - gapAfter(layer[i], layer[i + 1]) - height(layer[i]) / 2;
        if (backward[i] > most) backward[i] = most;
      }
      // Both passes keep the spacing, and so does their mean (the sum of two gap-keeping sequences).
      for (let i = 0; i < n; i++) y[layer[i]] = (forward[i] + backward[i]) / 2;
    }
  }
  let top = Infinity;
  let bottom = -Infinity;
  for (let s = 0; s < slots; s++) {
    top = Math.min(top, y[s] - height(s) / 2);
    bottom = Math.max(bottom, y[s] + height(s) / 2);
  }
  if (!slots) { top = 0; bottom = 0; }
  const margin = 20;
  const left = (r) => margin + r * (NODE_WIDTH + RANK_GAP);
  const nodes = assets.map((asset, v) => ({ asset, x: left(rank[v]) + NODE_WIDTH / 2, y: y[v] - top + margin }));
  const at = (s) => y[s] - top + margin;
  chains.forEach((chain, e) => {
    let x = left(slotRank[chain[0]]) + NODE_WIDTH;
    let from = at(chain[0]);
    let d = `M${x},${from}`;
    for (let i = 1; i < chain.length; i++) {
      const s = chain[i];
      const x2 = left(slotRank[s]);
      const to = at(s);
      const bend = (x2 - x) / 2;
      d += to === from ? ` L${x2},${to}` : ` C${x + bend},${from} ${x2 - bend},${to} ${x2},${to}`;
      if (isLane(s)) d += ` L${x2 + NODE_WIDTH},${to}`;
      x = x2 + NODE_WIDTH;
      from = to;
    }
    edges[e].d = d;
  });
  const ranks = layers.length;
  return { nodes, edges, width: 2 * margin + ranks * (NODE_WIDTH + RANK_GAP) - RANK_GAP, height: 2 * margin + bottom - top };
}

export function nodeClass(asset) {
  if (asset.reasons && asset.reasons.includes('NEW')) return 'new';
  if (asset.reasons) return 'changed';
  if (asset.impacted_via) return 'impacted';
  if (asset.kind === 'source') return 'source';
  return '';
}

export function badgeText(asset) {
  if (asset.reasons && asset.reasons.includes('NEW')) return 'New in branch';
  if (asset.reasons) return 'Changed in branch: ' + asset.reasons.join(', ');
  if (asset.impacted_via) return 'Impacted via ' + asset.impacted_via.join(' → ');
  return '';
}

/**
 * What a node or row says about the asset's data in this deployment: its latest step while a run
 * has it queued or running, or when that step failed; otherwise where reads land. {cls, text, long}.
 */
export function runState(asset, isBranch) {
  const step = asset.last_step;
  if (step && step.status === 'running') {
    const progress = step.run_progress ? ' ' + step.run_progress[0] + '/' + step.run_progress[1] : '';
    return { cls: 'running', text: 'running' + progress, long: 'running in run ' + step.run_id + (progress ? ' (' + progress.trim() + ' steps done)' : '') };
  }
  if (step && step.status === 'queued') return { cls: 'queued', text: 'queued', long: 'queued in run ' + step.run_id };
  if (step && step.status === 'failed') return { cls: 'failed', text: 'failed', long: 'failed in run ' + step.run_id + (step.error ? ': ' + step.error : '') };
  if (asset.kind === 'source') return { cls: 'source', text: '', long: 'a source, read from production' };
  if (asset.stale) return { cls: 'stale', text: 'stale', long: 'stale: its definition (code, partitions or an upstream) changed since its table here was built' };
  if (asset.data === 'branch' || (!isBranch && asset.data === 'production')) return { cls: 'built', text: isBranch ? 'built here' : 'built', long: isBranch ? 'built in this branch deployment' : 'built' };
  if (asset.data === 'production') return { cls: 'production', text: 'prod table', long: 'reads production\u2019s table (not rebuilt here)' };
  return { cls: 'never', text: 'never built', long: 'never built' + (isBranch ? ' here nor in production' : '') };
}

/** The badge as a node's subtitle has room for it: an impacted asset names the change it is
 * downstream of and how many hops away (the full path is in its label and tooltip). */
function shortBadge(asset) {
  if (!asset.reasons && asset.impacted_via) {
    const path = asset.impacted_via;
    return 'Impacted by ' + path[0] + (path.length > 2 ? ', ' + (path.length - 1) + ' hops' : '');
  }
  return badgeText(asset);
}


/**
 * props: assets (the ones to draw: the page filters), context (Set of keys drawn as one-hop
 * context around a filter's matches, or null), onOpen(key).
 *
 * Pan and zoom write the transform of one <g> directly, outside Preact: re-rendering 1,000 nodes
 * per pointer move is what made dragging a large graph stutter.
 */
export function LineageGraph({ assets, context, onOpen, isBranch }) {
  // Laid out again only when the graph's shape changes, not when a reload brings new run states
  // (the view would jump back, and a 1,000-asset layout is not free).
  const shape = useMemo(() => assets.map((a) => a.key + '<' + a.deps.join(',')).join('|'), [assets]);
  const laid = useMemo(() => layout(assets), [shape]);
  const current = useMemo(() => new Map(assets.map((a) => [a.key, a])), [assets]);
  const svgRef = useRef(null);
  const layerRef = useRef(null);
  const view = useRef({ x: 0, y: 0, k: 1 });
  const frame = useRef(0);
  const drag = useRef(null);

  const setView = (next) => {
    view.current = typeof next === 'function' ? next(view.current) : next;
    if (frame.current) return;
    frame.current = requestAnimationFrame(() => {
      frame.current = 0;
      const v = view.current;
      if (layerRef.current) layerRef.current.setAttribute('transform', `translate(${v.x},${v.y}) scale(${v.k})`);
    });
  };
  useEffect(() => () => cancelAnimationFrame(frame.current), []);

  const fit = () => {
    const svg = svgRef.current;
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    const k = Math.min(box.width / laid.width, box.height / laid.height, 1.2);
    setView({ k, x: (box.width - laid.width * k) / 2, y: (box.height - laid.height * k) / 2 });
  };
  // Start with the whole (filtered) graph when it is readable that way; otherwise at a readable
  // scale, with the first changes at the left and their middle centred vertically.
  const initial = () => {
    const svg = svgRef.current;
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    const k = Math.min(box.width / laid.width, box.height / laid.height, 1.2);
    if (k >= READABLE_SCALE) return fit();
    const changed = laid.nodes.filter((n) => n.asset.reasons);
    const focus = changed.length ? changed : laid.nodes.slice(0, 1);
    const left = Math.min(...focus.map((n) => n.x)) - NODE_WIDTH / 2 - 20;
    const first = focus.filter((n) => n.x - NODE_WIDTH / 2 - 20 === left);
    const cy = first.reduce((sum, n) => sum + n.y, 0) / first.length;
    setView({ k: READABLE_SCALE, x: -left * READABLE_SCALE, y: box.height / 2 - cy * READABLE_SCALE });
  };
  useEffect(initial, [laid]);

  const zoomAt = (factor, cx, cy) => {
    setView((v) => {
      const k = Math.max(0.05, Math.min(4, v.k * factor));
      const ratio = k / v.k;
      return { k, x: cx - (cx - v.x) * ratio, y: cy - (cy - v.y) * ratio };
    });
  };
  const zoomCenter = (factor) => {
    const box = svgRef.current.getBoundingClientRect();
    zoomAt(factor, box.width / 2, box.height / 2);
  };
  const onWheel = (event) => {
    event.preventDefault();
    const box = svgRef.current.getBoundingClientRect();
    zoomAt(event.deltaY < 0 ? 1.15 : 1 / 1.15, event.clientX - box.left, event.clientY - box.top);
  };
  useEffect(() => {
    const svg = svgRef.current;
    svg.addEventListener('wheel', onWheel, { passive: false });
    return () => svg.removeEventListener('wheel', onWheel);
  }, []);
  const onPointerDown = (event) => {
    if (event.target.closest('.node')) return;
    drag.current = { x: event.clientX, y: event.clientY };
    svgRef.current.setPointerCapture(event.pointerId);
    svgRef.current.classList.add('dragging');
  };
  const onPointerMove = (event) => {
    if (!drag.current) return;
    const dx = event.clientX - drag.current.x;
    const dy = event.clientY - drag.current.y;
    drag.current = { x: event.clientX, y: event.clientY };
    setView((v) => ({ ...v, x: v.x + dx, y: v.y + dy }));
  };
  const onPointerUp = () => {
    drag.current = null;
    svgRef.current.classList.remove('dragging');
  };
  const onKeyDown = (event) => {
    const step = 60;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (event.target.closest && event.target.closest('.node') && event.key === 'Enter') return;
    if (moves[event.key]) {
      event.preventDefault();
      const [dx, dy] = moves[event.key];
      setView((v) => ({ ...v, x: v.x + dx, y: v.y + dy }));
    } else if (event.key === '+' || event.key === '=') {
      zoomCenter(1.2);
    } else if (event.key === '-') {
      zoomCenter(1 / 1.2);
    } else if (event.key === '0') {
      fit();
    }
  };

  // The same vnodes while the layout and context stay: Preact then skips diffing 1,000 nodes
  // whenever the page around the graph re-renders.
  const drawn = useMemo(() => {
    const inContext = (key) => context && context.has(key);
    return html`
          ${laid.edges.map((e) => html`<path class=${'edge' + (inContext(e.from) || inContext(e.to) ? ' context' : '')} d=${e.d} data-from=${e.from} data-to=${e.to} marker-end="url(#arrow)" />`)}
          ${laid.nodes.map((node) => {
            const { x, y } = node;
            const asset = current.get(node.asset.key) || node.asset;
            const state = runState(asset, isBranch);
            const cls = ['node', nodeClass(asset), inContext(asset.key) ? 'context' : '', 'state-' + state.cls].join(' ');
            const badge = badgeText(asset);
            const kind = asset.kind === 'tool' && asset.kinds && asset.kinds.length ? asset.kinds.join(', ') : asset.kind;
            const subtitle = shortBadge(asset) || asset.group + ' · ' + kind;
            // The name starts with the visible text, word for word (WCAG 2.5.3): long text is
            // clipped by the node's edge, never shortened, so what shows is part of the name; the
            // trailing spaces keep the visible words apart.
            const label = [asset.key, state.text, subtitle, badge !== subtitle ? badge : '', kind, state.long].filter(Boolean).join(', ');
            return html`
              <g class=${cls} transform=${`translate(${x - NODE_WIDTH / 2},${y - NODE_HEIGHT / 2})`} tabindex="0" role="link" aria-label=${label}
                 data-key=${asset.key} onClick=${() => onOpen(asset.key)} onKeyDown=${(ev) => { if (ev.key === 'Enter') onOpen(asset.key); }}>
                <title>${label}</title>
                <rect width=${NODE_WIDTH} height=${NODE_HEIGHT} />
                <rect class="state" x="1.5" y="1.5" width="5" height=${NODE_HEIGHT - 3} rx="2" />
                <text x="12" y="18" clip-path=${state.text ? 'url(#clip-key)' : 'url(#clip-line)'}>${asset.key + ' '}</text>
                ${state.text ? html`<text class="state" x=${NODE_WIDTH - 8} y="18" text-anchor="end">${state.text + ' '}</text>` : ''}
                <text class="meta" x="12" y="35" clip-path="url(#clip-line)">${subtitle}</text>
              </g>`;
          })}`;
  }, [laid, context, current, isBranch]);
  return html`
    <div class="graph">
      <svg ref=${svgRef} role="group" aria-label="Asset lineage graph: arrow keys pan, plus and minus zoom, 0 fits, Tab moves between assets, Enter opens one"
           tabindex="0" onPointerDown=${onPointerDown} onPointerMove=${onPointerMove} onPointerUp=${onPointerUp} onKeyDown=${onKeyDown}>
        <defs>
          <clipPath id="clip-key" clipPathUnits="userSpaceOnUse"><rect x="0" y="0" width=${NODE_WIDTH - 74} height=${NODE_HEIGHT} /></clipPath>
          <clipPath id="clip-line" clipPathUnits="userSpaceOnUse"><rect x="0" y="0" width=${NODE_WIDTH - 8} height=${NODE_HEIGHT} /></clipPath>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#afb8c1" />
          </marker>
        </defs>
        <g ref=${layerRef}>
          ${drawn}
        </g>
      </svg>
      <div class="zoom">
        <button type="button" aria-label="Zoom in" onClick=${() => zoomCenter(1.25)}>+</button>
        <button type="button" aria-label="Zoom out" onClick=${() => zoomCenter(1 / 1.25)}>−</button>
        <button type="button" aria-label="Fit the whole graph" onClick=${fit}>⤢</button>
        <button type="button" aria-label="Centre on the changes" onClick=${initial}>◎</button>
      </div>
    </div>`;
}
