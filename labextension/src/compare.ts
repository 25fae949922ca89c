// Runs side by side in the main area (GET compare?runs=A,B,C): their parameters and
// metrics with the differences highlighted, and for each step which fingerprint components
// (code, parameters, inputs, environment, settings) differ from the first run, with the
// sentences that explain them; then a chart of a chosen metric across the runs or against a
// chosen parameter (built by the server, drawn by JupyterLab's Vega renderer).
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { enc, IComparison, IRunSummary, request } from './api';
import { ChartBox, choice } from './chart';
import { ensureDagStyle } from './dag';
import { activatable, BurstRefresh, button, el, metricText, when } from './dom';
import { RunEvents } from './events';
import { statusChip } from './runview';

/** What a comparison asks of JupyterLab (given by the plugin). */
export interface ICompareHost {
  openRun(runId: string): void;
}

/** What a fingerprint component means, for its tooltip. */
const COMPONENT_TEXT: Record<string, string> = {
  code: "the step's code",
  setup: 'the %%mlsetup cells',
  files: 'files the step reads from the project',
  params: 'the parameters the step uses',
  inputs: 'what the step receives from upstream (results, variables, datasets)',
  environment: 'the Python environment or container image',
  settings: 'step settings (compute, variables received, ...)',
  scheme: 'how mlpipe computes fingerprints (an upgrade)'
};

const ACROSS = '';

function differs(values: unknown[]): boolean {
  return new Set(values.map(v => JSON.stringify(v ?? null))).size > 1;
}

export class CompareView extends Widget {
  constructor(
    /** The runs as asked (ids, prefixes, latest); the first is the baseline. */
    public runIds: string[],
    private events: RunEvents,
    private host: ICompareHost,
    rendermime: IRenderMimeRegistry | null
  ) {
    super();
    this.addClass('mlpipe-compareview');
    this.addClass('mlpipe-dag'); // the status colours
    this.node.tabIndex = -1;
    ensureDagStyle(document.head);
    this.headBox = el('div', this.node, undefined, 'mlpipe-rv-head');
    this.tableBox = el('div', this.node, undefined, 'mlpipe-cv-tables');
    const chart = el('section', this.node, undefined, 'mlpipe-cv-chart');
    chart.setAttribute('aria-label', 'Chart');
    el('h3', chart, 'Chart', 'mlpipe-rv-title');
    this.controls = el('div', chart, undefined, 'mlpipe-chart-controls');
    this.chart = new ChartBox(rendermime, 'Chart of a metric of the compared runs');
    chart.appendChild(this.chart.node);
    this.errorBox = el('div', this.node, undefined, 'mlpipe-rv-error');
    this.events.runChanged.connect(this.onRunChanged, this);
  }

  /** The comparison as last read, null before. */
  get comparison(): IComparison | null {
    return this.current;
  }

