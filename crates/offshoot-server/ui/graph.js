// The lineage graph: a layered left-to-right DAG, drawn as SVG, with pan (drag,
// arrow keys), zoom (wheel, +/- keys, buttons) and keyboard-focusable nodes.
import { html, useEffect, useMemo, useRef, useState } from './vendor/preact-htm.js';

const NODE_WIDTH = 224;
const NODE_HEIGHT = 46;

const RANK_GAP = 80;
const ROW_GAP = 14;
const SWEEPS = 6;
const READABLE_SCALE = 0.6;

/**
 * A layered (Sugiyama-style) left-to-right layout: ranks by longest path from the sources (with
 * sources pulled next to their first reader), order within each rank by barycenter sweeps, then
 * rows. Written here because dagre, measured in this repository, took 1.4 s for 200 assets and
 * 17.7 s for 1,000 (see BENCHMARKS.md); this takes milliseconds. Returns {nodes, edges, width,
 * height}; node x/y are centres, as dagre's were.
 */
export function layout(assets) {
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
  const rank = new Array(assets.length).fill(0);
  for (const v of order) for (const c of children[v]) rank[c] = Math.max(rank[c], rank[v] + 1);
  for (let i = order.length - 1; i >= 0; i--) {
    const v = order[i];
    if (parents[v].length === 0 && children[v].length) rank[v] = Math.min(...children[v].map((c) => rank[c])) - 1;
  }

  const layers = [];
  for (const v of order) (layers[rank[v]] ||= []).push(v);
  const position = new Array(assets.length).fill(0);
  const place = () => layers.forEach((layer) => layer.forEach((v, i) => { position[v] = i; }));
  place();
  const barycenter = (v, neighbours) => {
    const list = neighbours[v];
    if (!list.length) return position[v];
    let sum = 0;
    for (const n of list) sum += position[n];
    return sum / list.length;
  };
  for (let sweep = 0; sweep < SWEEPS; sweep++) {
    const down = sweep % 2 === 0;
    const sequence = down ? layers.keys() : [...layers.keys()].reverse();
    for (const r of sequence) {
      const layer = layers[r];
      if (!layer) continue;
      const neighbours = down ? parents : children;
      const keyed = layer.map((v) => [barycenter(v, neighbours), position[v], v]);
      keyed.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      layers[r] = keyed.map((k) => k[2]);
      layers[r].forEach((v, i) => { position[v] = i; });
    }
  }

  const tallest = Math.max(1, ...layers.map((l) => (l ? l.length : 0)));
  const rowHeight = NODE_HEIGHT + ROW_GAP;
  const nodes = assets.map((asset, v) => {
    const layer = layers[rank[v]];
    const offset = ((tallest - layer.length) * rowHeight) / 2;
    return { asset, x: 20 + rank[v] * (NODE_WIDTH + RANK_GAP) + NODE_WIDTH / 2, y: 20 + offset + position[v] * rowHeight + NODE_HEIGHT / 2 };
  });
  const edges = [];
  parents.forEach((ps, v) => ps.forEach((p) => {
    const from = nodes[p];
    const to = nodes[v];
    const x1 = from.x + NODE_WIDTH / 2;
    const x2 = to.x - NODE_WIDTH / 2;
    const bend = Math.max(30, (x2 - x1) / 2);
    edges.push({ from: assets[p].key, to: assets[v].key, d: `M${x1},${from.y} C${x1 + bend},${from.y} ${x2 - bend},${to.y} ${x2},${to.y}` });
  }));
  const ranks = layers.length;
  return { nodes, edges, width: 40 + ranks * (NODE_WIDTH + RANK_GAP) - RANK_GAP, height: 40 + tallest * rowHeight };
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

function truncate(text, max) {
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

/**
 * props: assets, highlight (Set of keys or null), onOpen(key)
 */
export function LineageGraph({ assets, highlight, onOpen }) {
  const laid = useMemo(() => layout(assets), [assets]);
  const svgRef = useRef(null);
  const [view, setView] = useState({ x: 0, y: 0, k: 1 });
  const drag = useRef(null);

  const fit = () => {
    const svg = svgRef.current;
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    const k = Math.min(box.width / laid.width, box.height / laid.height, 1.2);
    setView({ k, x: (box.width - laid.width * k) / 2, y: (box.height - laid.height * k) / 2 });
  };
  // Start with the whole graph when it is readable that way; otherwise at a readable scale,
  // centred on what the branch changed (the reason to open the page).
  const initial = () => {
    const svg = svgRef.current;
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    const k = Math.min(box.width / laid.width, box.height / laid.height, 1.2);
    if (k >= READABLE_SCALE) return fit();
    const changed = laid.nodes.filter((n) => n.asset.reasons);
    const focus = changed.length ? changed : laid.nodes.slice(0, 1);
    const cx = focus.reduce((sum, n) => sum + n.x, 0) / focus.length;
    const cy = focus.reduce((sum, n) => sum + n.y, 0) / focus.length;
    setView({ k: READABLE_SCALE, x: box.width / 2 - cx * READABLE_SCALE, y: box.height / 2 - cy * READABLE_SCALE });
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

  const dimmed = (key) => highlight && !highlight.has(key);
  return html`
    <div class="graph">
      <svg ref=${svgRef} role="group" aria-label="Asset lineage graph: arrow keys pan, plus and minus zoom, 0 fits, Tab moves between assets, Enter opens one"
           tabindex="0" onPointerDown=${onPointerDown} onPointerMove=${onPointerMove} onPointerUp=${onPointerUp} onKeyDown=${onKeyDown}>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" fill="#afb8c1" />
          </marker>
        </defs>
        <g transform=${`translate(${view.x},${view.y}) scale(${view.k})`}>
          ${laid.edges.map((e) => html`<path class=${'edge' + (dimmed(e.from) || dimmed(e.to) ? ' dim' : '')} d=${e.d} marker-end="url(#arrow)" />`)}
          ${laid.nodes.map(({ asset, x, y }) => {
            const cls = ['node', nodeClass(asset), dimmed(asset.key) ? 'dim' : '', highlight && highlight.has(asset.key) ? 'hit' : ''].join(' ');
            const badge = badgeText(asset);
            const kind = asset.kind === 'tool' && asset.kinds && asset.kinds.length ? asset.kinds.join(', ') : asset.kind;
            const label = asset.key + (badge ? ', ' + badge : '') + ', ' + kind;
            return html`
              <g class=${cls} transform=${`translate(${x - NODE_WIDTH / 2},${y - NODE_HEIGHT / 2})`} tabindex="0" role="link" aria-label=${label}
                 data-key=${asset.key} onClick=${() => onOpen(asset.key)} onKeyDown=${(ev) => { if (ev.key === 'Enter') onOpen(asset.key); }}>
                <title>${label}</title>
                <rect width=${NODE_WIDTH} height=${NODE_HEIGHT} />
                <text x="9" y="18">${truncate(asset.key, 30)}</text>
                <text class="meta" x="9" y="35">${truncate(badge || asset.group + ' · ' + kind + (asset.data === 'branch' ? ' · branch table' : ''), 37)}</text>
              </g>`;
          })}
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
