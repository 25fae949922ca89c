// A parameter sweep in the main area (GET sweeps/{id}): its members' table (swept values,
// metrics, status, the best one marked, ranked by a chosen metric), a chart of a chosen
// metric against a chosen swept parameter (built by the server, drawn by JupyterLab's Vega
// renderer), and "Compare members", which opens the selected members (or all of them) side
// by side. It follows the sweep live: its members' change events redraw it.
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { enc, IRunSummary, ISweepDetail, parameterText, request } from './api';
import { ChartBox, choice } from './chart';
import { ensureDagStyle, statusColor } from './dag';
import { activatable, BurstRefresh, button, el, metricText, when } from './dom';
import { RunEvents } from './events';
import { statusChip } from './runview';

/** What a sweep view asks of JupyterLab (given by the plugin). */
export interface ISweepHost {
  openRun(runId: string): void;
  compareRuns(runIds: string[]): void;
}

/** The most runs one comparison takes (the server's limit). */
const MAX_COMPARED = 100;

export class SweepView extends Widget {
  constructor(
    /** The sweep's id (or a unique prefix, or "latest" until it is read). */
    public sweepId: string,
    private events: RunEvents,
    private host: ISweepHost,
    rendermime: IRenderMimeRegistry | null
  ) {
    super();
    this.addClass('mlpipe-sweepview');
    this.addClass('mlpipe-dag'); // the status colours
    this.node.tabIndex = -1;
    ensureDagStyle(document.head);
    this.headBox = el('div', this.node, undefined, 'mlpipe-rv-head');
    this.factsBox = el('div', this.node, undefined, 'mlpipe-sv-facts');
    const members = el('section', this.node, undefined, 'mlpipe-sv-members');
    members.setAttribute('aria-label', 'Members');
    const bar = el('div', members, undefined, 'mlpipe-sv-bar');
    el('h3', bar, 'Members', 'mlpipe-rv-title');
    this.sortBox = el('div', bar, undefined, 'mlpipe-chart-controls');
    this.tableBox = el('div', members, undefined, 'mlpipe-sv-tablebox');
    const chart = el('section', this.node, undefined, 'mlpipe-cv-chart');
    chart.setAttribute('aria-label', 'Chart');
    el('h3', chart, 'Chart', 'mlpipe-rv-title');
    this.controls = el('div', chart, undefined, 'mlpipe-chart-controls');
    this.chart = new ChartBox(rendermime, 'Chart of a metric against a swept parameter');
    chart.appendChild(this.chart.node);
    this.errorBox = el('div', this.node, undefined, 'mlpipe-rv-error');
    this.events.runChanged.connect(this.onRunChanged, this);
    this.events.connected.connect(this.onReconnected, this);
  }

  /** The sweep as last read, null before. */
  get sweep(): ISweepDetail | null {
    return this.current;
  }

