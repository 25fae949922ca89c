// The mlpipe sidebar: runs with live status; a run's DAG, steps, logs, re-run and cancel.
// Everything shown comes from the REST API; changes are pushed by the server's event stream.
import { showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  enc,
  follow,
  IOutputLink,
  IPublished,
  IRunDetail,
  IRunSummary,
  ISchedule,
  IStep,
  parameterText,
  post,
  request
} from './api';
import { COLORS, drawDag, receivedText, seconds } from './dag';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  parent: HTMLElement | null,
  text?: string,
  className?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined) {
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

function when(timestamp: number): string {
  return new Date(timestamp * 1000).toLocaleString();
}

/** What the panel asks of JupyterLab (given by the plugin). */
export interface IPanelHost {
  openNotebook(path: string): void;
  openHtml(url: string, title: string): void;
}

export class MlpipePanel extends Widget {
  constructor(private host: IPanelHost) {
    super();
    this.id = 'mlpipe-panel';
    this.addClass('mlpipe-panel');
    this.title.caption = 'mlpipe pipelines';
    this.listBox = el('div', this.node, undefined, 'mlpipe-runs');
    this.publishedBox = el('div', this.node, undefined, 'mlpipe-published');
    this.detailBox = el('div', this.node, undefined, 'mlpipe-run-detail');
  }

  private listBox: HTMLDivElement;
  private publishedBox: HTMLDivElement;
  private published: IPublished[] = [];
  private schedules: ISchedule[] = [];
  private detailBox: HTMLDivElement;
  private runs: IRunSummary[] = [];
  private current: IRunDetail | null = null;
  private selectedStep: string | null = null;
  private stopEvents: (() => void) | null = null;
  private stopLog: (() => void) | null = null;
  private logFor = '';

  protected onAfterAttach(): void {
    this.startFollowing();
  }

  protected onBeforeDetach(): void {
    this.stopEvents?.();
    this.stopEvents = null;
  }

  /** Reload the list and follow the server's change events (reconnecting if dropped). */
  private startFollowing(): void {
    this.stopEvents?.();
    void this.refreshList();
    void this.refreshPublished();
    this.stopEvents = follow(
      'events',
      (event, data) => {
        if (event === 'run') {
          this.onRunChanged(data as IRunSummary);
        }
      },
      () => {
        // the server went away or restarted: try again in a while
        window.setTimeout(() => {
          if (this.isAttached) {
            this.startFollowing();
          }
        }, 3000);
      }
    );
  }

  /** Show a run (and select it in the list). */
  async showRun(runId: string): Promise<void> {
    try {
      this.current = await request<IRunDetail>(`runs/${enc(runId)}`);
    } catch (error) {
      this.detailBox.replaceChildren();
      el('div', this.detailBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    if (this.selectedStep && !this.current.steps.some(s => s.name === this.selectedStep)) {
      this.selectedStep = null;
    }
    this.drawList();
    this.drawDetail();
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
    if (this.current && this.current.id === summary.id) {
      void this.showRun(summary.id);
    }
  }

  private drawList(): void {
    this.listBox.replaceChildren();
    const head = el('div', this.listBox, undefined, 'mlpipe-head');
    el('span', head, 'Pipeline runs', 'mlpipe-title');
    const reload = el('button', head, '⟳', 'mlpipe-button');
    reload.title = 'Reload the runs';
    reload.onclick = () => void this.refreshList();
    if (!this.runs.length) {
      el('div', this.listBox, 'No runs yet: use "Run as pipeline" on a notebook.', 'mlpipe-empty');
      return;
    }
    const list = el('ul', this.listBox, undefined, 'mlpipe-run-list');
    for (const run of this.runs) {
      const item = el('li', list, undefined, 'mlpipe-run-item');
      item.dataset.runId = run.id;
      item.dataset.status = run.status;
      if (this.current && this.current.id === run.id) {
        item.classList.add('mlpipe-selected');
      }
      const dot = el('span', item, '●', 'mlpipe-dot');
      dot.style.color = COLORS[run.status] || '#9e9e9e';
      el('span', item, run.notebook.split('/').pop() || run.notebook, 'mlpipe-run-name');
      el('span', item, run.status, 'mlpipe-run-status');
      el('span', item, seconds(run.duration), 'mlpipe-run-time');
      item.title = `${run.id}\n${run.notebook}\nstarted ${when(run.created_at)}`;
      item.onclick = () => void this.showRun(run.id);
    }
  }

  /** Published pipelines and schedules (the "Published" section). */
  async refreshPublished(): Promise<void> {
    try {
      const [published, schedules] = await Promise.all([
        request<{ published: IPublished[] }>('published'),
        request<{ schedules: ISchedule[] }>('schedules')
      ]);
      this.published = published.published;
      this.schedules = schedules.schedules;
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
    const reload = el('button', head, '⟳', 'mlpipe-button');
    reload.title = 'Reload published pipelines and schedules';
    reload.onclick = () => void this.refreshPublished();
    if (!this.published.length) {
      el('div', this.publishedBox, 'Nothing published: `mlpipe publish NOTEBOOK --name NAME`.', 'mlpipe-empty');
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
      const next = schedule.paused
        ? 'paused'
        : schedule.next_fire_times.length
          ? new Date(schedule.next_fire_times[0]).toLocaleString()
          : schedule.trigger;
      el('td', tr, next, 'mlpipe-schedule-next');
      const last = schedule.last_firing;
      const lastText = last ? last.run_status || last.status : '—';
      const lastCell = el('td', tr, lastText, 'mlpipe-schedule-last');
      if (last) {
        lastCell.style.color = COLORS[lastText] || '';
        lastCell.title = `${last.fire_time}${last.run_id ? ' run ' + last.run_id : ''}${last.error ? '\n' + last.error : ''}`;
        if (last.run_id) {
          const runId = last.run_id;
          lastCell.style.cursor = 'pointer';
          lastCell.onclick = () => void this.showRun(runId);
        }
      }
      const action = schedule.paused ? 'resume' : 'pause';
      const button = el('button', el('td', tr), schedule.paused ? 'Resume' : 'Pause',
        `mlpipe-button mlpipe-schedule-${action}`);
      button.onclick = () =>
        void this.act(
          post<ISchedule>(`schedules/${enc(schedule.name)}/${action}`).then(() =>
            this.refreshPublished()
          )
        );
    }
  }

  private drawDetail(): void {
    const run = this.current;
    this.detailBox.replaceChildren();
    if (!run) {
      return;
    }
    const head = el('div', this.detailBox, undefined, 'mlpipe-head');
    el('span', head, `${run.id} — `, 'mlpipe-run-id');
    el('span', head, run.status, `mlpipe-run-state mlpipe-status-${run.status}`);
    if (run.status === 'running') {
      const cancel = el('button', head, 'Cancel', 'mlpipe-button mlpipe-cancel');
      cancel.onclick = () => void this.act(post(`runs/${enc(run.id)}/cancel`));
    }
    const facts = el('table', this.detailBox, undefined, 'mlpipe-facts');
    const git = run.git as { commit?: string; branch?: string; dirty?: boolean };
    const rows: [string, string][] = [
      ['notebook', run.notebook],
      ['started', when(run.created_at)],
      ['time', seconds(run.duration)],
      // as `-p` texts (flag=False, shape=(1, 2)); JSON for servers without param_texts
      ['parameters', Object.keys(run.params).map(k => `${k}=${parameterText(k, run.params, run.param_texts)}`).join(', ')],
      ['git', git.commit ? `${git.commit.slice(0, 10)} on ${git.branch}${git.dirty ? ' (dirty)' : ''}` : '']
    ];
    for (const [key, value] of rows) {
      if (value) {
        const tr = el('tr', facts);
        el('th', tr, key);
        el('td', tr, value);
      }
    }
    const graphBox = el('div', this.detailBox, undefined, 'mlpipe-graph-box');
    graphBox.appendChild(
      drawDag(run.steps, this.selectedStep, name => {
        this.selectedStep = this.selectedStep === name ? null : name;
        this.drawDetail();
      })
    );
    const step = run.steps.find(s => s.name === this.selectedStep);
    if (step) {
      this.drawStep(run, step);
    } else {
      this.closeLog();
    }
    if (run.error && run.status !== 'running') {
      el('pre', this.detailBox, run.error, 'mlpipe-error');
    }
    this.drawNotifications(run);
  }

  /** The run's notifications: channel, sent or failed, attempts, error. */
  private drawNotifications(run: IRunDetail): void {
    const sent = run.notifications ?? [];
    if (sent.length === 0) {
      return;
    }
    const box = el('div', this.detailBox, undefined, 'mlpipe-notifications');
    el('div', box, 'Notifications', 'mlpipe-subhead');
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

  private drawStep(run: IRunDetail, step: IStep): void {
    const box = el('div', this.detailBox, undefined, 'mlpipe-step-detail');
    box.dataset.step = step.name;
    el('strong', box, `${step.name}: ${step.status}`);
    const table = el('table', box, undefined, 'mlpipe-facts');
    const rows: [string, string][] = [
      ['time', step.reused ? '' : seconds(step.duration)],
      ['reused from run', step.reused ? step.reused_from || '?' : ''],
      [step.reused ? 'why reused' : 'why run', (step.decision || '').split('\n')[0]],
      ['run-if', step.run_if || ''],
      ['condition', step.condition || ''],
      ['condition result', step.condition_result || ''],
      ['receives', receivedText(step)],
      ['fingerprint', (step.fingerprint || '').slice(0, 16)],
      ['attempts', step.attempts > 1 ? String(step.attempts) : ''],
      ['metrics', Object.entries(step.metrics).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')]
    ];
    for (const [key, value] of rows) {
      if (value) {
        const tr = el('tr', table);
        el('th', tr, key);
        el('td', tr, value);
      }
    }
    if (step.error) {
      el('pre', box, step.error, 'mlpipe-error');
    }
    const buttons = el('div', box, undefined, 'mlpipe-buttons');
    const rerun = el('button', buttons, 'Re-run with downstream', 'mlpipe-button mlpipe-rerun');
    rerun.onclick = () =>
      void this.act(
        post<{ run_id: string }>(`runs/${enc(run.id)}/steps/${enc(step.name)}/rerun`).then(
          started => this.showRun(started.run_id)
        )
      );
    if (step.has_output || step.reused) {
      const open = el('button', buttons, 'Open output notebook', 'mlpipe-button mlpipe-open-output');
      open.onclick = () => void this.openOutput(run.id, step.name);
    }
    const logBox = el('pre', box, '', 'mlpipe-log');
    this.followLog(run.id, step.name, logBox);
  }

  /** The step's log, streamed while the step runs (kept across redraws of the same step). */
  private followLog(runId: string, step: string, box: HTMLPreElement): void {
    const key = `${runId}/${step}`;
    if (this.logFor === key && this.logText !== null) {
      box.textContent = this.logText;
      this.logBox = box;
      box.scrollTop = box.scrollHeight;
      return;
    }
    this.closeLog();
    this.logFor = key;
    this.logText = '';
    this.logBox = box;
    this.stopLog = follow(`runs/${enc(runId)}/steps/${enc(step)}/log/stream`, (event, data) => {
      if (event === 'log' && this.logFor === key) {
        this.logText += data.text;
        if (this.logBox) {
          this.logBox.textContent = this.logText;
          this.logBox.scrollTop = this.logBox.scrollHeight;
        }
      } else if (event === 'end' && this.logFor === key && this.logBox) {
        this.logBox.dataset.ended = 'true';
      }
    });
  }

  private logText: string | null = null;
  private logBox: HTMLPreElement | null = null;

  private closeLog(): void {
    this.stopLog?.();
    this.stopLog = null;
    this.logFor = '';
    this.logText = null;
    this.logBox = null;
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
}
