// Drive the real ComfyUI frontend in headless Debian chromium (playwright-core, no browser download):
// open the UI, load a shipped workflow, check every node type exists, shrink the heavy widgets, convert
// with the frontend's own graphToPrompt, queue it, wait for the VIST3A viewer to draw the splat, poke
// the controls, and take the README screenshots. Prints one JSON line with the findings.
//
//   node ui_test.mjs '{"url": "...", "workflow": "path.json", "overrides": {...}, "graphShot": "...", "viewerShot": "..."}'
import { readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

import { launchChromium } from "./chromium.mjs";

const cfg = JSON.parse(process.argv[2]);
class LoadOnlyDone extends Error {}  // cfg.loadOnly: stop after loading the workflow and converting it

async function closeDialogs(page) {
  for (let i = 0; i < 3; i++) {
    const open = await page.locator(".p-dialog").count();
    if (!open) break;
    await page.keyboard.press("Escape");
    await page.waitForTimeout(200);
  }
}
// In the page: the rendered widget areas (DOM widgets and the canvases in them: our viewer, ComfyUI's 3D viewports,
// text boxes) that leave their node or cover another node, for the nodes in view (or only node `onlyId`).
const installSpillCheck = (page) => page.evaluate(() => {
  window.__vist3aSpills = (onlyId) => {
    const canvas = window.app.canvas, ds = canvas.ds, cr = canvas.canvas.getBoundingClientRect(), th = window.LiteGraph.NODE_TITLE_HEIGHT;
    const nodes = window.app.graph._nodes.map((n) => {
      const x0 = cr.left + (n.pos[0] + ds.offset[0]) * ds.scale, y0 = cr.top + (n.pos[1] - th + ds.offset[1]) * ds.scale;
      return { id: n.id, type: n.type, x0, y0, x1: x0 + n.size[0] * ds.scale, y1: y0 + (n.size[1] + th) * ds.scale };
    });
    const spills = [];
    for (const w of document.querySelectorAll(".dom-widget")) {
      const wr = w.getBoundingClientRect();
      if (wr.width < 2 || wr.height < 2 || getComputedStyle(w).display === "none" || getComputedStyle(w).visibility === "hidden") continue;
      const owner = nodes.find((n) => wr.left + 1 >= n.x0 && wr.left + 1 <= n.x1 && wr.top + 1 >= n.y0 && wr.top + 1 <= n.y1);
      if (!owner || (onlyId !== undefined && owner.id !== onlyId)) continue;
      for (const part of [w, ...w.querySelectorAll("canvas")]) {
        const r = part.getBoundingClientRect();
        if (r.width < 2 || r.height < 2) continue;
        const what = `${owner.type}: ${part.tagName.toLowerCase()}.${String(part.className).split(" ")[0]}`;
        if (r.left < owner.x0 - 2 || r.top < owner.y0 - 2 || r.right > owner.x1 + 2 || r.bottom > owner.y1 + 2)
          spills.push({ what, out_of: "its node", by: [owner.x0 - r.left, owner.y0 - r.top, r.right - owner.x1, r.bottom - owner.y1].map(Math.round) });
        for (const o of nodes) {
          if (o !== owner && r.left < o.x1 - 1 && o.x0 < r.right - 1 && r.top < o.y1 - 1 && o.y0 < r.bottom - 1) spills.push({ what, over: o.type });
        }
      }
    }
    return spills;
  };
});

// The same at another zoom: each node in turn brought into view at `scale` (its top left at 160, 160).
const spillsAtScale = async (page, scale) => {
  const ids = await page.evaluate(() => window.app.graph._nodes.map((n) => n.id));
  const spills = [];
  for (const id of ids) {
    await page.evaluate(([id, scale]) => {
      const n = window.app.graph.getNodeById(id), ds = window.app.canvas.ds;
      ds.scale = scale;
      ds.offset = [160 / scale - n.pos[0], 160 / scale - n.pos[1]];
      window.app.canvas.setDirty(true, true);
    }, [id, scale]);
    await page.waitForTimeout(400);
    spills.push(...await page.evaluate((id) => window.__vist3aSpills(id), id));
  }
  return spills;
};

const layoutOf = (page) => page.evaluate(() => {
  const canvas = window.app.canvas, ds = canvas.ds, el = canvas.canvas, cr = el.getBoundingClientRect();
  const th = window.LiteGraph.NODE_TITLE_HEIGHT;
  const rects = window.app.graph._nodes.map((n) => ({ id: n.id, type: n.type, r: [n.pos[0], n.pos[1] - th, n.size[0], n.size[1] + th] }));
  const overlaps = [];
  for (let i = 0; i < rects.length; i++) for (let j = i + 1; j < rects.length; j++) {
    const [a, b] = [rects[i].r, rects[j].r];
    if (a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]) overlaps.push([rects[i].type, rects[j].type]);
  }
  const toScreen = (x, y) => [cr.left + (x + ds.offset[0]) * ds.scale, cr.top + (y + ds.offset[1]) * ds.scale];
  const hidden = [];
  for (const { type, r } of rects) {
    const [x0, y0] = toScreen(r[0], r[1]), [x1, y1] = toScreen(r[0] + r[2], r[1] + r[3]);
    const pts = [[x0 + 3, y0 + 3], [x1 - 3, y0 + 3], [(x0 + x1) / 2, y0 + 3], [x0 + 3, y1 - 3], [x1 - 3, y1 - 3], [x0 + 3, (y0 + y1) / 2], [x1 - 3, (y0 + y1) / 2]];
    for (const [x, y] of pts) {
      const hit = x >= 0 && y >= 0 && x < window.innerWidth && y < window.innerHeight ? document.elementFromPoint(x, y) : null;
      const ok = hit && (hit === el || hit.closest(".dom-widget, .vist3a-viewer, .comfy-markdown, .comfy-multiline-input, textarea, .p-panel-content, [class*='widget']"));
      if (!ok) { hidden.push({ type, at: [Math.round(x), Math.round(y)], hit: hit ? String(hit.className).slice(0, 60) || hit.tagName : "outside" }); break; }
    }
  }
  // litegraph draws nodes as untitled boxes below its level-of-detail zoom (1.45: min font size; 1.32: 0.6)
  const lowQuality = typeof canvas.low_quality === "boolean" ? canvas.low_quality : ds.scale < (canvas.low_quality_zoom_threshold ?? 0.6);
  return { scale: ds.scale, offset: [...ds.offset], overlaps, hidden, nodes: rects.length, lowQuality, spills: window.__vist3aSpills() };
});

