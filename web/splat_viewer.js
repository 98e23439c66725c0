// VIST3A splat viewer: a small, dependency-free WebGL2 Gaussian-splat renderer (no CDN, works offline).
//
// Input: the antimatter15 ".splat" layout written by vist3a.gaussians.save_splat (32 bytes per splat:
// position f32x3, linear scale f32x3, RGBA u8x4, rotation u8x4 = wxyz*128+128). World axes are OpenCV
// (x right, y down, z forward), as AnySplat predicts them.
//
// Rendering: every splat is an instanced quad; the vertex shader projects its 3D covariance to a 2D
// ellipse (EWA splatting, Zwicker et al.), the fragment shader evaluates the Gaussian, and splats are
// blended back to front after a 16-bit counting sort by camera depth done in a Web Worker.
//
// Controls: left-drag orbit, right-drag / shift+drag pan, wheel zoom, double-click or "R" reset,
// "F" or the button full screen.

const BYTES_PER_SPLAT = 32;
const TEX_WIDTH = 4096; // texels per row; 3 texels (RGBA32UI) per splat

const VERT = `#version 300 es
precision highp float;
precision highp int;
precision highp usampler2D;
uniform usampler2D u_data;
uniform mat4 u_view;
uniform vec2 u_focal;
uniform vec2 u_viewport;
in vec2 a_corner;
in uint a_index;
out vec4 v_color;
out vec2 v_pos;
ivec2 tc(uint i) { return ivec2(int(i % ${TEX_WIDTH}u), int(i / ${TEX_WIDTH}u)); }
void main() {
  uint base = a_index * 3u;
  uvec4 t0 = texelFetch(u_data, tc(base), 0);
  uvec4 t1 = texelFetch(u_data, tc(base + 1u), 0);
  uvec4 t2 = texelFetch(u_data, tc(base + 2u), 0);
  vec3 p = uintBitsToFloat(t0.xyz);
  vec4 cam = u_view * vec4(p, 1.0);
  float z = cam.z;
  if (z < 0.02) { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); return; }
  vec3 c1 = uintBitsToFloat(t1.xyz);
  float yy = uintBitsToFloat(t1.w);
  vec2 c2 = uintBitsToFloat(t2.xy);
  mat3 S = mat3(c1.x, c1.y, c1.z,  c1.y, yy, c2.x,  c1.z, c2.x, c2.y);
  mat3 W = mat3(u_view);
  mat3 J = mat3(u_focal.x / z, 0.0, 0.0,
                0.0, u_focal.y / z, 0.0,
                -u_focal.x * cam.x / (z * z), -u_focal.y * cam.y / (z * z), 0.0);
  mat3 T = J * W;
  mat3 C = T * S * transpose(T);
  float a = C[0][0] + 0.3;
  float b = C[0][1];
  float c = C[1][1] + 0.3;
  float mid = 0.5 * (a + c);
  float rad = length(vec2(0.5 * (a - c), b));
  float l1 = mid + rad;
  float l2 = max(mid - rad, 0.05);
  vec2 v1 = abs(b) < 1e-9 ? (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0)) : normalize(vec2(b, l1 - a));
  vec2 v2 = vec2(v1.y, -v1.x);
  vec2 r1 = min(3.0 * sqrt(l1), 2048.0) * v1;
  vec2 r2 = min(3.0 * sqrt(l2), 2048.0) * v2;
  vec2 centre = vec2(u_focal.x * cam.x / z, u_focal.y * cam.y / z) + 0.5 * u_viewport;
  vec2 pix = centre + a_corner.x * r1 + a_corner.y * r2;
  gl_Position = vec4(pix.x / u_viewport.x * 2.0 - 1.0, 1.0 - pix.y / u_viewport.y * 2.0, 0.0, 1.0);
  v_pos = a_corner * 3.0;
  uint rgba = t0.w;
  v_color = vec4(float(rgba & 255u), float((rgba >> 8) & 255u), float((rgba >> 16) & 255u), float(rgba >> 24)) / 255.0;
}`;

