// A run in the main area: its DAG, a table of its steps, the selected step's live log and
// rendered output notebook, the run's parameters, git state and datasets (lineage),
// re-run with downstream and cancel. Everything comes from the REST API; the server's
// change events (RunEvents) say when to read the run again.
import { showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  enc,
  follow,
  ILineage,
  IOutputLink,
  IRunDetail,
  IRunSummary,
  IStep,
  parameterText,
  post,
  request
} from './api';
import { DagView, ensureDagStyle, receivedText, seconds, statusColor } from './dag';
import { activatable, BurstRefresh, button, el, metricText, when } from './dom';
import { RunEvents } from './events';
import { StepTable, whyText } from './table';

/** What a run view asks of JupyterLab (given by the plugin). */
export interface IRunViewHost {
  openNotebook(path: string): void;
  openHtml(url: string, title: string): void;
  /** Open (or activate) another run's view: a re-run, a reused step's producer. */
  openRun(runId: string): void;
  /** Show a dataset version in the datasets view (lineage links). */
  openDataset?(name: string, version: number): void;
}

type StepTab = 'log' | 'output' | 'details';

/** A run's status as a coloured chip. */
export function statusChip(parent: HTMLElement, status: string, className = ''): HTMLSpanElement {
  const chip = el('span', parent, status, `mlpipe-chip ${className}`.trim());
  chip.style.setProperty('--mlpipe-chip-color', statusColor(status));
  return chip;
}

function isDarkTheme(): boolean {
  return document.body.dataset.jpThemeLight === 'false';
}

export class RunView extends Widget {
  constructor(
    /** The run's id (or a unique prefix, or "latest" until it is read). */
    public runId: string,
    private events: RunEvents,
    private host: IRunViewHost
  ) {
    super();
    this.addClass('mlpipe-runview');
    this.addClass('mlpipe-dag');
    this.node.tabIndex = -1;
    ensureDagStyle(document.head);
    this.headBox = el('div', this.node, undefined, 'mlpipe-rv-head');
    const top = el('div', this.node, undefined, 'mlpipe-rv-top');
    const graphBox = el('section', top, undefined, 'mlpipe-rv-graph');
    graphBox.setAttribute('aria-label', 'Pipeline graph');
    this.dag = new DagView({
      onSelect: name => this.selectStep(name),
      wheelZoom: 'always',
      label: 'Pipeline graph: steps of the run (wheel zooms, drag pans, + - 0 keys)'
    });
    graphBox.appendChild(this.dag.node);
    this.factsBox = el('section', top, undefined, 'mlpipe-rv-facts');
    this.factsBox.setAttribute('aria-label', 'Run facts');
    const steps = el('section', this.node, undefined, 'mlpipe-rv-steps');
    el('h3', steps, 'Steps', 'mlpipe-rv-title');
    this.table = new StepTable(name => this.selectStep(name));
    steps.appendChild(this.table.node);
    this.stepBox = el('section', this.node, undefined, 'mlpipe-rv-step');
    this.stepBox.setAttribute('aria-label', 'Selected step');
    this.errorBox = el('div', this.node, undefined, 'mlpipe-rv-error');
    this.events.runChanged.connect(this.onRunChanged, this);
    this.events.connected.connect(this.onReconnected, this);
    this.themeWatch = new MutationObserver(() => {
      if (this.tab === 'output') {
        this.drawStep(); // the output notebook in the theme's colours
      }
    });
    this.themeWatch.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-light'] });
  }

  /** The run as last read, null before. */
  get run(): IRunDetail | null {
    return this.current;
  }

  /** The selected step's name, null when none is. */
  get selectedStep(): string | null {
    return this.selected;
  }

