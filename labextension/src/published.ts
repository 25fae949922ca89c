// Published pipelines in the main area: each pipeline with its versions (default and
// disabled marked; Trigger and Schedule per version) and every schedule with its next
// fire times and last firing (Edit, Pause or Resume, Delete). New and edited schedules are
// made in a form beside the tables (scheduleform.ts). Everything comes from the REST API;
// the server's run events say when to read it again.
import { Dialog, Notification, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  del,
  enc,
  fetchPublished,
  IPublished,
  IPublishedVersionDetail,
  IRunSummary,
  ISchedule,
  post
} from './api';
import { ensureDagStyle, statusColor } from './dag';
import { activatable, BurstRefresh, button, el, when } from './dom';
import { RunEvents } from './events';
import { triggerVersion } from './publish';
import { statusChip } from './runview';
import { ScheduleForm } from './scheduleform';

/** What the view asks of JupyterLab (given by the plugin). */
export interface IPublishedViewHost {
  openRun(runId: string): void;
  /** A triggered run: open it once it is recorded. */
  openTriggered(runId: string): void;
}

function fireTime(iso: string): string {
  return new Date(iso).toLocaleString(undefined, {
    weekday: 'short', year: 'numeric', month: 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit', second: '2-digit'
  });
}

export class PublishedView extends Widget {
  constructor(
    private events: RunEvents,
    private host: IPublishedViewHost
  ) {
    super();
    this.id = 'mlpipe-published-view';
    this.addClass('mlpipe-pubview');
    this.addClass('mlpipe-dag'); // the status colours
    ensureDagStyle(document.head);
    this.title.label = 'Published pipelines';
    this.title.caption = 'mlpipe: published pipelines and schedules';
    this.title.closable = true;
    const head = el('div', this.node, undefined, 'mlpipe-rv-head');
    el('h2', head, 'Published pipelines and schedules', 'mlpipe-rv-notebook');
    const tools = el('div', head, undefined, 'mlpipe-rv-tools');
    button(tools, 'New schedule…', 'Create a schedule of a published pipeline',
      'mlpipe-new-schedule', () => this.openForm(null));
    button(tools, '⟳', 'Reload published pipelines and schedules', 'mlpipe-reload',
      () => void this.refresh());
    const body = el('div', this.node, undefined, 'mlpipe-pv-body');
    const main = el('div', body, undefined, 'mlpipe-pv-main');
    this.errorBox = el('div', main, undefined, 'mlpipe-rv-error');
    this.pipelinesBox = el('section', main, undefined, 'mlpipe-pv-pipelines');
    this.pipelinesBox.setAttribute('aria-label', 'Published pipelines');
    this.schedulesBox = el('section', main, undefined, 'mlpipe-pv-schedules');
    this.schedulesBox.setAttribute('aria-label', 'Schedules');
    this.formBox = el('aside', body, undefined, 'mlpipe-pv-form');
    this.formBox.hidden = true;
    this.events.runChanged.connect(this.onRunChanged, this);
    this.events.connected.connect(this.onReconnected, this);
  }

