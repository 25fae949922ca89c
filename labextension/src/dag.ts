/**
 * The run DAG: the one renderer of the JupyterLab run view and of the notebook widget
 * (`widget.ts`, bundled into mlpipe_jupyter/jupyter/widget.js by esbuild from this source).
 *
 * Layout: @dagrejs/dagre (layered Sugiyama layout, left to right). Chosen over elkjs because
 * it is ~50 kB minified against elkjs's ~1.5 MB (the widget's ES module is sent to every
 * notebook that shows a run, so its size matters), it lays out a 200-step DAG in well under
 * a second on the main thread (elkjs wants a web worker for that), and it places edge labels
 * as nodes of their own, so the variable names along an edge never sit on a step. ELK's
 * better orthogonal edge routing buys little for pipelines, whose edges mostly join
 * neighbouring layers.
 *
 * Drawing: one SVG; a viewport group carries zoom and pan (wheel, drag, the +/-/fit
 * buttons, and the keys + - 0 when the graph has focus). Steps are coloured by status with
 * JupyterLab's theme variables (--jp-success-color1, ...; with fallbacks outside JupyterLab),
 * so the light and dark themes both work. Steps are focusable buttons: Tab reaches them,
 * Enter or Space selects. A redraw with the same steps and edges only updates statuses:
 * live updates of a 200-step run never lay it out again.
 */
import { graphlib, layout } from '@dagrejs/dagre';

/** A step as the renderer needs it (the REST API's IStep and the widget's state both fit). */
export interface IDagStep {
  name: string;
  status: string;
  upstream?: string[];
  /** The variables it receives, by the upstream step that saved them. */
  variables?: Record<string, string[]>;
  duration?: number | null;
  reused?: boolean;
}

export const STATUSES = [
  'queued',
  'running',
  'succeeded',
  'failed',
  'reused',
  'skipped',
  'canceled'
];

/** A status's colour as a CSS value: JupyterLab's theme variable, a fallback outside it. */
export function statusColor(status: string): string {
  return `var(--mlpipe-status-${STATUSES.includes(status) ? status : 'queued'})`;
}

export function seconds(value: number | null | undefined): string {
  return value === null || value === undefined ? '' : `${Number(value).toFixed(1)}s`;
}

/** "df (from clean), settings (from load)": what a step receives, for its details. */
export function receivedText(step: IDagStep): string {
  return Object.entries(step.variables ?? {})
    .flatMap(([producer, names]) => names.map(name => `${name} (from ${producer})`))
    .join(', ');
}

const CHAR_W = 6; // ~px a character at --jp-ui-font-size0 (11px)
const LABEL_ROOM = 100; // the widest an edge label is drawn, in px

/** The label of an edge: the names, cut with … to about `room` pixels. */
export function edgeLabel(names: string[], room: number = LABEL_ROOM): string {
  const text = names.join(', ');
  const fits = Math.max(3, Math.floor(room / CHAR_W));
  return text.length <= fits ? text : `${text.slice(0, fits - 1).trimEnd()}…`;
}

/** The DAG's stylesheet, for the run view and the widget alike. Scoped to .mlpipe-dag
 * (the status colours also to the sidebar, .mlpipe-panel). */
