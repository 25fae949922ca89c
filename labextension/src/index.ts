// JupyterLab plugin: the mlpipe sidebar (runs, published pipelines), a main-area view per
// run, "Run as pipeline" for notebooks, and a cell command that turns the active cell into
// a pipeline step.
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  IFrame,
  InputDialog,
  MainAreaWidget,
  showDialog,
  showErrorMessage,
  ToolbarButton,
  WidgetTracker
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { ApiError, enc, INotebook, parameterText, post, request } from './api';
import { addCompareTabs, COMPARE_COMMANDS } from './comparetabs';
import { RunEvents } from './events';
import { MlpipePanel } from './panel';
import { RunView } from './runview';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161">
<circle cx="5" cy="6" r="3"/><circle cx="5" cy="18" r="3"/><circle cx="19" cy="12" r="3"/>
<path d="M7.5 7.2l9 3.6-.7 1.8-9-3.6zM7.5 16.8l9-3.6-.7-1.8-9 3.6z"/></g></svg>`;

export const mlpipeIcon = new LabIcon({ name: 'mlpipe:pipeline', svgstr: ICON_SVG });

const COMMANDS = {
  runNotebook: 'mlpipe:run-notebook',
  makeStep: 'mlpipe:make-step',
  showPanel: 'mlpipe:show-panel',
  openRun: 'mlpipe:open-run'
};

/**
 * The run dialog's body: one input per pipeline parameter, and the compute target.
 *
 * Each input shows the default as the text `-p NAME=` takes (`True`, `None`, `(1, 2)`,
 * strings as they are), and only the inputs the user changed are sent, as such texts; the
 * server parses them like `mlpipe run -p` and coerces them to the default's type. An
 * untouched input is never sent, so a default that an input cannot spell exactly (a string
 * with a newline, say) is kept as it is.
 */
class ParametersForm extends Widget {
  constructor(notebook: INotebook) {
    super();
    this.addClass('mlpipe-parameters');
    const table = document.createElement('table');
    this.node.appendChild(table);
    const rows: [string, string, string][] = Object.keys(notebook.parameters).map(name => [
      name,
      parameterText(name, notebook.parameters, notebook.parameter_texts),
      'param'
    ]);
    rows.push(['compute', '', 'compute']);
    for (const [name, value, kind] of rows) {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.textContent = kind === 'compute' ? 'compute target' : name;
      // a text with line breaks needs a textarea (an input drops them)
      const input = value.includes('\n')
        ? document.createElement('textarea')
        : document.createElement('input');
      input.name = name;
      input.value = value;
      input.dataset.kind = kind;
      input.placeholder = kind === 'compute' ? 'local (default)' : '';
      if (input instanceof HTMLTextAreaElement) {
        input.rows = Math.min(value.split('\n').length, 6);
      }
      // what the field shows before any edit (after the browser's own normalisation)
      this.shown.set(input, input.value);
      const td = document.createElement('td');
      td.appendChild(input);
      tr.append(th, td);
      table.appendChild(tr);
    }
    const steps = document.createElement('div');
    steps.className = 'mlpipe-form-note';
    steps.textContent = `steps: ${notebook.steps.map(s => s.name).join(' → ')}`;
    this.node.appendChild(steps);
  }

  private shown = new Map<HTMLInputElement | HTMLTextAreaElement, string>();

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
}

async function runAsPipeline(
  path: string,
  panel: MlpipePanel,
  app: JupyterFrontEnd
): Promise<void> {
  let notebook: INotebook;
  try {
    notebook = await request<INotebook>(`notebooks/${path.split('/').map(enc).join('/')}`);
  } catch (error) {
    void showErrorMessage('mlpipe', (error as Error).message);
    return;
  }
  if (notebook.error) {
    void showErrorMessage('mlpipe: this notebook is not a valid pipeline', notebook.error);
    return;
  }
  const form = new ParametersForm(notebook);
  const result = await showDialog({
    title: `Run ${path} as a pipeline`,
    body: form,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Run' })]
  });
  if (!result.button.accept || !result.value) {
    return;
  }
  try {
    const started = await post<{ run_id: string }>('runs', { notebook: path, ...result.value });
    app.shell.activateById(panel.id);
    await panel.refreshList();
    await app.commands.execute(COMMANDS.openRun, { run: started.run_id });
  } catch (error) {
    const message = error instanceof ApiError ? error.message : String(error);
    void showErrorMessage('mlpipe: the run did not start', message);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mlpipe-jupyter:plugin',
  description: 'mlpipe pipelines: runs with live status, DAG, logs, re-run and cancel.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer, ICommandPalette, IRenderMimeRegistry],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    rendermime: IRenderMimeRegistry | null
  ) => {
    const events = new RunEvents();
    const openHtml = (url: string, title: string) => {
      const frame = new IFrame({ sandbox: ['allow-same-origin'] });
      // an absolute path on this server (it includes the base URL); the login cookie applies
      frame.url = url;
      const widget = new MainAreaWidget({ content: frame });
      widget.title.label = title;
      widget.title.icon = mlpipeIcon;
      widget.id = `mlpipe-output-${Date.now()}`;
      app.shell.add(widget, 'main');
    };
    // one main-area tab per run: opening an open run activates its tab
    const runViews = new WidgetTracker<MainAreaWidget<RunView>>({ namespace: 'mlpipe-run' });
    const openRun = async (ref: string): Promise<MainAreaWidget<RunView>> => {
      const open = runViews.find(w => w.content.runId === ref || w.id === `mlpipe-run-${ref}`);
      if (open) {
        app.shell.activateById(open.id);
        return open;
      }
      const content = new RunView(ref, events, {
        openNotebook: path => void app.commands.execute('docmanager:open', { path }),
        openHtml,
        openRun: runId => void app.commands.execute(COMMANDS.openRun, { run: runId })
      });
      await content.refresh();
      // "latest" or a prefix resolved to a run that is open already
      const same = runViews.find(w => w.content.runId === content.runId);
      if (same) {
        content.dispose();
        app.shell.activateById(same.id);
        return same;
      }
      const widget = new MainAreaWidget({ content });
      widget.id = `mlpipe-run-${content.runId}`;
      widget.title.icon = mlpipeIcon;
      widget.title.closable = true;
      content.title.changed.connect(() => {
        widget.title.label = content.title.label;
        widget.title.caption = content.title.caption;
      });
      widget.title.label = content.title.label || `run ${content.runId}`;
      widget.title.caption = content.title.caption;
      app.shell.add(widget, 'main');
      await runViews.add(widget);
      app.shell.activateById(widget.id);
      return widget;
    };
    app.commands.addCommand(COMMANDS.openRun, {
      label: args => (args.run ? `Open mlpipe Run ${args.run}` : 'Open mlpipe Run'),
      execute: async args => {
        const run = String(args.run ?? 'latest');
        await openRun(run);
      }
    });

    // comparisons and sweeps in the main area (their charts drawn by JupyterLab's Vega renderer)
    addCompareTabs(app, events, rendermime, restorer, mlpipeIcon,
      runId => void app.commands.execute(COMMANDS.openRun, { run: runId }));
    const panel = new MlpipePanel(
      {
        openRun: runId => void app.commands.execute(COMMANDS.openRun, { run: runId }),
        compareRuns: runs => void app.commands.execute(COMPARE_COMMANDS.compareRuns, { runs }),
        openSweep: sweep => void app.commands.execute(COMPARE_COMMANDS.openSweep, { sweep })
      },
      events
    );
    panel.title.icon = mlpipeIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'mlpipe-panel');
    if (restorer) {
      void restorer.restore(runViews, {
        command: COMMANDS.openRun,
        args: widget => ({ run: widget.content.runId }),
        name: widget => widget.content.runId
      });
    }
    runViews.currentChanged.connect((_, widget) => {
      panel.setActiveRun(widget?.content.runId ?? null);
    });
    events.start();
    void panel.refreshList();
    void panel.refreshSweeps();
    void panel.refreshPublished();
    // a notification's link, /lab?mlpipe-run=RUN_ID, opens that run
    const linked = new URLSearchParams(window.location.search).get('mlpipe-run');
    if (linked) {
      void app.restored.then(() => {
        app.shell.activateById(panel.id);
        void app.commands.execute(COMMANDS.openRun, { run: linked });
      });
    }

    app.commands.addCommand(COMMANDS.showPanel, {
      label: 'Show mlpipe Runs',
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(COMMANDS.runNotebook, {
      label: 'Run as Pipeline',
      caption: 'Run this notebook as an mlpipe pipeline',
      icon: mlpipeIcon,
      isEnabled: () => notebooks.currentWidget !== null,
      execute: async () => {
        const current = notebooks.currentWidget;
        if (current) {
          await current.context.save();
          await runAsPipeline(current.context.path, panel, app);
        }
      }
    });
    app.commands.addCommand(COMMANDS.makeStep, {
      label: 'Make Cell a Pipeline Step',
      caption: 'Insert an %%mlstep header in the active cell',
      isEnabled: () => notebooks.activeCell !== null,
      execute: async () => {
        const cell = notebooks.activeCell;
        if (!cell) {
          return;
        }
        const source = cell.model.sharedModel.getSource();
        if (source.startsWith('%%mlstep')) {
          void showErrorMessage('mlpipe', 'This cell is already a pipeline step.');
          return;
        }
        const index = notebooks.currentWidget?.content.activeCellIndex ?? 0;
        const name = await InputDialog.getText({
          title: 'Step name',
          text: `step${index + 1}`
        });
        if (!name.button.accept || !name.value) {
          return;
        }
        if (cell.model.type !== 'code') {
          void showErrorMessage('mlpipe', 'Only a code cell can be a pipeline step.');
          return;
        }
        cell.model.sharedModel.setSource(`%%mlstep ${name.value.trim()} --output out\n${source}`);
      }
    });
    app.contextMenu.addItem({ command: COMMANDS.makeStep, selector: '.jp-Notebook .jp-CodeCell', rank: 20 });
    palette?.addItem({ command: COMMANDS.runNotebook, category: 'mlpipe' });
    palette?.addItem({ command: COMMANDS.makeStep, category: 'mlpipe' });
    palette?.addItem({ command: COMMANDS.showPanel, category: 'mlpipe' });

    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (widget: NotebookPanel) => {
        const button = new ToolbarButton({
          icon: mlpipeIcon,
          label: 'Run as pipeline',
          className: 'mlpipe-run-button',
          tooltip: 'Run this notebook as an mlpipe pipeline',
          onClick: () => {
            void widget.context.save().then(() => runAsPipeline(widget.context.path, panel, app));
          }
        });
        widget.toolbar.insertItem(10, 'mlpipeRun', button);
        return button;
      }
    });
  }
};

export default plugin;