// Screen rectangle of a node (title bar included) through the canvas transform, in the page.
const NODE_RECT_JS = `(node) => {
  const canvas = window.app.canvas, ds = canvas.ds, cr = canvas.canvas.getBoundingClientRect(), th = window.LiteGraph.NODE_TITLE_HEIGHT;
  const x0 = cr.left + (node.pos[0] + ds.offset[0]) * ds.scale, y0 = cr.top + (node.pos[1] - th + ds.offset[1]) * ds.scale;
  return { x: x0, y: y0, width: node.size[0] * ds.scale, height: (node.size[1] + th) * ds.scale };
}`;

// ComfyUI 0.28's own 3D viewers (Preview Splat, Save Splat): queue the workflow, wait for the prompt and for each
// viewer's picture to change and settle (two equal screenshots in a row), save those pictures (<nativeShotDir>/<node
// id>.png), read the toasts.
async function runNativeViewers(page, result) {
  const canvasRects = () => page.evaluate(([types, nodeRect]) => {
    const rectOf = eval(nodeRect);
    const out = {};
    for (const node of window.app.graph._nodes.filter((n) => types.includes(n.type))) {
      const r = rectOf(node);
      const inside = [...document.querySelectorAll(".dom-widget canvas")].map((c) => c.getBoundingClientRect())
        .filter((c) => c.width > 20 && c.left + c.width / 2 > r.x && c.left + c.width / 2 < r.x + r.width && c.top + c.height / 2 > r.y && c.top + c.height / 2 < r.y + r.height);
      if (inside.length) out[node.id] = { x: Math.round(inside[0].left), y: Math.round(inside[0].top), width: Math.round(inside[0].width), height: Math.round(inside[0].height) };
    }
    return out;
  }, [cfg.nativeViewers, NODE_RECT_JS]);
  const rects = await canvasRects();
  result.nativeRects = rects;
  const before = {};
  for (const [id, clip] of Object.entries(rects)) before[id] = (await page.screenshot({ clip })).toString("base64");
  const seen = new Set(Object.keys(await (await fetch(`${cfg.url}/history`)).json()));
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const t0 = Date.now();
  while (Date.now() - t0 < (cfg.timeoutMs || 300000)) {
    const h = await (await fetch(`${cfg.url}/history`)).json();
    const id = Object.keys(h).find((k) => !seen.has(k));
    if (id && ["success", "error"].includes(h[id].status?.status_str)) { result.status = h[id].status.status_str; break; }
    await page.waitForTimeout(1000);
  }
  log(`native prompt ${result.status}`);
  result.nativeDrawn = {};
  for (const [id, clip] of Object.entries(rects)) {
    let last = null, stable = false;
    const t1 = Date.now();
    while (Date.now() - t1 < 120000) {
      await page.waitForTimeout(1500);
      const shot = (await page.screenshot({ clip })).toString("base64");
      if (shot !== before[id] && shot === last) { stable = true; break; }
      last = shot;
    }
    result.nativeDrawn[id] = stable;
    if (cfg.nativeShotDir) writeFileSync(`${cfg.nativeShotDir}/${id}.png`, Buffer.from(last, "base64"));
  }
  result.toasts = await page.evaluate(() => [...document.querySelectorAll(".p-toast-message")].map((t) => t.innerText.trim()));
  if (cfg.graphAfterShot) await page.screenshot({ path: cfg.graphAfterShot });
}

