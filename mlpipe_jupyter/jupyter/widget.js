// The mlpipe run DAG: a layered SVG drawing of the run's steps, coloured by status, its
// edges labelled with the variables that flow along them.
// It only renders the synced state (run_id, status, notebook, error, steps); click a step
// to see its details. No build step: anywidget loads this file as an ES module.

const COLORS = {
  queued: "#9e9e9e", running: "#1e88e5", succeeded: "#43a047", failed: "#e53935",
  reused: "#00897b", skipped: "#cfd8dc", canceled: "#fb8c00",
};
const NODE_W = 150, NODE_H = 44, GAP_X = 60, GAP_Y = 18, PAD = 12;
const LABELLED_GAP_X = 110, LABEL_H = 13; // room for the variables along an edge
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function html(tag, text, parent, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

function seconds(value) {
  return value === null || value === undefined ? "" : `${Number(value).toFixed(1)}s`;
}

function hasVariables(steps) {
  return steps.some((s) => Object.values(s.variables || {}).some((names) => names.length));
}

// "df (from clean), settings (from load)": what a step receives, for its details.
function receivedText(step) {
  return Object.entries(step.variables || {})
    .flatMap(([producer, names]) => names.map((name) => `${name} (from ${producer})`))
    .join(", ");
}

// The label of an edge: the names, cut with … to about `room` pixels.
function edgeLabel(names, room) {
  const text = names.join(", ");
  const fits = Math.max(3, Math.floor(room / 6)); // ~6px a character at --jp-ui-font-size0
  return text.length <= fits ? text : `${text.slice(0, fits - 1).trimEnd()}…`;
}

// The height of the edge's curve at x (it runs left to right).
function curveAt(x1, y1, x2, y2, x) {
  const mid = (x1 + x2) / 2;
  let lo = 0, hi = 1;
  for (let i = 0; i < 20; i++) {
    const t = (lo + hi) / 2, u = 1 - t;
    const at = u * u * u * x1 + 3 * u * t * mid + t * t * t * x2;
    if (at < x) lo = t; else hi = t;
  }
  const t = (lo + hi) / 2, u = 1 - t;
  return u * u * u * y1 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t * t * t * y2;
}

function layout(steps) {
  const gap = hasVariables(steps) ? LABELLED_GAP_X : GAP_X;
  const byLayer = new Map();
  for (const step of steps) {
    if (!byLayer.has(step.layer)) byLayer.set(step.layer, []);
    byLayer.get(step.layer).push(step);
  }
  const places = new Map();
  let rows = 0, cols = 0;
  for (const [layer, members] of byLayer) {
    cols = Math.max(cols, layer + 1);
    rows = Math.max(rows, members.length);
    members.forEach((step, index) => {
      places.set(step.name, { x: PAD + layer * (NODE_W + gap), y: PAD + index * (NODE_H + GAP_Y) });
    });
  }
  const width = PAD * 2 + cols * NODE_W + Math.max(0, cols - 1) * gap;
  const height = PAD * 2 + rows * NODE_H + Math.max(0, rows - 1) * GAP_Y;
  return { places, width, height, gap };
}

function drawGraph(steps, selected, onSelect) {
  const { places, width, gap, height: nodesHeight } = layout(steps);
  let height = nodesHeight;
  const root = svg("svg", { width, class: "mlpipe-graph" });
  const labels = [];
  for (const step of steps) {
    const to = places.get(step.name);
    for (const name of step.upstream || []) {
      const from = places.get(name);
      if (!from || !to) continue;
      const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2, x2 = to.x, y2 = to.y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      svg("path", { d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`, fill: "none",
                    stroke: "#90a4ae", "stroke-width": 1.5, "marker-end": "url(#mlpipe-arrow)" }, root);
      const names = (step.variables || {})[name] || [];
      if (names.length) {
        // in the gap just before the step (no node is there), above the curve
        const x = x2 - gap / 2;
        labels.push({ x, y: curveAt(x1, y1, x2, y2, x) - 4, from: name, to: step.name, names });
      }
    }
  }
  // labels of edges that meet closely are moved down until they no longer overlap
  const placed = [];
  for (const label of labels.sort((a, b) => a.x - b.x || a.y - b.y)) {
    while (placed.some((p) => Math.abs(p.x - label.x) < gap && Math.abs(p.y - label.y) < LABEL_H)) {
      label.y += LABEL_H;
    }
    placed.push(label);
    const group = svg("g", { class: "mlpipe-edge-label", "data-from": label.from, "data-to": label.to }, root);
    svg("title", {}, group).textContent = `${label.names.join(", ")} (from ${label.from} to ${label.to})`;
    svg("text", { x: label.x, y: label.y, "text-anchor": "middle" }, group).textContent =
      edgeLabel(label.names, gap - 8);
    height = Math.max(height, label.y + 4);
  }
  root.setAttribute("height", String(height));
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const marker = svg("marker", { id: "mlpipe-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                 markerWidth: 6, markerHeight: 6, orient: "auto" }, svg("defs", {}, root));
  svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#90a4ae" }, marker);
  for (const step of steps) {
    const place = places.get(step.name);
    const group = svg("g", { transform: `translate(${place.x},${place.y})`, class: "mlpipe-step",
                             "data-step": step.name, "data-status": step.status, cursor: "pointer" }, root);
    const light = step.status === "skipped";
    svg("rect", { width: NODE_W, height: NODE_H, rx: 6, fill: COLORS[step.status] || "#9e9e9e",
                  stroke: step.name === selected ? "#263238" : "none", "stroke-width": 2 }, group);
    const ink = light ? "#37474f" : "#ffffff";
    const title = svg("text", { x: 8, y: 18, fill: ink, "font-size": 13, "font-weight": 600 }, group);
    title.textContent = step.name;
    const sub = svg("text", { x: 8, y: 35, fill: ink, "font-size": 11 }, group);
    const mark = step.reused ? "↺ " : "";
    sub.textContent = `${mark}${step.status} ${seconds(step.duration)}`.trim();
    group.addEventListener("click", () => onSelect(step.name));
  }
  return root;
}

function drawDetails(step, parent) {
  const box = html("div", null, parent, "mlpipe-details");
  html("strong", `${step.name}: ${step.status}`, box);
  const rows = [
    ["time", seconds(step.duration)],
    ["reused from run", step.reused ? step.reused_from || "?" : ""],
    ["why", (step.decision || "").split("\n")[0]],
    ["run-if", step.run_if || ""],
    ["condition", step.condition || ""],
    ["condition result", step.condition_result || ""],
    ["upstream", (step.upstream || []).join(", ")],
    ["receives", receivedText(step)],
    ["output notebook", step.output_notebook || ""],
  ];
  const table = html("table", null, box);
  for (const [key, value] of rows) {
    if (!value) continue;
    const tr = html("tr", null, table);
    html("th", key, tr);
    html("td", value, tr);
  }
  const metrics = Object.entries(step.metrics || {});
  if (metrics.length) {
    html("div", "metrics", box, "mlpipe-label");
    const mt = html("table", null, box);
    for (const [key, value] of metrics) {
      const tr = html("tr", null, mt);
      html("th", key, tr);
      const shown = typeof value !== "number" ? JSON.stringify(value)
        : Number.isInteger(value) ? String(value) : value.toPrecision(4);
      html("td", shown, tr);
    }
  }
  if (step.error) {
    html("div", "error", box, "mlpipe-label");
    html("pre", step.error, box, "mlpipe-error");
  }
  if (step.log_tail) {
    html("div", "log (last lines)", box, "mlpipe-label");
    html("pre", step.log_tail, box);
  }
}

const STYLE = `
.mlpipe-dag { font-family: var(--jp-ui-font-family, sans-serif); font-size: 12px; }
.mlpipe-dag .mlpipe-head { margin: 4px 0; color: var(--jp-ui-font-color1, #222); }
.mlpipe-dag .mlpipe-details { margin-top: 6px; padding: 6px; border-left: 3px solid #90a4ae; }
.mlpipe-dag th { text-align: left; padding-right: 10px; font-weight: normal; color: #607d8b; }
.mlpipe-dag pre { max-height: 14em; overflow: auto; background: rgba(0,0,0,0.04); padding: 4px; margin: 2px 0; }
.mlpipe-dag .mlpipe-graph-box { max-height: 480px; max-width: 100%; overflow: auto; }
.mlpipe-dag .mlpipe-error { color: #b71c1c; }
.mlpipe-dag .mlpipe-label { margin-top: 4px; color: #607d8b; }
.mlpipe-dag .mlpipe-edge-label text { fill: var(--jp-ui-font-color2, #616161); font-size: var(--jp-ui-font-size0, 10px);
  paint-order: stroke; stroke: var(--jp-layout-color0, #fff); stroke-width: 3px; stroke-linejoin: round; }
`;

function render({ model, el }) {
  const root = html("div", null, el, "mlpipe-dag");
  html("style", STYLE, root);
  const body = html("div", null, root);
  let selected = null;
  const draw = () => {
    const steps = model.get("steps") || [];
    // Large DAGs (up to a few hundred steps) scroll inside a bounded box; keep the user's
    // scroll position across the redraws that live updates cause.
    const previous = body.querySelector(".mlpipe-graph-box");
    const scroll = previous ? [previous.scrollLeft, previous.scrollTop] : [0, 0];
    body.replaceChildren();
    const runId = model.get("run_id");
    const head = runId
      ? `run ${runId} — ${model.get("status")} — ${model.get("notebook")}`
      : "waiting for the run to start…";
    html("div", head, body, "mlpipe-head");
    const graphBox = html("div", null, body, "mlpipe-graph-box");
    graphBox.appendChild(drawGraph(steps, selected, (name) => {
      selected = selected === name ? null : name;
      draw();
    }));
    [graphBox.scrollLeft, graphBox.scrollTop] = scroll;
    const step = steps.find((s) => s.name === selected);
    if (step) drawDetails(step, body);
    if (model.get("error") && model.get("status") !== "running") {
      html("pre", model.get("error"), body, "mlpipe-error");
    }
  };
  const names = ["steps", "status", "run_id", "error"];
  for (const name of names) model.on(`change:${name}`, draw);
  draw();
  return () => { for (const name of names) model.off(`change:${name}`, draw); };
}

export default { render };