  /** Read the comparison again and redraw (the chart too, when its data changed). */
  async refresh(): Promise<void> {
    let comparison: IComparison;
    try {
      comparison = await request<IComparison>(`compare?runs=${this.runIds.map(enc).join(',')}`);
    } catch (error) {
      this.errorBox.replaceChildren();
      el('div', this.errorBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    this.errorBox.replaceChildren();
    const before = JSON.stringify([this.current?.metrics, this.current?.parameters]);
    this.current = comparison;
    this.runIds = comparison.runs.map(r => r.run_id);
    const sweeps = new Set(comparison.runs.map(r => r.sweep));
    this.oneSweep = sweeps.size === 1 ? comparison.runs[0].sweep : null;
    const notebooks = [...new Set(comparison.runs.map(r => r.notebook))];
    const names = notebooks.map(n => n.split('/').pop() || n);
    this.title.label = `Compare ${comparison.runs.length} runs`;
    this.title.caption = `mlpipe: ${comparison.runs.length} runs of ${notebooks.join(', ')} side by side`;
    this.node.dataset.runs = this.runIds.join(',');
    this.drawHead(comparison, names);
    this.drawTable(comparison);
    this.drawControls(comparison);
    if (before !== JSON.stringify([comparison.metrics, comparison.parameters])) {
      void this.drawChart();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.events.runChanged.disconnect(this.onRunChanged, this);
    this.chart.dispose();
    super.dispose();
  }

  private onRunChanged(_: RunEvents, summary: IRunSummary): void {
    if (this.runIds.includes(summary.id)) {
      this.refresher.request();
    }
  }

  private drawHead(comparison: IComparison, notebooks: string[]): void {
    const head = this.headBox;
    head.replaceChildren();
    const title = el('div', head, undefined, 'mlpipe-rv-heading');
    el('h2', title, `${comparison.runs.length} runs of ${notebooks.join(', ')}`, 'mlpipe-rv-notebook');
    const meta = el('div', head, undefined, 'mlpipe-rv-meta');
    const counts = [
      [comparison.differing_parameters.length, 'parameter'],
      [comparison.differing_metrics.length, 'metric'],
      [comparison.steps.filter(s => s.differs).length, 'step']
    ] as [number, string][];
    el('span', meta, `differ: ${counts.map(([n, what]) => `${n} ${what}${n === 1 ? '' : 's'}`).join(', ')}`,
      'mlpipe-rv-fact mlpipe-cv-summary');
    if (this.oneSweep) {
      el('span', meta, `members of sweep ${this.oneSweep}`, 'mlpipe-rv-fact mlpipe-cv-sweep');
    }
    el('span', meta, `the first run (${comparison.runs[0].run_id}) is the baseline`, 'mlpipe-rv-key');
    const tools = el('div', head, undefined, 'mlpipe-rv-tools');
    button(tools, '⟳', 'Reload the comparison', 'mlpipe-reload', () => void this.refresh());
  }

  /** One table, a column per run: the runs, then parameters, metrics and steps. */
  private drawTable(comparison: IComparison): void {
    const box = this.tableBox;
    box.replaceChildren();
    const table = el('table', box, undefined, 'mlpipe-compare-table');
    table.setAttribute('aria-label', 'The runs side by side; highlighted rows differ');
    const cols = el('colgroup', table);
    el('col', cols).style.width = '17%';
    for (let i = 0; i < comparison.runs.length; i++) {
      el('col', cols);
    }
    const head = el('tr', el('thead', table));
    el('th', head, 'run', 'mlpipe-cv-name').scope = 'col';
    comparison.runs.forEach((run, index) => {
      const th = el('th', head, undefined, 'mlpipe-cv-run');
      th.scope = 'col';
      th.dataset.runId = run.run_id;
      el('div', th, index === 0 ? `#1 baseline` : `#${index + 1}`, 'mlpipe-cv-position');
      const link = el('a', th, run.run_id, 'mlpipe-link mlpipe-cv-runlink');
      activatable(link, `Open run ${run.run_id}`, () => this.host.openRun(run.run_id));
      const line = el('div', th, undefined, 'mlpipe-cv-runmeta');
      statusChip(line, run.status);
      if (run.created_at) {
        el('span', line, when(run.created_at), 'mlpipe-rv-key');
      }
      const commit = (run.git as { commit?: string }).commit;
      if (commit) {
        el('code', line, commit.slice(0, 8)).title = `git commit ${commit}`;
      }
      if (run.sweep && !this.oneSweep) {
        el('span', line, run.sweep, 'mlpipe-rv-key').title = `member of sweep ${run.sweep}`;
      }
    });
    const body = el('tbody', table);
    const width = comparison.runs.length + 1;
    const section = (title: string, note: string, cls: string) => {
      const tr = el('tr', body, undefined, `mlpipe-cv-section ${cls}`);
      const th = el('th', tr, undefined);
      th.colSpan = width;
      th.scope = 'colgroup';
      el('span', th, title, 'mlpipe-cv-section-title');
      el('span', th, note, 'mlpipe-cv-section-note');
    };
    const mark = (tr: HTMLTableRowElement, name: string, on: boolean, kind: string) => {
      tr.dataset.differs = String(on);
      const th = el('th', tr, undefined, 'mlpipe-cv-name');
      th.scope = 'row';
      const badge = el('span', th, on ? '≠' : '', 'mlpipe-cv-badge');
      if (on) {
        badge.title = `this ${kind} differs between the runs`;
        badge.setAttribute('aria-label', 'differs:');
        tr.classList.add('mlpipe-differs');
      }
      const text = el('span', th, name, 'mlpipe-cv-label');
      text.title = name;
    };

    const parameters = Object.entries(comparison.parameters);
    section('Parameters', parameters.length ? 'as each run ran (defaults included)' : 'none', 'mlpipe-cv-params');
    for (const [name, values] of parameters) {
      const tr = el('tr', body, undefined, 'mlpipe-cv-param');
      tr.dataset.name = name;
      mark(tr, name, comparison.differing_parameters.includes(name), 'parameter');
      values.forEach((value, index) => {
        const td = el('td', tr, value ?? '–', 'mlpipe-cv-value');
        if (index > 0 && value !== values[0]) {
          td.classList.add('mlpipe-changed');
          td.title = `${name}: ${values[0]} in the baseline`;
        }
      });
    }

    const metrics = Object.entries(comparison.metrics);
    section('Metrics', metrics.length ? 'each run\'s last value (a reused step\'s are its producer\'s)' : 'none logged', 'mlpipe-cv-metrics');
    for (const [name, values] of metrics) {
      const tr = el('tr', body, undefined, 'mlpipe-cv-metric');
      tr.dataset.name = name;
      mark(tr, name, comparison.differing_metrics.includes(name) || differs(values), 'metric');
      values.forEach((value, index) => {
        const td = el('td', tr, value === null || value === undefined ? '–' : metricText(value), 'mlpipe-cv-value');
        const base = values[0];
        if (index > 0 && JSON.stringify(value ?? null) !== JSON.stringify(base ?? null)) {
          td.classList.add('mlpipe-changed');
          if (typeof value === 'number' && typeof base === 'number') {
            const delta = value - base;
            el('span', td, ` (${delta >= 0 ? '+' : ''}${metricText(delta)})`, 'mlpipe-cv-delta');
          }
        }
      });
    }

    section('Steps', 'what differs from the baseline\'s fingerprint, and why', 'mlpipe-cv-steps');
    for (const step of comparison.steps) {
      const tr = el('tr', body, undefined, 'mlpipe-cv-step');
      tr.dataset.step = step.step;
      mark(tr, step.step, step.differs, 'step');
      step.statuses.forEach((status, index) => {
        const td = el('td', tr, undefined, 'mlpipe-cv-stepcell');
        td.dataset.runId = comparison.runs[index].run_id;
        if (status === null) {
          el('span', td, 'not in this run', 'mlpipe-empty');
          return;
        }
        statusChip(td, status);
        const changed = step.changed[index];
        td.dataset.changed = changed.join(' ');
        if (index === 0) {
          return;
        }
        if (!changed.length) {
          const same = step.fingerprints[index] === step.fingerprints[0];
          el('span', td, same ? ' same fingerprint' : ' no component differs', 'mlpipe-cv-same');
          return;
        }
        td.classList.add('mlpipe-changed');
        const tags = el('span', td, undefined, 'mlpipe-components');
        tags.setAttribute('aria-label', `changed: ${changed.join(', ')}`);
        for (const component of changed) {
          const tag = el('span', tags, component, 'mlpipe-component');
          tag.dataset.component = component;
          tag.title = `changed: ${COMPONENT_TEXT[component] ?? component}`;
        }
        const sentences = step.changes[index];
        if (sentences.length) {
          const list = el('ul', td, undefined, 'mlpipe-cv-changes');
          for (const sentence of sentences) {
            el('li', list, sentence);
          }
        }
      });
    }
  }

  /** The metric and "against" choices; kept while they still exist. */
  private drawControls(comparison: IComparison): void {
    const numeric = Object.entries(comparison.metrics)
      .filter(([, values]) => values.some(v => typeof v === 'number'))
      .map(([name]) => name);
    if (!numeric.includes(this.metric ?? '')) {
      this.metric = numeric.find(n => comparison.differing_metrics.includes(n)) ?? numeric[0] ?? null;
    }
    const parameters = [
      ...comparison.differing_parameters,
      ...Object.keys(comparison.parameters).filter(p => !comparison.differing_parameters.includes(p))
    ];
    if (this.against !== ACROSS && !parameters.includes(this.against)) {
      this.against = ACROSS;
    }
    this.controls.replaceChildren();
    if (!this.metric) {
      return;
    }
    choice(this.controls, 'Metric', numeric.map(n => [n, n]), this.metric, 'mlpipe-chart-metric',
      value => {
        this.metric = value;
        void this.drawChart();
      });
    const against: [string, string][] = [[ACROSS, 'each run'],
      ...parameters.map(p => [p, `parameter ${p}`] as [string, string])];
    choice(this.controls, 'Against', against, this.against, 'mlpipe-chart-against', value => {
      this.against = value;
      void this.drawChart();
    });
  }

  private async drawChart(): Promise<void> {
    if (!this.metric) {
      this.chart.message('These runs logged no numeric metric: nothing to chart.');
      return;
    }
    const query = [`runs=${this.runIds.map(enc).join(',')}`, `metric=${enc(this.metric)}`];
    if (this.against !== ACROSS) {
      query.push(`parameter=${enc(this.against)}`);
    }
    try {
      const spec = await request<Record<string, unknown>>(`compare/chart?${query.join('&')}`);
      await this.chart.show(spec);
    } catch (error) {
      this.chart.message(String((error as Error).message), true);
    }
  }

  private current: IComparison | null = null;
  private headBox: HTMLDivElement;
  private tableBox: HTMLDivElement;
  private controls: HTMLDivElement;
  private errorBox: HTMLDivElement;
  private chart: ChartBox;
  private metric: string | null = null;
  private against = ACROSS;
  // read the server once per burst of events
  private refresher = new BurstRefresh(() => void this.refresh(), 300, () => !this.isDisposed);
  /** The sweep every compared run is a member of (null: none, or several). */
  private oneSweep: string | null = null;
}