const FRAG = `#version 300 es
precision highp float;
in vec4 v_color;
in vec2 v_pos;
out vec4 o_color;
void main() {
  float d = dot(v_pos, v_pos);
  if (d > 9.0) discard;
  float alpha = v_color.a * exp(-0.5 * d);
  if (alpha < 1.0 / 255.0) discard;
  o_color = vec4(v_color.rgb * alpha, alpha);
}`;

// Depth sort in a worker: 16-bit counting sort of camera-space z, far to near.
const SORT_WORKER = `
let positions = null;
self.onmessage = (e) => {
  if (e.data.positions) { positions = e.data.positions; return; }
  const m = e.data.view, n = positions.length / 3;
  const depth = new Float32Array(n);
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < n; i++) {
    const d = m[2] * positions[3 * i] + m[6] * positions[3 * i + 1] + m[10] * positions[3 * i + 2] + m[14];
    depth[i] = d;
    if (d < lo) lo = d;
    if (d > hi) hi = d;
  }
  const buckets = 65536, scale = (buckets - 1) / Math.max(hi - lo, 1e-12);
  const key = new Uint32Array(n), counts = new Uint32Array(buckets);
  for (let i = 0; i < n; i++) { const k = (buckets - 1) - Math.floor((depth[i] - lo) * scale); key[i] = k; counts[k]++; }
  for (let i = 1; i < buckets; i++) counts[i] += counts[i - 1];
  const order = new Uint32Array(n);
  for (let i = n - 1; i >= 0; i--) order[--counts[key[i]]] = i;
  self.postMessage({ order, id: e.data.id }, [order.buffer]);
};`;

const v3 = {
  sub: (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]],
  add: (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]],
  scale: (a, s) => [a[0] * s, a[1] * s, a[2] * s],
  dot: (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2],
  cross: (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]],
  norm: (a) => Math.hypot(a[0], a[1], a[2]),
  unit: (a) => { const n = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / n, a[1] / n, a[2] / n]; },
};

function compile(gl, type, src) {
  const s = gl.createShader(type);
  gl.shaderSource(s, src);
  gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error("VIST3A viewer shader: " + gl.getShaderInfoLog(s));
  return s;
}

/** Parse .splat bytes into GPU texture words + positions (for sorting). */
export function parseSplat(buffer) {
  const n = Math.floor(buffer.byteLength / BYTES_PER_SPLAT);
  const f = new Float32Array(buffer, 0, n * 8);
  const u8 = new Uint8Array(buffer, 0, n * BYTES_PER_SPLAT);
  const rows = Math.max(1, Math.ceil((n * 3) / TEX_WIDTH));
  const words = new Uint32Array(TEX_WIDTH * rows * 4);
  const wf = new Float32Array(words.buffer);
  const positions = new Float32Array(n * 3);
  const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  for (let i = 0; i < n; i++) {
    const x = f[8 * i], y = f[8 * i + 1], z = f[8 * i + 2];
    positions[3 * i] = x; positions[3 * i + 1] = y; positions[3 * i + 2] = z;
    if (x < lo[0]) lo[0] = x; if (y < lo[1]) lo[1] = y; if (z < lo[2]) lo[2] = z;
    if (x > hi[0]) hi[0] = x; if (y > hi[1]) hi[1] = y; if (z > hi[2]) hi[2] = z;
    const sx = f[8 * i + 3], sy = f[8 * i + 4], sz = f[8 * i + 5];
    const o = 32 * i;
    let qw = (u8[o + 28] - 128) / 128, qx = (u8[o + 29] - 128) / 128, qy = (u8[o + 30] - 128) / 128, qz = (u8[o + 31] - 128) / 128;
    const qn = Math.hypot(qw, qx, qy, qz) || 1;
    qw /= qn; qx /= qn; qy /= qn; qz /= qn;
    // R from the unit quaternion (w, x, y, z), then M = R * diag(s), Sigma = M M^T
    const R = [
      1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy),
      2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx),
      2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy),
    ];
    const M = [R[0] * sx, R[1] * sy, R[2] * sz, R[3] * sx, R[4] * sy, R[5] * sz, R[6] * sx, R[7] * sy, R[8] * sz];
    const xx = M[0] * M[0] + M[1] * M[1] + M[2] * M[2];
    const xy = M[0] * M[3] + M[1] * M[4] + M[2] * M[5];
    const xz = M[0] * M[6] + M[1] * M[7] + M[2] * M[8];
    const yy = M[3] * M[3] + M[4] * M[4] + M[5] * M[5];
    const yz = M[3] * M[6] + M[4] * M[7] + M[5] * M[8];
    const zz = M[6] * M[6] + M[7] * M[7] + M[8] * M[8];
    const t = 12 * i; // 3 texels x 4 words
    wf[t] = x; wf[t + 1] = y; wf[t + 2] = z;
    words[t + 3] = (u8[o + 24] | (u8[o + 25] << 8) | (u8[o + 26] << 16) | (u8[o + 27] << 24)) >>> 0;
    wf[t + 4] = xx; wf[t + 5] = xy; wf[t + 6] = xz; wf[t + 7] = yy;
    wf[t + 8] = yz; wf[t + 9] = zz;
  }
  return { count: n, words, rows, positions, bounds: { lo, hi } };
}

