// The schedule form: create or edit a schedule of a published pipeline. Cron (with its
// time zone), every N seconds/minutes/hours, or each new version of a dataset; parameters
// (prefilled with the version's defaults, or the schedule's values); policies (missed fire
// times, overlap, retries and their backoff, timeout); notifications (specs and the
// statuses that notify). The server checks everything at once; each problem shows under
// its field. There is no update in place: saving an edit replaces the schedule under the
// same name (the server checks the new fields first and changes nothing on a problem).
import { Widget } from '@lumino/widgets';

import { enc, IPublished, IPublishedVersionDetail, ISchedule, post, put } from './api';
import { button, el } from './dom';
import { clearProblems, field, IField, input, select, showProblems, textarea } from './forms';
import { ParametersForm } from './parameters';

const UNITS: [string, string, number][] = [
  ['s', 'seconds', 1],
  ['m', 'minutes', 60],
  ['h', 'hours', 3600]
];
const STATUSES = ['succeeded', 'failed', 'canceled'];

/** The browser's time zone (the form's default for cron), else UTC. */
function localZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** Every IANA time zone the browser knows (a datalist for the time zone input). */
function zones(): string[] {
  const supported = (Intl as unknown as { supportedValuesOf?: (key: string) => string[] })
    .supportedValuesOf;
  const list = supported ? supported('timeZone') : [];
  return list.includes('UTC') ? list : ['UTC', ...list];
}

/** "15m" from 900 seconds, in the largest unit that divides it. */
function everyParts(seconds: number | null | undefined): [string, string] {
  if (!seconds) {
    return ['15', 'm'];
  }
  for (const [unit, , size] of [...UNITS].reverse()) {
    if (seconds % size === 0) {
      return [String(seconds / size), unit];
    }
  }
  return [String(seconds), 's'];
}

function durationText(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '';
  }
  const [n, unit] = everyParts(seconds);
  return `${n}${unit}`;
}

export interface IScheduleFormHost {
  /** Saved: the schedule as the server stored it. */
  saved(schedule: ISchedule, created: boolean): void;
  canceled(): void;
}

let formNumber = 0;