// Queue a workflow that fails and read what the page shows: the text of the whole page once the error is up.
async function runFailing(page, result) {
  const seen = new Set(Object.keys(await (await fetch(`${cfg.url}/history`)).json()));
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const t0 = Date.now();
  while (Date.now() - t0 < 120000) {
    const h = await (await fetch(`${cfg.url}/history`)).json();
    const id = Object.keys(h).find((k) => !seen.has(k));
    if (id && ["success", "error"].includes(h[id].status?.status_str)) { result.status = h[id].status.status_str; break; }
    await page.waitForTimeout(500);
  }
  await page.waitForTimeout(2500);  // the error dialog / card and its animation
  result.pageText = await page.evaluate(() => document.body.innerText);
  if (cfg.errorShot) await page.screenshot({ path: cfg.errorShot });
  // then the details a user opens from the card (1.45: See Errors, 1.58: View details; 1.32 shows them at once)
  result.detailsOpened = await page.evaluate(() => {
    const b = [...document.querySelectorAll("button")].find((x) => ["See Errors", "View details"].includes(x.innerText.trim()) && x.offsetParent);
    if (b) b.click();
    return b ? b.innerText.trim() : null;
  });
  await page.waitForTimeout(2000);
  result.detailsText = await page.evaluate(() => document.body.innerText);
  if (cfg.detailsShot) await page.screenshot({ path: cfg.detailsShot });
}

