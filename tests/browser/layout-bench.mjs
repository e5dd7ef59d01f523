// Measures the lineage graph's layout (crates/offshoot-server/ui/graph.js) against dagre on the
// same synthetic DAGs: 200, 500 and 1,000 assets, each reading up to three of the 60 before it.
// Run: cd tests/browser && npm ci && node layout-bench.mjs
import { createRequire } from 'node:module';
import { layout } from '../../crates/offshoot-server/ui/graph.js';

const dagre = createRequire(import.meta.url)('@dagrejs/dagre');

function assets(count) {
  let seed = 1;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  return Array.from({ length: count }, (_, i) => {
    const deps = new Set();
    if (i >= 20) for (let k = 0; k < 3; k++) deps.add('m' + (Math.max(0, i - 60) + Math.floor(random() * Math.min(60, i))));
    return { key: 'm' + i, deps: [...deps].filter((d) => d !== 'm' + i) };
  });
}

function median(times) {
  const sorted = [...times].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function time(run, repeats) {
  const times = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    run();
    times.push(performance.now() - start);
  }
  return median(times);
}

function dagreLayout(list) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 14, ranksep: 80 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const a of list) g.setNode(a.key, { width: 224, height: 46 });
  for (const a of list) for (const d of a.deps) g.setEdge(d, a.key);
  dagre.layout(g);
}

console.log('| assets | offshoot layout (median of 9) | dagre 3.1.3 (median of 3) | ratio |');
console.log('|---:|---:|---:|---:|');
for (const count of [200, 500, 1000]) {
  const list = assets(count);
  const ours = time(() => layout(list), 9);
  const theirs = time(() => dagreLayout(list), 3);
  console.log(`| ${count} | ${ours.toFixed(1)} ms | ${theirs.toFixed(0)} ms | ${(theirs / ours).toFixed(0)}x |`);
}