export class ScheduleForm extends Widget {
  constructor(
    private published: IPublished[],
    private host: IScheduleFormHost,
    private editing: ISchedule | null = null,
    preset: { pipeline?: string; version?: number | null } = {}
  ) {
    super();
    this.addClass('mlpipe-form');
    this.addClass('mlpipe-schedule-form');
    this.node.setAttribute('role', 'form');
    const number = ++formNumber;
    const heading = el('h3', this.node, editing ? `Edit schedule ${editing.name}` : 'New schedule',
      'mlpipe-rv-title mlpipe-form-title');
    heading.id = `mlpipe-schedule-form-${number}`;
    this.node.setAttribute('aria-labelledby', heading.id);
    if (editing) {
      el('div', this.node, 'Saving replaces the schedule under the same name: it is checked ' +
        'first, then deleted and created again, so an every-N grid starts from now and its ' +
        'firings so far stay in the old schedule\'s history.', 'mlpipe-form-note mlpipe-replace-note');
    }
    this.general = el('div', this.node, '', 'mlpipe-form-error');
    this.general.hidden = true;
    this.general.setAttribute('role', 'alert');
    const form = el('form', this.node);
    form.addEventListener('submit', event => {
      event.preventDefault();
      void this.save();
    });
    form.addEventListener('keydown', event => {
      if (event.key === 'Escape') {
        event.preventDefault();
        this.host.canceled();
      }
    });
    const f = this.fields;

    // what runs
    el('div', form, 'Pipeline', 'mlpipe-form-section');
    const pipelineName = editing?.pipeline ?? preset.pipeline ?? published[0]?.name ?? '';
    f.set('pipeline', field(form, 'pipeline', 'Published pipeline',
      select(published.map(p => [p.name, p.name]), pipelineName)));
    f.set('version', field(form, 'version', 'Version', select([['', 'default']]),
      'without a version each firing runs the default version of that moment'));
    f.set('name', field(form, 'name', 'Schedule name', input('text', editing?.name ?? ''),
      editing ? undefined : 'default: PIPELINE-cron, PIPELINE-every or PIPELINE-dataset'));
    (f.get('name')!.control as HTMLInputElement).placeholder = 'PIPELINE-KIND';

    // when
    el('div', form, 'When', 'mlpipe-form-section');
    const kind = editing?.kind ?? 'every';
    f.set('trigger', field(form, 'trigger', 'Trigger', select([
      ['cron', 'Cron: times of day in a time zone'],
      ['every', 'Every N seconds, minutes, hours'],
      ['dataset', 'Each new version of a dataset']
    ], kind)));
    f.set('cron', field(form, 'cron', 'Cron', input('text', editing?.cron ?? '0 6 * * *', 'mlpipe-code'),
      'minute hour day-of-month month day-of-week, e.g. 0 6 * * 1-5, */15 * * * *, @daily'));
    const zone = input('text', editing?.timezone && editing.kind === 'cron' ? editing.timezone : localZone());
    const list = el('datalist', form);
    list.id = `mlpipe-zones-${number}`;
    for (const name of zones()) {
      el('option', list).value = name;
    }
    zone.setAttribute('list', list.id);
    f.set('timezone', field(form, 'timezone', 'Time zone', zone, 'an IANA name: UTC, Europe/Paris, America/New_York'));
    const [count, unit] = everyParts(editing?.every_seconds);
    const every = input('number', count);
    every.min = '1';
    every.step = 'any';
    f.set('every', field(form, 'every', 'Every', every));
    this.unit = select(UNITS.map(([key, text]) => [key, text]), unit);
    this.unit.setAttribute('aria-label', 'Unit of the interval');
    every.insertAdjacentElement('afterend', this.unit);
    f.set('on_dataset', field(form, 'on_dataset', 'Dataset', select([]),
      'a dataset the pipeline reads; each new version fires a run that reads it'));

    // parameters
    el('div', form, 'Parameters', 'mlpipe-form-section');
    this.paramsBox = el('div', form, undefined, 'mlpipe-form-params');

    // policies
    el('div', form, 'Policies', 'mlpipe-form-section');
    f.set('missed', field(form, 'missed', 'Missed fire times', select([
      ['skip', 'skip them'], ['run_once', 'run once, late']], editing?.missed ?? 'skip'),
      'fire times that passed while no scheduler ran'));
    f.set('overlap', field(form, 'overlap', 'Overlap', select([
      ['skip', 'skip the new firing'], ['queue', 'queue it']], editing?.overlap ?? 'skip'),
      'a fire time that comes while an earlier run is still going'));
    const retries = input('number', String(editing?.max_retries ?? 0));
    retries.min = '0';
    f.set('retries', field(form, 'retries', 'Retries', retries, 'a failed run is started again this many times'));
    f.set('retry_backoff', field(form, 'retry_backoff', 'Retry backoff',
      input('text', durationText(editing?.retry_backoff ?? 30)),
      'before the first retry, then 4x longer each time: 30s, 2m, 1h'));
    const timeout = input('text', durationText(editing?.timeout));
    timeout.placeholder = 'none';
    f.set('timeout', field(form, 'timeout', 'Timeout', timeout, 'stop a run after this long: 30m, 2h'));

    // notifications
    el('div', form, 'Notifications', 'mlpipe-form-section');
    const notify = textarea('', 2);
    notify.placeholder = 'webhook:https://...  email:ops@example.org  apprise:slack://...';
    const kept = editing?.notify ?? [];
    f.set('notify', field(form, 'notify', kept.length ? 'Add targets' : 'Notify', notify,
      'one spec a line: webhook:URL[#secret=NAME], email:ADDRESS, apprise:URL'));
    if (kept.length) {
      const keepBox = el('ul', null, undefined, 'mlpipe-kept-targets');
      keepBox.setAttribute('aria-label', 'Targets the schedule notifies now');
      for (const target of kept) {
        const item = el('li', keepBox);
        const box = input('checkbox');
        box.checked = true;
        box.dataset.target = String(target.id);
        box.id = `mlpipe-keep-${number}-${target.id}`;
        const label = el('label', item, undefined, 'mlpipe-check');
        label.htmlFor = box.id;
        label.append(box, ` keep ${target.channel}`);
        this.keep.push(box);
      }
      f.get('notify')!.row.insertAdjacentElement('beforebegin', keepBox);
    }
    const on = kept[0]?.on ?? ['failed', 'canceled'];
    const checks = el('div', null, undefined, 'mlpipe-checks');
    checks.setAttribute('role', 'group');
    for (const status of STATUSES) {
      const box = input('checkbox');
      box.value = status;
      box.checked = on.includes(status);
      box.id = `mlpipe-on-${number}-${status}`;
      const label = el('label', checks, undefined, 'mlpipe-check');
      label.htmlFor = box.id;
      label.append(box, ` ${status}`);
      this.on.push(box);
    }
    const onRow = el('div', form, undefined, 'mlpipe-field mlpipe-field-notify_on');
    onRow.dataset.field = 'notify_on';
    const onLabel = el('span', onRow, 'Notify when a run', 'mlpipe-field-label');
    onLabel.id = `mlpipe-on-label-${number}`;
    const onBody = el('div', onRow, undefined, 'mlpipe-field-body');
    onBody.appendChild(checks);
    checks.setAttribute('aria-labelledby', onLabel.id);
    const onError = el('div', onBody, '', 'mlpipe-field-error');
    onError.id = `mlpipe-on-error-${number}`;
    onError.setAttribute('aria-live', 'polite');
    f.set('notify_on', { row: onRow, control: this.on[0], error: onError });

    const tools = el('div', form, undefined, 'mlpipe-form-buttons');
    const save = el('button', tools, editing ? 'Save (replace)' : 'Create schedule',
      'jp-mod-styled jp-mod-accept mlpipe-button mlpipe-form-save');
    save.type = 'submit';
    button(tools, 'Cancel', 'Close the form without saving', 'mlpipe-form-cancel',
      () => this.host.canceled());

    f.get('pipeline')!.control.addEventListener('change', () => this.pipelineChanged(null));
    f.get('version')!.control.addEventListener('change', () => this.versionChanged());
    f.get('trigger')!.control.addEventListener('change', () => this.showTrigger());
    this.pipelineChanged(editing ? editing.version : preset.version ?? null);
    if (editing?.dataset) {
      f.get('on_dataset')!.control.value = editing.dataset;
    }
    this.showTrigger();
  }