// The template browser: open it, pick this pack's category, and read each of our cards: is its title cut (the
// title element or a parent clips it), and which summaries show. cfg.templates = {pack, names, summaries}.
async function readTemplateCards(page, result) {
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  await page.waitForFunction((pack) => [...document.querySelectorAll('[role="dialog"] *, .p-dialog *')]
    .some((e) => e.childElementCount === 0 && e.textContent.trim() === pack), cfg.templates.pack, { timeout: 60000 });
  await page.evaluate((pack) => {
    const item = [...document.querySelectorAll('[role="dialog"] *, .p-dialog *')].find((e) => e.childElementCount === 0 && e.textContent.trim() === pack);
    item.click();
  }, cfg.templates.pack);
  await page.waitForTimeout(3000);
  result.templates = await page.evaluate(({ names, summaries }) => {
    const dialog = document.querySelector('[role="dialog"]') || document.querySelector(".p-dialog");
    const texts = [...dialog.querySelectorAll("*")].filter((e) => e.childElementCount === 0);
    const clipped = (el) => {  // cut: the element or a parent clips it (ellipsis, line clamp)
      for (let e = el, i = 0; e && i < 3; e = e.parentElement, i++) if (e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1) return true;
      return false;
    };
    const cards = {};
    for (const name of names) {
      const title = texts.find((e) => e.textContent.trim() === name);
      if (!title) continue;
      cards[name] = { cut: clipped(title), width: Math.round(title.getBoundingClientRect().width) };
    }
    const summariesCut = summaries.filter((s) => texts.some((e) => e.textContent.trim() === s && clipped(e)));
    const text = dialog.innerText;
    return { cards, summariesCut, summariesShown: summaries.filter((s) => text.includes(s)), repeatedSubtitles: names.filter((n) => text.includes(n.replace(/[-_]/g, " ").replace(/\s+/g, " ").trim())) };
  }, cfg.templates);
  if (cfg.templatesShot) await page.screenshot({ path: cfg.templatesShot });
}

