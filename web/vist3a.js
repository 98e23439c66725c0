// ComfyUI frontend extension of VIST3A: the interactive splat viewer inside "Preview Splats (VIST3A)".
// Uses only the long-standing extension API (app.registerExtension, beforeRegisterNodeDef,
// node.addDOMWidget, onExecuted), which the 1.32.x frontend pinned by ComfyUI 0.3.75 and the
// current 1.5x frontends both provide. The renderer is Spark, bundled in web/vendor/: no CDN, works offline.
// The viewer comes back after a workflow tab switch or a page reload: from the frontend's stored node
// outputs when it has them, else from the last items kept in the node's properties.
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
  node.vist3a = { viewer, box, select, items: [], shown: null };
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

/** The node's last output: the frontend's store (tab switch) or the node's properties (reload). */
function storedItems(node) {
  const outputs = app.nodeOutputs || {};
  const fromStore = outputs[String(node.id)]?.vist3a_splats;
  return fromStore?.length ? fromStore : node.properties?.vist3a_splats;
}

function restoreAll() {
  for (const node of app.graph?._nodes || []) {
    if (node.type === NODE && node.vist3a) setItems(node, storedItems(node));
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

app.registerExtension({
  name: "VIST3A.SplatViewer",
  afterConfigureGraph() { setTimeout(restoreAll, 0); },
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
        if (this.vist3a) this.vist3a.shown = null;
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