  /** Put the keyboard focus on the form's first control. */
  focusFirst(): void {
    this.fields.get('pipeline')!.control.focus();
  }

  /** Send the form: create, or replace the schedule being edited. */
  async save(): Promise<void> {
    clearProblems(this.fields, this.general);
    this.params?.setErrors({});
    const body = this.body();
    this.node.dataset.saving = 'true';
    try {
      const saved = this.editing
        ? await put<ISchedule>(`schedules/${enc(this.editing.name)}`, body)
        : await post<ISchedule>('schedules', body);
      this.host.saved(saved, !this.editing);
    } catch (error) {
      const first = showProblems(error, this.fields, this.general,
        byName => this.params?.setErrors(byName) ?? Object.keys(byName));
      const target = first ?? this.params?.firstInvalid() ?? (this.general.hidden ? null : this.general);
      if (target) {
        if (target === this.general) {
          target.tabIndex = -1;
        }
        target.focus({ preventScroll: true });
        target.scrollIntoView({ block: 'nearest' });
      }
    } finally {
      delete this.node.dataset.saving;
    }
  }

  /** The request: only the trigger's own fields, durations as texts ("15m"). */
  private body(): Record<string, unknown> {
    const value = (key: string) => this.fields.get(key)!.control.value.trim();
    const body: Record<string, unknown> = { pipeline: value('pipeline') };
    if (value('version')) {
      body.version = Number(value('version'));
    }
    if (value('name')) {
      body.name = value('name');
    }
    const kind = value('trigger');
    if (kind === 'cron') {
      body.cron = value('cron');
      body.timezone = value('timezone') || 'UTC';
    } else if (kind === 'every') {
      body.every = `${value('every') || '0'}${this.unit.value}`;
    } else {
      body.on_dataset = value('on_dataset');
    }
    body.parameters = this.params?.getValue().parameters ?? {};
    body.missed = value('missed');
    body.overlap = value('overlap');
    const retries = value('retries');
    body.retries = retries === '' ? 0 : Number.isInteger(Number(retries)) ? Number(retries) : retries;
    if (value('retry_backoff')) {
      body.retry_backoff = value('retry_backoff');
    }
    if (value('timeout')) {
      body.timeout = value('timeout');
    }
    body.notify = value('notify').split('\n').map(s => s.trim()).filter(Boolean);
    const kept = this.keep.filter(box => box.checked).map(box => Number(box.dataset.target));
    if (this.editing) {
      body.keep_notify = kept;
    }
    if ((body.notify as string[]).length || kept.length) {
      body.notify_on = this.on.filter(box => box.checked).map(box => box.value);
    }
    if (this.editing?.sweep) {
      body.sweep = this.editing.sweep; // the form does not edit a sweep: it keeps it
    }
    return body;
  }