  /** Read the run again and redraw. */
  async refresh(): Promise<void> {
    let run: IRunDetail;
    try {
      run = await request<IRunDetail>(`runs/${enc(this.runId)}`);
    } catch (error) {
      this.errorBox.replaceChildren();
      el('div', this.errorBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    this.errorBox.replaceChildren();
    this.current = run;
    this.runId = run.id;
    if (this.selected && !run.steps.some(s => s.name === this.selected)) {
      this.selected = null;
    }
    this.title.label = `${run.notebook.split('/').pop() || run.notebook} ${run.id}`;
    this.title.caption = `mlpipe run ${run.id} of ${run.notebook}: ${run.status}`;
    this.node.dataset.runId = run.id;
    this.node.dataset.status = run.status;
    this.drawHead(run);
    this.drawFacts(run);
    this.dag.setSteps(run.steps, this.selected);
    this.node.dataset.layoutMs = this.dag.lastLayoutMs.toFixed(1);
    this.table.update(run.steps, this.selected);
    const step = run.steps.find(s => s.name === this.selected);
    const shown = step ? JSON.stringify([run.id, step, this.tab]) : '';
    if (shown !== this.stepShown) {
      this.drawStep(); // not on every change of the run: the output notebook would reload
    }
  }

  /** Select a step (selecting the selected one again unselects it). */
  selectStep(name: string | null): void {
    this.selected = this.selected === name ? null : name;
    if (this.current) {
      this.dag.select(this.selected);
      this.table.select(this.selected);
      this.drawStep();
    }
  }

  /** Fit the DAG into its view. */
  fitGraph(): void {
    this.dag.fit();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.events.runChanged.disconnect(this.onRunChanged, this);
    this.events.connected.disconnect(this.onReconnected, this);
    this.themeWatch.disconnect();
    this.closeLog();
    this.dag.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    this.dag.fit();
  }

  private onRunChanged(_: RunEvents, summary: IRunSummary): void {
    if (summary.id === this.runId) {
      this.refresher.request();
    }
  }


  private drawHead(run: IRunDetail): void {
    const head = this.headBox;
    head.replaceChildren();
    const title = el('div', head, undefined, 'mlpipe-rv-heading');
    el('h2', title, run.notebook, 'mlpipe-rv-notebook').title = run.notebook;
    statusChip(title, run.status, 'mlpipe-run-state');
    const meta = el('div', head, undefined, 'mlpipe-rv-meta');
    const facts: [string, string][] = [
      ['run', run.id],
      ['started', when(run.created_at)],
      ['time', seconds(run.duration)],
      ['experiment', run.experiment],
      ['published', run.published || ''],
      ['host', run.host || '']
    ];
    for (const [key, value] of facts) {
      if (value) {
        const item = el('span', meta, undefined, 'mlpipe-rv-fact');
        el('span', item, `${key} `, 'mlpipe-rv-key');
        el('span', item, value, `mlpipe-rv-value mlpipe-rv-${key}`);
      }
    }
    const tools = el('div', head, undefined, 'mlpipe-rv-tools');
    if (run.status === 'running') {
      button(tools, 'Cancel', `Cancel run ${run.id}`, 'mlpipe-cancel', () =>
        void this.act(post(`runs/${enc(run.id)}/cancel`).then(() => this.refresh()))
      );
    }
    button(tools, '⟳', 'Reload the run', 'mlpipe-reload', () => void this.refresh());
  }

  private drawFacts(run: IRunDetail): void {
    const box = this.factsBox;
    box.replaceChildren();
    el('h3', box, 'Parameters', 'mlpipe-rv-title');
    const names = Object.keys(run.params);
    if (names.length) {
      const table = el('table', box, undefined, 'mlpipe-facts mlpipe-params');
      for (const name of names) {
        const tr = el('tr', table);
        el('th', tr, name).scope = 'row';
        el('td', tr, parameterText(name, run.params, run.param_texts), 'mlpipe-wrap');
      }
    } else {
      el('div', box, 'the notebook\'s defaults', 'mlpipe-empty');
    }
    el('h3', box, 'Git', 'mlpipe-rv-title');
    const git = run.git as { commit?: string; branch?: string; dirty?: boolean; root?: string };
    if (git.commit) {
      const line = el('div', box, undefined, 'mlpipe-git');
      const commit = el('code', line, git.commit.slice(0, 10));
      commit.title = git.commit;
      el('span', line, ` on ${git.branch || '(detached)'}`);
      if (git.dirty) {
        el('span', line, ' uncommitted changes', 'mlpipe-dirty');
      }
    } else {
      el('div', box, 'not in a git repository', 'mlpipe-empty');
    }
    el('h3', box, 'Datasets', 'mlpipe-rv-title');
    this.drawLineage(box, run.datasets ?? { read: [], written: [] });
    const sent = run.notifications ?? [];
    if (sent.length) {
      el('h3', box, 'Notifications', 'mlpipe-rv-title');
      const list = el('ul', box, undefined, 'mlpipe-notification-list');
      for (const n of sent) {
        const item = el('li', list, undefined, `mlpipe-notification mlpipe-notification-${n.status}`);
        el('span', item, n.status === 'sent' ? '✓ ' : '✗ ', 'mlpipe-notification-mark');
        el('span', item, n.channel, 'mlpipe-notification-channel');
        const attempts = n.attempts === 1 ? '' : `, ${n.attempts} attempts`;
        el('span', item, ` (${n.source}${attempts})`, 'mlpipe-notification-source');
        if (n.error) {
          el('div', item, n.error, 'mlpipe-notification-error');
        }
        item.title = `${n.status} ${when(n.sent_at)}`;
      }
    }
    if (run.error && run.status !== 'running') {
      el('h3', box, 'Error', 'mlpipe-rv-title');
      el('pre', box, run.error, 'mlpipe-error');
    }
  }

  private drawLineage(box: HTMLElement, lineage: ILineage): void {
    const uses = [
      ...lineage.read.map(u => ({ direction: 'read', step: u.step, slot: u.input, ref: `${u.dataset}@v${u.version}`, dataset: u.dataset, version: u.version })),
      ...lineage.written.map(u => ({ direction: 'written', step: u.step, slot: u.output, ref: `${u.dataset}@v${u.version}`, dataset: u.dataset, version: u.version }))
    ];
    if (!uses.length) {
      el('div', box, 'no dataset read or written', 'mlpipe-empty');
      return;
    }
    const table = el('table', box, undefined, 'mlpipe-facts mlpipe-lineage');
    for (const use of uses) {
      const tr = el('tr', table, undefined, `mlpipe-dataset mlpipe-dataset-${use.direction}`);
      tr.dataset.dataset = use.ref;
      tr.dataset.direction = use.direction;
      const read = use.direction === 'read';
      el('th', tr, read ? 'read' : 'wrote').scope = 'row';
      const ref = el('td', tr, undefined, 'mlpipe-wrap');
      const code = el('code', ref, use.ref);
      const openDataset = this.host.openDataset?.bind(this.host);
      if (openDataset) {
        code.classList.add('mlpipe-link', 'mlpipe-dataset-link');
        activatable(code, `Show ${use.ref} in the datasets view`, () => openDataset(use.dataset, use.version));
      }
      el('span', ref, ` ${read ? '→' : '←'} ${use.step}.${use.slot}`, 'mlpipe-dataset-step');
      tr.title = read
        ? `step ${use.step} read ${use.ref} as its input ${use.slot}`
        : `output ${use.slot} of step ${use.step} became ${use.ref}`;
    }
  }

  /** The selected step: its actions, and Log / Output notebook / Details tabs. */
  private drawStep(): void {
    const box = this.stepBox;
    const run = this.current;
    const step = run?.steps.find(s => s.name === this.selected);
    this.stepShown = run && step ? JSON.stringify([run.id, step, this.tab]) : '';
    box.replaceChildren();
    if (!run || !step) {
      el('div', box, 'Select a step (in the graph or the table) for its log and output notebook.', 'mlpipe-empty mlpipe-rv-hint');
      this.closeLog();
      return;
    }
    box.dataset.step = step.name;
    const head = el('div', box, undefined, 'mlpipe-rv-stephead');
    el('h3', head, `Step ${step.name}`, 'mlpipe-rv-title');
    statusChip(head, `${step.reused ? '↺ ' : ''}${step.status}`).style.setProperty(
      '--mlpipe-chip-color', statusColor(step.status));
    const tools = el('div', head, undefined, 'mlpipe-rv-tools');
    button(tools, 'Re-run with downstream',
      `Start a new run that executes ${step.name} and every step downstream of it`,
      'mlpipe-rerun', () => void this.rerun(run, step));
    if (step.has_output || step.reused) {
      button(tools, 'Open output notebook', `Open the executed notebook of ${step.name} in a tab`,
        'mlpipe-open-output', () => void this.openOutput(run.id, step.name));
    }
    const tabs = el('div', box, undefined, 'mlpipe-tabs');
    tabs.setAttribute('role', 'tablist');
    const panel = el('div', box, undefined, 'mlpipe-tabpanel');
    panel.setAttribute('role', 'tabpanel');
    const names: [StepTab, string][] = [['log', 'Log'], ['output', 'Output notebook'], ['details', 'Details']];
    const buttons: HTMLButtonElement[] = [];
    for (const [tab, label] of names) {
      const b = el('button', tabs, label, `mlpipe-tab mlpipe-tab-${tab}`);
      b.type = 'button';
      b.setAttribute('role', 'tab');
      b.setAttribute('aria-selected', String(tab === this.tab));
      b.tabIndex = tab === this.tab ? 0 : -1;
      b.addEventListener('click', () => {
        this.tab = tab;
        this.drawStep();
        box.querySelector<HTMLButtonElement>(`.mlpipe-tab-${tab}`)?.focus();
      });
      buttons.push(b);
    }
    tabs.addEventListener('keydown', event => {
      const at = buttons.indexOf(document.activeElement as HTMLButtonElement);
      const move = event.key === 'ArrowRight' ? 1 : event.key === 'ArrowLeft' ? -1 : 0;
      if (at >= 0 && move) {
        event.preventDefault();
        buttons[(at + move + buttons.length) % buttons.length].click();
      }
    });
    panel.setAttribute('aria-label', names.find(([t]) => t === this.tab)![1]);
    if (this.tab === 'log') {
      const log = el('pre', panel, '', 'mlpipe-log');
      log.tabIndex = 0;
      log.setAttribute('aria-label', `Log of ${step.name}`);
      this.followLog(run.id, step.name, log);
    } else {
      this.closeLog();
      if (this.tab === 'output') {
        this.drawOutput(panel, run, step);
      } else {
        this.drawDetails(panel, step);
      }
    }
  }

  private drawDetails(panel: HTMLElement, step: IStep): void {
    const table = el('table', panel, undefined, 'mlpipe-facts mlpipe-step-facts');
    const rows: [string, string][] = [
      ['status', step.status],
      ['time', step.reused ? '' : seconds(step.duration)],
      [step.reused ? 'why reused' : 'why run', whyText(step)],
      ['run-if', step.run_if || ''],
      ['condition', step.condition || ''],
      ['condition result', step.condition_result || ''],
      ['receives', receivedText(step)],
      ['upstream', step.upstream.join(', ')],
      ['fingerprint', step.fingerprint || ''],
      ['attempts', step.attempts > 1 ? String(step.attempts) : ''],
      ['compute', step.compute || ''],
      ['metrics', Object.entries(step.metrics).map(([k, v]) => `${k}=${metricText(v)}`).join(', ')]
    ];
    for (const [key, value] of rows) {
      if (value) {
        const tr = el('tr', table);
        el('th', tr, key).scope = 'row';
        el('td', tr, value, 'mlpipe-wrap');
      }
    }
    if (step.reused && step.reused_from) {
      const source = step.reused_from;
      const tr = el('tr', table);
      el('th', tr, 'produced by').scope = 'row';
      const link = el('a', el('td', tr), `run ${source}`, 'mlpipe-link');
      activatable(link, `Open run ${source}`, () => this.host.openRun(source));
    }
    if (step.error) {
      el('pre', panel, step.error, 'mlpipe-error');
    }
  }

  private drawOutput(panel: HTMLElement, run: IRunDetail, step: IStep): void {
    if (!step.has_output && !step.reused) {
      el('div', panel, step.status === 'running' || step.status === 'queued'
        ? 'The output notebook appears when the step has run.'
        : 'This step left no output notebook.', 'mlpipe-empty');
      return;
    }
    const frame = el('iframe', panel, undefined, 'mlpipe-output-frame');
    frame.title = `Output notebook of ${step.name}`;
    frame.setAttribute('sandbox', 'allow-same-origin');
    void request<IOutputLink>(`runs/${enc(run.id)}/steps/${enc(step.name)}/output`).then(
      link => {
        frame.src = `${link.html_url}?theme=${isDarkTheme() ? 'dark' : 'light'}`;
      },
      error => {
        frame.remove();
        el('div', panel, String((error as Error).message), 'mlpipe-error');
      }
    );
  }

  /** The step's log, streamed while the step runs (kept across redraws of the same step). */
  private followLog(runId: string, step: string, box: HTMLPreElement): void {
    const key = `${runId}/${step}`;
    this.logBox = box;
    if (this.logFor === key && this.logText !== null) {
      box.textContent = this.logText;
      box.dataset.ended = String(this.logEnded);
      box.scrollTop = box.scrollHeight;
      return;
    }
    this.closeLog();
    this.logBox = box;
    this.logFor = key;
    this.logText = '';
    this.logEnded = false;
    this.stopLog = follow(`runs/${enc(runId)}/steps/${enc(step)}/log/stream`, (event, data) => {
      if (this.logFor !== key) {
        return;
      }
      if (event === 'log') {
        this.logText += data.text;
        if (this.logBox) {
          const atEnd = this.logBox.scrollTop + this.logBox.clientHeight >= this.logBox.scrollHeight - 4;
          this.logBox.textContent = this.logText;
          if (atEnd) {
            this.logBox.scrollTop = this.logBox.scrollHeight;
          }
        }
      } else if (event === 'end') {
        this.logEnded = true;
        if (this.logBox) {
          this.logBox.dataset.ended = 'true';
        }
      }
    });
  }

  private closeLog(): void {
    this.stopLog?.();
    this.stopLog = null;
    this.logFor = '';
    this.logText = null;
    this.logBox = null;
  }

  private async rerun(run: IRunDetail, step: IStep): Promise<void> {
    await this.act(
      post<{ run_id: string }>(`runs/${enc(run.id)}/steps/${enc(step.name)}/rerun`).then(started =>
        this.host.openRun(started.run_id)
      )
    );
  }

  private async openOutput(runId: string, step: string): Promise<void> {
    await this.act(
      request<IOutputLink>(`runs/${enc(runId)}/steps/${enc(step)}/output`).then(link => {
        if (link.openable && link.path) {
          this.host.openNotebook(link.path);
        } else {
          this.host.openHtml(link.html_url, `${step} (${runId})`);
        }
      })
    );
  }

  private async act(action: Promise<unknown>): Promise<void> {
    try {
      await action;
    } catch (error) {
      const message = error instanceof ApiError ? error.message : String(error);
      void showErrorMessage('mlpipe', message);
    }
  }

  private current: IRunDetail | null = null;
  private selected: string | null = null;
  private tab: StepTab = 'log';
  private headBox: HTMLDivElement;
  private factsBox: HTMLElement;
  private stepBox: HTMLElement;
  private errorBox: HTMLDivElement;
  private dag: DagView;
  private table: StepTable;
  /** Events may have been missed while the stream was down: read the server again. */
  private onReconnected(): void {
    this.refresher.request();
  }

  // read the server once per burst of events
  private refresher = new BurstRefresh(() => void this.refresh(), 150, () => !this.isDisposed);
  private stepShown: string | null = null;
  private themeWatch: MutationObserver;
  private stopLog: (() => void) | null = null;
  private logFor = '';
  private logText: string | null = null;
  private logEnded = false;
  private logBox: HTMLPreElement | null = null;
}
