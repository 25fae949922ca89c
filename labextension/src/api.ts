// The REST API of the mlpipe server extension (see mlpipe_jupyter/server/openapi.yaml).
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export type RunStatus = 'running' | 'succeeded' | 'failed' | 'canceled';

export interface IRunSummary {
  id: string;
  status: RunStatus;
  experiment: string;
  notebook: string;
  created_at: number;
  ended_at: number | null;
  duration: number | null;
  step_counts: Record<string, number>;
  /** The run's parameter values as JSON can carry them (lossy: no tuples, True is true). */
  params: Record<string, unknown>;
  /** Each value as the text `-p NAME=` takes (strings as they are, else Python literals);
   * absent from servers older than issue 12. */
  param_texts?: Record<string, string>;
  error: string | null;
  live: boolean;
  /** The sweep the run is a member of (servers before issue 16: absent). */
  sweep?: string | null;
}

export interface IStep {
  name: string;
  status: string;
  layer: number;
  upstream: string[];
  /** The variables it receives, by the upstream step that saved them (older servers: none). */
  variables?: Record<string, string[]>;
  cell: number | null;
  started_at?: number | null;
  ended_at?: number | null;
  duration: number | null;
  attempts: number;
  fingerprint: string | null;
  reused: boolean;
  reused_from: string | null;
  decision: string | null;
  error: string | null;
  compute: string | null;
  metrics: Record<string, unknown>;
  has_output: boolean;
  /** Its --run-if rule when not the default, its --if condition, and how that came out
   * (older servers: none). */
  run_if?: string | null;
  condition?: string | null;
  condition_result?: string | null;
}

export interface IRunDetail extends IRunSummary {
  options: Record<string, unknown>;
  git: Record<string, unknown>;
  host?: string;
  /** "NAME@vN" for a run of a published pipeline. */
  published?: string | null;
  /** The run's lineage (servers before issue 17: absent). */
  datasets?: ILineage;
  /** What the run's notifications did when it ended; absent from servers before issue 15. */
  notifications?: INotification[];
  steps: IStep[];
}

/** A run's lineage: the dataset versions its steps read, and the ones its outputs became
 * (versions registered by this run; a reused step registers none). */
export interface ILineage {
  read: { step: string; input: string; dataset: string; version: number }[];
  written: { step: string; output: string; dataset: string; version: number }[];
}

/** One notification of a run (webhook, e-mail, apprise): the channel without credentials. */
export interface INotification {
  channel: string;
  source: string;
  run_status: string;
  status: 'sent' | 'failed';
  attempts: number;
  error: string | null;
  sent_at: number;
}

export interface INotebook {
  path: string;
  steps: { name: string; upstream: string[] }[];
  /** The --param defaults as JSON can carry them (lossy: no tuples, True is true). */
  parameters: Record<string, unknown>;
  /** Each default as the text `-p NAME=` takes (strings as they are, else Python literals,
   * e.g. `True`, `None`, `(1, 2)`); absent from servers older than issue 12. */
  parameter_texts?: Record<string, string>;
  error: string | null;
}

/**
 * A parameter value as the text a user types after `-p NAME=`: the server's text when it
 * sent one, else (older servers) the JSON value, as the panel used to show it.
 */
export function parameterText(
  name: string,
  values: Record<string, unknown>,
  texts?: Record<string, string>
): string {
  if (texts && Object.prototype.hasOwnProperty.call(texts, name)) {
    return texts[name];
  }
  const value = values[name];
  return typeof value === 'string' ? value : JSON.stringify(value);
}

export interface IOutputLink {
  path: string | null;
  openable: boolean;
  lab_url: string | null;
  html_url: string;
}

export interface IPublishedVersion {
  name: string;
  version: number;
  ref: string;
  description: string | null;
  created_at: number;
  disabled: boolean;
  default: boolean;
  parameters?: Record<string, unknown>;
  /** The published defaults as `-p` texts (like INotebook.parameter_texts). */
  parameter_texts?: Record<string, string>;
}

export interface IPublished {
  name: string;
  default_version: number | null;
  versions: IPublishedVersion[];
}

export interface ISchedule {
  id: number;
  name: string;
  pipeline: string;
  version: number | null;
  kind: string;
  paused: boolean;
  trigger: string;
  next_fire_times: string[];
  last_firing: {
    fire_time: string;
    status: string;
    run_id: string | null;
    /** The sweep the firing started (a schedule with a sweep). */
    sweep_id?: string | null;
    run_status: string | null;
    error: string | null;
  } | null;
  /** The schedule's fields, as the edit form fills them in (issue 17). */
  cron?: string | null;
  timezone?: string;
  every_seconds?: number | null;
  dataset?: string | null;
  /** Its parameter values as `-p` texts. */
  params?: Record<string, string>;
  missed?: string;
  overlap?: string;
  max_retries?: number;
  retry_backoff?: number;
  timeout?: number | null;
  sweep?: { sweep: string[]; samples?: number | null; seed?: number | null } | null;
  /** Where its runs notify: channels with credentials stripped (kept on edit by id). */
  notify?: { id: number; channel: string; on: string[] }[];
}

/** A parameter sweep as the sweep list shows it (`GET sweeps`). */
export interface ISweepSummary {
  id: string;
  status: RunStatus;
  notebook: string;
  experiment: string;
  created_at: number;
  ended_at: number | null;
  /** What is swept: {sweep: ["C=0.1,1", ...], samples?, seed?}. */
  spec: { sweep?: string[]; samples?: number; seed?: number };
  members: number;
  /** Members by status (pending: not started yet). */
  counts: Record<string, number>;
  published: string | null;
  schedule: string | null;
  live: boolean;
}

