// The run DAG, drawn as the notebook widget (mlpipe_jupyter/jupyter/widget.js) draws it:
// steps placed by layer, coloured by status, edges from upstream steps, labelled with the
// variables that flow along them.
import { IStep } from './api';

export const COLORS: Record<string, string> = {
  queued: '#9e9e9e',
  running: '#1e88e5',
  succeeded: '#43a047',
  failed: '#e53935',
  reused: '#00897b',
  skipped: '#cfd8dc',
  canceled: '#fb8c00'
};
const NODE_W = 130;
const NODE_H = 40;
const GAP_X = 40;
const LABELLED_GAP_X = 100; // room for the names of the variables along an edge
const GAP_Y = 14;
const PAD = 8;
const LABEL_H = 13; // the line height of an edge label (its font is ~11px)
const SVG = 'http://www.w3.org/2000/svg';

function svg(tag: string, attrs: Record<string, string | number>, parent?: Element): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, String(value));
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

export function seconds(value: number | null | undefined): string {
  return value === null || value === undefined ? '' : `${value.toFixed(1)}s`;
}

/** "df (from clean), settings (from load)": what a step receives, for its details. */
export function receivedText(step: IStep): string {
  return Object.entries(step.variables ?? {})
    .flatMap(([producer, names]) => names.map(name => `${name} (from ${producer})`))
    .join(', ');
}

/** The label of an edge: the names, cut with … to about `room` pixels. */
export function edgeLabel(names: string[], room: number): string {
  const text = names.join(', ');
  const fits = Math.max(3, Math.floor(room / 6)); // ~6px a character at --jp-ui-font-size0
  return text.length <= fits ? text : `${text.slice(0, fits - 1).trimEnd()}…`;
}

/** The point of the edge's curve at `x` (the curve runs left to right). */
function curveAt(x1: number, y1: number, x2: number, y2: number, x: number): number {
  const mid = (x1 + x2) / 2;
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 20; i++) {
    const t = (lo + hi) / 2;
    const u = 1 - t;
    const at = u * u * u * x1 + 3 * u * t * (u * mid + t * mid) + t * t * t * x2;
    if (at < x) {
      lo = t;
    } else {
      hi = t;
    }
  }
  const t = (lo + hi) / 2;
  const u = 1 - t;
  return u * u * u * y1 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t * t * t * y2;
}

export function drawDag(
  steps: IStep[],
  selected: string | null,
  onSelect: (name: string) => void
): SVGElement {
  const places = new Map<string, { x: number; y: number }>();
  const perLayer = new Map<number, number>();
  const labelled = steps.some(s => Object.values(s.variables ?? {}).some(n => n.length));
  const gap = labelled ? LABELLED_GAP_X : GAP_X;
  let cols = 0;
  let rows = 0;
  for (const step of steps) {
    const index = perLayer.get(step.layer) ?? 0;
    perLayer.set(step.layer, index + 1);
    places.set(step.name, {
      x: PAD + step.layer * (NODE_W + gap),
      y: PAD + index * (NODE_H + GAP_Y)
    });
    cols = Math.max(cols, step.layer + 1);
    rows = Math.max(rows, index + 1);
  }
  const width = PAD * 2 + cols * NODE_W + Math.max(0, cols - 1) * gap;
  let height = PAD * 2 + rows * NODE_H + Math.max(0, rows - 1) * GAP_Y;
  const root = svg('svg', { width, height, class: 'mlpipe-graph' });
  const marker = svg(
    'marker',
    { id: 'mlpipe-panel-arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' },
    svg('defs', {}, root)
  );
  svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#90a4ae' }, marker);
  const labels: { x: number; y: number; from: string; to: string; names: string[] }[] = [];
  for (const step of steps) {
    const to = places.get(step.name)!;
    for (const name of step.upstream) {
      const from = places.get(name);
      if (!from) {
        continue;
      }
      const x1 = from.x + NODE_W;
      const y1 = from.y + NODE_H / 2;
      const x2 = to.x;
      const y2 = to.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      svg('path', {
        d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
        fill: 'none', stroke: '#90a4ae', 'stroke-width': 1.5, 'marker-end': 'url(#mlpipe-panel-arrow)'
      }, root);
      const names = step.variables?.[name] ?? [];
      if (names.length) {
        // in the gap just before the step (no node is there), above the curve
        const x = x2 - gap / 2;
        labels.push({ x, y: curveAt(x1, y1, x2, y2, x) - 4, from: name, to: step.name, names });
      }
    }
  }
  // labels of edges that meet closely are moved down until they no longer overlap
  const placed: { x: number; y: number }[] = [];
  for (const label of labels.sort((a, b) => a.x - b.x || a.y - b.y)) {
    while (placed.some(p => Math.abs(p.x - label.x) < gap && Math.abs(p.y - label.y) < LABEL_H)) {
      label.y += LABEL_H;
    }
    placed.push(label);
    const group = svg('g', { class: 'mlpipe-edge-label', 'data-from': label.from, 'data-to': label.to }, root);
    svg('title', {}, group).textContent = `${label.names.join(', ')} (from ${label.from} to ${label.to})`;
    svg('text', { x: label.x, y: label.y, 'text-anchor': 'middle' }, group).textContent =
      edgeLabel(label.names, gap - 8);
    height = Math.max(height, label.y + 4);
  }
  root.setAttribute('height', String(height));
  root.setAttribute('viewBox', `0 0 ${width} ${height}`);
  for (const step of steps) {
    const place = places.get(step.name)!;
    const group = svg('g', {
      transform: `translate(${place.x},${place.y})`, class: 'mlpipe-step',
      'data-step': step.name, 'data-status': step.status, cursor: 'pointer'
    }, root);
    svg('rect', {
      width: NODE_W, height: NODE_H, rx: 6, fill: COLORS[step.status] || '#9e9e9e',
      stroke: step.name === selected ? '#263238' : 'none', 'stroke-width': 2
    }, group);
    const ink = step.status === 'skipped' ? '#37474f' : '#ffffff';
    const title = svg('text', { x: 7, y: 16, fill: ink, 'font-size': 12, 'font-weight': 600 }, group);
    title.textContent = step.name;
    const sub = svg('text', { x: 7, y: 32, fill: ink, 'font-size': 10 }, group);
    sub.textContent = `${step.reused ? '↺ ' : ''}${step.status} ${seconds(step.duration)}`.trim();
    group.addEventListener('click', () => onSelect(step.name));
  }
  return root;
}
