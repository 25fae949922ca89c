/**
 * The notebook's run DAG widget (anywidget): `jlpm build:widget` bundles this file and the
 * DAG renderer it shares with the JupyterLab run view (dag.ts, with dagre) into
 * mlpipe_jupyter/jupyter/widget.js, the ES module that mlpipe_jupyter/jupyter/widget.py
 * serves. It renders the synced state (run_id, status, notebook, error, steps); click a
 * step (or Enter on it) for its details.
 */
import { DagView, ensureDagStyle, IDagStep, receivedText, seconds } from './dag';
import { el } from './dom';

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

function metricText(value: unknown): string {
  if (typeof value !== 'number') {
    return JSON.stringify(value);
  }
  return Number.isInteger(value) ? String(value) : value.toPrecision(4);
}

function drawDetails(step: IWidgetStep, parent: HTMLElement): void {
  const box = el('div', parent, undefined, 'mlpipe-details');
  box.dataset.step = step.name;
  el('strong', box, `${step.name}: ${step.status}`);
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
  const table = el('table', box);
  for (const [key, value] of rows) {
    if (value) {
      const tr = el('tr', table);
      el('th', tr, key);
      el('td', tr, value);
    }
  }
  const metrics = Object.entries(step.metrics || {});
  if (metrics.length) {
    el('div', box, 'metrics', 'mlpipe-label');
    const mt = el('table', box);
    for (const [key, value] of metrics) {
      const tr = el('tr', mt);
      el('th', tr, key);
      el('td', tr, metricText(value));
    }
  }
  if (step.error) {
    el('div', box, 'error', 'mlpipe-label');
    el('pre', box, step.error, 'mlpipe-error');
  }
  if (step.log_tail) {
    el('div', box, 'log (last lines)', 'mlpipe-label');
    el('pre', box, step.log_tail);
  }
}

function render({ model, el: host }: { model: IModel; el: HTMLElement }): () => void {
  const root = el('div', host, undefined, 'mlpipe-dag');
  el('style', root, STYLE);
  ensureDagStyle(root);
  const head = el('div', root, undefined, 'mlpipe-head');
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
  const below = el('div', root);
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
      el('pre', below, model.get('error'), 'mlpipe-error');
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
