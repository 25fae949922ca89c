// The mlpipe sidebar: a compact list of runs with live status (click one to open it in
// the main area, see runview.ts; tick two or more, or ctrl-click them, to compare them, see
// compare.ts), the parameter sweeps (see sweepview.ts), and the published pipelines with
// their schedules.
// Everything shown comes from the REST API; changes are pushed by the server's event stream.
import { showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { ApiError, enc, fetchPublished, IPublished, IRunSummary, ISchedule, ISweepSummary, post, request } from './api';
import { ensureDagStyle, seconds, statusColor } from './dag';
import { activatable, button, el, when } from './dom';
import { RunEvents } from './events';

/** What the panel asks of JupyterLab (given by the plugin). */
export interface IPanelHost {
  /** Open the run's view in the main area (or activate it when it is open). */
  openRun(runId: string): void;
  /** Open the runs side by side (the first is the baseline). */
  compareRuns(runIds: string[]): void;
  /** Open the sweep's view in the main area. */
  openSweep(sweepId: string): void;
  /** Open the published pipelines and schedules view (at a pipeline). */
  openPublished?(name?: string): void;
  /** Open the datasets view. */
  openDatasets?(): void;
}

export class MlpipePanel extends Widget {
  constructor(
    private host: IPanelHost,
    events: RunEvents
  ) {
    super();
    this.id = 'mlpipe-panel';
    this.addClass('mlpipe-panel');
    this.title.caption = 'mlpipe pipelines';
    ensureDagStyle(document.head); // the status colours
    this.listBox = el('div', this.node, undefined, 'mlpipe-runs');
    this.sweepsBox = el('div', this.node, undefined, 'mlpipe-sweeps');
    this.publishedBox = el('div', this.node, undefined, 'mlpipe-published');
    const datasets = el('div', this.node, undefined, 'mlpipe-head mlpipe-datasets-head');
    el('span', datasets, 'Datasets', 'mlpipe-title');
    if (host.openDatasets) {
      const open = host.openDatasets.bind(host);
      button(datasets, 'Open', 'Open the datasets view: versions, producers, previews',
        'mlpipe-open-datasets', () => open());
    }
    events.runChanged.connect((_, summary) => this.onRunChanged(summary));
    events.connected.connect(() => {
      void this.refreshList();
      void this.refreshSweeps();
      void this.refreshPublished();
    });
  }

  private listBox: HTMLDivElement;
  private sweepsBox: HTMLDivElement;
  private sweeps: ISweepSummary[] = [];
  private sweepsPending = false;
  /** The runs ticked for a comparison, in the order they were ticked. */
  private picked: string[] = [];
  private publishedBox: HTMLDivElement;
  private published: IPublished[] = [];
  private schedules: ISchedule[] = [];
  private runs: IRunSummary[] = [];
  private active: string | null = null;

  /** Mark the run whose view is the current main-area tab (null: none is). */
  setActiveRun(runId: string | null): void {
    if (runId !== this.active) {
      this.active = runId;
      this.drawList();
    }
  }

  async refreshList(): Promise<void> {
    try {
      const page = await request<{ runs: IRunSummary[] }>('runs?limit=50');
      this.runs = page.runs;
    } catch (error) {
      this.listBox.replaceChildren();
      el('div', this.listBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    this.drawList();
  }

  private onRunChanged(summary: IRunSummary): void {
    const index = this.runs.findIndex(r => r.id === summary.id);
    if (index >= 0) {
      this.runs[index] = summary;
    } else {
      this.runs.unshift(summary);
    }
    this.drawList();
    void this.refreshPublished(); // a schedule's last run may be this one
    if (summary.sweep) {
      this.scheduleSweeps(); // its sweep's counts and status
    }
  }

  private drawList(): void {
    // a re-render (a run started or ended, a tick) keeps the keyboard focus where it was:
    // on the same run's row, or on its checkbox
    const active = document.activeElement as HTMLElement | null;
    const focused = active?.dataset?.runId;
    const onCheck = !!active?.classList.contains('mlpipe-run-check');
    this.listBox.replaceChildren();
    const head = el('div', this.listBox, undefined, 'mlpipe-head');
    el('span', head, 'Pipeline runs', 'mlpipe-title');
    button(head, '⟳', 'Reload the runs', 'mlpipe-reload', () => void this.refreshList());
    if (!this.runs.length) {
      el('div', this.listBox, 'No runs yet: use "Run as pipeline" on a notebook.', 'mlpipe-empty');
      return;
    }
    this.picked = this.picked.filter(id => this.runs.some(r => r.id === id));
    if (this.picked.length) {
      const bar = el('div', this.listBox, undefined, 'mlpipe-compare-bar');
      bar.setAttribute('role', 'group');
      bar.setAttribute('aria-label', 'Runs selected for comparison');
      el('span', bar, `${this.picked.length} selected`, 'mlpipe-compare-count');
      const compare = button(bar, 'Compare', this.picked.length < 2
        ? 'Select one more run to compare'
        : `Compare the ${this.picked.length} selected runs side by side`, 'mlpipe-compare', () =>
        this.host.compareRuns([...this.picked]));
      compare.disabled = this.picked.length < 2;
      button(bar, 'Clear', 'Clear the selection', 'mlpipe-compare-clear', () => {
        this.picked = [];
        this.drawList();
      });
    }
    const list = el('ul', this.listBox, undefined, 'mlpipe-run-list');
    list.setAttribute('aria-label', 'Pipeline runs, newest first; tick runs (or ctrl-click them) to compare');
    for (const run of this.runs) {
      const item = el('li', list, undefined, 'mlpipe-run-item');
      item.dataset.runId = run.id;
      item.dataset.status = run.status;
      const name = run.notebook.split('/').pop() || run.notebook;
      if (this.active === run.id) {
        item.classList.add('mlpipe-selected');
        item.setAttribute('aria-current', 'true');
      }
      const top = el('div', item, undefined, 'mlpipe-run-line');
      const ticked = this.picked.includes(run.id);
      item.classList.toggle('mlpipe-picked', ticked);
      const check = el('input', top, undefined, 'mlpipe-run-check');
      check.type = 'checkbox';
      check.checked = ticked;
      check.dataset.runId = run.id;
      check.setAttribute('aria-label', `Select run ${run.id} of ${name} for comparison`);
      check.title = 'Select for comparison';
      check.addEventListener('click', event => event.stopPropagation()); // not "open"
      check.addEventListener('keydown', event => event.stopPropagation()); // Space ticks it
      check.addEventListener('change', () => this.pick(run.id, check.checked));
      el('span', top, '●', 'mlpipe-dot').style.color = statusColor(run.status);
      el('span', top, name, 'mlpipe-run-name');
      el('span', top, seconds(run.duration), 'mlpipe-run-time');
      const bottom = el('div', item, undefined, 'mlpipe-run-line mlpipe-run-sub');
      el('span', bottom, run.id, 'mlpipe-run-id');
      el('span', bottom, run.status, `mlpipe-run-status mlpipe-status-${run.status}`);
      item.title = `${run.id}\n${run.notebook}\nstarted ${when(run.created_at)}`;
      activatable(item, `Open run ${run.id} of ${name}: ${run.status}`, () => {
        this.setActiveRun(run.id);
        this.host.openRun(run.id);
      });
      // ctrl-click (cmd-click) ticks the run for a comparison instead of opening it
      item.addEventListener('click', event => {
        if (event.ctrlKey || event.metaKey) {
          event.stopImmediatePropagation();
          this.pick(run.id, !this.picked.includes(run.id));
        }
      }, { capture: true });
      if (focused === run.id) {
        (onCheck ? check : item).focus();
      }
    }
  }

  /** Tick (or untick) a run for a comparison. */
  private pick(runId: string, on: boolean): void {
    this.picked = this.picked.filter(id => id !== runId);
    if (on) {
      this.picked.push(runId);
    }
    this.drawList();
  }

  /** The parameter sweeps (the "Sweeps" section). */
  async refreshSweeps(): Promise<void> {
    try {
      this.sweeps = (await request<{ sweeps: ISweepSummary[] }>('sweeps?limit=20')).sweeps;
    } catch (error) {
      this.sweepsBox.replaceChildren();
      el('div', this.sweepsBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    this.drawSweeps();
  }

  /** Members change in bursts: read the sweeps once per burst. */
  private scheduleSweeps(): void {
    if (this.sweepsPending) {
      return;
    }
    this.sweepsPending = true;
    window.setTimeout(() => {
      this.sweepsPending = false;
      void this.refreshSweeps();
    }, 500);
  }

  private drawSweeps(): void {
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.sweepId;
    this.sweepsBox.replaceChildren();
    const head = el('div', this.sweepsBox, undefined, 'mlpipe-head');
    el('span', head, 'Sweeps', 'mlpipe-title');
    button(head, '⟳', 'Reload the sweeps', 'mlpipe-reload', () => void this.refreshSweeps());
    if (!this.sweeps.length) {
      el('div', this.sweepsBox, 'No sweeps: `mlpipe run NOTEBOOK --sweep NAME=V1,V2`.', 'mlpipe-empty');
      return;
    }
    const list = el('ul', this.sweepsBox, undefined, 'mlpipe-run-list mlpipe-sweep-list');
    list.setAttribute('aria-label', 'Parameter sweeps, newest first');
    for (const sweep of this.sweeps) {
      const item = el('li', list, undefined, 'mlpipe-run-item mlpipe-sweep-item');
      item.dataset.sweepId = sweep.id;
      item.dataset.status = sweep.status;
      const name = sweep.notebook.split('/').pop() || sweep.notebook;
      const top = el('div', item, undefined, 'mlpipe-run-line');
      el('span', top, '●', 'mlpipe-dot').style.color = statusColor(sweep.status);
      el('span', top, name, 'mlpipe-run-name');
      el('span', top, `${sweep.members} runs`, 'mlpipe-run-time');
      const bottom = el('div', item, undefined, 'mlpipe-run-line mlpipe-run-sub');
      el('span', bottom, sweep.id, 'mlpipe-run-id');
      el('span', bottom, sweep.status, `mlpipe-run-status mlpipe-status-${sweep.status}`);
      const counts = Object.entries(sweep.counts).map(([s, n]) => `${n} ${s}`).join(', ');
      item.title = `${sweep.id}\n${sweep.notebook}\nswept: ${(sweep.spec.sweep ?? []).join(' ')}\n` +
        `${counts}\nstarted ${when(sweep.created_at)}`;
      activatable(item, `Open sweep ${sweep.id} of ${name}: ${sweep.members} runs, ${sweep.status}`,
        () => this.host.openSweep(sweep.id));
      if (focused === sweep.id) {
        item.focus();
      }
    }
  }

  /** Published pipelines and schedules (the "Published" section). */
  async refreshPublished(): Promise<void> {
    try {
      ({ published: this.published, schedules: this.schedules } = await fetchPublished());
    } catch (error) {
      this.publishedBox.replaceChildren();
      el('div', this.publishedBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    this.drawPublished();
  }

  private drawPublished(): void {
    this.publishedBox.replaceChildren();
    const head = el('div', this.publishedBox, undefined, 'mlpipe-head');
    el('span', head, 'Published', 'mlpipe-title');
    if (this.host.openPublished) {
      const open = this.host.openPublished.bind(this.host);
      button(head, 'Manage', 'Open published pipelines and schedules: trigger, create and edit schedules',
        'mlpipe-open-published', () => open());
    }
    button(head, '⟳', 'Reload published pipelines and schedules', 'mlpipe-reload', () => void this.refreshPublished());
    if (!this.published.length) {
      el('div', this.publishedBox, 'Nothing published: a notebook\'s Publish button (or `mlpipe publish NOTEBOOK --name NAME`).', 'mlpipe-empty');
      return;
    }
    const list = el('ul', this.publishedBox, undefined, 'mlpipe-published-list');
    for (const pipeline of this.published) {
      const item = el('li', list, undefined, 'mlpipe-published-item');
      item.dataset.name = pipeline.name;
      el('span', item, pipeline.name, 'mlpipe-run-name');
      const current = pipeline.versions.find(v => v.default);
      const note = current ? `v${current.version}${current.disabled ? ' (disabled)' : ''}` : '';
      el('span', item, note, 'mlpipe-run-time');
      item.title = `${pipeline.versions.length} version(s); default ${note || 'none'}` +
        (current?.description ? `\n${current.description}` : '');
      if (this.host.openPublished) {
        const open = this.host.openPublished.bind(this.host);
        item.classList.add('mlpipe-clickable');
        activatable(item, `Open published pipeline ${pipeline.name}: ${item.title}`, () => open(pipeline.name));
      }
    }
    if (!this.schedules.length) {
      return;
    }
    const table = el('table', this.publishedBox, undefined, 'mlpipe-schedules');
    const header = el('tr', table);
    for (const title of ['schedule', 'next', 'last run', '']) {
      el('th', header, title);
    }
    for (const schedule of this.schedules) {
      const tr = el('tr', table, undefined, 'mlpipe-schedule');
      tr.dataset.schedule = schedule.name;
      tr.dataset.paused = String(schedule.paused);
      const name = el('td', tr, schedule.name, 'mlpipe-schedule-name');
      name.title = `${schedule.pipeline}${schedule.version ? '@v' + schedule.version : ''}: ${schedule.trigger}`;
      // compact: the sidebar is ~250 px wide (the published view has the full times)
      const next = schedule.paused
        ? 'paused'
        : schedule.next_fire_times.length
          ? new Date(schedule.next_fire_times[0]).toLocaleString([], {
              month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit'
            })
          : schedule.trigger;
      el('td', tr, next, 'mlpipe-schedule-next');
      const last = schedule.last_firing;
      const lastText = last ? last.run_status || last.status : '—';
      const lastCell = el('td', tr, lastText, 'mlpipe-schedule-last');
      if (last) {
        lastCell.style.color = statusColor(lastText);
        lastCell.title = `${last.fire_time}${last.run_id ? ' run ' + last.run_id : ''}${last.error ? '\n' + last.error : ''}`;
        if (last.run_id) {
          const runId = last.run_id;
          lastCell.style.cursor = 'pointer';
          activatable(lastCell, `Open run ${runId}`, () => this.host.openRun(runId));
        }
      }
      const action = schedule.paused ? 'resume' : 'pause';
      button(el('td', tr), schedule.paused ? 'Resume' : 'Pause',
        `${schedule.paused ? 'Resume' : 'Pause'} schedule ${schedule.name}`,
        `mlpipe-schedule-${action}`, () =>
          void this.act(
            post<ISchedule>(`schedules/${enc(schedule.name)}/${action}`).then(() =>
              this.refreshPublished()
            )
          ));
    }
  }

  private async act(action: Promise<unknown>): Promise<void> {
    try {
      await action;
    } catch (error) {
      const message = error instanceof ApiError ? error.message : String(error);
      void showErrorMessage('mlpipe', message);
    }
  }
}
