// Form fields for the publish, trigger and schedule forms: a label, a control, and a slot
// under it where the server's problem with that field shows (ApiError.details name the
// request field of each problem). Only JupyterLab's styles and theme variables.
import { ApiError, IErrorDetail } from './api';
import { el } from './dom';

let fieldNumber = 0;

export type Control = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

/** A labelled field: `row` holds the label, the control and its error slot. */
export interface IField<C extends Control = Control> {
  row: HTMLElement;
  control: C;
  error: HTMLElement;
}

/** A field for `control`, labelled `label`, in `parent`; `key` is the request field the
 * server names in its problems (`data-field`). */
export function field<C extends Control>(
  parent: HTMLElement,
  key: string,
  label: string,
  control: C,
  hint?: string
): IField<C> {
  const row = el('div', parent, undefined, `mlpipe-field mlpipe-field-${key.replace(/\W/g, '-')}`);
  row.dataset.field = key;
  control.id = `mlpipe-field-${++fieldNumber}`;
  if (!control.name) {
    control.name = key;
  }
  const title = el('label', row, label, 'mlpipe-field-label');
  title.htmlFor = control.id;
  const body = el('div', row, undefined, 'mlpipe-field-body');
  body.appendChild(control);
  if (hint) {
    const note = el('div', body, hint, 'mlpipe-field-hint');
    note.id = `${control.id}-hint`;
    control.setAttribute('aria-describedby', note.id);
  }
  const error = el('div', body, '', 'mlpipe-field-error');
  error.id = `${control.id}-error`;
  error.setAttribute('aria-live', 'polite');
  return { row, control, error };
}

export function input(type = 'text', value = '', className = ''): HTMLInputElement {
  const node = el('input', null, undefined, `jp-mod-styled ${className}`.trim());
  node.type = type;
  node.value = value;
  return node;
}

export function select(options: [string, string][], value = ''): HTMLSelectElement {
  const node = el('select', null, undefined, 'jp-mod-styled');
  for (const [key, text] of options) {
    const option = el('option', node, text);
    option.value = key;
  }
  node.value = value;
  return node;
}

export function textarea(value = '', rows = 2): HTMLTextAreaElement {
  const node = el('textarea', null, undefined, 'jp-mod-styled');
  node.value = value;
  node.rows = rows;
  return node;
}

/** Show `message` in a field's slot (empty: clear it), marking the control invalid. */
export function setFieldError(f: IField, message: string): void {
  f.error.textContent = message;
  f.row.classList.toggle('mlpipe-invalid', Boolean(message));
  const hint = f.control.getAttribute('aria-describedby')?.split(' ').filter(id => !id.endsWith('-error')) ?? [];
  if (message) {
    f.control.setAttribute('aria-invalid', 'true');
    f.control.setAttribute('aria-describedby', [...hint, f.error.id].join(' '));
  } else {
    f.control.removeAttribute('aria-invalid');
    if (hint.length) {
      f.control.setAttribute('aria-describedby', hint.join(' '));
    } else {
      f.control.removeAttribute('aria-describedby');
    }
  }
}

/** The problems of a refused request, by field (several problems of one field joined);
 * those without a field under `null`. */
export function problemsByField(error: unknown): Map<string | null, string> {
  const found = new Map<string | null, string>();
  const details: IErrorDetail[] =
    error instanceof ApiError && error.details.length
      ? error.details
      : [{ message: error instanceof Error ? error.message : String(error), field: null }];
  for (const { message, field: key } of details) {
    const before = found.get(key);
    found.set(key, before ? `${before}\n${message}` : message);
  }
  return found;
}

/**
 * Put each problem under its field (`fields` by request field; `parameters.NAME` goes to
 * `onParameters`), the rest in `general`; clear what was shown before. Returns the
 * control to focus: the first field with a problem, in the form's order.
 */
export function showProblems(
  error: unknown,
  fields: Map<string, IField>,
  general: HTMLElement,
  onParameters?: (byName: Record<string, string>) => string[]
): HTMLElement | null {
  const problems = problemsByField(error);
  const rest: string[] = [];
  const parameters: Record<string, string> = {};
  for (const [key, message] of problems) {
    if (key?.startsWith('parameters.') && onParameters) {
      parameters[key.slice('parameters.'.length)] = message;
    } else if (key && fields.has(key)) {
      continue;
    } else {
      rest.push(message);
    }
  }
  for (const [key, f] of fields) {
    setFieldError(f, problems.get(key) ?? '');
  }
  if (onParameters) {
    for (const name of onParameters(parameters)) {
      rest.push(parameters[name]);
    }
  }
  general.textContent = rest.join('\n');
  general.hidden = !rest.length;
  let first: HTMLElement | null = null;
  for (const f of fields.values()) {
    if (f.control.getAttribute('aria-invalid') === 'true' && !f.row.hidden) {
      first = f.control;
      break;
    }
  }
  return first;
}

/** Clear every problem shown. */
export function clearProblems(fields: Map<string, IField>, general: HTMLElement): void {
  for (const f of fields.values()) {
    setFieldError(f, '');
  }
  general.textContent = '';
  general.hidden = true;
}
