// Drive the real ComfyUI frontend in headless Debian chromium (playwright-core, no browser download):
// open the UI, load a shipped workflow, check every node type exists, shrink the heavy widgets, convert
// with the frontend's own graphToPrompt, queue it, wait for the VIST3A viewer to draw the splat, poke
// the controls, and take the README screenshots. Prints one JSON line with the findings.
//
//   node ui_test.mjs '{"url": "...", "workflow": "path.json", "overrides": {...}, "graphShot": "...", "viewerShot": "..."}'
import { readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

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
  return { scale: ds.scale, offset: [...ds.offset], overlaps, hidden, nodes: rects.length };
});

const result = { consoleErrors: [], pageErrors: [] };
const t00 = Date.now();
const log = (m) => process.stderr.write(`[ui_test ${((Date.now() - t00) / 1000).toFixed(1)}s] ${m}\n`);
const browser = await chromium.launch({
  executablePath: cfg.chromium || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--use-gl=angle", "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 });
  page.on("console", (m) => {
    if (m.type() === "error") result.consoleErrors.push(m.text());
    if (cfg.verbose) log(`console.${m.type()}: ${m.text().slice(0, 300)}`);
  });
  page.on("pageerror", (e) => result.pageErrors.push(String(e)));
  // a fresh user folder would open the template browser over the graph on first start
  for (const [id, value] of [["Comfy.TutorialCompleted", true], ["Comfy.Workflow.ShowMissingModelsWarning", false]]) {
    await fetch(`${cfg.url}/settings/${id}`, { method: "POST", body: JSON.stringify(value) }).catch(() => {});
  }
  const t0 = Date.now();
  await page.goto(cfg.url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && window.app.extensions?.length, null, { timeout: 120000 });
  await page.waitForFunction(() => window.app.extensions.some((e) => e.name === "VIST3A.SplatViewer"), null, { timeout: 60000 });
  result.uiReadyMs = Date.now() - t0;
  log(`UI ready`);
  result.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ || window.comfyAPI?.version || null);
  await closeDialogs(page);

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
    throw new Error("layout only");
  }
  // queue it from the UI and wait for the viewer to draw
  const tq = Date.now();
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const loaded = await page.waitForFunction(
    () => {
      const v = (window.VIST3A_VIEWERS || []).find((x) => x.stats.loaded && x.stats.frames > 1);
      return v && v.coverage().nonBackground > 0.005 ? true : null;
    },
    null, { timeout: cfg.timeoutMs || 240000, polling: 500 },
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