const result = { consoleErrors: [], pageErrors: [], consoleWarnings: [] };
const t00 = Date.now();
const log = (m) => process.stderr.write(`[ui_test ${((Date.now() - t00) / 1000).toFixed(1)}s] ${m}\n`);
const browser = await launchChromium(chromium, cfg.chromium);
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 });
  page.on("console", (m) => {
    if (m.type() === "error") result.consoleErrors.push(m.text());
    if (m.type() === "warning") result.consoleWarnings.push(m.text().slice(0, 300));
    if (cfg.verbose) log(`console.${m.type()}: ${m.text().slice(0, 300)}`);
  });
  page.on("pageerror", (e) => result.pageErrors.push(String(e)));
  // a fresh user folder would open the template browser over the graph on first start
  // cfg.nativeViewers: ComfyUI's 3D viewers without their grid, so that only the splats differ from the background;
  // the side panel an earlier run's error details opened (1.45+ keep it open across page loads) closed again
  const settings = [["Comfy.TutorialCompleted", true], ["Comfy.Workflow.ShowMissingModelsWarning", false],
                    ["Comfy.Load3D.ShowGrid", !cfg.nativeViewers], ["Comfy.RightSidePanel.IsOpen", false]];
  for (const [id, value] of settings) {
    await fetch(`${cfg.url}/settings/${id}`, { method: "POST", body: JSON.stringify(value) }).catch(() => {});
  }
  const t0 = Date.now();
  await page.goto(cfg.url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && window.app.extensions?.length, null, { timeout: 120000 });
  await page.waitForFunction(() => window.app.extensions.some((e) => e.name === "VIST3A.SplatViewer"), null, { timeout: 60000 });
  result.uiReadyMs = Date.now() - t0;
  await installSpillCheck(page);
  log(`UI ready`);
  result.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || window.comfyAPI?.version || null);
  await closeDialogs(page);

  if (cfg.templates) {
    await readTemplateCards(page, result);
    throw new LoadOnlyDone();
  }
  const workflow = JSON.parse(readFileSync(cfg.workflow, "utf8"));
  result.missingTypes = await page.evaluate(async (wf) => {
    await window.app.loadGraphData(wf);
    const known = window.LiteGraph.registered_node_types;
    return wf.nodes.map((n) => n.type).filter((t) => !known[t]);
  }, workflow);
  await closeDialogs(page);
  result.graphNodes = await page.evaluate(() => window.app.graph._nodes.map((n) => n.type));

  // shrink the heavy widgets exactly like the server test does
  result.overridden = await page.evaluate((overrides) => {
    let count = 0;
    for (const node of window.app.graph._nodes) {
      const o = overrides[node.type];
      if (!o) continue;
      for (const w of node.widgets || []) {
        if (!(w.name in o)) continue;
        // a widget driven by a link (the Run Size node's outputs) gets the literal value instead, as the
        // Python side's api_from_workflow does
        const slot = (node.inputs || []).findIndex((i) => i.widget?.name === w.name && i.link != null);
        if (slot >= 0) node.disconnectInput(slot);
        w.value = o[w.name]; w.callback?.(w.value); count++;
      }
    }
    window.app.graph.setDirtyCanvas(true, true);
    return count;
  }, cfg.overrides || {});
  result.prompt = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
  if (cfg.loadOnly) {  // workflows whose outputs are not our viewer (e.g. ComfyUI's native splat nodes)
    if (cfg.graphShot) await page.screenshot({ path: cfg.graphShot });
    throw new LoadOnlyDone();
  }
  await page.evaluate(() => {
    // close the frontend's announcement banner (only for cleaner screenshots)
    const candidates = [...document.querySelectorAll("div")].filter((d) => /^Introducing/.test(d.textContent.trim()) && d.querySelector("button") && !d.querySelector(".vist3a-viewer"));
    const banner = candidates.sort((a, b) => a.textContent.length - b.textContent.length)[0];
    const buttons = banner ? banner.querySelectorAll("button") : [];
    if (buttons.length > 1) buttons[buttons.length - 1].click();
  });
  await page.waitForTimeout(600);
  // the workflow's saved view: no two nodes overlap (title bars included) and every node is fully on
  // screen, not under the side bar, menu, floating toolbar or canvas buttons (hit-tested in the page)
  result.layout = await layoutOf(page);
  await page.waitForTimeout(600);
  if (cfg.graphShot) await page.screenshot({ path: cfg.graphShot });
  if (cfg.layoutOnly) {
    // more workflows in the same page: their saved views and node rectangles, with a screenshot each
    result.layouts = { [cfg.workflow]: result.layout };
    for (const [i, wfPath] of (cfg.moreWorkflows || []).entries()) {
      await page.evaluate(async (wf) => { await window.app.loadGraphData(wf); }, JSON.parse(readFileSync(wfPath, "utf8")));
      await closeDialogs(page);
      await page.waitForTimeout(600);
      result.layouts[wfPath] = await layoutOf(page);
      if (cfg.moreShots?.[i]) await page.screenshot({ path: cfg.moreShots[i] });
    }
    for (const wfPath of cfg.spillScales?.length ? [cfg.workflow, ...(cfg.moreWorkflows || [])] : []) {  // other zooms
      await page.evaluate(async (wf) => { await window.app.loadGraphData(wf); }, JSON.parse(readFileSync(wfPath, "utf8")));
      await closeDialogs(page);
      await page.waitForTimeout(600);
      result.layouts[wfPath].spillsAt = {};
      for (const scale of cfg.spillScales) result.layouts[wfPath].spillsAt[scale] = await spillsAtScale(page, scale);
    }
    throw new Error("layout only");
  }
  if (cfg.nativeViewers) {
    await runNativeViewers(page, result);
    throw new LoadOnlyDone();
  }
  if (cfg.failing) {
    await runFailing(page, result);
    throw new LoadOnlyDone();
  }
  // queue it from the UI and wait for the viewer to draw
  // (a viewer may already show an earlier run of this workflow, restored from the server's history: wait for a new file)
  const shownBefore = await page.evaluate(() => (window.VIST3A_VIEWERS || []).map((v) => v.info?.filename).filter(Boolean));
  const tq = Date.now();
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const loaded = await page.waitForFunction(
    (old) => {
      const v = (window.VIST3A_VIEWERS || []).find((x) => x.stats.loaded && x.stats.frames > 1 && !old.includes(x.info?.filename));
      return v && v.coverage().nonBackground > 0.005 ? true : null;
    },
    shownBefore, { timeout: cfg.timeoutMs || 240000, polling: 500 },
  ).then(() => true, (e) => String(e));
  result.viewerLoaded = loaded;
  log(`viewer loaded: ${loaded}`);
  result.queueToViewerMs = Date.now() - tq;
  const viewerState = () => page.evaluate(() => {
    const v = window.VIST3A_VIEWERS.find((x) => x.stats.loaded);
    if (!v) return null;
    const r = v.canvas.getBoundingClientRect();
    const box = v.container.closest(".vist3a-viewer") || v.container;
    const c = v.view.target, u = v.view.up, rad = v.view.radius || 1;
    return { ...v.coverage(), splats: v.stats.splats, frames: v.stats.frames, fetchMs: v.stats.fetchMs, decodeMs: v.stats.decodeMs,
             rect: { x: r.x, y: r.y, width: r.width, height: r.height }, boxHeight: box.getBoundingClientRect().height,
             yaw: v.view.yaw, dist: v.view.dist, up: v.view.up, upSource: v.info.up_source || null, upLabel: v.upLabel(),
             centreOnScreen: v.project(c), upOnScreen: v.project([c[0] + u[0] * rad * 0.5, c[1] + u[1] * rad * 0.5, c[2] + u[2] * rad * 0.5]) };
  });
  if (loaded === true) {
    await page.waitForTimeout(500);
    result.viewer = await viewerState();
  log(`viewer state ${JSON.stringify(result.viewer)}`);
    result.fullscreenAtLoad = await page.evaluate(() => document.fullscreenElement?.className || null);
    const box = page.locator(".vist3a-viewer").first();
    if (cfg.viewerShot) await box.screenshot({ path: cfg.viewerShot, timeout: 120000 });
    if (cfg.canvasDump) {
      // the viewer's own pixels and camera, for a comparison with the torch renderer from the same view
      const dump = await page.evaluate(() => {
        const v = window.VIST3A_VIEWERS.find((x) => x.stats.loaded);
        v.draw();
        return { png: v.canvas.toDataURL("image/png"), eye: v.eye(), target: v.view.target, up: v.view.up, fovY: v.view.fovY,
                 width: v.canvas.width, height: v.canvas.height, background: v.background };
      });
      writeFileSync(cfg.canvasDump, Buffer.from(dump.png.split(",")[1], "base64"));
      delete dump.png;
      result.camera = dump;
    }
    if (cfg.graphAfterShot) await page.screenshot({ path: cfg.graphAfterShot });
    if (cfg.bench) {
      result.bench = await page.evaluate((frames) => {
        const v = window.VIST3A_VIEWERS.find((x) => x.stats.loaded);
        const fps = v.benchmark(frames);
        return { fps, frames, fetchMs: v.stats.fetchMs, decodeMs: v.stats.decodeMs, splats: v.stats.splats };
      }, cfg.bench);
      await page.waitForTimeout(300);
    }
    log(`bench ${JSON.stringify(result.bench)}`);
  }
  if (loaded === true && cfg.rerunThenReload) {
    // run again with fewer splats, then reload the page the moment the new scene is drawn (the frontend has not
    // saved the workflow since): the viewer must come back with that latest run, not an empty or older scene
    const shown = (f) => {
      const v = (window.VIST3A_VIEWERS || []).find((x) => x.stats.loaded && x.stats.frames > 1 && x.canvas.isConnected && x.info.filename !== f);
      return v && v.coverage().nonBackground > 0.005 ? { file: v.info.filename, splats: v.stats.splats } : null;
    };
    const first = await page.evaluate(shown, null);
    await page.evaluate((n) => {
      const node = window.app.graph._nodes.find((x) => x.type === "VIST3APreviewSplats");
      node.widgets.find((w) => w.name === "max_splats").value = n;
    }, cfg.rerunThenReload.max_splats);
    await page.evaluate(() => window.app.queuePrompt(0, 1));
    const second = await page.waitForFunction(shown, first.file, { timeout: 120000, polling: 100 }).then((h) => h.jsonValue());
    await page.reload({ waitUntil: "domcontentloaded" });
    await page.waitForFunction(() => window.app?.graph && window.app.extensions?.some((e) => e.name === "VIST3A.SplatViewer"), null, { timeout: 120000 });
    const restored = await page.waitForFunction(shown, null, { timeout: 120000, polling: 500 }).then((h) => h.jsonValue(), (e) => String(e));
    await page.waitForTimeout(3000);  // and it stays: no later restore puts an older scene back
    const after = await page.evaluate(shown, null);
    result.rerun = { first, second, restored, after };
  }
  if (loaded === true && cfg.interact !== false) {
    const box = page.locator(".vist3a-viewer").first();
    // orbit: drag across the canvas
    const r = result.viewer.rect;
    const cx = r.x + r.width / 2, cy = r.y + r.height / 2;
    const framesBefore = await page.evaluate(() => window.VIST3A_VIEWERS.find((x) => x.stats.loaded).stats.frames);
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    await page.mouse.move(cx + 80, cy + 20, { steps: 6 });
    await page.mouse.up();
    await page.mouse.move(cx, cy);
    await page.mouse.wheel(0, 300);
    await page.waitForTimeout(400);
    result.afterInteraction = await page.evaluate(() => {
      const v = window.VIST3A_VIEWERS.find((x) => x.stats.loaded);
      if (!v) return { viewers: window.VIST3A_VIEWERS.length, stats: window.VIST3A_VIEWERS.map((x) => x.stats) };
      return { yaw: v.view.yaw, dist: v.view.dist, frames: v.stats.frames };
    });
    result.redrawn = result.afterInteraction.frames > framesBefore;
  log(`interaction done`);
    // reset button, up-axis button (cycles, then back to auto), then full screen button
    await box.locator("button[title^='Reset']").click();
    result.afterReset = await page.evaluate(() => {
      const v = window.VIST3A_VIEWERS.find((x) => x.stats.loaded);
      return { yaw: v.view.yaw, dist: v.view.dist };
    });
    const upButton = box.locator("button.vist3a-up");
    await upButton.click();
    result.upAfterToggle = await page.evaluate(() => window.VIST3A_VIEWERS.find((x) => x.stats.loaded).upLabel());
    for (let i = 1; i < 7; i++) await upButton.click();
    result.upAfterCycle = await page.evaluate(() => window.VIST3A_VIEWERS.find((x) => x.stats.loaded).upLabel());
    await box.locator("button[title^='Full screen']").click();
    await page.waitForTimeout(600);
    result.fullscreen = await page.evaluate(() => document.fullscreenElement?.className || null);
    if (cfg.fullscreenShot && result.fullscreen) await page.screenshot({ path: cfg.fullscreenShot });
    await page.evaluate(() => document.fullscreenElement && document.exitFullscreen());
    await page.waitForTimeout(300);
    log(`fullscreen ${result.fullscreen}`);
    if (cfg.resize) {
      // the viewer fills the node when it is enlarged
      result.beforeResize = await viewerState();
      await page.evaluate((dh) => {
        const node = window.app.graph._nodes.find((n) => n.type === "VIST3APreviewSplats");
        node.setSize([node.size[0], node.size[1] + dh]);
        window.app.graph.setDirtyCanvas(true, true);
      }, cfg.resize);
      await page.waitForTimeout(800);
      result.afterResize = await viewerState();
    }
    log(`resize done`);
    if (cfg.reload) {
      // the viewer restores its scene after a reload (the workflow comes back from the browser's storage)
      await page.waitForTimeout(1500); // let the frontend persist the workflow
      await page.reload({ waitUntil: "domcontentloaded" });
      await page.waitForFunction(() => window.app?.graph && window.app.extensions?.some((e) => e.name === "VIST3A.SplatViewer"), null, { timeout: 120000 });
      result.restored = await page.waitForFunction(
        () => {
          const v = (window.VIST3A_VIEWERS || []).find((x) => x.stats.loaded && x.stats.frames > 1 && x.canvas.isConnected);
          return v && v.coverage().nonBackground > 0.005 ? v.stats.splats : null;
        },
        null, { timeout: 120000, polling: 500 },
      ).then((h) => h.jsonValue(), (e) => String(e));
    }
  }
  result.history = await page.evaluate(async () => (await (await fetch("/history?max_items=1")).json()));
} catch (e) {
  if (!(e instanceof LoadOnlyDone) && !(cfg.layoutOnly && String(e).includes("layout only"))) result.fatal = String(e && e.stack || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
