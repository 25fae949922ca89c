// The run DAG, drawn as the notebook widget (mlpipe_jupyter/jupyter/widget.js) draws it:
// steps placed by layer, coloured by status, edges from upstream steps.
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
const GAP_Y = 14;
const PAD = 8;
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

export function drawDag(
  steps: IStep[],
  selected: string | null,
  onSelect: (name: string) => void
): SVGElement {
  const places = new Map<string, { x: number; y: number }>();
  const perLayer = new Map<number, number>();
  let cols = 0;
  let rows = 0;
  for (const step of steps) {
    const index = perLayer.get(step.layer) ?? 0;
    perLayer.set(step.layer, index + 1);
    places.set(step.name, {
      x: PAD + step.layer * (NODE_W + GAP_X),
      y: PAD + index * (NODE_H + GAP_Y)
    });
    cols = Math.max(cols, step.layer + 1);
    rows = Math.max(rows, index + 1);
  }
  const width = PAD * 2 + cols * NODE_W + Math.max(0, cols - 1) * GAP_X;
  const height = PAD * 2 + rows * NODE_H + Math.max(0, rows - 1) * GAP_Y;
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'mlpipe-graph' });
  const marker = svg(
    'marker',
    { id: 'mlpipe-panel-arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' },
    svg('defs', {}, root)
  );
  svg('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#90a4ae' }, marker);
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
    }
  }
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
