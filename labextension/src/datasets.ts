// Datasets in the main area: every dataset (latest version, how many versions), and for the
// selected one its versions: which run and step produced each (click: that run's view),
// size and files, and the selected version's files with the first rows of a tabular one.
import { Widget } from '@lumino/widgets';

import { enc, IDatasetPreview, IDatasetVersion, IRunSummary, request } from './api';
import { ensureDagStyle } from './dag';
import { activatable, BurstRefresh, button, el, when } from './dom';
import { RunEvents } from './events';

export interface IDatasetsViewHost {
  openRun(runId: string): void;
}

/** 1234567 -> "1.2 MB". */
export function bytesText(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit ? `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}` : `${bytes} B`;
}

export class DatasetsView extends Widget {
  constructor(
    private events: RunEvents,
    private host: IDatasetsViewHost
  ) {
    super();
    this.id = 'mlpipe-datasets-view';
    this.addClass('mlpipe-dsview');
    this.addClass('mlpipe-dag'); // the status colours
    ensureDagStyle(document.head);
    this.title.label = 'Datasets';
    this.title.caption = 'mlpipe: datasets and their versions';
    this.title.closable = true;
    const head = el('div', this.node, undefined, 'mlpipe-rv-head');
    el('h2', head, 'Datasets', 'mlpipe-rv-notebook');
    const tools = el('div', head, undefined, 'mlpipe-rv-tools');
    button(tools, '⟳', 'Reload the datasets', 'mlpipe-reload', () => void this.refresh());
    const body = el('div', this.node, undefined, 'mlpipe-ds-body');
    this.listBox = el('nav', body, undefined, 'mlpipe-ds-list');
    this.listBox.setAttribute('aria-label', 'Datasets');
    const detail = el('div', body, undefined, 'mlpipe-ds-detail');
    this.versionsBox = el('section', detail, undefined, 'mlpipe-ds-versions');
    this.versionsBox.setAttribute('aria-label', 'Versions');
    this.previewBox = el('section', detail, undefined, 'mlpipe-ds-preview');
    this.previewBox.setAttribute('aria-label', 'Preview');
    this.events.runChanged.connect(this.onRunChanged, this);
  }

  /** The dataset and version shown (null: none yet). */
  get selection(): { name: string | null; version: number | null } {
    return { name: this.name, version: this.version };
  }

