// Checks a drawn graph's geometry: which edges pass through a node box that is not one of their
// ends. Edges are polylines (curves arrive sampled densely); boxes are indexed in a grid so a
// 10,000-asset graph checks in well under a second. Shared by the browser test and the layout
// benchmark.

const CELL = 128;
// Edges start and end on their nodes' borders; a box shrunk by this much is "inside".
const INSET = 1;

/** Whether the segment (x1,y1)-(x2,y2) meets the open box (Liang–Barsky clipping). */
function segmentHitsBox(x1, y1, x2, y2, box) {
  const dx = x2 - x1;
  const dy = y2 - y1;
  let t0 = 0;
  let t1 = 1;
  const sides = [[-dx, x1 - box.x1], [dx, box.x2 - x1], [-dy, y1 - box.y1], [dy, box.y2 - y1]];
  for (const [p, q] of sides) {
    if (p === 0) {
      if (q <= 0) return false;
    } else {
      const t = q / p;
      if (p < 0) { if (t > t1) return false; if (t > t0) t0 = t; } else { if (t < t0) return false; if (t < t1) t1 = t; }
    }
  }
  return t0 < t1;
}

/**
 * boxes: [{key, x, y, width, height}] (top-left corner); edges: [{from, to, points: [[x, y], ...]}].
 * Returns [{from, to, through}] for every edge that crosses a box other than its ends.
 */
export function edgesThroughNodes(boxes, edges) {
  const grid = new Map();
  const inner = boxes.map((b) => ({ key: b.key, x1: b.x + INSET, y1: b.y + INSET, x2: b.x + b.width - INSET, y2: b.y + b.height - INSET }));
  for (const box of inner) {
    for (let cx = Math.floor(box.x1 / CELL); cx <= Math.floor(box.x2 / CELL); cx++) {
      for (let cy = Math.floor(box.y1 / CELL); cy <= Math.floor(box.y2 / CELL); cy++) {
        const cell = cx + ',' + cy;
        if (!grid.has(cell)) grid.set(cell, []);
        grid.get(cell).push(box);
      }
    }
  }
  const found = [];
  for (const edge of edges) {
    const hit = new Set();
    for (let i = 1; i < edge.points.length; i++) {
      const [x1, y1] = edge.points[i - 1];
      const [x2, y2] = edge.points[i];
      for (let cx = Math.floor(Math.min(x1, x2) / CELL); cx <= Math.floor(Math.max(x1, x2) / CELL); cx++) {
        for (let cy = Math.floor(Math.min(y1, y2) / CELL); cy <= Math.floor(Math.max(y1, y2) / CELL); cy++) {
          for (const box of grid.get(cx + ',' + cy) || []) {
            if (box.key === edge.from || box.key === edge.to || hit.has(box.key)) continue;
            if (segmentHitsBox(x1, y1, x2, y2, box)) hit.add(box.key);
          }
        }
      }
    }
    for (const through of hit) found.push({ from: edge.from, to: edge.to, through });
  }
  return found;
}

/** The points of an SVG path made of M, L and C commands (as graph.js draws), curves sampled. */
export function pathPoints(d, samplesPerCurve = 24) {
  const tokens = d.match(/[MLC]|-?[0-9.e+-]+/g);
  const points = [];
  let command = null;
  let i = 0;
  const number = () => Number(tokens[i++]);
  while (i < tokens.length) {
    if (/[MLC]/.test(tokens[i])) command = tokens[i++];
    if (command === 'M' || command === 'L') {
      points.push([number(), number()]);
    } else if (command === 'C') {
      const [x0, y0] = points[points.length - 1];
      const c = [number(), number(), number(), number(), number(), number()];
      for (let k = 1; k <= samplesPerCurve; k++) {
        const t = k / samplesPerCurve;
        const u = 1 - t;
        const a = u * u * u, b = 3 * u * u * t, e = 3 * u * t * t, f = t * t * t;
        points.push([a * x0 + b * c[0] + e * c[2] + f * c[4], a * y0 + b * c[1] + e * c[3] + f * c[5]]);
      }
    } else {
      throw new Error('unexpected path command in ' + d);
    }
  }
  return points;
}
