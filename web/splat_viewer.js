// VIST3A splat viewer: Spark (@sparkjsdev/spark, MIT, on three.js), bundled in web/vendor/ (no CDN,
// works offline). Spark does the sorting, SH (up to degree 3) and scenes of millions of splats; this
// file only adds the camera that a Preview Splats node needs.
//
// Input: an .spz (or .ply / .splat) URL plus a hint from the node: robust centre and radius of the
// scene and its up direction (from the predicted cameras, else from the splats' shape). The viewer
// frames the whole scene and orbits around that up axis; the "up" button cycles through the axes.
//
// Controls: left-drag orbit, right-drag / shift+drag pan, wheel zoom, double-click or "R" reset,
// "U" next up axis, "F" or the button full screen.
import { THREE, SparkRenderer, SplatMesh, SplatFileType } from "./vendor/spark_three.js";

const v3 = {
  sub: (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]],
  add: (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]],
  scale: (a, s) => [a[0] * s, a[1] * s, a[2] * s],
  dot: (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2],
  cross: (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]],
  norm: (a) => Math.hypot(a[0], a[1], a[2]),
  unit: (a) => { const n = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / n, a[1] / n, a[2] / n]; },
};

// "auto" is the node's hint; then the six axis directions.
export const UP_CHOICES = [
  ["auto", null], ["+y", [0, 1, 0]], ["-y", [0, -1, 0]], ["+z", [0, 0, 1]], ["-z", [0, 0, -1]], ["+x", [1, 0, 0]], ["-x", [-1, 0, 0]],
];

const FILE_TYPES = { spz: SplatFileType.SPZ, ply: SplatFileType.PLY, splat: SplatFileType.SPLAT };

