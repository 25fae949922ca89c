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
  Notification,
  showDialog,
  showErrorMessage,
  ToolbarButton,
  WidgetTracker
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon } from '@jupyterlab/ui-components';

import { ApiError, enc, INotebook, post, request } from './api';
import { addCompareTabs, COMPARE_COMMANDS } from './comparetabs';
import { DatasetsView } from './datasets';
import { RunEvents } from './events';
import { MlpipePanel } from './panel';
import { ParametersForm } from './parameters';
import { publishNotebook } from './publish';
import { PublishedView } from './published';
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
  openRun: 'mlpipe:open-run',
  publishNotebook: 'mlpipe:publish-notebook',
  openPublished: 'mlpipe:open-published',
  openDatasets: 'mlpipe:open-datasets'
};

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
        openRun: runId => void app.commands.execute(COMMANDS.openRun, { run: runId }),
        openDataset: (name, version) =>
          void app.commands.execute(COMMANDS.openDatasets, { name, version })
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
        openSweep: sweep => void app.commands.execute(COMPARE_COMMANDS.openSweep, { sweep }),
        openPublished: name => void app.commands.execute(COMMANDS.openPublished, name ? { name } : {}),
        openDatasets: () => void app.commands.execute(COMMANDS.openDatasets, {})
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
    // the published pipelines and the datasets: one main-area tab each
    const openTriggered = (runId: string) => {
      // a trigger starts a detached process: open the run once it is recorded
      let done = false;
      const open = () => {
        if (!done) {
          done = true;
          events.runChanged.disconnect(onRun);
          void app.commands.execute(COMMANDS.openRun, { run: runId });
        }
      };
      const onRun = (_: RunEvents, summary: { id: string }) => {
        if (summary.id === runId) {
          open();
        }
      };
      events.runChanged.connect(onRun);
      window.setTimeout(open, 15000);
    };
    const publishedViews = new WidgetTracker<MainAreaWidget<PublishedView>>({ namespace: 'mlpipe-published' });
    app.commands.addCommand(COMMANDS.openPublished, {
      label: 'Open mlpipe Published Pipelines and Schedules',
      execute: async args => {
        let widget = publishedViews.currentWidget;
        if (!widget || widget.isDisposed) {
          const content = new PublishedView(events, {
            openRun: runId => void app.commands.execute(COMMANDS.openRun, { run: runId }),
            openTriggered
          });
          widget = new MainAreaWidget({ content });
          widget.id = 'mlpipe-published';
          widget.title.label = content.title.label;
          widget.title.caption = content.title.caption;
          widget.title.icon = mlpipeIcon;
          widget.title.closable = true;
          app.shell.add(widget, 'main');
          await publishedViews.add(widget);
        }
        app.shell.activateById(widget.id);
        await widget.content.refresh();
        if (args.name) {
          widget.content.reveal(String(args.name));
        }
        return widget;
      }
    });
    const datasetViews = new WidgetTracker<MainAreaWidget<DatasetsView>>({ namespace: 'mlpipe-datasets' });
    app.commands.addCommand(COMMANDS.openDatasets, {
      label: 'Open mlpipe Datasets',
      execute: async args => {
        let widget = datasetViews.currentWidget;
        if (!widget || widget.isDisposed) {
          const content = new DatasetsView(events, {
            openRun: runId => void app.commands.execute(COMMANDS.openRun, { run: runId })
          });
          widget = new MainAreaWidget({ content });
          widget.id = 'mlpipe-datasets';
          widget.title.label = content.title.label;
          widget.title.caption = content.title.caption;
          widget.title.icon = mlpipeIcon;
          widget.title.closable = true;
          app.shell.add(widget, 'main');
          await datasetViews.add(widget);
        }
        app.shell.activateById(widget.id);
        if (args.name) {
          await widget.content.refresh();
          await widget.content.showDataset(String(args.name), args.version ? Number(args.version) : null);
        } else {
          await widget.content.refresh();
        }
        return widget;
      }
    });
    if (restorer) {
      void restorer.restore(publishedViews, { command: COMMANDS.openPublished, name: () => 'published' });
      void restorer.restore(datasetViews, { command: COMMANDS.openDatasets, name: () => 'datasets' });
    }
    const publish = async (path: string) => {
      let result;
      try {
        result = await publishNotebook(path);
      } catch (error) {
        void showErrorMessage('mlpipe: publishing failed', (error as Error).message);
        return;
      }
      if (result) {
        Notification.success(result.created
          ? `Published ${result.version.ref}${result.version.default ? ' (the default version)' : ''}`
          : `Unchanged: ${result.version.ref} has the same content`, { autoClose: 5000 });
        void panel.refreshPublished();
        await app.commands.execute(COMMANDS.openPublished, { name: result.published.name });
      }
    };
    app.commands.addCommand(COMMANDS.publishNotebook, {
      label: 'Publish Notebook as Pipeline…',
      caption: 'Publish this notebook as a versioned mlpipe pipeline (to trigger and schedule)',
      isEnabled: () => notebooks.currentWidget !== null,
      execute: async () => {
        const current = notebooks.currentWidget;
        if (current) {
          await current.context.save();
          await publish(current.context.path);
        }
      }
    });

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
    palette?.addItem({ command: COMMANDS.publishNotebook, category: 'mlpipe' });
    palette?.addItem({ command: COMMANDS.openPublished, category: 'mlpipe' });
    palette?.addItem({ command: COMMANDS.openDatasets, category: 'mlpipe' });

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
        const publishButton = new ToolbarButton({
          label: 'Publish',
          className: 'mlpipe-publish-button',
          tooltip: 'Publish this notebook as a versioned pipeline (to trigger and schedule)',
          onClick: () => {
            void widget.context.save().then(() => publish(widget.context.path));
          }
        });
        widget.toolbar.insertItem(11, 'mlpipePublish', publishButton);
        widget.disposed.connect(() => publishButton.dispose());
        return button;
      }
    });
  }
};

export default plugin;
