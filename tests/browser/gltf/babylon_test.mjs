// Open babylon.html (served on localhost by the Python test) in headless Debian chromium and print one
// JSON line: what the page reported (drawn pixel count, a PNG of the frame) plus console and page errors.
//
//   node babylon_test.mjs '{"url": "http://127.0.0.1:PORT/babylon.html?fov=60", "chromium": "/usr/bin/chromium"}'
import { chromium } from "playwright-core";

import { launchChromium } from "../chromium.mjs";

const cfg = JSON.parse(process.argv[2]);
const out = { consoleErrors: [], pageErrors: [] };
const browser = await launchChromium(chromium, cfg.chromium);
try {
  const page = await browser.newPage({ viewport: { width: 256, height: 256 }, deviceScaleFactor: 1 });
  page.on("console", (m) => { if (m.type() === "error") out.consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => out.pageErrors.push(String(e)));
  await page.goto(cfg.url, { waitUntil: "load" });
  await page.waitForFunction(() => window.vist3aResult, null, { timeout: cfg.timeoutMs || 120000 });
  Object.assign(out, await page.evaluate(() => window.vist3aResult));
} catch (e) {
  out.ok = false;
  out.error = String(e);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
