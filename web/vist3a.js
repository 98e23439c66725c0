// ComfyUI frontend extension of VIST3A: the interactive splat viewer inside "Preview Splats (VIST3A)".
// Uses only the long-standing extension API (app.registerExtension, beforeRegisterNodeDef,
// node.addDOMWidget, onExecuted), which the 1.32.x frontend pinned by ComfyUI 0.3.75 and the
// current 1.5x frontends both provide. Everything is bundled here: no CDN, works offline.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { SplatViewer } from "./splat_viewer.js";

const NODE = "VIST3APreviewSplats";
window.VIST3A_VIEWERS = window.VIST3A_VIEWERS || [];

function viewUrl(item) {
  const q = new URLSearchParams({ filename: item.filename, subfolder: item.subfolder || "", type: item.type || "temp" });
  return api.apiURL(`/view?${q.toString()}&t=${Date.now()}`);
}

const ICONS = {
  reset: '<svg viewBox="0 0 16 16" width="14" height="14" fill="none" stroke="currentColor" stroke-width="1.6"><path d="M3 8a5 5 0 1 0 1.5-3.5"/><path d="M3 2.5V5h2.5"/></svg>',
  fullscreen: '<svg viewBox="0 0 16 16" width="14" height="14" fill="none" stroke="currentColor" stroke-width="1.6"><path d="M2 6V2h4M10 2h4v4M14 10v4h-4M6 14H2v-4"/></svg>',
};

function button(icon, title, onClick) {
  const b = document.createElement("button");
  b.innerHTML = ICONS[icon];
  b.title = title;
  Object.assign(b.style, {
    background: "rgba(30,30,34,0.85)", color: "#eee", border: "1px solid #555", borderRadius: "4px",
    padding: "3px 5px", lineHeight: "0", cursor: "pointer", pointerEvents: "auto",
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
  bar.append(select, button("reset", "Reset view (double-click, R)", () => viewer.reset()), button("fullscreen", "Full screen (F)", () => viewer.fullscreen()));
  box.appendChild(bar);
  const help = document.createElement("div");
  help.textContent = "drag: orbit · right/shift-drag: pan · wheel: zoom";
  Object.assign(help.style, { position: "absolute", left: "8px", bottom: "6px", color: "#999", font: "11px sans-serif", pointerEvents: "none" });
  box.appendChild(help);
  node.vist3a = { viewer, box, select, items: [] };
  window.VIST3A_VIEWERS.push(viewer);
  const widget = node.addDOMWidget("vist3a_viewer", "VIST3A_SPLAT_VIEWER", box, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => 240,
    getHeight: () => 360,
  });
  widget.computeSize = function (width) {
    return [width, 360];
  };
  return widget;
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
      const state = this.vist3a;
      if (state && items.length) {
        state.items = items;
        state.select.innerHTML = "";
        items.forEach((it, i) => {
          const o = document.createElement("option");
          o.value = String(i);
          o.textContent = `scene ${i + 1}`;
          state.select.appendChild(o);
        });
        state.select.style.display = items.length > 1 ? "block" : "none";
        showItem(this, 0);
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
