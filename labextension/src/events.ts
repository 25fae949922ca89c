// The server's change events, followed once per JupyterLab page and shared by the sidebar
// and every open run view (the server pushes; nothing polls).
import { ISignal, Signal } from '@lumino/signaling';

import { follow, IRunSummary } from './api';

export class RunEvents {
  /** A run changed (started, a step moved on, ended): its summary. */
  get runChanged(): ISignal<this, IRunSummary> {
    return this._runChanged;
  }

  /** The stream (re)connected: what was shown may have missed changes. */
  get connected(): ISignal<this, void> {
    return this._connected;
  }

  /** Follow the server's events, reconnecting when the stream ends. */
  start(): void {
    this.stop?.();
    this.stop = follow(
      'events',
      (event, data) => {
        if (event === 'ready') {
          this._connected.emit();
        } else if (event === 'run') {
          this._runChanged.emit(data as IRunSummary);
        }
      },
      () => {
        // the server went away or restarted: try again in a while
        window.setTimeout(() => this.start(), 3000);
      }
    );
  }

  private stop: (() => void) | null = null;
  private _runChanged = new Signal<this, IRunSummary>(this);
  private _connected = new Signal<this, void>(this);
}
