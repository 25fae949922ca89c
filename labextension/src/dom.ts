// Small DOM helpers shared by the sidebar and the views of the main area.

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  parent: HTMLElement | null,
  text?: string,
  className?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined) {
    node.textContent = text;
  }
  if (className) {
    node.className = className;
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

/** A button in JupyterLab's style, with an accessible name. */
export function button(
  parent: HTMLElement,
  text: string,
  label: string,
  className: string,
  onClick: () => void
): HTMLButtonElement {
  const node = el('button', parent, text, `jp-mod-styled mlpipe-button ${className}`);
  node.type = 'button';
  node.title = label;
  node.setAttribute('aria-label', label);
  node.addEventListener('click', onClick);
  return node;
}

/** Make `node` act as a button for the keyboard: focusable, Enter and Space activate. */
export function activatable(node: HTMLElement, label: string, onActivate: () => void): void {
  node.tabIndex = 0;
  node.setAttribute('aria-label', label);
  node.addEventListener('click', onActivate);
  node.addEventListener('keydown', event => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      onActivate();
    }
  });
}

export function when(timestamp: number): string {
  return new Date(timestamp * 1000).toLocaleString();
}

export function metricText(value: unknown): string {
  if (typeof value !== 'number') {
    return typeof value === 'string' ? value : JSON.stringify(value);
  }
  return Number.isInteger(value) ? String(value) : value.toPrecision(4);
}

/** Runs `action` once, `delayMs` after the first of a burst of requests: run events come
 * in bursts (every step of a big run), and a view reads the server once per burst. */
export class BurstRefresh {
  private pending = false;

  constructor(
    private action: () => void,
    private delayMs: number,
    private alive: () => boolean
  ) {}

  request(): void {
    if (this.pending) {
      return;
    }
    this.pending = true;
    window.setTimeout(() => {
      this.pending = false;
      if (this.alive()) {
        this.action();
      }
    }, this.delayMs);
  }
}
