// ComfyUI frontend extension of VIST3A: the interactive splat viewer inside "Preview Splats (VIST3A)".
// Uses only the long-standing extension API (app.registerExtension, beforeRegisterNodeDef,
// node.addDOMWidget, onExecuted), which the 1.32.x frontend pinned by ComfyUI 0.3.75 and the
// current 1.5x frontends both provide. The renderer is Spark, bundled in web/vendor/: no CDN, works offline.
// The viewer comes back after a workflow tab switch or a page reload with the latest run: the newest of this
// workflow in the server's history, else the frontend's stored node outputs, else the items kept in the node's
// properties.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { SplatViewer } from "./splat_viewer.js";

const NODE = "VIST3APreviewSplats";
window.VIST3A_VIEWERS = window.VIST3A_VIEWERS || [];

function viewUrl(item) {
  const q = new URLSearchParams({ filename: item.filename, subfolder: item.subfolder || "", type: item.type || "temp" });
  return api.apiURL(`/view?${q.toString()}&t=${Date.now()}`);
}

// Overlay text: white on a dark translucent pill, readable on any background.
const OVERLAY_CSS = `.vist3a-overlay { position: absolute; color: #fff; font: 12px/1.35 sans-serif; background: rgba(0,0,0,0.62);
  padding: 2px 7px; border-radius: 4px; pointer-events: none; text-shadow: 0 1px 2px #000; max-width: calc(100% - 20px);
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }`;
if (!document.getElementById("vist3a-style")) {
  const style = document.createElement("style");
  style.id = "vist3a-style";
  style.textContent = OVERLAY_CSS;
  document.head.appendChild(style);
}

const ICONS = {
  reset: '<svg viewBox="0 0 16 16" width="14" height="14" fill="none" stroke="currentColor" stroke-width="1.6"><path d="M3 8a5 5 0 1 0 1.5-3.5"/><path d="M3 2.5V5h2.5"/></svg>',
  fullscreen: '<svg viewBox="0 0 16 16" width="14" height="14" fill="none" stroke="currentColor" stroke-width="1.6"><path d="M2 6V2h4M10 2h4v4M14 10v4h-4M6 14H2v-4"/></svg>',
};

function button(icon, title, onClick) {
  const b = document.createElement("button");
  if (ICONS[icon]) b.innerHTML = ICONS[icon];
  else { b.textContent = icon; b.style.font = "11px sans-serif"; }
  b.title = title;
  Object.assign(b.style, {
    background: "rgba(30,30,34,0.85)", color: "#eee", border: "1px solid #555", borderRadius: "4px",
    padding: "3px 5px", lineHeight: ICONS[icon] ? "0" : "14px", cursor: "pointer", pointerEvents: "auto",
  });
  b.addEventListener("pointerdown", (e) => e.stopPropagation());
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
  return b;
}

function createViewerWidget(node) {
  const box = document.createElement("div");
  box.className = "vist3a-viewer";
  Object.assign(box.style, { position: "relative", width: "100%", height: "100%", minHeight: "220px", background: "#212124", overflow: "hidden", borderRadius: "4px" });
  const viewer = new SplatViewer(box);
  const bar = document.createElement("div");
  Object.assign(bar.style, { position: "absolute", right: "6px", top: "6px", display: "flex", gap: "4px", pointerEvents: "none" });
  const select = document.createElement("select");
  Object.assign(select.style, { display: "none", pointerEvents: "auto", font: "12px sans-serif" });
  select.addEventListener("pointerdown", (e) => e.stopPropagation());
  select.addEventListener("change", () => showItem(node, Number(select.value)));
  const up = button("up", "Up axis: cycle auto / ±y / ±z / ±x (U)", () => viewer.cycleUp());
  up.className = "vist3a-up";
  bar.append(select, up, button("reset", "Reset view (double-click, R)", () => viewer.reset()), button("fullscreen", "Full screen (F)", () => viewer.fullscreen()));
  box.appendChild(bar);
  const help = document.createElement("div");
  help.className = "vist3a-help vist3a-overlay";
  help.textContent = "drag: orbit · right/shift-drag: pan · wheel: zoom · U: up axis";
  Object.assign(help.style, { left: "6px", bottom: "6px", fontSize: "11px" });
  box.appendChild(help);
  node.vist3a = { viewer, box, select, items: [], shown: null, runs: 0 };
  window.VIST3A_VIEWERS.push(viewer);
  // no fixed height: the frontend gives the widget whatever the node has left, so it fills a resized node
  return node.addDOMWidget("vist3a_viewer", "VIST3A_SPLAT_VIEWER", box, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => 240,
  });
}

function setItems(node, items) {
  const state = node.vist3a;
  if (!state || !items?.length) return;
  const key = items.map((it) => it.filename).join("|");
  if (state.shown === key) return;
  state.shown = key;
  state.items = items;
  state.select.innerHTML = "";
  items.forEach((it, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = `scene ${i + 1}`;
    state.select.appendChild(o);
  });
  state.select.style.display = items.length > 1 ? "block" : "none";
  showItem(node, 0);
}