export class SplatViewer {
  constructor(container, options = {}) {
    this.container = container;
    this.background = options.background || [0.13, 0.13, 0.14];
    this.stats = { frames: 0, splats: 0, loaded: false, sorted: 0, error: null };
    this.canvas = document.createElement("canvas");
    this.canvas.className = "vist3a-canvas";
    Object.assign(this.canvas.style, { width: "100%", height: "100%", display: "block", touchAction: "none", outline: "none" });
    this.canvas.tabIndex = 0;
    container.appendChild(this.canvas);
    const gl = this.canvas.getContext("webgl2", { antialias: false, premultipliedAlpha: true, preserveDrawingBuffer: true });
    if (!gl) {
      this.stats.error = "WebGL2 is not available in this browser";
      this._message(this.stats.error);
      return;
    }
    this.gl = gl;
    this._initGL();
    this.view = { target: [0, 0, 0], up: [0, -1, 0], yaw: 0, pitch: 0.26, dist: 3, fovY: 50 };
    this.initial = { ...this.view };
    this._dirty = true;
    this._sortBusy = false;
    this._sortQueued = false;
    this._sortId = 0;
    this._bindControls();
    this._resizeObserver = new ResizeObserver(() => this._resize());
    this._resizeObserver.observe(this.canvas);
    this._resize();
    this._loop = this._loop.bind(this);
    this._raf = requestAnimationFrame(this._loop);
  }

  _message(text) {
    let el = this.container.querySelector(".vist3a-message");
    if (!el) {
      el = document.createElement("div");
      el.className = "vist3a-message";
      Object.assign(el.style, { position: "absolute", left: "8px", top: "8px", color: "#ddd", font: "12px sans-serif", pointerEvents: "none" });
      this.container.appendChild(el);
    }
    el.textContent = text;
  }