export const DAG_CSS = `
.mlpipe-dag, .mlpipe-panel {
  --mlpipe-status-queued: var(--jp-ui-font-color3, #9e9e9e);
  --mlpipe-status-running: var(--jp-brand-color1, #1976d2);
  --mlpipe-status-succeeded: var(--jp-success-color1, #388e3c);
  --mlpipe-status-failed: var(--jp-error-color1, #d32f2f);
  --mlpipe-status-reused: var(--jp-info-color1, #0097a7);
  --mlpipe-status-skipped: var(--jp-border-color1, #bdbdbd);
  --mlpipe-status-canceled: var(--jp-warn-color1, #f57c00);
}
.mlpipe-dag-view { position: relative; overflow: hidden; min-height: 120px;
  background: var(--jp-layout-color0, #fff); border: var(--jp-border-width, 1px) solid var(--jp-border-color2, #e0e0e0);
  border-radius: 2px; }
.mlpipe-dag-view:focus-within { border-color: var(--jp-brand-color1, #1976d2); }
.mlpipe-dag-view > svg { display: block; width: 100%; height: 100%; cursor: grab; touch-action: none;
  font-family: var(--jp-ui-font-family, sans-serif); user-select: none; }
.mlpipe-dag-view > svg:focus { outline: none; }
.mlpipe-dag-view > svg.mlpipe-panning { cursor: grabbing; }
.mlpipe-dag-tools { position: absolute; top: 4px; right: 4px; display: flex; gap: 2px; z-index: 1; }
.mlpipe-dag-tools button { min-width: 24px; height: 24px; padding: 0 6px; cursor: pointer;
  font-size: var(--jp-ui-font-size1, 13px); line-height: 22px;
  color: var(--jp-ui-font-color1, #212121); background: var(--jp-layout-color1, #fff);
  border: var(--jp-border-width, 1px) solid var(--jp-border-color1, #bdbdbd); border-radius: 2px; }
.mlpipe-dag-tools button:hover { background: var(--jp-layout-color2, #eee); }
.mlpipe-dag-tools button:focus-visible { outline: 2px solid var(--jp-brand-color1, #1976d2); }
.mlpipe-dag .mlpipe-edge { fill: none; stroke: var(--jp-ui-font-color3, #90a4ae); stroke-width: 1.5; }
.mlpipe-dag .mlpipe-arrow { fill: var(--jp-ui-font-color3, #90a4ae); }
.mlpipe-dag .mlpipe-edge-label text { fill: var(--jp-ui-font-color2, #616161); font-size: var(--jp-ui-font-size0, 11px);
  paint-order: stroke; stroke: var(--jp-layout-color0, #fff); stroke-width: 3px; stroke-linejoin: round; }
.mlpipe-dag .mlpipe-step { cursor: pointer; }
.mlpipe-dag .mlpipe-step:focus { outline: none; }
.mlpipe-dag .mlpipe-step .mlpipe-step-bg { fill: var(--jp-layout-color1, #fff); }
.mlpipe-dag .mlpipe-step .mlpipe-step-tint { fill-opacity: 0.16; stroke-width: 1.5; }
.mlpipe-dag .mlpipe-step .mlpipe-step-bar { stroke: none; }
.mlpipe-dag .mlpipe-step text { fill: var(--jp-ui-font-color1, #212121); }
.mlpipe-dag .mlpipe-step .mlpipe-step-name { font-size: 12px; font-weight: 600; }
.mlpipe-dag .mlpipe-step .mlpipe-step-sub { font-size: 10.5px; fill: var(--jp-ui-font-color2, #616161); }
.mlpipe-dag .mlpipe-step.mlpipe-selected .mlpipe-step-tint { stroke-width: 3; fill-opacity: 0.28; }
.mlpipe-dag .mlpipe-step:focus-visible .mlpipe-step-bg { stroke: var(--jp-brand-color1, #1976d2); stroke-width: 4; }
.mlpipe-dag .mlpipe-step[data-status='running'] .mlpipe-step-tint { stroke-dasharray: 6 3; }
${STATUSES.map(
  s => `.mlpipe-dag .mlpipe-step[data-status='${s}'] .mlpipe-step-tint,
.mlpipe-dag .mlpipe-step[data-status='${s}'] .mlpipe-step-bar { fill: var(--mlpipe-status-${s}); stroke: var(--mlpipe-status-${s}); }`
).join('\n')}
`;

/** Add the DAG's stylesheet to `parent` (a document's head, or a widget's root) once. */
export function ensureDagStyle(parent: HTMLElement): void {
  if (!parent.querySelector(':scope > style.mlpipe-dag-style')) {
    const style = document.createElement('style');
    style.className = 'mlpipe-dag-style';
    style.textContent = DAG_CSS;
    parent.appendChild(style);
  }
}

const SVG = 'http://www.w3.org/2000/svg';
const NODE_H = 44;
const MIN_NODE_W = 120;
const MAX_NODE_W = 220;
const FIT_PAD = 16;
const MAX_FIT_SCALE = 1; // fit shrinks a big DAG, never blows a small one up
const MIN_SCALE = 0.02;
const MAX_SCALE = 4;
let markerIds = 0;

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

function nodeWidth(name: string): number {
  return Math.min(MAX_NODE_W, Math.max(MIN_NODE_W, name.length * 7.5 + 24));
}