  private selectedVersion(): IPublishedVersionDetail | null {
    const pipeline = this.published.find(p => p.name === this.fields.get('pipeline')!.control.value);
    if (!pipeline) {
      return null;
    }
    const chosen = this.fields.get('version')!.control.value;
    const number = chosen ? Number(chosen) : pipeline.default_version;
    return (pipeline.versions.find(v => v.version === number) ??
      pipeline.versions[pipeline.versions.length - 1] ?? null) as IPublishedVersionDetail | null;
  }

  private pipelineChanged(version: number | null): void {
    const pipeline = this.published.find(p => p.name === this.fields.get('pipeline')!.control.value);
    const versions = this.fields.get('version')!.control as HTMLSelectElement;
    versions.replaceChildren();
    const def = pipeline?.versions.find(v => v.default);
    el('option', versions, `default${def ? ` (now v${def.version})` : ''}`).value = '';
    for (const v of [...(pipeline?.versions ?? [])].reverse()) {
      const option = el('option', versions, `v${v.version}${v.disabled ? ' (disabled)' : ''}` +
        (v.description ? ` — ${v.description}` : ''));
      option.value = String(v.version);
    }
    versions.value = version ? String(version) : '';
    this.versionChanged();
  }

  /** The version's parameters and datasets fill the form (the schedule's values when it
   * is the one being edited). */
  private versionChanged(): void {
    const version = this.selectedVersion();
    const previous = this.params?.getValue().parameters;
    this.params?.dispose();
    const values = previous && Object.keys(previous).length ? previous : this.editing?.params;
    this.params = new ParametersForm(version ?? {}, { compute: false, values, steps: false });
    this.paramsBox.replaceChildren(this.params.node);
    const datasets = this.fields.get('on_dataset')!.control as HTMLSelectElement;
    const current = datasets.value;
    datasets.replaceChildren();
    for (const name of version?.datasets ?? []) {
      el('option', datasets, name).value = name;
    }
    if (!datasets.options.length) {
      el('option', datasets, '(the pipeline reads no dataset)').value = '';
    }
    if (current && [...datasets.options].some(o => o.value === current)) {
      datasets.value = current;
    }
  }

  private showTrigger(): void {
    const kind = this.fields.get('trigger')!.control.value;
    const shown: Record<string, boolean> = {
      cron: kind === 'cron', timezone: kind === 'cron', every: kind === 'every',
      on_dataset: kind === 'dataset'
    };
    for (const [key, visible] of Object.entries(shown)) {
      this.fields.get(key)!.row.hidden = !visible;
    }
  }

  dispose(): void {
    this.params?.dispose();
    super.dispose();
  }

  readonly fields = new Map<string, IField>();
  private general: HTMLElement;
  private unit: HTMLSelectElement;
  private paramsBox: HTMLElement;
  private params: ParametersForm | null = null;
  private keep: HTMLInputElement[] = [];
  private on: HTMLInputElement[] = [];
}
