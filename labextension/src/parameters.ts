// The parameters form of "Run as pipeline", of a published version's trigger and of a
// schedule: one input per pipeline parameter, prefilled with its default.
import { Widget } from '@lumino/widgets';

import { parameterText } from './api';
import { el } from './dom';

/** What a parameters form shows: a notebook's or a published version's parameters. */
export interface IParameterSource {
  parameters?: Record<string, unknown>;
  parameter_texts?: Record<string, string>;
  steps?: { name: string }[];
}

export interface IParametersFormOptions {
  /** Ask for a compute target too (Run as pipeline; a trigger runs where it was published). */
  compute?: boolean;
  /** Values to start from instead of the defaults (a schedule's own), as `-p` texts:
   * they differ from the defaults, so they are sent unless changed back. */
  values?: Record<string, string>;
  /** Show the pipeline's steps under the inputs. */
  steps?: boolean;
}

let formNumber = 0;

/**
 * One input per pipeline parameter (and the compute target, when asked for).
 *
 * Each input shows the default as the text `-p NAME=` takes (`True`, `None`, `(1, 2)`,
 * strings as they are), and only the inputs whose text differs from the default are sent,
 * as such texts; the server parses them like `mlpipe run -p` and coerces them to the
 * default's type. An untouched default is never sent, so a default that an input cannot
 * spell exactly (a string with a newline, say) is kept as it is. Problems the server found
 * with a value are shown under its input (`setErrors`).
 */
export class ParametersForm extends Widget {
  constructor(source: IParameterSource, options: IParametersFormOptions = {}) {
    super();
    this.addClass('mlpipe-parameters');
    const form = ++formNumber;
    const table = document.createElement('table');
    this.node.appendChild(table);
    const defaults = source.parameters ?? {};
    const rows: [string, string, string][] = Object.keys(defaults).map(name => [
      name,
      parameterText(name, defaults, source.parameter_texts),
      'param'
    ]);
    if (options.compute !== false) {
      rows.push(['compute', '', 'compute']);
    }
    if (!rows.length) {
      el('div', this.node, 'This pipeline has no parameters.', 'mlpipe-form-note');
    }
    for (const [name, value, kind] of rows) {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      const start = kind === 'param' && options.values && name in options.values
        ? options.values[name] : value;
      // a text with line breaks needs a textarea (an input drops them)
      const input = start.includes('\n') || value.includes('\n')
        ? document.createElement('textarea')
        : document.createElement('input');
      input.name = name;
      input.id = `mlpipe-param-${form}-${name.replace(/[^\w-]/g, '_')}`;
      const label = el('label', th, kind === 'compute' ? 'compute target' : name);
      label.htmlFor = input.id;
      input.value = value;
      input.dataset.kind = kind;
      input.placeholder = kind === 'compute' ? 'local (default)' : '';
      if (input instanceof HTMLTextAreaElement) {
        input.rows = Math.min(Math.max(start.split('\n').length, value.split('\n').length), 6);
      }
      // what the field shows for the default (after the browser's own normalisation)
      this.shown.set(input, input.value);
      input.value = start;
      const td = document.createElement('td');
      td.appendChild(input);
      const error = el('div', td, '', 'mlpipe-field-error');
      error.id = `${input.id}-error`;
      error.setAttribute('aria-live', 'polite');
      this.errors.set(name, [input, error]);
      tr.append(th, td);
      table.appendChild(tr);
    }
    if (options.steps !== false && source.steps?.length) {
      el('div', this.node, `steps: ${source.steps.map(s => s.name).join(' → ')}`, 'mlpipe-form-note');
    }
  }

  private shown = new Map<HTMLInputElement | HTMLTextAreaElement, string>();
  private errors = new Map<string, [HTMLInputElement | HTMLTextAreaElement, HTMLElement]>();

  getValue(): { parameters: Record<string, string>; compute: string | null } {
    const parameters: Record<string, string> = {};
    let compute: string | null = null;
    for (const [input, shown] of this.shown) {
      if (input.dataset.kind === 'compute') {
        compute = input.value.trim() || null;
      } else if (input.value !== shown) {
        parameters[input.name] = input.value; // only overrides, as text (like -p NAME=VALUE)
      }
    }
    return { parameters, compute };
  }

  /** Show each parameter's problem under its input (and clear the others'); returns the
   * names it had no input for. */
  setErrors(byName: Record<string, string>): string[] {
    for (const [name, [input, box]] of this.errors) {
      const message = byName[name] ?? '';
      box.textContent = message;
      if (message) {
        input.setAttribute('aria-invalid', 'true');
        input.setAttribute('aria-describedby', box.id);
      } else {
        input.removeAttribute('aria-invalid');
        input.removeAttribute('aria-describedby');
      }
    }
    return Object.keys(byName).filter(name => !this.errors.has(name));
  }

  /** The input of the first parameter with a problem, to focus. */
  firstInvalid(): HTMLElement | null {
    return this.node.querySelector<HTMLElement>('[aria-invalid="true"]');
  }
}
