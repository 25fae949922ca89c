// Charts of the comparison and sweep views. The server builds each chart as a Vega-Lite
// specification (runner/compare.chart_spec, runner/sweep_view.chart_spec); this only hands
// it to the Vega renderer that JupyterLab ships, through the rendermime registry, drawn as
// SVG. A theme change draws it again (the renderer picks Vega's dark theme by itself).
import { IRenderMime, IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { caretDownEmptyIcon } from '@jupyterlab/ui-components';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import { el } from './dom';

export const VEGA_LITE = 'application/vnd.vegalite.v5+json';

/** The embed options the renderer reads from the model's metadata. */
function embedOptions(): ReadonlyPartialJSONObject {
  return {
    renderer: 'svg',
    // saving the chart is useful; the links to Vega's online editor are not (no network)
    actions: { export: true, source: false, compiled: false, editor: false }
  };
}

export class ChartBox {
  readonly node: HTMLDivElement;

  constructor(
    private rendermime: IRenderMimeRegistry | null,
    label: string
  ) {
    this.node = el('div', null, undefined, 'mlpipe-chart');
    this.node.setAttribute('role', 'figure');
    this.node.setAttribute('aria-label', label);
    this.themeWatch = new MutationObserver(() => {
      if (this.spec) {
        void this.show(this.spec);
      }
    });
    this.themeWatch.observe(document.body, {
      attributes: true,
      attributeFilter: ['data-jp-theme-light']
    });
  }

  /** Draw `spec` (a Vega-Lite specification), replacing the chart shown. */
  async show(spec: Record<string, unknown>): Promise<void> {
    this.spec = spec;
    const drawing = ++this.drawing;
    const data = { [VEGA_LITE]: spec } as unknown as IRenderMime.IMimeModel['data'];
    if (!this.rendermime || !this.rendermime.preferredMimeType(data, 'any')) {
      this.message('JupyterLab\'s Vega renderer is not available: no chart.');
      return;
    }
    const renderer = this.rendermime.createRenderer(VEGA_LITE);
    renderer.addClass('mlpipe-chart-render');
    const model = new MimeModel({
      data,
      metadata: { [VEGA_LITE]: { embed_options: embedOptions() } }
    });
    this.node.dataset.state = 'drawing';
    try {
      await renderer.renderModel(model);
    } catch (error) {
      renderer.dispose();
      if (drawing === this.drawing) {
        this.message(`The chart could not be drawn: ${(error as Error).message}`);
      }
      return;
    }
    if (drawing !== this.drawing || this.disposed) {
      renderer.dispose(); // a newer chart was asked for meanwhile
      return;
    }
    this.renderer?.dispose();
    this.renderer = renderer;
    this.node.replaceChildren(renderer.node);
    const points = (spec.data as { values?: unknown[] } | undefined)?.values?.length ?? 0;
    this.node.dataset.points = String(points);
    this.node.dataset.state = 'drawn';
    if (!points) {
      el('div', this.node, 'No run has a numeric value of this metric yet.', 'mlpipe-empty');
    }
  }

  /** Show a message instead of a chart. */
  message(text: string, error = false): void {
    this.spec = null;
    this.renderer?.dispose();
    this.renderer = null;
    this.node.replaceChildren();
    this.node.dataset.state = error ? 'error' : 'empty';
    el('div', this.node, text, error ? 'mlpipe-error' : 'mlpipe-empty');
  }

  dispose(): void {
    this.disposed = true;
    this.themeWatch.disconnect();
    this.renderer?.dispose();
    this.renderer = null;
  }

  private spec: Record<string, unknown> | null = null;
  private renderer: IRenderMime.IRenderer | null = null;
  private drawing = 0;
  private disposed = false;
  private themeWatch: MutationObserver;
}

/** A labelled <select> of `choices` ([value, text]); calls `onChange` with the value. */
export function choice(
  parent: HTMLElement,
  label: string,
  choices: [string, string][],
  selected: string,
  className: string,
  onChange: (value: string) => void
): HTMLSelectElement {
  const wrap = el('label', parent, undefined, `mlpipe-choice ${className}`);
  el('span', wrap, label, 'mlpipe-choice-label');
  const box = el('span', wrap, undefined, 'mlpipe-select');
  const select = el('select', box, undefined, 'jp-mod-styled');
  // JupyterLab's styled select draws no arrow of its own: its caret, as HTMLSelect has
  box.appendChild(caretDownEmptyIcon.element({ tag: 'span', className: 'mlpipe-select-caret' }));
  select.setAttribute('aria-label', label);
  for (const [value, text] of choices) {
    const option = el('option', select, text);
    option.value = value;
    option.selected = value === selected;
  }
  select.addEventListener('change', () => onChange(select.value));
  return select;
}
