// The main-area tabs of comparisons and sweeps: their commands (mlpipe:compare-runs with
// {runs: [...]}, mlpipe:open-sweep with {sweep}), one tab per comparison or sweep (opening
// an open one activates it), and restoring them with the layout.
import { ILayoutRestorer, JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget, showErrorMessage, WidgetTracker } from '@jupyterlab/apputils';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { CompareView } from './compare';
import { RunEvents } from './events';
import { SweepView } from './sweepview';

export const COMPARE_COMMANDS = {
  compareRuns: 'mlpipe:compare-runs',
  openSweep: 'mlpipe:open-sweep'
};

function runList(args: unknown): string[] {
  const runs = (args as { runs?: unknown }).runs;
  if (Array.isArray(runs)) {
    return runs.map(String);
  }
  return typeof runs === 'string' ? runs.split(',').map(r => r.trim()).filter(Boolean) : [];
}

export function addCompareTabs(
  app: JupyterFrontEnd,
  events: RunEvents,
  rendermime: IRenderMimeRegistry | null,
  restorer: ILayoutRestorer | null,
  icon: LabIcon,
  openRun: (runId: string) => void
): void {
  const mount = <T extends Widget>(content: T, id: string, tracker: WidgetTracker<MainAreaWidget<T>>) => {
    const widget = new MainAreaWidget({ content });
    widget.id = id;
    widget.title.icon = icon;
    widget.title.closable = true;
    const follow = () => {
      widget.title.label = content.title.label;
      widget.title.caption = content.title.caption;
    };
    content.title.changed.connect(follow);
    follow();
    app.shell.add(widget, 'main');
    void tracker.add(widget);
    app.shell.activateById(widget.id);
    return widget;
  };

  const comparisons = new WidgetTracker<MainAreaWidget<CompareView>>({ namespace: 'mlpipe-compare' });
  app.commands.addCommand(COMPARE_COMMANDS.compareRuns, {
    label: 'Compare mlpipe Runs',
    execute: async args => {
      const runs = runList(args);
      if (runs.length < 2) {
        void showErrorMessage('mlpipe', 'Select two or more runs to compare.');
        return;
      }
      const key = runs.join(',');
      const open = comparisons.find(w => w.content.runIds.join(',') === key);
      if (open) {
        app.shell.activateById(open.id);
        return;
      }
      const content = new CompareView(runs, events, { openRun }, rendermime);
      await content.refresh();
      mount(content, `mlpipe-compare-${Date.now()}`, comparisons);
    }
  });

  const sweeps = new WidgetTracker<MainAreaWidget<SweepView>>({ namespace: 'mlpipe-sweep' });
  app.commands.addCommand(COMPARE_COMMANDS.openSweep, {
    label: args => (args.sweep ? `Open mlpipe Sweep ${args.sweep}` : 'Open mlpipe Sweep'),
    execute: async args => {
      const ref = String(args.sweep ?? 'latest');
      const open = sweeps.find(w => w.content.sweepId === ref);
      if (open) {
        app.shell.activateById(open.id);
        return;
      }
      const content = new SweepView(ref, events, {
        openRun,
        compareRuns: runs => void app.commands.execute(COMPARE_COMMANDS.compareRuns, { runs })
      }, rendermime);
      await content.refresh();
      const same = sweeps.find(w => w.content.sweepId === content.sweepId);
      if (same) {
        content.dispose();
        app.shell.activateById(same.id);
        return;
      }
      mount(content, `mlpipe-sweep-${content.sweepId}`, sweeps);
    }
  });

  if (restorer) {
    void restorer.restore(comparisons, {
      command: COMPARE_COMMANDS.compareRuns,
      args: widget => ({ runs: widget.content.runIds }),
      name: widget => widget.content.runIds.join(',')
    });
    void restorer.restore(sweeps, {
      command: COMPARE_COMMANDS.openSweep,
      args: widget => ({ sweep: widget.content.sweepId }),
      name: widget => widget.content.sweepId
    });
  }
}