/** The node's last output in the frontend's store (kept across workflow tab switches). */
function storeItems(node) {
  const items = (app.nodeOutputs || {})[String(node.id)]?.vist3a_splats;
  return items?.length ? items : null;
}

/** {node id: items} of the newest runs of this workflow in the server's history: the latest run, whatever this
 * page saved (the server keeps its history until it restarts). */
async function latestFromHistory() {
  try {
    const res = await api.fetchApi("/history?max_items=64");
    if (!res.ok) return {};
    const history = await res.json();
    const graphId = app.graph?.id;
    const latest = {};
    for (const entry of Object.values(history)) {  // oldest first
      const workflowId = entry?.prompt?.[3]?.extra_pnginfo?.workflow?.id;
      if (graphId && workflowId && workflowId !== graphId) continue;
      for (const [nodeId, out] of Object.entries(entry?.outputs || {})) {
        if (out?.vist3a_splats?.length) latest[nodeId] = out.vist3a_splats;
      }
    }
    return latest;
  } catch (err) {
    return {};
  }
}

/** Show each viewer's latest scene. From the store only (tab switch), or with `history` (page load, end of a run):
 * the server's history first, then the store, then the items saved in the node's properties (which can be a run
 * behind: a reload right after a run may come before the frontend saved the workflow again). */
async function restoreAll({ history = false } = {}) {
  const nodes = (app.graph?._nodes || []).filter((n) => n.type === NODE && n.vist3a);
  if (!nodes.length) return;
  const runs = nodes.map((n) => n.vist3a.runs);
  const latest = history ? await latestFromHistory() : {};
  for (const [i, node] of nodes.entries()) {
    if (node.vist3a.runs !== runs[i]) continue;  // a run's output arrived meanwhile: it is newer than the history read
    const items = latest[String(node.id)];
    if (items) {
      node.properties = node.properties || {};
      node.properties.vist3a_splats = items;
    }
    setItems(node, items || storeItems(node) || (history ? node.properties?.vist3a_splats : null));
  }
}

function showItem(node, index) {
  const state = node.vist3a;
  const item = state?.items[index];
  if (!item) return;
  state.viewer.loadUrl(viewUrl(item), item).catch((err) => {
    state.viewer.stats.error = String(err);
    console.error(err);
  });
}

// Template cards: ComfyUI titles a custom pack's templates by file name and shows the name again, dashes as
// spaces, as the card's subtitle. Ours get their one-line summary instead (web/templates.json, written with the
// workflows by tools/comfy_workflows.py). Only text nodes inside an open dialog that equal such a subtitle change.
const SUMMARIES = new Map();
const squash = (text) => text.replace(/\s+/g, " ").trim();
const subtitleKey = (name) => squash(name.replace(/[-_]/g, " "));  // the subtitle the frontends make of a name
fetch(new URL("./templates.json", import.meta.url))
  .then((r) => (r.ok ? r.json() : {}))
  .then((data) => {
    for (const [name, summary] of Object.entries(data)) SUMMARIES.set(subtitleKey(name), summary);
    if (SUMMARIES.size) watchTemplateCards();
  })
  .catch(() => {});

function summarizeTemplateCards() {
  for (const dialog of document.querySelectorAll('[role="dialog"], .p-dialog')) {
    const walker = document.createTreeWalker(dialog, NodeFilter.SHOW_TEXT);
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const summary = SUMMARIES.get(squash(t.nodeValue));  // the title keeps its " - ", so it never matches
      if (summary) t.nodeValue = summary;
    }
  }
}

function watchTemplateCards() {
  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; summarizeTemplateCards(); });
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
}

// A page reloaded while a run was still going shows the run once the server has finished it.
api.addEventListener("status", ({ detail }) => {
  if (detail?.exec_info?.queue_remaining === 0) setTimeout(() => restoreAll({ history: true }), 0);
});

app.registerExtension({
  name: "VIST3A.SplatViewer",
  afterConfigureGraph() { setTimeout(() => restoreAll({ history: true }), 0); },
  onNodeOutputsUpdated() { setTimeout(restoreAll, 0); },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      createViewerWidget(this);
      const size = this.size || [0, 0];
      this.setSize?.([Math.max(size[0], 420), Math.max(size[1], 460)]);
      return r;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const items = message?.vist3a_splats || [];
      if (items.length) {
        this.properties = this.properties || {};
        this.properties.vist3a_splats = items;
        if (this.vist3a) {
          this.vist3a.shown = null;
          this.vist3a.runs++;
        }
        setItems(this, items);
      }
      return r;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      const v = this.vist3a?.viewer;
      if (v) {
        v.dispose();
        window.VIST3A_VIEWERS = window.VIST3A_VIEWERS.filter((x) => x !== v);
      }
      return onRemoved?.apply(this, arguments);
    };
  },
});
