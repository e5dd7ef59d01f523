// Measures lineage layouts on the same synthetic DAGs (100, 1,000 and 10,000 assets, each reading
// up to three of the 60 before it): ours (crates/offshoot-server/ui/graph.js) against elkjs's
// layered algorithm and dagre with its fast rankers (its default network-simplex ranker is what
// made it slow). Each candidate and size runs in a child process with a time limit; besides the
// time, it counts the edges drawn through a node that is not their end (the bar is 0).
// Run: cd tests/browser && npm ci && node layout-bench.mjs [time limit in seconds, default 120]
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { layout } from '../../crates/offshoot-server/ui/graph.js';
import { edgesThroughNodes, pathPoints } from './geometry.mjs';

const require = createRequire(import.meta.url);
const WIDTH = 224;
const HEIGHT = 46;

export function syntheticAssets(count) {
  let seed = 1;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: count }, (_, i) => {
    const deps = new Set();
    if (i >= 20) for (let k = 0; k < 3; k++) deps.add('m' + (Math.max(0, i - 60) + Math.floor(random() * Math.min(60, i))));
    return { key: 'm' + i, deps: [...deps].filter((d) => d !== 'm' + i) };
  });
}

// Each candidate returns {boxes, edges} in the checker's terms (geometry.mjs).
const candidates = {
  async offshoot(list) {
    const laid = layout(list);
    return {
      boxes: laid.nodes.map((n) => ({ key: n.asset.key, x: n.x - WIDTH / 2, y: n.y - HEIGHT / 2, width: WIDTH, height: HEIGHT })),
      edges: laid.edges.map((e) => ({ from: e.from, to: e.to, points: pathPoints(e.d) })),
    };
  },
  async elkjs(list) {
    const ELK = require('elkjs/lib/elk.bundled.js');
    const graph = {
      id: 'root',
      layoutOptions: { 'elk.algorithm': 'layered', 'elk.direction': 'RIGHT', 'elk.spacing.nodeNode': '14', 'elk.layered.spacing.nodeNodeBetweenLayers': '80' },
      children: list.map((a) => ({ id: a.key, width: WIDTH, height: HEIGHT })),
      edges: list.flatMap((a) => a.deps.map((d) => ({ id: d + '>' + a.key, sources: [d], targets: [a.key] }))),
    };
    const laid = await new ELK().layout(graph);
    return {
      boxes: laid.children.map((n) => ({ key: n.id, x: n.x, y: n.y, width: n.width, height: n.height })),
      edges: laid.edges.map((e) => ({
        from: e.sources[0], to: e.targets[0],
        points: e.sections.flatMap((s) => [s.startPoint, ...(s.bendPoints || []), s.endPoint].map((p) => [p.x, p.y])),
      })),
    };
  },
  'dagre-longest-path': (list) => dagreLayout(list, 'longest-path'),
  'dagre-tight-tree': (list) => dagreLayout(list, 'tight-tree'),
};

async function dagreLayout(list, ranker) {
  const dagre = require('@dagrejs/dagre');
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 14, ranksep: 80, ranker });
  g.setDefaultEdgeLabel(() => ({}));
  for (const a of list) g.setNode(a.key, { width: WIDTH, height: HEIGHT });
  for (const a of list) for (const d of a.deps) g.setEdge(d, a.key);
  dagre.layout(g);
  return {
    boxes: g.nodes().map((k) => { const n = g.node(k); return { key: k, x: n.x - n.width / 2, y: n.y - n.height / 2, width: n.width, height: n.height }; }),
    edges: g.edges().map((e) => ({ from: e.v, to: e.w, points: g.edge(e).points.map((p) => [p.x, p.y]) })),
  };
}

async function measureOne(name, count, repeats) {
  const list = syntheticAssets(count);
  const times = [];
  let result;
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    result = await candidates[name](list);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  const crossings = edgesThroughNodes(result.boxes, result.edges).length;
  return { ms: times[Math.floor(times.length / 2)], repeats, crossings, edges: result.edges.length };
}

const isMain = process.argv[1] === fileURLToPath(import.meta.url);
if (isMain && process.argv[2] === '--one') {
  const [name, count, repeats] = [process.argv[3], Number(process.argv[4]), Number(process.argv[5])];
  console.log(JSON.stringify(await measureOne(name, count, repeats)));
} else if (isMain) {
  const limit = Number(process.argv[2] || 120);
  const sizes = [100, 1000, 10000];
  console.log('| candidate | ' + sizes.map((s) => s.toLocaleString('en') + ' assets').join(' | ') + ' |');
  console.log('|---|' + sizes.map(() => '---:').join('|') + '|');
  for (const name of Object.keys(candidates)) {
    const cells = [];
    for (const count of sizes) {
      const repeats = name === 'offshoot' ? (count >= 10000 ? 5 : 9) : count >= 10000 ? 1 : 3;
      try {
        const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--one', name, String(count), String(repeats)], { timeout: limit * 1000, maxBuffer: 1 << 20 });
        const r = JSON.parse(out.toString());
        cells.push(`${r.ms < 100 ? r.ms.toFixed(1) : Math.round(r.ms).toLocaleString('en')} ms, ${r.crossings} through nodes (median of ${r.repeats})`);
      } catch (error) {
        const reason = error.signal ? `> ${limit} s (stopped)` : 'failed: ' + (String(error.stderr).match(/\w*Error: [^\n]*/) || ['exit ' + error.status])[0];
        cells.push(reason);
      }
    }
    console.log(`| ${name} | ${cells.join(' | ')} |`);
  }
}