/** A name cut with … to fit `width` px at the node's title font. */
function fitName(name: string, width: number): string {
  const fits = Math.floor((width - 20) / 7.2);
  return name.length <= fits ? name : `${name.slice(0, fits - 1)}…`;
}

function subtitle(step: IDagStep): string {
  return `${step.reused ? '↺ ' : ''}${step.status} ${seconds(step.duration)}`.trim();
}

/** An SVG path through dagre's edge points: straight ends, smooth bends. */
function edgePath(points: { x: number; y: number }[]): string {
  if (points.length < 3) {
    return points.map((p, i) => `${i ? 'L' : 'M'}${p.x},${p.y}`).join(' ');
  }
  let d = `M${points[0].x},${points[0].y}`;
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i];
    const next = points[i + 1];
    const mx = i === points.length - 2 ? next.x : (p.x + next.x) / 2;
    const my = i === points.length - 2 ? next.y : (p.y + next.y) / 2;
    d += ` Q${p.x},${p.y} ${mx},${my}`;
  }
  return d;
}

interface IPlaced {
  group: SVGGElement;
  sub: SVGTextElement;
  title: SVGTitleElement;
}

export interface IDagOptions {
  /** Called with a step's name when it is clicked, or Enter/Space pressed on it. */
  onSelect: (name: string) => void;
  /** 'always' (the run view) or 'ctrl' (the notebook widget: a plain wheel scrolls the
   * notebook; Ctrl/Cmd + wheel zooms). */
  wheelZoom?: 'always' | 'ctrl';
  /** Size the view's height to the graph, between these bounds (px); else CSS sizes it. */
  autoHeight?: { min: number; max: number };
  /** The accessible name of the graph. */
  label?: string;
}

/**
 * A zoomable, pannable DAG of a run's steps. `node` is its element; call `setSteps` with
 * the steps (and the selected one) whenever they change.
 */
export class DagView {
  readonly node: HTMLDivElement;
  /** How long the last layout took, in ms (dagre, and drawing). */
  lastLayoutMs = 0;