  /** Read the sweep again and redraw (the chart too, when its data changed). */
  async refresh(): Promise<void> {
    const query = this.sort ? `?sort=${enc(this.sort)}&ascending=${this.ascending}` : '';
    let sweep: ISweepDetail;
    try {
      sweep = await request<ISweepDetail>(`sweeps/${enc(this.sweepId)}${query}`);
    } catch (error) {
      this.errorBox.replaceChildren();
      el('div', this.errorBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    this.errorBox.replaceChildren();
    this.current = sweep;
    this.sweepId = sweep.id;
    const name = sweep.notebook.split('/').pop() || sweep.notebook;
    this.title.label = `${name} ${sweep.id}`;
    this.title.caption = `mlpipe sweep ${sweep.id} of ${sweep.notebook}: ${sweep.status}`;
    this.node.dataset.sweepId = sweep.id;
    this.node.dataset.status = sweep.status;
    this.selected = new Set([...this.selected].filter(id => sweep.rows.some(r => r.run_id === id)));
    this.drawHead(sweep);
    this.drawFacts(sweep);
    this.drawSort(sweep);
    this.drawTable(sweep);
    this.drawControls(sweep);
    // the chart again only when its data changed (not for a new ranking of the table)
    const data = JSON.stringify([...sweep.rows].sort((a, b) => a.position - b.position)
      .map(r => [r.run_id, r.metrics]));
    if (data !== this.chartedRows) {
      this.chartedRows = data;
      void this.drawChart();
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.events.runChanged.disconnect(this.onRunChanged, this);
    this.events.connected.disconnect(this.onReconnected, this);
    this.chart.dispose();
    super.dispose();
  }

  private onRunChanged(_: RunEvents, summary: IRunSummary): void {
    if (summary.sweep && summary.sweep === this.sweepId) {
      this.refresher.request();
    }
  }


  private drawHead(sweep: ISweepDetail): void {
    const head = this.headBox;
    head.replaceChildren();
    const title = el('div', head, undefined, 'mlpipe-rv-heading');
    el('h2', title, sweep.notebook, 'mlpipe-rv-notebook').title = sweep.notebook;
    statusChip(title, sweep.status, 'mlpipe-run-state');
    const meta = el('div', head, undefined, 'mlpipe-rv-meta');
    const counts = Object.entries(sweep.counts).map(([s, n]) => `${n} ${s}`).join(', ');
    const facts: [string, string][] = [
      ['sweep', sweep.id],
      ['started', when(sweep.created_at)],
      ['members', `${sweep.rows.length} (${counts})`],
      ['experiment', sweep.experiment],
      ['published', sweep.published || ''],
      ['schedule', sweep.schedule || '']
    ];
    for (const [key, value] of facts) {
      if (value) {
        const item = el('span', meta, undefined, 'mlpipe-rv-fact');
        el('span', item, `${key} `, 'mlpipe-rv-key');
        el('span', item, value, `mlpipe-rv-value mlpipe-sv-${key}`);
      }
    }
    const tools = el('div', head, undefined, 'mlpipe-rv-tools');
    const picked = this.selected.size;
    const compare = button(tools, picked >= 2 ? `Compare ${picked} members` : 'Compare members',
      picked >= 2 ? `Compare the ${picked} selected members side by side`
        : 'Compare the members side by side (select some in the table to compare only those)',
      'mlpipe-compare-members', () => this.compareMembers());
    compare.disabled = this.started(sweep).length < 2;
    button(tools, '⟳', 'Reload the sweep', 'mlpipe-reload', () => void this.refresh());
  }

  /** What is swept, and how many members executed each step (the rest reused it). */
  private drawFacts(sweep: ISweepDetail): void {
    const box = this.factsBox;
    box.replaceChildren();
    const swept = el('div', box, undefined, 'mlpipe-sv-spec');
    el('span', swept, 'swept ', 'mlpipe-rv-key');
    for (const text of sweep.spec.sweep ?? []) {
      el('code', swept, text, 'mlpipe-sv-swept');
    }
    if (sweep.spec.samples) {
      el('span', swept, ` ${sweep.spec.samples} samples, seed ${sweep.spec.seed ?? 0}`);
    }
    const executed = Object.entries(sweep.executed);
    if (executed.length) {
      const line = el('div', box, undefined, 'mlpipe-sv-executed');
      el('span', line, 'executed ', 'mlpipe-rv-key');
      line.title = 'How many members executed each step; the others reused its result';
      el('span', line, executed.map(([step, n]) => `${step} ${n}×`).join(' · '));
      el('span', line, ` of ${sweep.rows.length} members: the others reused the result`, 'mlpipe-rv-key');
    }
  }

  private drawSort(sweep: ISweepDetail): void {
    this.sortBox.replaceChildren();
    if (!sweep.metrics.length) {
      return;
    }
    choice(this.sortBox, 'Best by', sweep.metrics.map(m => [m, m]), sweep.sort ?? '',
      'mlpipe-sweep-sort', value => {
        this.sort = value;
        void this.refresh();
      });
    const label = el('label', this.sortBox, undefined, 'mlpipe-choice');
    const lowest = el('input', label);
    lowest.type = 'checkbox';
    lowest.className = 'mlpipe-sweep-ascending';
    lowest.checked = sweep.ascending;
    lowest.addEventListener('change', () => {
      this.sort = this.sort ?? sweep.sort;
      this.ascending = lowest.checked;
      void this.refresh();
    });
    el('span', label, 'lowest is best', 'mlpipe-choice-label');
  }

  private drawTable(sweep: ISweepDetail): void {
    const box = this.tableBox;
    box.replaceChildren();
    if (!sweep.rows.length) {
      el('div', box, 'This sweep has no members.', 'mlpipe-empty');
      return;
    }
    const table = el('table', box, undefined, 'mlpipe-sweep-table');
    table.setAttribute('aria-label', `Members of sweep ${sweep.id}; ★ marks the best`);
    const head = el('tr', el('thead', table));
    const all = el('input', el('th', head, undefined, 'mlpipe-sv-check'));
    all.type = 'checkbox';
    all.setAttribute('aria-label', 'Select every member for comparison');
    all.checked = this.selected.size > 0 && this.selected.size === sweep.rows.length;
    all.addEventListener('change', () => {
      this.selected = all.checked ? new Set(sweep.rows.map(r => r.run_id)) : new Set();
      this.drawHead(sweep);
      this.drawTable(sweep);
    });
    const columns = ['', '#', 'run', 'status', ...sweep.parameters];
    columns.forEach((text, i) => {
      const th = el('th', head, text, i < 2 ? 'mlpipe-sv-narrow' : 'mlpipe-sv-param');
      th.scope = 'col';
      if (i === 0) {
        th.setAttribute('aria-label', 'best');
      }
    });
    for (const metric of sweep.metrics) {
      const th = el('th', head, undefined, 'mlpipe-sv-metric');
      th.scope = 'col';
      const sorted = metric === sweep.sort;
      th.setAttribute('aria-sort', sorted ? (sweep.ascending ? 'ascending' : 'descending') : 'none');
      const b = el('button', th, `${metric}${sorted ? (sweep.ascending ? ' ▲' : ' ▼') : ''}`, 'mlpipe-sort-button');
      b.type = 'button';
      b.setAttribute('aria-label', `Rank the members by ${metric}`);
      b.addEventListener('click', () => {
        if (sorted) {
          this.ascending = !sweep.ascending;
        }
        this.sort = metric;
        void this.refresh();
      });
    }
    const body = el('tbody', table);
    for (const row of sweep.rows) {
      const tr = el('tr', body, undefined, 'mlpipe-sweep-row');
      tr.dataset.runId = row.run_id;
      tr.dataset.status = row.status;
      tr.dataset.best = String(row.best);
      if (row.best) {
        tr.classList.add('mlpipe-best');
      }
      const check = el('input', el('td', tr, undefined, 'mlpipe-sv-check'));
      check.type = 'checkbox';
      check.className = 'mlpipe-member-check';
      check.checked = this.selected.has(row.run_id);
      check.disabled = row.status === 'pending';
      check.setAttribute('aria-label', `Select member ${row.position} (${row.run_id}) for comparison`);
      check.addEventListener('change', () => {
        if (check.checked) {
          this.selected.add(row.run_id);
        } else {
          this.selected.delete(row.run_id);
        }
        this.drawHead(sweep);
      });
      const star = el('td', tr, row.best ? '★' : '', 'mlpipe-sv-best');
      if (row.best) {
        star.title = `best by ${sweep.sort} (${sweep.ascending ? 'lowest' : 'highest'})`;
        star.setAttribute('aria-label', 'best');
      }
      el('td', tr, String(row.position), 'mlpipe-sv-narrow');
      const runCell = el('td', tr, undefined, 'mlpipe-sv-run');
      if (row.status === 'pending') {
        el('span', runCell, row.run_id, 'mlpipe-empty');
      } else {
        const link = el('a', runCell, row.run_id, 'mlpipe-link');
        activatable(link, `Open member ${row.position}, run ${row.run_id}`, () => this.host.openRun(row.run_id));
      }
      const status = el('td', tr);
      statusChip(status, row.status).style.setProperty('--mlpipe-chip-color', statusColor(row.status));
      for (const name of sweep.parameters) {
        el('td', tr, parameterText(name, row.params), 'mlpipe-sv-value');
      }
      for (const metric of sweep.metrics) {
        const value = row.metrics[metric];
        const td = el('td', tr, value === undefined || value === null ? '–' : metricText(value), 'mlpipe-sv-value');
        if (metric === sweep.sort) {
          td.classList.add('mlpipe-sv-sorted');
        }
      }
    }
  }

  private drawControls(sweep: ISweepDetail): void {
    this.controls.replaceChildren();
    if (!sweep.metrics.length || !sweep.parameters.length) {
      return;
    }
    if (!this.metric || !sweep.metrics.includes(this.metric)) {
      this.metric = sweep.sort ?? sweep.metrics[0];
    }
    if (!this.parameter || !sweep.parameters.includes(this.parameter)) {
      this.parameter = sweep.parameters[0];
    }
    choice(this.controls, 'Metric', sweep.metrics.map(m => [m, m]), this.metric, 'mlpipe-chart-metric',
      value => {
        this.metric = value;
        void this.drawChart();
      });
    choice(this.controls, 'Against', sweep.parameters.map(p => [p, `parameter ${p}`]), this.parameter,
      'mlpipe-chart-against', value => {
        this.parameter = value;
        void this.drawChart();
      });
  }

  private async drawChart(): Promise<void> {
    const sweep = this.current;
    if (!sweep || !this.metric || !this.parameter) {
      this.chart.message('No member has logged a metric yet: nothing to chart.');
      return;
    }
    try {
      const spec = await request<Record<string, unknown>>(
        `sweeps/${enc(sweep.id)}/chart?metric=${enc(this.metric)}&parameter=${enc(this.parameter)}`);
      await this.chart.show(spec);
    } catch (error) {
      this.chart.message(String((error as Error).message), true);
    }
  }

  /** The members that have started (a pending one is no run yet), in the table's order. */
  private started(sweep: ISweepDetail): string[] {
    return sweep.rows.filter(r => r.status !== 'pending').map(r => r.run_id);
  }

  private compareMembers(): void {
    const sweep = this.current;
    if (!sweep) {
      return;
    }
    const started = this.started(sweep);
    // the selected members (at least two), else all of them; ranked order, best first
    const picked = this.selected.size >= 2 ? started.filter(id => this.selected.has(id)) : started;
    this.host.compareRuns(picked.slice(0, MAX_COMPARED));
  }

  private current: ISweepDetail | null = null;
  private headBox: HTMLDivElement;
  private factsBox: HTMLDivElement;
  private sortBox: HTMLDivElement;
  private tableBox: HTMLDivElement;
  private controls: HTMLDivElement;
  private errorBox: HTMLDivElement;
  private chart: ChartBox;
  private sort: string | null = null;
  private ascending = false;
  private metric: string | null = null;
  private parameter: string | null = null;
  private selected = new Set<string>();
  private chartedRows = '';
  /** Events may have been missed while the stream was down: read the server again. */
  private onReconnected(): void {
    this.refresher.request();
  }

  // read the server once per burst of events
  private refresher = new BurstRefresh(() => void this.refresh(), 300, () => !this.isDisposed);
}