export class SplatViewer {
  constructor(container, options = {}) {
    this.container = container;
    this.background = options.background || [0.13, 0.13, 0.14];
    this.stats = { frames: 0, splats: 0, loaded: false, sorted: 0, error: null, fetchMs: null, decodeMs: null };
    this.info = {};
    this.upChoice = 0;
    this.view = { target: [0, 0, 0], up: [0, -1, 0], yaw: 0, pitch: 0.35, dist: 3, fovY: 50 };
    this.initial = { ...this.view };
    try {
      this.renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true, powerPreference: "high-performance" });
    } catch (err) {
      this.stats.error = "WebGL2 is not available in this browser";
      this._message(this.stats.error);
      return;
    }
    const [r, g, b] = this.background;
    this.renderer.setClearColor(new THREE.Color().setRGB(r, g, b, THREE.SRGBColorSpace), 1);
    this.canvas = this.renderer.domElement;
    this.canvas.className = "vist3a-canvas";
    Object.assign(this.canvas.style, { width: "100%", height: "100%", display: "block", touchAction: "none", outline: "none" });
    this.canvas.tabIndex = 0;
    container.appendChild(this.canvas);
    this.gl = this.renderer.getContext();
    this.scene = new THREE.Scene();
    this.camera = new THREE.PerspectiveCamera(50, 1, 0.01, 1000);
    this.spark = new SparkRenderer({ renderer: this.renderer, onDirty: () => { this.stats.sorted++; this._dirty = true; } });
    this.scene.add(this.spark);
    this.mesh = null;
    this._dirty = true;
    this._bindControls();
    this._resizeObserver = new ResizeObserver(() => this._resize());
    this._resizeObserver.observe(container);
    this._resize();
    this._loop = this._loop.bind(this);
    this._raf = requestAnimationFrame(this._loop);
  }

  _message(text) {
    let el = this.container.querySelector(".vist3a-message");
    if (!el) {
      el = document.createElement("div");
      el.className = "vist3a-message vist3a-overlay";
      Object.assign(el.style, { top: "6px", left: "6px" });
      this.container.appendChild(el);
    }
    el.textContent = text;
  }

  /** Fetch and show a scene; `info` is the node's item: {format, center, radius, up, up_source, camera, total}. */
  async loadUrl(url, info = {}) {
    if (!this.renderer) return;
    this._message("loading splats…");
    const t0 = performance.now();
    const res = await fetch(url, { cache: "no-store" });
    if (!res.ok) {
      this._message(`the scene file is gone (server answered ${res.status}); run the workflow again`);
      throw new Error(`VIST3A viewer: ${url} answered ${res.status}`);
    }
    const bytes = new Uint8Array(await res.arrayBuffer());
    this.stats.fetchMs = Math.round(performance.now() - t0);
    await this.load(bytes, info);
  }

  async load(bytes, info = {}) {
    const t0 = performance.now();
    const fileType = FILE_TYPES[(info.format || info.filename?.split(".").pop() || "spz").toLowerCase()] || SplatFileType.SPZ;
    const mesh = new SplatMesh({ fileBytes: bytes, fileType });
    await mesh.initialized;
    if (this.mesh) {
      this.scene.remove(this.mesh);
      this.mesh.dispose();
    }
    this.mesh = mesh;
    this.scene.add(mesh);
    this.stats.decodeMs = Math.round(performance.now() - t0);
    this.info = info;
    this.stats.splats = mesh.packedSplats?.numSplats ?? info.count ?? 0;
    this.stats.loaded = true;
    this._setInitialView();
    const n = this.stats.splats.toLocaleString();
    this._message(`${n} splats${info.total && info.total > this.stats.splats ? ` (of ${info.total.toLocaleString()})` : ""} · up ${this.upLabel()}`);
    this._dirty = true;
  }

  upLabel() {
    const [name] = UP_CHOICES[this.upChoice];
    return name === "auto" ? `auto (${this.info.up_source || "default"})` : name;
  }

  /** Next up axis (auto, +y, -y, +z, -z, +x, -x); re-frames the scene. */
  cycleUp() {
    this.upChoice = (this.upChoice + 1) % UP_CHOICES.length;
    this._setInitialView();
    if (this.stats.loaded) this._message(`${this.stats.splats.toLocaleString()} splats · up ${this.upLabel()}`);
    this.onUpChange?.(this.upLabel());
    this._dirty = true;
  }

  _up() {
    const forced = UP_CHOICES[this.upChoice][1];
    if (forced) return forced;
    const hint = this.info.up;
    return hint && v3.norm(hint) > 1e-6 ? v3.unit(hint) : [0, -1, 0];
  }

  _setInitialView() {
    const info = this.info;
    const box = this.mesh ? new THREE.Box3().setFromObject(this.mesh) : null;
    const target = info.center || (box && !box.isEmpty() ? box.getCenter(new THREE.Vector3()).toArray() : [0, 0, 0]);
    const radius = info.radius || (box && !box.isEmpty() ? 0.5 * box.getSize(new THREE.Vector3()).length() : 1);
    const up = this._up();
    const view = { target: [...target], up, yaw: 0, pitch: 0.35, dist: 3 * radius, fovY: 50, radius };
    const cam = info.camera;
    if (cam && cam.c2w && UP_CHOICES[this.upChoice][0] === "auto") {
      // look from the side of the first predicted camera, but far enough to see everything
      const m = cam.c2w;
      const off = v3.sub([m[0][3], m[1][3], m[2][3]], target);
      const [a, b] = this._basis(up);
      if (v3.norm(off) > 1e-6) {
        const u = v3.unit(off);
        view.yaw = Math.atan2(v3.dot(u, b), v3.dot(u, a));
        view.pitch = Math.max(0.15, Math.min(0.6, Math.asin(Math.max(-1, Math.min(1, v3.dot(u, up))))));
      }
    }
    view.dist = this._fitDistance(radius, view.fovY);
    this.view = view;
    this.initial = { ...view, target: [...view.target], up: [...view.up] };
  }

  /** Distance at which a sphere of `radius` fits the narrower side of the canvas, with a margin. */
  _fitDistance(radius, fovY) {
    const aspect = this.canvas && this.canvas.clientHeight ? this.canvas.clientWidth / this.canvas.clientHeight : 1;
    const halfV = (fovY * Math.PI) / 360;
    const halfH = Math.atan(Math.tan(halfV) * aspect);
    return (1.08 * radius) / Math.sin(Math.min(halfV, halfH));
  }

  _basis(up) {
    // reference direction: the camera starts on the side of -z (AnySplat's first view looks along +z)
    let a = v3.sub([0, 0, -1], v3.scale(up, v3.dot([0, 0, -1], up)));
    if (v3.norm(a) < 1e-6) a = v3.sub([0, -1, 0], v3.scale(up, v3.dot([0, -1, 0], up)));
    a = v3.unit(a);
    return [a, v3.cross(up, a)];
  }

  eye() {
    const { target, up, yaw, pitch, dist } = this.view;
    const [a, b] = this._basis(up);
    const dir = v3.add(v3.scale(v3.add(v3.scale(a, Math.cos(yaw)), v3.scale(b, Math.sin(yaw))), Math.cos(pitch)), v3.scale(up, Math.sin(pitch)));
    return v3.add(target, v3.scale(dir, dist));
  }

  /** Screen position (CSS px in the canvas) of a world point, for tests and overlays. */
  project(p) {
    this._applyCamera();
    const v = new THREE.Vector3(p[0], p[1], p[2]).project(this.camera);
    return [(v.x + 1) / 2 * this.canvas.clientWidth, (1 - v.y) / 2 * this.canvas.clientHeight, v.z];
  }

  _applyCamera() {
    const c = this.camera, e = this.eye(), t = this.view.target;
    c.position.set(e[0], e[1], e[2]);
    c.up.set(this.view.up[0], this.view.up[1], this.view.up[2]);
    c.lookAt(t[0], t[1], t[2]);
    c.fov = this.view.fovY;
    const r = this.view.radius || 1;
    c.near = Math.max(1e-4, this.view.dist - 4 * r, this.view.dist * 0.002);
    c.far = this.view.dist + 50 * r;
    c.aspect = this.canvas.clientHeight ? this.canvas.clientWidth / this.canvas.clientHeight : 1;
    c.updateProjectionMatrix();
    c.updateMatrixWorld(true);
  }

  reset() {
    this.view = { ...this.initial, target: [...this.initial.target], up: [...this.initial.up] };
    this._dirty = true;
  }

  fullscreen() {
    const el = this.container;
    if (document.fullscreenElement) document.exitFullscreen?.();
    else el.requestFullscreen?.().catch(() => {});
  }

  _resize() {
    if (!this.renderer) return;
    const w = Math.max(1, this.container.clientWidth), h = Math.max(1, this.container.clientHeight);
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    const size = this.renderer.getSize(new THREE.Vector2());
    if (size.x !== w || size.y !== h || this.renderer.getPixelRatio() !== dpr) {
      this.renderer.setPixelRatio(dpr);
      this.renderer.setSize(w, h, false);
      this._dirty = true;
    }
  }

  _bindControls() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("pointerdown", (e) => {
      e.stopPropagation();
      c.setPointerCapture(e.pointerId);
      drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.button === 1 || e.shiftKey };
      c.focus();
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      e.stopPropagation();
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.x = e.clientX; drag.y = e.clientY;
      if (drag.pan) {
        this._applyCamera();
        const m = this.camera.matrixWorld.elements;
        const x = [m[0], m[1], m[2]], y = [m[4], m[5], m[6]];
        const k = (2 * this.view.dist * Math.tan((this.view.fovY * Math.PI) / 360)) / Math.max(1, c.clientHeight);
        this.view.target = v3.add(this.view.target, v3.add(v3.scale(x, -dx * k), v3.scale(y, dy * k)));
      } else {
        this.view.yaw -= dx * 0.008;
        this.view.pitch = Math.max(-1.55, Math.min(1.55, this.view.pitch + dy * 0.008));
      }
      this._dirty = true;
    });
    const end = (e) => { if (drag) { drag = null; try { c.releasePointerCapture(e.pointerId); } catch (_) { /* ignore */ } } };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      e.stopPropagation();
      this.view.dist *= Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.0015)));
      this._dirty = true;
    }, { passive: false });
    c.addEventListener("dblclick", (e) => { e.stopPropagation(); this.reset(); });
    c.addEventListener("keydown", (e) => {
      const k = e.key.toLowerCase();
      if (k === "r") this.reset();
      else if (k === "f") this.fullscreen();
      else if (k === "u") this.cycleUp();
      else return;
      e.stopPropagation();
    });
  }

  _loop() {
    this._raf = requestAnimationFrame(this._loop);
    if (!this.renderer || !this.canvas.isConnected) return;
    this._resize();
    if (!this._dirty) return;
    this._dirty = false;
    this.draw();
  }

  draw() {
    this._applyCamera();
    this.renderer.render(this.scene, this.camera);
    this.stats.frames++;
  }

  /** Fraction of canvas pixels that differ from the background, overall and in the central half, and their bbox. */
  coverage() {
    const gl = this.gl;
    this.renderer.setRenderTarget(null);
    const w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    const px = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
    const bg = this.background.map((c) => Math.round(c * 255));
    let all = 0, centre = 0, centreN = 0, x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = 4 * (y * w + x);
        const on = Math.abs(px[i] - bg[0]) + Math.abs(px[i + 1] - bg[1]) + Math.abs(px[i + 2] - bg[2]) > 24;
        const inC = x > w / 4 && x < (3 * w) / 4 && y > h / 4 && y < (3 * h) / 4;
        if (on) {
          all++;
          if (inC) centre++;
          if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
        }
        if (inC) centreN++;
      }
    }
    // bbox of the drawn pixels in top-down rows (readPixels rows start at the bottom)
    const bbox = x1 < 0 ? null : [x0, h - 1 - y1, x1, h - 1 - y0];
    return { width: w, height: h, nonBackground: all / (w * h), centre: centre / Math.max(1, centreN), bbox };
  }

  /** Render `frames` frames while turning the camera; frames per second of the render calls. */
  benchmark(frames = 30) {
    const t0 = performance.now();
    for (let i = 0; i < frames; i++) {
      this.view.yaw += 0.01;
      this.draw();
    }
    const px = new Uint8Array(4);
    this.gl.readPixels(0, 0, 1, 1, this.gl.RGBA, this.gl.UNSIGNED_BYTE, px); // wait for the GPU
    return frames / ((performance.now() - t0) / 1000);
  }

  dispose() {
    cancelAnimationFrame(this._raf);
    this._resizeObserver?.disconnect();
    if (this.mesh) this.mesh.dispose();
    this.renderer?.dispose();
    this.renderer?.forceContextLoss?.();
    this.renderer = null;
  }
}
