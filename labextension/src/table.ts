// The run view's step table: status, time, reused or why re-run, metrics. A real <table>
// with fixed column widths: long texts wrap, names that cannot wrap are cut with … and
// carry their whole text as a tooltip, so nothing is clipped unseen. Rows are keyboard
// reachable (Tab, Enter or Space selects the step).
import { IStep } from './api';
import { seconds, statusColor } from './dag';
import { el, metricText } from './dom';

/** The header, the column widths (CSS) and how each cell shows a step. */
const COLUMNS: [string, string, string][] = [
  ['Step', '16%', 'mlpipe-col-step'],
  ['Status', '11%', 'mlpipe-col-status'],
  ['Time', '8%', 'mlpipe-col-time'],
  ['Reused, or why it ran', '40%', 'mlpipe-col-why'],
  ['Metrics', '25%', 'mlpipe-col-metrics']
];

/** Why the step was reused or run: the decision's first line (a condition's outcome
 * follows on the next lines: the step's details show it). */
export function whyText(step: IStep): string {
  const decision = (step.decision || '').split('\n')[0];
  if (step.reused) {
    return `reused from ${step.reused_from || '?'}${decision ? `: ${decision}` : ''}`;
  }
  return decision;
}

export class StepTable {
  readonly node: HTMLTableElement;

  constructor(private onSelect: (name: string) => void) {
    this.node = el('table', null, undefined, 'mlpipe-step-table');
    this.node.setAttribute('aria-label', 'Steps of the run');
    const cols = el('colgroup', this.node);
    for (const [, width] of COLUMNS) {
      el('col', cols).style.width = width;
    }
    const head = el('tr', el('thead', this.node));
    for (const [title, , cls] of COLUMNS) {
      const th = el('th', head, title, cls);
      th.scope = 'col';
    }
    this.body = el('tbody', this.node);
  }

  private body: HTMLTableSectionElement;

  /** Mark `selected` (or none) without drawing the rows again. */
  select(selected: string | null): void {
    for (const tr of Array.from(this.body.rows)) {
      const on = tr.dataset.step === selected;
      tr.classList.toggle('mlpipe-selected', on);
      tr.setAttribute('aria-selected', String(on));
    }
  }

  /** Show `steps`, `selected` marked. */
  update(steps: IStep[], selected: string | null): void {
    this.body.replaceChildren();
    for (const step of steps) {
      const tr = el('tr', this.body, undefined, 'mlpipe-step-row');
      tr.dataset.step = step.name;
      tr.dataset.status = step.status;
      tr.tabIndex = 0;
      tr.setAttribute('aria-selected', String(step.name === selected));
      tr.setAttribute('aria-label', `step ${step.name}: ${step.status}`);
      if (step.name === selected) {
        tr.classList.add('mlpipe-selected');
      }
      const name = el('td', tr, step.name, 'mlpipe-col-step mlpipe-cut');
      name.title = step.name;
      const status = el('td', tr, undefined, 'mlpipe-col-status');
      const chip = el('span', status, `${step.reused ? '↺ ' : ''}${step.status}`, 'mlpipe-chip');
      chip.style.setProperty('--mlpipe-chip-color', statusColor(step.status));
      if (step.attempts > 1) {
        el('span', status, ` ×${step.attempts}`, 'mlpipe-attempts').title = `${step.attempts} attempts`;
      }
      el('td', tr, step.reused ? '' : seconds(step.duration), 'mlpipe-col-time');
      const why = el('td', tr, whyText(step), 'mlpipe-col-why mlpipe-wrap');
      if (step.condition) {
        const outcome = step.condition_result ? `: ${step.condition_result}` : '';
        el('div', why, `if ${step.condition}${outcome}`, 'mlpipe-condition');
      }
      if (step.error) {
        el('div', why, step.error.split('\n')[0], 'mlpipe-error mlpipe-cut').title = step.error;
      }
      const metrics = el('td', tr, undefined, 'mlpipe-col-metrics mlpipe-wrap');
      for (const [key, value] of Object.entries(step.metrics)) {
        const item = el('span', metrics, undefined, 'mlpipe-metric');
        el('span', item, `${key}=`, 'mlpipe-metric-name');
        el('span', item, metricText(value), 'mlpipe-metric-value');
      }
      tr.addEventListener('click', () => this.onSelect(step.name));
      tr.addEventListener('keydown', event => {
        if (event.target === tr && (event.key === 'Enter' || event.key === ' ')) {
          event.preventDefault();
          this.onSelect(step.name);
        }
      });
    }
  }
}