/** One member of a sweep: its swept values and metrics ("STEP.METRIC"). */
export interface ISweepRow {
  position: number;
  run_id: string;
  status: string;
  params: Record<string, unknown>;
  metrics: Record<string, unknown>;
  best: boolean;
}

/** A sweep's table (`GET sweeps/{id}?sort=&ascending=`). */
export interface ISweepDetail extends Omit<ISweepSummary, 'members'> {
  parameters: string[];
  metrics: string[];
  sort: string | null;
  ascending: boolean;
  /** step -> how many members executed it (the others reused its result). */
  executed: Record<string, number>;
  rows: ISweepRow[];
}

/** Runs side by side (`GET compare?runs=A,B`); the first is the baseline. */
export interface IComparison {
  runs: {
    run_id: string;
    status: RunStatus;
    notebook: string;
    created_at: number | null;
    experiment: string | null;
    git: Record<string, unknown>;
    sweep: string | null;
  }[];
  /** name -> each run's value as a `-p` text. */
  parameters: Record<string, string[]>;
  differing_parameters: string[];
  /** "STEP.METRIC" -> each run's last value (null: not logged). */
  metrics: Record<string, unknown[]>;
  differing_metrics: string[];
  steps: {
    step: string;
    statuses: (string | null)[];
    fingerprints: (string | null)[];
    /** per run, the fingerprint components that differ from the baseline's. */
    changed: string[][];
    /** per run, the sentences that explain them. */
    changes: string[][];
    differs: boolean;
  }[];
}

/** A published version as GET published lists it (more than IPublishedVersion needs). */
export interface IPublishedVersionDetail extends IPublishedVersion {
  steps?: { name: string; after?: string[] }[];
  datasets?: string[];
  source?: string;
}

/** A dataset version, with the run, step and output that produced it (null: by hand). */
export interface IDatasetVersion {
  name: string;
  version: number;
  ref: string;
  kind: string;
  created_at: number;
  files: number;
  bytes: number;
  fingerprint: string;
  description: string | null;
  source: string;
  produced_by: { run_id: string; step: string; output: string } | null;
  /** In the datasets list: how many versions the dataset has. */
  versions?: number;
}

/** A version's files and, for a tabular one, its first rows (cells as text, null: missing). */
export interface IDatasetPreview extends IDatasetVersion {
  file_list: { path: string; bytes: number }[];
  table: { columns: string[]; dtypes: string[]; rows: (string | null)[][] } | null;
}

/** One problem of a refused request, with the request field it is about (null: none). */
export interface IErrorDetail {
  message: string;
  field: string | null;
}

/** An answer of the API that is not 2xx: carries the server's message (and, for invalid
 * requests, each problem with its field). */
export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public details: IErrorDetail[] = []
  ) {
    super(message);
  }
}

function apiUrl(path: string): string {
  const settings = ServerConnection.makeSettings();
  return URLExt.join(settings.baseUrl, 'mlpipe', 'api', path);
}

/** Call the API; resolves to the parsed JSON answer, rejects with ApiError. */
export async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const response = await ServerConnection.makeRequest(apiUrl(path), init, settings);
  const text = await response.text();
  const body = text ? JSON.parse(text) : {};
  if (!response.ok) {
    throw new ApiError(response.status, body.message || response.statusText, body.details || []);
  }
  return body as T;
}

/** The published pipelines and the schedules, read together (the sidebar and the
 * published view show both). */
export async function fetchPublished(): Promise<{ published: IPublished[]; schedules: ISchedule[] }> {
  const [published, schedules] = await Promise.all([
    request<{ published: IPublished[] }>('published'),
    request<{ schedules: ISchedule[] }>('schedules')
  ]);
  return { published: published.published, schedules: schedules.schedules };
}

export function post<T>(path: string, body: unknown = {}): Promise<T> {
  return request<T>(path, { method: 'POST', body: JSON.stringify(body) });
}

export function put<T>(path: string, body: unknown = {}): Promise<T> {
  return request<T>(path, { method: 'PUT', body: JSON.stringify(body) });
}

export function del<T>(path: string): Promise<T> {
  return request<T>(path, { method: 'DELETE' });
}

export function enc(part: string): string {
  return encodeURIComponent(part);
}

/**
 * Follow a server-sent event stream of the API. It is read from an authenticated fetch (so
 * the token header applies, unlike EventSource); the server pushes, the browser never polls.
 * Returns a function that stops following.
 */
export function follow(
  path: string,
  onEvent: (event: string, data: any) => void,
  onEnd?: () => void
): () => void {
  const abort = new AbortController();
  const settings = ServerConnection.makeSettings();
  (async () => {
    const response = await ServerConnection.makeRequest(
      apiUrl(path),
      { signal: abort.signal },
      settings
    );
    if (!response.ok || !response.body) {
      throw new ApiError(response.status, response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      buffer += decoder.decode(value, { stream: true });
      let cut = buffer.indexOf('\n\n');
      while (cut >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) {
            event = line.slice(7);
          } else if (line.startsWith('data: ')) {
            data += line.slice(6);
          }
        }
        onEvent(event, data ? JSON.parse(data) : null);
        cut = buffer.indexOf('\n\n');
      }
    }
  })()
    .catch(error => {
      if (!abort.signal.aborted) {
        console.warn('mlpipe: event stream ended', error);
      }
    })
    .finally(() => {
      if (!abort.signal.aborted && onEnd) {
        onEnd();
      }
    });
  return () => abort.abort();
}
