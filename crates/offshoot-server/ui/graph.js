// The lineage graph: a layered left-to-right DAG laid out by dagre, drawn as SVG, with pan (drag,
// arrow keys), zoom (wheel, +/- keys, buttons) and keyboard-focusable nodes.
import { html, useEffect, useMemo, useRef, useState } from './vendor/preact-htm.js';

const NODE_WIDTH = 224;
const NODE_HEIGHT = 46;

/** Lays the assets out once per set of assets; returns {nodes, edges, width, height}. */
export function layout(assets) {
  const g = new window.dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 14, ranksep: 70, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  const known = new Set(assets.map((a) => a.key));
  for (const asset of assets) g.setNode(asset.key, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const asset of assets) {
    for (const dep of asset.deps) if (known.has(dep)) g.setEdge(dep, asset.key);
  }
  window.dagre.layout(g);
  const nodes = assets.map((asset) => ({ asset, ...g.node(asset.key) }));
  const edges = g.edges().map((e) => ({ from: e.v, to: e.w, points: g.edge(e).points }));
  const size = g.graph();
  return { nodes, edges, width: size.width || 400, height: size.height || 200 };
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

function edgePath(points) {
  return points.map((p, i) => (i === 0 ? 'M' : 'L') + p.x.toFixed(1) + ',' + p.y.toFixed(1)).join(' ');
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
  useEffect(fit, [laid]);

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
          ${laid.edges.map((e) => html`<path class=${'edge' + (dimmed(e.from) || dimmed(e.to) ? ' dim' : '')} d=${edgePath(e.points)} marker-end="url(#arrow)" />`)}
          ${laid.nodes.map(({ asset, x, y }) => {
            const cls = ['node', nodeClass(asset), dimmed(asset.key) ? 'dim' : '', highlight && highlight.has(asset.key) ? 'hit' : ''].join(' ');
            const badge = badgeText(asset);
            const label = asset.key + (badge ? ', ' + badge : '') + ', ' + asset.kind;
            return html`
              <g class=${cls} transform=${`translate(${x - NODE_WIDTH / 2},${y - NODE_HEIGHT / 2})`} tabindex="0" role="link" aria-label=${label}
                 data-key=${asset.key} onClick=${() => onOpen(asset.key)} onKeyDown=${(ev) => { if (ev.key === 'Enter') onOpen(asset.key); }}>
                <title>${label}</title>
                <rect width=${NODE_WIDTH} height=${NODE_HEIGHT} />
                <text x="9" y="18">${truncate(asset.key, 30)}</text>
                <text class="meta" x="9" y="35">${truncate(badge || asset.group + ' · ' + asset.kind + (asset.data === 'branch' ? ' · branch table' : ''), 37)}</text>
              </g>`;
          })}
        </g>
      </svg>
      <div class="zoom">
        <button type="button" aria-label="Zoom in" onClick=${() => zoomCenter(1.25)}>+</button>
        <button type="button" aria-label="Zoom out" onClick=${() => zoomCenter(1 / 1.25)}>−</button>
        <button type="button" aria-label="Fit the graph" onClick=${fit}>⤢</button>
      </div>
    </div>`;
}