  constructor(private options: IDagOptions) {
    this.node = document.createElement('div');
    this.node.className = 'mlpipe-dag-view';
    this.root = svg('svg', {
      role: 'group',
      'aria-label': options.label ?? 'Pipeline steps',
      tabindex: 0
    }) as SVGSVGElement;
    this.node.appendChild(this.root);
    this.markerId = `mlpipe-arrow-${++markerIds}`;
    const marker = svg(
      'marker',
      { id: this.markerId, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto' },
      svg('defs', {}, this.root)
    );
    svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'mlpipe-arrow' }, marker);
    this.viewport = svg('g', { class: 'mlpipe-dag-viewport' }, this.root) as SVGGElement;
    const tools = document.createElement('div');
    tools.className = 'mlpipe-dag-tools';
    const tool = (text: string, label: string, cls: string, action: () => void) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = text;
      button.title = label;
      button.setAttribute('aria-label', label);
      button.className = cls;
      button.addEventListener('click', action);
      tools.appendChild(button);
    };
    tool('+', 'Zoom in', 'mlpipe-zoom-in', () => this.zoomBy(1.25));
    tool('−', 'Zoom out', 'mlpipe-zoom-out', () => this.zoomBy(0.8));
    tool('Fit', 'Fit the whole graph in view', 'mlpipe-fit', () => this.fit());
    this.node.appendChild(tools);
    this.listen();
    if (typeof ResizeObserver !== 'undefined') {
      this.resizes = new ResizeObserver(() => {
        if (this.autoFit) {
          this.fit();
        }
      });
      this.resizes.observe(this.node);
    }
  }

  private root: SVGSVGElement;
  private viewport: SVGGElement;
  private markerId: string;
  private structure = '';
  private placed = new Map<string, IPlaced>();
  private graphW = 0;
  private graphH = 0;
  private k = 1;
  private tx = 0;
  private ty = 0;
  /** Fit again when the view is resized, until the user zooms or pans. */
  private autoFit = true;
  private selected: string | null = null;
  private resizes: ResizeObserver | null = null;

  /** Draw `steps` (laid out again only when steps or edges changed); mark `selected`. */
  setSteps(steps: IDagStep[], selected: string | null): void {
    const structure = JSON.stringify(
      steps.map(s => [s.name, s.upstream ?? [], s.variables ?? {}])
    );
    if (structure !== this.structure) {
      const started = performance.now();
      this.structure = structure;
      this.draw(steps);
      this.lastLayoutMs = performance.now() - started;
      if (this.autoFit) {
        this.fit();
      } else {
        this.apply();
      }
    }
    for (const step of steps) {
      const placed = this.placed.get(step.name);
      if (!placed) {
        continue;
      }
      placed.group.setAttribute('data-status', step.status);
      placed.group.setAttribute('aria-label', `${step.name}: ${subtitle(step)}`);
      placed.sub.textContent = subtitle(step);
      placed.title.textContent = `${step.name}: ${subtitle(step)}`;
    }
    this.select(selected);
  }

  /** Mark the selected step (or none). */
  select(name: string | null): void {
    this.selected = name;
    for (const [stepName, placed] of this.placed) {
      const on = stepName === name;
      placed.group.classList.toggle('mlpipe-selected', on);
      placed.group.setAttribute('aria-pressed', String(on));
    }
  }

  /** Scale and centre the whole graph into the view. */
  fit(): void {
    const width = this.root.clientWidth;
    const height = this.root.clientHeight;
    if (!width || !height || !this.graphW) {
      return; // not shown yet: the resize observer fits it when it is
    }
    const k = Math.max(
      MIN_SCALE,
      Math.min(
        MAX_FIT_SCALE,
        (width - 2 * FIT_PAD) / this.graphW,
        (height - 2 * FIT_PAD) / this.graphH
      )
    );
    this.k = k;
    this.tx = (width - this.graphW * k) / 2;
    this.ty = (height - this.graphH * k) / 2;
    this.autoFit = true;
    this.apply();
  }

  /** Zoom by `factor` around a point of the view (its centre by default). */
  zoomBy(factor: number, x?: number, y?: number): void {
    const cx = x ?? this.root.clientWidth / 2;
    const cy = y ?? this.root.clientHeight / 2;
    const k = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.k * factor));
    this.tx = cx - ((cx - this.tx) * k) / this.k;
    this.ty = cy - ((cy - this.ty) * k) / this.k;
    this.k = k;
    this.autoFit = false;
    this.apply();
  }

  /** The current zoom (1: the layout's own size). */
  get scale(): number {
    return this.k;
  }

  dispose(): void {
    this.resizes?.disconnect();
    this.resizes = null;
  }

  private apply(): void {
    this.viewport.setAttribute('transform', `translate(${this.tx},${this.ty}) scale(${this.k})`);
  }

  private draw(steps: IDagStep[]): void {
    const graph = new graphlib.Graph({ multigraph: false });
    const labelled = steps.some(s => Object.values(s.variables ?? {}).some(n => n.length));
    graph.setGraph({
      rankdir: 'LR',
      nodesep: 14,
      ranksep: labelled ? 36 : 44,
      edgesep: 8,
      marginx: 4,
      marginy: 4
    });
    graph.setDefaultEdgeLabel(() => ({}));
    const names = new Set(steps.map(s => s.name));
    for (const step of steps) {
      graph.setNode(step.name, { width: nodeWidth(step.name), height: NODE_H });
    }
    for (const step of steps) {
      for (const up of step.upstream ?? []) {
        if (!names.has(up)) {
          continue;
        }
        const carried = step.variables?.[up] ?? [];
        const text = carried.length ? edgeLabel(carried) : '';
        graph.setEdge(up, step.name, {
          width: text ? text.length * CHAR_W + 8 : 0,
          height: text ? 14 : 0,
          // beside the edge (above it, left to right), not on it
          labelpos: 'l',
          labeloffset: 2,
          text,
          names: carried
        });
      }
    }
    layout(graph);
    const size = graph.graph();
    this.graphW = Math.max(1, size.width ?? 1);
    this.graphH = Math.max(1, size.height ?? 1);
    if (this.options.autoHeight) {
      const { min, max } = this.options.autoHeight;
      this.node.style.height = `${Math.round(Math.max(min, Math.min(max, this.graphH + 2 * FIT_PAD)))}px`;
    }

    const viewport = this.viewport;
    viewport.replaceChildren();
    this.placed.clear();
    const edges = svg('g', { class: 'mlpipe-edges' }, viewport);
    const labels = svg('g', { class: 'mlpipe-edge-labels' }, viewport);
    for (const e of graph.edges()) {
      const edge = graph.edge(e) as any;
      svg('path', {
        class: 'mlpipe-edge',
        d: edgePath(edge.points ?? []),
        'marker-end': `url(#${this.markerId})`,
        'data-from': e.v,
        'data-to': e.w
      }, edges);
      if (edge.text) {
        const group = svg('g', { class: 'mlpipe-edge-label', 'data-from': e.v, 'data-to': e.w }, labels);
        svg('title', {}, group).textContent = `${edge.names.join(', ')} (from ${e.v} to ${e.w})`;
        svg('text', { x: edge.x, y: edge.y + 4, 'text-anchor': 'middle' }, group).textContent = edge.text;
      }
    }
    const nodes = svg('g', { class: 'mlpipe-steps' }, viewport);
    for (const step of steps) {
      const place = graph.node(step.name);
      const w = place.width;
      const group = svg('g', {
        transform: `translate(${place.x - w / 2},${place.y - NODE_H / 2})`,
        class: 'mlpipe-step',
        'data-step': step.name,
        'data-status': step.status,
        role: 'button',
        tabindex: 0
      }, nodes) as SVGGElement;
      const title = svg('title', {}, group) as SVGTitleElement;
      svg('rect', { class: 'mlpipe-step-bg', width: w, height: NODE_H, rx: 5 }, group);
      svg('rect', { class: 'mlpipe-step-tint', width: w, height: NODE_H, rx: 5 }, group);
      svg('rect', { class: 'mlpipe-step-bar', width: 5, height: NODE_H - 2, x: 1, y: 1, rx: 2 }, group);
      svg('text', { class: 'mlpipe-step-name', x: 12, y: 18 }, group).textContent = fitName(step.name, w);
      const sub = svg('text', { class: 'mlpipe-step-sub', x: 12, y: 34 }, group) as SVGTextElement;
      group.addEventListener('click', () => this.options.onSelect(step.name));
      group.addEventListener('keydown', event => {
        if (event.key === 'Enter' || event.key === ' ') {
          event.preventDefault();
          event.stopPropagation();
          this.options.onSelect(step.name);
        }
      });
      this.placed.set(step.name, { group, sub, title });
    }
    this.select(this.selected);
  }

  private listen(): void {
    const root = this.root;
    root.addEventListener(
      'wheel',
      event => {
        if (this.options.wheelZoom === 'ctrl' && !(event.ctrlKey || event.metaKey)) {
          return;
        }
        event.preventDefault();
        const box = root.getBoundingClientRect();
        this.zoomBy(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
      },
      { passive: false }
    );
    let drag: { x: number; y: number; tx: number; ty: number; id: number } | null = null;
    root.addEventListener('pointerdown', event => {
      if (event.button !== 0 || (event.target as Element).closest('.mlpipe-step')) {
        return; // a step is clicked, not dragged
      }
      drag = { x: event.clientX, y: event.clientY, tx: this.tx, ty: this.ty, id: event.pointerId };
      root.setPointerCapture(event.pointerId);
      root.classList.add('mlpipe-panning');
    });
    root.addEventListener('pointermove', event => {
      if (!drag || event.pointerId !== drag.id) {
        return;
      }
      this.tx = drag.tx + event.clientX - drag.x;
      this.ty = drag.ty + event.clientY - drag.y;
      this.autoFit = false;
      this.apply();
    });
    const end = (event: PointerEvent) => {
      if (drag && event.pointerId === drag.id) {
        drag = null;
        root.classList.remove('mlpipe-panning');
      }
    };
    root.addEventListener('pointerup', end);
    root.addEventListener('pointercancel', end);
    root.addEventListener('keydown', event => {
      if (event.target !== root) {
        return;
      }
      const pans: Record<string, [number, number]> = {
        ArrowLeft: [40, 0], ArrowRight: [-40, 0], ArrowUp: [0, 40], ArrowDown: [0, -40]
      };
      if (event.key === '+' || event.key === '=') {
        this.zoomBy(1.25);
      } else if (event.key === '-') {
        this.zoomBy(0.8);
      } else if (event.key === '0') {
        this.fit();
      } else if (pans[event.key]) {
        this.tx += pans[event.key][0];
        this.ty += pans[event.key][1];
        this.autoFit = false;
        this.apply();
      } else {
        return;
      }
      event.preventDefault();
    });
  }
}
