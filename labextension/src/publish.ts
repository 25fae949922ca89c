// Publish the current notebook, and trigger a published version: dialogs. A refused
// request opens the dialog again with what was typed and each problem under its field.
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Panel, Widget } from '@lumino/widgets';

import { enc, IPublished, IPublishedVersionDetail, post } from './api';
import { el } from './dom';
import { field, IField, input, showProblems, textarea } from './forms';
import { ParametersForm } from './parameters';

/** What a publication returns. */
export interface IPublishResult {
  created: boolean;
  version: IPublishedVersionDetail;
  published: IPublished;
}

/** A run or a sweep that a trigger started. */
export interface ITriggered {
  run_id?: string;
  sweep_id?: string;
  members?: number;
  run_ids?: string[];
  published: string;
  version: number;
}

/** A published pipeline's name made from a notebook's file name. */
export function nameFor(path: string): string {
  const stem = (path.split('/').pop() || 'pipeline').replace(/\.ipynb$/, '');
  return stem.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '') || 'pipeline';
}

interface IPublishValues {
  name: string;
  description: string;
  keepDefault: boolean;
}

class PublishForm extends Widget {
  constructor(path: string, values: IPublishValues) {
    super();
    this.addClass('mlpipe-form');
    this.addClass('mlpipe-publish-form');
    el('div', this.node, `Publish ${path} as an immutable, versioned pipeline: a snapshot of ` +
      'the notebook and the local files its steps import. Triggers and schedules run the snapshot.',
      'mlpipe-form-note');
    this.general = el('div', this.node, '', 'mlpipe-form-error');
    this.general.hidden = true;
    this.general.setAttribute('role', 'alert');
    const name = field(this.node, 'name', 'Name', input('text', values.name),
      "letters, digits, '_', '-', '.'; publishing again under the same name adds a version");
    name.control.required = true;
    const description = field(this.node, 'description', 'Description', textarea(values.description, 2));
    const keep = input('checkbox');
    keep.checked = values.keepDefault;
    const keepField = field(this.node, 'keep_default', 'Keep the default version', keep,
      'otherwise the new version becomes the one triggers and schedules run');
    this.fields = new Map<string, IField>([['name', name], ['description', description],
      ['keep_default', keepField]]);
  }

  readonly fields: Map<string, IField>;
  readonly general: HTMLElement;

  getValue(): IPublishValues {
    const get = (key: string) => this.fields.get(key)!.control as HTMLInputElement;
    return { name: get('name').value.trim(), description: get('description').value.trim(),
      keepDefault: get('keep_default').checked };
  }
}

/**
 * Ask for a name and a description and publish the notebook at `path` (relative to the
 * server root). Resolves to the result, or null when the user canceled.
 */
export async function publishNotebook(path: string): Promise<IPublishResult | null> {
  let values: IPublishValues = { name: nameFor(path), description: '', keepDefault: false };
  let problem: unknown = null;
  for (;;) {
    const form = new PublishForm(path, values);
    if (problem) {
      showProblems(problem, form.fields, form.general);
    }
    const focus = form.node.querySelector<HTMLElement>('[aria-invalid="true"]') ??
      (form.fields.get('name')!.control as HTMLElement);
    const result = await showDialog({
      title: 'Publish notebook',
      body: form,
      focusNodeSelector: focus ? `#${focus.id}` : undefined,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Publish' })]
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    values = result.value;
    try {
      return await post<IPublishResult>('published', {
        notebook: path, name: values.name, description: values.description,
        keep_default: values.keepDefault
      });
    } catch (error) {
      problem = error;
    }
  }
}

interface ITriggerValues {
  parameters: Record<string, string>;
  sweep: string;
  samples: string;
  seed: string;
}

class TriggerForm extends Panel {
  constructor(version: IPublishedVersionDetail, values: ITriggerValues | null) {
    super();
    this.addClass('mlpipe-form');
    this.addClass('mlpipe-trigger-form');
    const head = new Widget();
    el('div', head.node, `${version.ref}${version.description ? ': ' + version.description : ''}`,
      'mlpipe-form-note');
    this.general = el('div', head.node, '', 'mlpipe-form-error');
    this.general.hidden = true;
    this.general.setAttribute('role', 'alert');
    el('div', head.node, 'Parameters', 'mlpipe-form-section');
    this.addWidget(head);
    this.params = new ParametersForm(version, { compute: false, values: values?.parameters });
    this.addWidget(this.params);
    const rest = new Widget();
    el('div', rest.node, 'Sweep (optional)', 'mlpipe-form-section');
    const sweep = field(rest.node, 'sweep', 'Swept values', textarea(values?.sweep ?? '', 2),
      'one parameter a line: C=0.1,1,10 (or a range, frac=uniform(0.5,0.9), with samples); ' +
      'each combination is a run');
    (sweep.control as HTMLTextAreaElement).placeholder = 'NAME=V1,V2,...';
    const samples = field(rest.node, 'samples', 'Samples', input('number', values?.samples ?? ''),
      'draw this many members at random instead of the whole grid');
    const seed = field(rest.node, 'seed', 'Seed', input('number', values?.seed ?? ''));
    this.addWidget(rest);
    this.fields = new Map<string, IField>([['sweep', sweep], ['samples', samples], ['seed', seed]]);
  }

  readonly params: ParametersForm;
  readonly fields: Map<string, IField>;
  readonly general: HTMLElement;

  getValue(): ITriggerValues {
    const text = (key: string) => this.fields.get(key)!.control.value.trim();
    return { parameters: this.params.getValue().parameters, sweep: text('sweep'),
      samples: text('samples'), seed: text('seed') };
  }
}

/** The trigger request of the form's values. */
function triggerBody(version: number, values: ITriggerValues): Record<string, unknown> {
  const body: Record<string, unknown> = { version, parameters: values.parameters };
  const axes = values.sweep.split('\n').map(line => line.trim()).filter(Boolean);
  if (axes.length || values.samples || values.seed) {
    const sweep: Record<string, unknown> = { sweep: axes };
    if (values.samples) {
      sweep.samples = Number(values.samples);
    }
    if (values.seed) {
      sweep.seed = Number(values.seed);
    }
    body.sweep = sweep;
  }
  return body;
}

/**
 * Ask for parameter values (prefilled with the version's defaults, as "Run as pipeline"
 * does) and an optional sweep, and trigger `version`. Resolves to what started, or null
 * when the user canceled.
 */
export async function triggerVersion(version: IPublishedVersionDetail): Promise<ITriggered | null> {
  let values: ITriggerValues | null = null;
  let problem: unknown = null;
  for (;;) {
    const form: TriggerForm = new TriggerForm(version, values);
    if (problem) {
      showProblems(problem, form.fields, form.general, byName => form.params.setErrors(byName));
    }
    const invalid: HTMLElement | null = form.node.querySelector('[aria-invalid="true"]');
    const result: Dialog.IResult<ITriggerValues> = await showDialog({
      title: `Trigger ${version.ref}`,
      body: form,
      focusNodeSelector: invalid ? `#${invalid.id}` : 'input, textarea',
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Trigger' })]
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    const given: ITriggerValues = result.value;
    values = given;
    try {
      return await post<ITriggered>(`published/${enc(version.name)}/trigger`,
        triggerBody(version.version, given));
    } catch (error) {
      problem = error;
    }
  }
}