  _initGL() {
    const gl = this.gl;
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERT));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FRAG));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error("VIST3A viewer: " + gl.getProgramInfoLog(prog));
    this.prog = prog;
    this.u = {};
    for (const name of ["u_data", "u_view", "u_focal", "u_viewport"]) this.u[name] = gl.getUniformLocation(prog, name);
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    const quad = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const aCorner = gl.getAttribLocation(prog, "a_corner");
    gl.enableVertexAttribArray(aCorner);
    gl.vertexAttribPointer(aCorner, 2, gl.FLOAT, false, 0, 0);
    this.indexBuffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
    const aIndex = gl.getAttribLocation(prog, "a_index");
    gl.enableVertexAttribArray(aIndex);
    gl.vertexAttribIPointer(aIndex, 1, gl.UNSIGNED_INT, 0, 0);
    gl.vertexAttribDivisor(aIndex, 1);
    gl.bindVertexArray(null);
    this.texture = gl.createTexture();
    this.count = 0;
  }

  async loadUrl(url, info = {}) {
    this._message("loading splats…");
    const res = await fetch(url, { cache: "no-store" });
    if (!res.ok) throw new Error(`VIST3A viewer: ${url} answered ${res.status}`);
    this.load(await res.arrayBuffer(), info);
  }

  /** Show a .splat buffer; `info` may carry {center, radius, camera: {c2w, fov_y}} from the node. */
  load(buffer, info = {}) {
    if (!this.gl) return;
    const gl = this.gl;
    const data = parseSplat(buffer);
    this.count = data.count;
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 4);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32UI, TEX_WIDTH, data.rows, 0, gl.RGBA_INTEGER, gl.UNSIGNED_INT, data.words);
    const identity = new Uint32Array(data.count);
    for (let i = 0; i < data.count; i++) identity[i] = i;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, identity, gl.DYNAMIC_DRAW);
    if (this.worker) this.worker.terminate();
    this.worker = new Worker(URL.createObjectURL(new Blob([SORT_WORKER], { type: "text/javascript" })));
    this.worker.onmessage = (e) => this._onSorted(e.data);
    this.worker.postMessage({ positions: data.positions.slice() });
    this._sortBusy = false;
    this._setInitialView(data, info);
    this.stats.splats = data.count;
    this.stats.loaded = true;
    this._message(`${data.count.toLocaleString()} splats${info.total && info.total > data.count ? ` (of ${info.total.toLocaleString()})` : ""}`);
    this._dirty = true;
    this._requestSort();
  }

  _setInitialView(data, info) {
    const lo = data.bounds.lo, hi = data.bounds.hi;
    const target = info.center || v3.scale(v3.add(lo, hi), 0.5);
    const radius = info.radius || Math.max(1e-3, 0.5 * v3.norm(v3.sub(hi, lo)));
    const view = { target, up: [0, -1, 0], yaw: 0, pitch: 0.26, dist: 3 * radius, fovY: 50 };
    const cam = info.camera;
    if (cam && cam.c2w) {
      const m = cam.c2w; // rows of a 4x4 camera-to-world (OpenCV)
      const eye = [m[0][3], m[1][3], m[2][3]];
      view.up = v3.unit([-m[0][1], -m[1][1], -m[2][1]]);
      view.fovY = cam.fov_y >= 10 && cam.fov_y <= 120 ? cam.fov_y : 50;
      const off = v3.sub(eye, target);
      const dist = v3.norm(off);
      if (dist > 1e-6) {
        const [a, b] = this._basis(view.up);
        const u = v3.scale(off, 1 / dist);
        view.pitch = Math.asin(Math.max(-1, Math.min(1, v3.dot(u, view.up))));
        view.yaw = Math.atan2(v3.dot(u, b), v3.dot(u, a));
        view.dist = dist;
      }
    } else {
      view.dist = (1.1 * radius) / Math.sin((view.fovY * Math.PI) / 360);
    }
    this.view = view;
    this.initial = { ...view, target: [...view.target], up: [...view.up] };
  }

  _basis(up) {
    let a = v3.sub([0, 0, -1], v3.scale(up, v3.dot([0, 0, -1], up)));
    if (v3.norm(a) < 1e-6) a = v3.sub([1, 0, 0], v3.scale(up, up[0]));
    a = v3.unit(a);
    return [a, v3.cross(up, a)];
  }

  eye() {
    const { target, up, yaw, pitch, dist } = this.view;
    const [a, b] = this._basis(up);
    const dir = v3.add(v3.scale(v3.add(v3.scale(a, Math.cos(yaw)), v3.scale(b, Math.sin(yaw))), Math.cos(pitch)), v3.scale(up, Math.sin(pitch)));
    return v3.add(target, v3.scale(dir, dist));
  }

  viewMatrix() {
    const eye = this.eye();
    const z = v3.unit(v3.sub(this.view.target, eye));
    let x = v3.cross(v3.scale(this.view.up, -1), z);
    if (v3.norm(x) < 1e-9) x = [1, 0, 0];
    x = v3.unit(x);
    const y = v3.cross(z, x);
    return new Float32Array([x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
      -v3.dot(x, eye), -v3.dot(y, eye), -v3.dot(z, eye), 1]);
  }

  reset() {
    this.view = { ...this.initial, target: [...this.initial.target], up: [...this.initial.up] };
    this._changed();
  }

  fullscreen() {
    const el = this.container;
    if (document.fullscreenElement) document.exitFullscreen?.();
    else el.requestFullscreen?.().catch(() => {});
  }

  _changed() {
    this._dirty = true;
    this._requestSort();
  }

  _requestSort() {
    if (!this.worker || !this.count) return;
    if (this._sortBusy) { this._sortQueued = true; return; }
    this._sortBusy = true;
    this.worker.postMessage({ view: this.viewMatrix(), id: ++this._sortId });
  }

  _onSorted({ order }) {
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, order, gl.DYNAMIC_DRAW);
    this.stats.sorted++;
    this._sortBusy = false;
    this._dirty = true;
    if (this._sortQueued) { this._sortQueued = false; this._requestSort(); }
  }

  _resize() {
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
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
        const m = this.viewMatrix();
        const x = [m[0], m[4], m[8]], y = [m[1], m[5], m[9]];
        const k = (2 * this.view.dist * Math.tan((this.view.fovY * Math.PI) / 360)) / Math.max(1, c.clientHeight);
        this.view.target = v3.add(this.view.target, v3.add(v3.scale(x, -dx * k), v3.scale(y, -dy * k)));
      } else {
        this.view.yaw -= dx * 0.008;
        this.view.pitch = Math.max(-1.55, Math.min(1.55, this.view.pitch + dy * 0.008));
      }
      this._changed();
    });
    const end = (e) => { if (drag) { drag = null; try { c.releasePointerCapture(e.pointerId); } catch (_) { /* ignore */ } } };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      e.stopPropagation();
      this.view.dist *= Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.0015)));
      this._changed();
    }, { passive: false });
    c.addEventListener("dblclick", (e) => { e.stopPropagation(); this.reset(); });
    c.addEventListener("keydown", (e) => {
      if (e.key === "r" || e.key === "R") { this.reset(); e.stopPropagation(); }
      if (e.key === "f" || e.key === "F") { this.fullscreen(); e.stopPropagation(); }
    });
  }

  _loop() {
    this._raf = requestAnimationFrame(this._loop);
    if (!this.gl || !this.canvas.isConnected) return;
    this._resize();
    if (!this._dirty) return;
    this._dirty = false;
    this.draw();
  }

  draw() {
    const gl = this.gl;
    const w = this.canvas.width, h = this.canvas.height;
    gl.viewport(0, 0, w, h);
    const [r, g, b] = this.background;
    gl.clearColor(r, g, b, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (!this.count) return;
    gl.useProgram(this.prog);
    gl.disable(gl.DEPTH_TEST);
    gl.enable(gl.BLEND);
    gl.blendFuncSeparate(gl.ONE, gl.ONE_MINUS_SRC_ALPHA, gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.uniform1i(this.u.u_data, 0);
    gl.uniformMatrix4fv(this.u.u_view, false, this.viewMatrix());
    const fy = (0.5 * h) / Math.tan((this.view.fovY * Math.PI) / 360);
    gl.uniform2f(this.u.u_focal, fy, fy);
    gl.uniform2f(this.u.u_viewport, w, h);
    gl.bindVertexArray(this.vao);
    gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, this.count);
    gl.bindVertexArray(null);
    this.stats.frames++;
  }

  dispose() {
    cancelAnimationFrame(this._raf);
    this._resizeObserver?.disconnect();
    this.worker?.terminate();
    const gl = this.gl;
    if (gl) {
      gl.deleteTexture(this.texture);
      gl.deleteBuffer(this.indexBuffer);
      gl.deleteProgram(this.prog);
      gl.getExtension("WEBGL_lose_context")?.loseContext();
    }
    this.gl = null;
  }
}