  async refresh(): Promise<void> {
    try {
      this.datasets = (await request<{ datasets: IDatasetVersion[] }>('datasets')).datasets;
    } catch (error) {
      this.listBox.replaceChildren();
      el('div', this.listBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    if (!this.name && this.datasets.length) {
      this.name = this.datasets[0].name;
    }
    this.drawList();
    if (this.name) {
      await this.showDataset(this.name, this.version);
    } else {
      this.versionsBox.replaceChildren();
      this.previewBox.replaceChildren();
    }
  }

  /** Show a dataset's versions and a version's preview (its latest when `version` is null). */
  async showDataset(name: string, version: number | null = null): Promise<void> {
    this.name = name;
    this.drawList();
    let versions: IDatasetVersion[];
    try {
      versions = (await request<{ versions: IDatasetVersion[] }>(`datasets/${enc(name)}`)).versions;
    } catch (error) {
      this.versionsBox.replaceChildren();
      el('div', this.versionsBox, String((error as Error).message), 'mlpipe-error');
      return;
    }
    this.versions = versions;
    if (version === null || !versions.some(v => v.version === version)) {
      version = versions[0]?.version ?? null;
    }
    this.drawVersions();
    if (version !== null) {
      await this.preview(version);
    }
  }

  dispose(): void {
    if (!this.isDisposed) {
      this.events.runChanged.disconnect(this.onRunChanged, this);
    }
    super.dispose();
  }

  private onRunChanged(_: RunEvents, summary: IRunSummary): void {
    // a run that ended may have registered dataset versions
    if (summary.status !== 'running') {
      this.refresher.request();
    }
  }

  private drawList(): void {
    const box = this.listBox;
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.dataset;
    box.replaceChildren();
    if (!this.datasets.length) {
      el('div', box, 'No datasets yet: `mlpipe dataset register NAME PATH`, or a step\'s ' +
        '`--output NAME=dataset:DS`.', 'mlpipe-empty');
      return;
    }
    const list = el('ul', box, undefined, 'mlpipe-ds-items');
    for (const dataset of this.datasets) {
      const item = el('li', list, undefined, 'mlpipe-ds-item');
      item.dataset.dataset = dataset.name;
      if (dataset.name === this.name) {
        item.classList.add('mlpipe-selected');
        item.setAttribute('aria-current', 'true');
      }
      const line = el('div', item, undefined, 'mlpipe-ds-line');
      el('span', line, dataset.name, 'mlpipe-ds-name');
      el('span', line, `v${dataset.version}`, 'mlpipe-rv-key');
      const sub = el('div', item, undefined, 'mlpipe-ds-sub');
      const count = dataset.versions ?? 1;
      sub.textContent = `${dataset.kind} · ${count} version${count === 1 ? '' : 's'} · ${bytesText(dataset.bytes)}`;
      activatable(item, `Show dataset ${dataset.name} (${count} versions)`, () => void this.showDataset(dataset.name));
      if (focused === dataset.name) {
        item.focus();
      }
    }
  }

  private drawVersions(): void {
    const box = this.versionsBox;
    box.replaceChildren();
    el('h3', box, `${this.name}: versions`, 'mlpipe-rv-title');
    const table = el('table', box, undefined, 'mlpipe-grid mlpipe-ds-version-table');
    table.setAttribute('aria-label', `Versions of ${this.name}, newest first`);
    const header = el('tr', el('thead', table));
    for (const title of ['Version', 'Created', 'Produced by', 'Size', 'Files', 'Description']) {
      el('th', header, title).scope = 'col';
    }
    const rows = el('tbody', table);
    for (const version of this.versions) {
      const tr = el('tr', rows, undefined, 'mlpipe-ds-version');
      tr.dataset.version = String(version.version);
      if (version.version === this.version) {
        tr.classList.add('mlpipe-selected');
        tr.setAttribute('aria-selected', 'true');
      }
      const ref = el('td', tr, version.ref, 'mlpipe-code mlpipe-nowrap');
      activatable(ref, `Preview ${version.ref}`, () => void this.preview(version.version));
      ref.classList.add('mlpipe-ds-ref');
      el('td', tr, when(version.created_at), 'mlpipe-nowrap');
      const producer = el('td', tr, undefined, 'mlpipe-wrap mlpipe-ds-producer');
      const made = version.produced_by;
      if (made) {
        const link = el('a', producer, made.run_id, 'mlpipe-link mlpipe-code mlpipe-ds-run');
        activatable(link, `Open run ${made.run_id}, which produced ${version.ref}`,
          () => this.host.openRun(made.run_id));
        el('span', producer, ` step ${made.step} (output ${made.output})`, 'mlpipe-rv-key');
      } else {
        el('span', producer, 'registered by hand', 'mlpipe-empty');
        producer.title = version.source;
      }
      el('td', tr, bytesText(version.bytes), 'mlpipe-num');
      el('td', tr, String(version.files), 'mlpipe-num');
      el('td', tr, version.description || '', 'mlpipe-wrap');
    }
  }

  private async preview(version: number): Promise<void> {
    this.version = version;
    for (const tr of this.versionsBox.querySelectorAll<HTMLElement>('.mlpipe-ds-version')) {
      const selected = tr.dataset.version === String(version);
      tr.classList.toggle('mlpipe-selected', selected);
      tr.setAttribute('aria-selected', String(selected));
    }
    const box = this.previewBox;
    const name = this.name!;
    let found: IDatasetPreview;
    try {
      found = await request<IDatasetPreview>(`datasets/${enc(name)}/versions/${version}/preview?rows=20`);
    } catch (error) {
      box.replaceChildren();
      el('div', box, String((error as Error).message), 'mlpipe-error');
      return;
    }
    if (this.name !== name || this.version !== version) {
      return; // another one was asked for meanwhile
    }
    box.replaceChildren();
    box.dataset.ref = found.ref;
    el('h3', box, `${found.ref}`, 'mlpipe-rv-title');
    const facts = el('div', box, undefined, 'mlpipe-rv-meta');
    for (const [key, value] of [['kind', found.kind], ['size', bytesText(found.bytes)],
      ['files', String(found.files)], ['fingerprint', found.fingerprint.slice(0, 12)]]) {
      const item = el('span', facts, undefined, 'mlpipe-rv-fact');
      el('span', item, `${key} `, 'mlpipe-rv-key');
      el('span', item, value);
    }
    if (found.table) {
      const shown = found.table.rows.length;
      el('div', box, `First ${shown} row${shown === 1 ? '' : 's'}`, 'mlpipe-form-section');
      const scroll = el('div', box, undefined, 'mlpipe-ds-table-scroll');
      scroll.tabIndex = 0;
      scroll.setAttribute('aria-label', `First rows of ${found.ref}`);
      const table = el('table', scroll, undefined, 'mlpipe-grid mlpipe-ds-rows');
      const header = el('tr', el('thead', table));
      found.table.columns.forEach((column, i) => {
        const th = el('th', header, undefined);
        th.scope = 'col';
        el('div', th, column);
        el('div', th, found.table!.dtypes[i], 'mlpipe-rv-key mlpipe-dtype');
      });
      const body = el('tbody', table);
      for (const row of found.table.rows) {
        const tr = el('tr', body);
        for (const cell of row) {
          el('td', tr, cell ?? '—', cell === null ? 'mlpipe-empty' : 'mlpipe-code');
        }
      }
    } else {
      el('div', box, 'Not a tabular dataset: no rows to preview.', 'mlpipe-empty');
    }
    el('div', box, 'Files', 'mlpipe-form-section');
    const files = el('ul', box, undefined, 'mlpipe-ds-files');
    for (const file of found.file_list) {
      const item = el('li', files);
      el('span', item, file.path, 'mlpipe-code');
      el('span', item, ` ${bytesText(file.bytes)}`, 'mlpipe-rv-key');
    }
    if (found.files > found.file_list.length) {
      el('li', files, `… and ${found.files - found.file_list.length} more`, 'mlpipe-empty');
    }
  }

  private datasets: IDatasetVersion[] = [];
  private versions: IDatasetVersion[] = [];
  private name: string | null = null;
  private version: number | null = null;
  private listBox: HTMLElement;
  private versionsBox: HTMLElement;
  private previewBox: HTMLElement;
  // read the server once per burst of events
  private refresher = new BurstRefresh(() => void this.refresh(), 500, () => !this.isDisposed);
}