  /** Read the published pipelines and schedules again and redraw. */
  async refresh(): Promise<void> {
    try {
      ({ published: this.published, schedules: this.schedules } = await fetchPublished());
    } catch (error) {
      this.errorBox.replaceChildren();
      el('div', this.errorBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    this.errorBox.replaceChildren();
    this.drawPipelines();
    this.drawSchedules();
  }

  /** Bring a pipeline into view (and focus its first button). */
  reveal(name: string): void {
    const card = this.pipelinesBox.querySelector<HTMLElement>(`.mlpipe-pv-pipeline[data-name="${CSS.escape(name)}"]`);
    if (card) {
      card.scrollIntoView({ block: 'nearest' });
      card.querySelector<HTMLElement>('button')?.focus();
    }
  }

  /** Open the schedule form: a new schedule (of `preset`), or an edit of `schedule`. */
  openForm(schedule: ISchedule | null, preset: { pipeline?: string; version?: number | null } = {}): void {
    if (!this.published.length) {
      void showErrorMessage('mlpipe', 'Nothing is published yet: publish a notebook first ' +
        '(its toolbar\'s Publish button).');
      return;
    }
    this.form?.dispose();
    this.form = new ScheduleForm(this.published, {
      saved: (saved, created) => {
        this.closeForm();
        Notification.success(`${created ? 'Created' : 'Replaced'} schedule ${saved.name}`, { autoClose: 4000 });
        void this.refresh();
      },
      canceled: () => this.closeForm()
    }, schedule, preset);
    this.formBox.replaceChildren(this.form.node);
    this.formBox.hidden = false;
    this.node.classList.add('mlpipe-pv-with-form');
    this.form.focusFirst();
  }

  private closeForm(): void {
    this.form?.dispose();
    this.form = null;
    this.formBox.replaceChildren();
    this.formBox.hidden = true;
    this.node.classList.remove('mlpipe-pv-with-form');
    this.node.querySelector<HTMLElement>('.mlpipe-new-schedule')?.focus();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.events.runChanged.disconnect(this.onRunChanged, this);
    this.events.connected.disconnect(this.onReconnected, this);
    this.form?.dispose();
    super.dispose();
  }

  private onRunChanged(_: RunEvents, summary: IRunSummary): void {
    void summary;
    this.refresher.request(); // a schedule's last firing (and next fire times) may have moved on
  }


  private drawPipelines(): void {
    const box = this.pipelinesBox;
    box.replaceChildren();
    el('h3', box, 'Pipelines', 'mlpipe-rv-title');
    if (!this.published.length) {
      el('div', box, 'Nothing published yet: open a notebook and use its toolbar\'s Publish ' +
        'button (or `mlpipe publish NOTEBOOK --name NAME`).', 'mlpipe-empty');
      return;
    }
    for (const pipeline of this.published) {
      const card = el('div', box, undefined, 'mlpipe-pv-pipeline');
      card.dataset.name = pipeline.name;
      const head = el('div', card, undefined, 'mlpipe-pv-pipeline-head');
      el('h4', head, pipeline.name, 'mlpipe-pv-name');
      const current = pipeline.versions.find(v => v.default);
      el('span', head, current ? `default v${current.version}` : 'no default version', 'mlpipe-rv-key');
      const table = el('table', card, undefined, 'mlpipe-grid mlpipe-versions');
      table.setAttribute('aria-label', `Versions of ${pipeline.name}`);
      const header = el('tr', el('thead', table));
      for (const title of ['Version', 'Published', 'Description', 'Parameters', 'State', '']) {
        el('th', header, title).scope = 'col';
      }
      const rows = el('tbody', table);
      for (const version of [...pipeline.versions].reverse() as IPublishedVersionDetail[]) {
        const tr = el('tr', rows, undefined, 'mlpipe-version');
        tr.dataset.version = String(version.version);
        tr.dataset.disabled = String(version.disabled);
        el('td', tr, `v${version.version}`, 'mlpipe-version-number');
        el('td', tr, when(version.created_at), 'mlpipe-nowrap');
        el('td', tr, version.description || '', 'mlpipe-wrap');
        const params = version.parameter_texts ?? {};
        el('td', tr, Object.entries(params).map(([k, v]) => `${k}=${v}`).join(', '),
          'mlpipe-code mlpipe-break');
        const state = el('td', tr);
        if (version.default) {
          statusChip(state, 'default', 'mlpipe-default-chip').style.setProperty(
            '--mlpipe-chip-color', 'var(--jp-brand-color1)');
        }
        if (version.disabled) {
          statusChip(state, 'disabled').style.setProperty('--mlpipe-chip-color', 'var(--jp-warn-color1)');
        }
        const actions = el('td', tr, undefined, 'mlpipe-actions');
        const trigger = button(actions, 'Trigger…', `Trigger ${version.ref} with parameters`,
          'mlpipe-trigger', () => void this.trigger(version));
        trigger.disabled = version.disabled;
        button(actions, 'Schedule…', `Create a schedule of ${version.ref}`, 'mlpipe-schedule-version',
          () => this.openForm(null, { pipeline: pipeline.name, version: version.default ? null : version.version }));
      }
    }
  }

  private drawSchedules(): void {
    const box = this.schedulesBox;
    box.replaceChildren();
    el('h3', box, 'Schedules', 'mlpipe-rv-title');
    if (!this.schedules.length) {
      el('div', box, 'No schedules: "New schedule…" makes one.', 'mlpipe-empty');
      return;
    }
    const table = el('table', box, undefined, 'mlpipe-grid mlpipe-schedule-table');
    table.setAttribute('aria-label', 'Schedules');
    const header = el('tr', el('thead', table));
    for (const title of ['Schedule', 'Pipeline', 'Trigger', 'Next fire times', 'Last firing', '']) {
      el('th', header, title).scope = 'col';
    }
    const rows = el('tbody', table);
    for (const schedule of this.schedules) {
      const tr = el('tr', rows, undefined, 'mlpipe-schedule-row');
      tr.dataset.schedule = schedule.name;
      tr.dataset.paused = String(schedule.paused);
      const name = el('td', tr, undefined, 'mlpipe-wrap');
      el('div', name, schedule.name, 'mlpipe-pv-name');
      if (schedule.paused) {
        statusChip(name, 'paused').style.setProperty('--mlpipe-chip-color', 'var(--jp-warn-color1)');
      }
      el('td', tr, `${schedule.pipeline}${schedule.version ? '@v' + schedule.version : ' (default)'}`,
        'mlpipe-wrap');
      const trigger = el('td', tr, undefined, 'mlpipe-wrap');
      el('div', trigger, schedule.trigger);
      const params = Object.entries(schedule.params ?? {}).map(([k, v]) => `${k}=${v}`).join(', ');
      if (params) {
        el('div', trigger, params, 'mlpipe-rv-key mlpipe-code');
      }
      const next = el('td', tr, undefined, 'mlpipe-next-times');
      if (schedule.paused) {
        el('div', next, 'paused', 'mlpipe-empty');
      } else if (!schedule.next_fire_times.length) {
        el('div', next, schedule.kind === 'dataset' ? 'on a new version' : '—', 'mlpipe-empty');
      }
      for (const time of schedule.paused ? [] : schedule.next_fire_times) {
        const item = el('div', next, fireTime(time), 'mlpipe-next-time');
        item.title = `${time} (UTC)`;
      }
      this.drawLast(el('td', tr, undefined, 'mlpipe-last-firing'), schedule);
      const actions = el('td', tr, undefined, 'mlpipe-actions');
      button(actions, 'Edit…', `Edit schedule ${schedule.name}`, 'mlpipe-schedule-edit',
        () => this.openForm(schedule));
      const action = schedule.paused ? 'resume' : 'pause';
      button(actions, schedule.paused ? 'Resume' : 'Pause',
        `${schedule.paused ? 'Resume' : 'Pause'} schedule ${schedule.name}`,
        `mlpipe-schedule-${action}`,
        () => void this.act(post(`schedules/${enc(schedule.name)}/${action}`), schedule.name, action));
      button(actions, 'Delete…', `Delete schedule ${schedule.name}`, 'mlpipe-schedule-delete',
        () => void this.remove(schedule));
    }
  }

  private drawLast(cell: HTMLElement, schedule: ISchedule): void {
    const last = schedule.last_firing;
    if (!last) {
      el('span', cell, 'not fired yet', 'mlpipe-empty');
      return;
    }
    const status = last.run_status || last.status;
    statusChip(cell, status, 'mlpipe-last-status').style.setProperty('--mlpipe-chip-color', statusColor(status));
    el('div', cell, fireTime(last.fire_time), 'mlpipe-rv-key');
    const runId = last.run_id;
    if (runId) {
      const link = el('a', cell, runId, 'mlpipe-link mlpipe-last-run');
      activatable(link, `Open run ${runId}`, () => this.host.openRun(runId));
    } else if (last.sweep_id) {
      el('div', cell, `sweep ${last.sweep_id}`, 'mlpipe-code');
    }
    if (last.error) {
      el('div', cell, last.error, 'mlpipe-error mlpipe-wrap');
    }
  }

  private async trigger(version: IPublishedVersionDetail): Promise<void> {
    let started;
    try {
      started = await triggerVersion(version);
    } catch (error) {
      void showErrorMessage('mlpipe: the trigger failed', (error as Error).message);
      return;
    }
    if (!started) {
      return;
    }
    if (started.run_id) {
      Notification.info(`Triggered ${started.published}: run ${started.run_id}`, { autoClose: 4000 });
      this.host.openTriggered(started.run_id);
    } else {
      Notification.info(`Triggered ${started.published}: sweep ${started.sweep_id} of ` +
        `${started.members} runs`, { autoClose: 6000 });
    }
  }

  private async remove(schedule: ISchedule): Promise<void> {
    const answer = await showDialog({
      title: `Delete schedule ${schedule.name}?`,
      body: 'Firings that have not started are canceled; a run that is going finishes. ' +
        'Its runs stay in the run history.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
    });
    if (answer.button.accept) {
      await this.act(del(`schedules/${enc(schedule.name)}`), schedule.name, 'delete');
    }
  }

  private async act(action: Promise<unknown>, name: string, what: string): Promise<void> {
    try {
      await action;
    } catch (error) {
      const message = error instanceof ApiError ? error.message : String(error);
      void showErrorMessage(`mlpipe: ${what} ${name}`, message);
    }
    await this.refresh();
    // keep the keyboard where it was: on the row's next action
    const row = this.schedulesBox.querySelector<HTMLElement>(`.mlpipe-schedule-row[data-schedule="${CSS.escape(name)}"]`);
    row?.querySelector<HTMLElement>('.mlpipe-schedule-pause, .mlpipe-schedule-resume')?.focus();
  }

  private published: IPublished[] = [];
  private schedules: ISchedule[] = [];
  private errorBox: HTMLElement;
  private pipelinesBox: HTMLElement;
  private schedulesBox: HTMLElement;
  private formBox: HTMLElement;
  private form: ScheduleForm | null = null;
  /** Events may have been missed while the stream was down: read the server again. */
  private onReconnected(): void {
    this.refresher.request();
  }

  // read the server once per burst of events
  private refresher = new BurstRefresh(() => void this.refresh(), 300, () => !this.isDisposed);
}
