/**
 * The notebook's run DAG widget (anywidget): `jlpm build:widget` bundles this file and the
 * DAG renderer it shares with the JupyterLab run view (dag.ts, with dagre) into
 * mlpipe_jupyter/jupyter/widget.js, the ES module that mlpipe_jupyter/jupyter/widget.py
 * serves. It renders the synced state (run_id, status, notebook, error, steps); click a
 * step (or Enter on it) for its details.
 */
import { DagView, ensureDagStyle, IDagStep, receivedText, seconds } from './dag';

/** What anywidget hands `render` (the part of its model API used here). */
interface IModel {
  get(name: string): any;
  on(event: string, callback: () => void): void;
  off(event: string, callback: () => void): void;
}

interface IWidgetStep extends IDagStep {
  reused_from?: string | null;
  decision?: string | null;
  error?: string | null;
  log_tail?: string;
  metrics?: Record<string, unknown>;
  output_notebook?: string | null;
  run_if?: string | null;
  condition?: string | null;
  condition_result?: string | null;
}

const STYLE = `
.mlpipe-dag { font-family: var(--jp-ui-font-family, sans-serif); font-size: 12px; color: var(--jp-ui-font-color1, #222); }
.mlpipe-dag .mlpipe-head { margin: 4px 0; }
.mlpipe-dag .mlpipe-details { margin-top: 6px; padding: 6px; border-left: 3px solid var(--jp-border-color1, #90a4ae); }
.mlpipe-dag th { text-align: left; padding-right: 10px; font-weight: normal; color: var(--jp-ui-font-color2, #607d8b); vertical-align: top; }
.mlpipe-dag pre { max-height: 14em; overflow: auto; background: var(--jp-layout-color2, rgba(0,0,0,0.04)); padding: 4px; margin: 2px 0; }
.mlpipe-dag .mlpipe-error { color: var(--jp-error-color1, #b71c1c); }
.mlpipe-dag .mlpipe-label { margin-top: 4px; color: var(--jp-ui-font-color2, #607d8b); }
`;

function html(tag: string, text: string | null, parent: HTMLElement | null, className?: string): HTMLElement {
  const node = document.createElement(tag);
  if (text !== null) {
    node.textContent = text;
  }
  if (className) {
    node.className = className;
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

function metricText(value: unknown): string {
  if (typeof value !== 'number') {
    return JSON.stringify(value);
  }
  return Number.isInteger(value) ? String(value) : value.toPrecision(4);
}

function drawDetails(step: IWidgetStep, parent: HTMLElement): void {
  const box = html('div', null, parent, 'mlpipe-details');
  box.dataset.step = step.name;
  html('strong', `${step.name}: ${step.status}`, box);
  const rows: [string, string][] = [
    ['time', seconds(step.duration)],
    ['reused from run', step.reused ? step.reused_from || '?' : ''],
    ['why', (step.decision || '').split('\n')[0]],
    ['run-if', step.run_if || ''],
    ['condition', step.condition || ''],
    ['condition result', step.condition_result || ''],
    ['upstream', (step.upstream || []).join(', ')],
    ['receives', receivedText(step)],
    ['output notebook', step.output_notebook || '']
  ];
  const table = html('table', null, box);
  for (const [key, value] of rows) {
    if (value) {
      const tr = html('tr', null, table);
      html('th', key, tr);
      html('td', value, tr);
    }
  }
  const metrics = Object.entries(step.metrics || {});
  if (metrics.length) {
    html('div', 'metrics', box, 'mlpipe-label');
    const mt = html('table', null, box);
    for (const [key, value] of metrics) {
      const tr = html('tr', null, mt);
      html('th', key, tr);
      html('td', metricText(value), tr);
    }
  }
  if (step.error) {
    html('div', 'error', box, 'mlpipe-label');
    html('pre', step.error, box, 'mlpipe-error');
  }
  if (step.log_tail) {
    html('div', 'log (last lines)', box, 'mlpipe-label');
    html('pre', step.log_tail, box);
  }
}

function render({ model, el }: { model: IModel; el: HTMLElement }): () => void {
  const root = html('div', null, el, 'mlpipe-dag');
  html('style', STYLE, root);
  ensureDagStyle(root);
  const head = html('div', null, root, 'mlpipe-head');
  let selected: string | null = null;
  const view = new DagView({
    onSelect: name => {
      selected = selected === name ? null : name;
      draw();
    },
    wheelZoom: 'ctrl',
    autoHeight: { min: 120, max: 420 },
    label: 'Pipeline run steps (Ctrl + wheel zooms, drag pans)'
  });
  root.appendChild(view.node);
  const below = html('div', null, root);
  const draw = () => {
    const steps: IWidgetStep[] = model.get('steps') || [];
    const runId = model.get('run_id');
    head.textContent = runId
      ? `run ${runId} — ${model.get('status')} — ${model.get('notebook')}`
      : 'waiting for the run to start…';
    view.setSteps(steps, selected);
    below.replaceChildren();
    const step = steps.find(s => s.name === selected);
    if (step) {
      drawDetails(step, below);
    }
    if (model.get('error') && model.get('status') !== 'running') {
      html('pre', model.get('error'), below, 'mlpipe-error');
    }
  };
  const names = ['steps', 'status', 'run_id', 'error'];
  for (const name of names) {
    model.on(`change:${name}`, draw);
  }
  draw();
  return () => {
    for (const name of names) {
      model.off(`change:${name}`, draw);
    }
    view.dispose();
  };
}

export default { render };
