// Open a scene.html from disk (file:// URL) in headless Debian chromium with the network off, wait for
// the embedded viewer to draw, and print one JSON line: drawn pixels, console errors, blocked requests.
//
//   node html_check.mjs '{"path": "/abs/scene.html", "shot": "optional.png", "chromium": "/usr/bin/chromium"}'
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";

import { launchChromium } from "./chromium.mjs";

const cfg = JSON.parse(process.argv[2]);
const result = { consoleErrors: [], pageErrors: [], blocked: [], requests: [] };
const browser = await launchChromium(chromium, cfg.chromium);
try {
  const context = await browser.newContext({ viewport: { width: cfg.width || 800, height: cfg.height || 600 }, deviceScaleFactor: 1 });
  await context.setOffline(true);  // no network at all; a file:// page must not need it
  await context.route("**/*", (route) => {
    const url = route.request().url();
    result.requests.push(url.slice(0, 120));
    if (url.startsWith("file:") || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
    result.blocked.push(url);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") result.consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => result.pageErrors.push(String(e)));
  const t0 = Date.now();
  await page.goto(pathToFileURL(cfg.path).href, { waitUntil: "load", timeout: cfg.timeoutMs || 120000 });
  await page.waitForFunction(() => window.VIST3A_VIEWER?.stats.loaded || window.VIST3A_VIEWER?.stats.error, null,
                             { timeout: cfg.timeoutMs || 120000 });
  result.loadMs = Date.now() - t0;
  // let Spark sort and draw a few frames
  await page.waitForFunction(() => window.VIST3A_VIEWER.stats.frames >= 3 && window.VIST3A_VIEWER.stats.sorted >= 1, null,
                             { timeout: 60000 }).catch(() => {});
  await page.waitForTimeout(500);
  result.stats = await page.evaluate(() => window.VIST3A_VIEWER.stats);
  result.view = await page.evaluate(() => ({ up: window.VIST3A_VIEWER.view.up, target: window.VIST3A_VIEWER.view.target }));
  result.coverage = await page.evaluate(() => { window.VIST3A_VIEWER.draw(); return window.VIST3A_VIEWER.coverage(); });
  if (cfg.probe) result.probe = await page.evaluate((pts) => pts.map((p) => window.VIST3A_VIEWER.project(p)), cfg.probe);
  if (cfg.shot) await page.screenshot({ path: cfg.shot });
  result.title = await page.title();
} catch (err) {
  result.error = String(err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
