// Plays morph-target face animations (.glb, embedded as base64) in sync with the speech, with a small
// WebGL2 renderer: each frame the vertices are base + weights x targets, computed on the CPU.
// The page reports its state in #status (JSON) and document.title ("ready" or "error: ...").
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
const problems = [];
const statusBox = document.getElementById("status");

function report(extra) {
  const state = { ready: problems.length === 0 && !!extra, errors: problems, ...(extra || {}) };
  statusBox.textContent = JSON.stringify(state);
  statusBox.hidden = state.ready;   // shown only while loading or after an error; tests read it from the DOM
  document.title = problems.length ? "error: " + problems[0] : (extra ? "ready" : "loading");
}
window.addEventListener("error", (e) => { problems.push(String(e.message)); report(); });
const consoleError = console.error.bind(console);
console.error = (...args) => { problems.push(args.join(" ")); report(); consoleError(...args); };

// ------------------------------------------------------------------------------------ glb reading
function base64Bytes(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function parseGlb(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== 0x46546c67) throw new Error("not a glb");
  let offset = 12, doc = null, bin = null;
  while (offset < view.getUint32(8, true)) {
    const size = view.getUint32(offset, true), kind = view.getUint32(offset + 4, true);
    const chunk = bytes.subarray(offset + 8, offset + 8 + size);
    if (kind === 0x4e4f534a) doc = JSON.parse(new TextDecoder().decode(chunk));
    if (kind === 0x004e4942) bin = chunk;
    offset += 8 + size;
  }
  // Only tightly packed float32 / uint32 accessors: what ptalker writes.
  const accessor = (i) => {
    const a = doc.accessors[i], v = doc.bufferViews[a.bufferView];
    const width = { SCALAR: 1, VEC3: 3 }[a.type];
    const start = bin.byteOffset + (v.byteOffset || 0) + (a.byteOffset || 0);
    const copy = bin.buffer.slice(start, start + a.count * width * 4);
    return a.componentType === 5125 ? new Uint32Array(copy) : new Float32Array(copy);
  };
  const prim = doc.meshes[0].primitives[0];
  const anim = (doc.animations || [])[0];
  return {
    base: accessor(prim.attributes.POSITION),
    indices: accessor(prim.indices),
    targets: (prim.targets || []).map((t) => accessor(t.POSITION)),
    times: anim ? accessor(anim.samplers[0].input) : new Float32Array([0]),
    weights: anim ? accessor(anim.samplers[0].output) : new Float32Array(0),
  };
}

// ------------------------------------------------------------------------------------ animation
function poseAt(clip, time, out) {
  // glTF LINEAR sampling of the weights keyframes, then base + sum_k w_k target_k
  const k = clip.targets.length, times = clip.times, last = times.length - 1;
  let i = 0;
  while (i < last && times[i + 1] <= time) i++;
  const span = i < last ? times[i + 1] - times[i] : 1;
  const f = i < last ? Math.min(Math.max((time - times[i]) / span, 0), 1) : 0;
  out.set(clip.base);
  for (let j = 0; j < k; j++) {
    const w0 = clip.weights[i * k + j], w1 = i < last ? clip.weights[(i + 1) * k + j] : w0;
    const w = w0 + (w1 - w0) * f, target = clip.targets[j];
    if (w === 0) continue;
    for (let v = 0; v < out.length; v++) out[v] += w * target[v];
  }
  return out;
}

function normals(positions, indices, out) {
  out.fill(0);
  for (let t = 0; t < indices.length; t += 3) {
    const a = 3 * indices[t], b = 3 * indices[t + 1], c = 3 * indices[t + 2];
    const ux = positions[b] - positions[a], uy = positions[b + 1] - positions[a + 1], uz = positions[b + 2] - positions[a + 2];
    const vx = positions[c] - positions[a], vy = positions[c + 1] - positions[a + 1], vz = positions[c + 2] - positions[a + 2];
    const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
    for (const p of [a, b, c]) { out[p] += nx; out[p + 1] += ny; out[p + 2] += nz; }
  }
  return out;
}

function errorColours(pred, truth, maxError, out) {
  // blue (0) -> green -> yellow -> red (maxError and beyond)
  for (let v = 0; v < out.length / 3; v++) {
    const dx = pred[3 * v] - truth[3 * v], dy = pred[3 * v + 1] - truth[3 * v + 1], dz = pred[3 * v + 2] - truth[3 * v + 2];
    const t = Math.min(Math.sqrt(dx * dx + dy * dy + dz * dz) / maxError, 1);
    out[3 * v] = Math.min(Math.max(2 * t - 0.5, 0), 1);
    out[3 * v + 1] = t < 0.75 ? Math.min(2 * t + 0.2, 1) : 1 - 4 * (t - 0.75);
    out[3 * v + 2] = Math.max(1 - 3 * t, 0);
  }
  return out;
}

// ------------------------------------------------------------------------------------ WebGL2
const VERTEX = `#version 300 es
in vec3 position; in vec3 normal; in vec3 colour;
uniform vec3 centre; uniform vec2 halfSize;
out vec3 vNormal; out vec3 vColour;
void main() {
  vec3 p = (position - centre) / vec3(halfSize.x, halfSize.x, halfSize.y);
  gl_Position = vec4(p.x, p.y, -p.z, 1.0);   // looking down -z: nearer (larger z) has smaller depth
  vNormal = normal; vColour = colour;
}`;
const FRAGMENT = `#version 300 es
precision highp float;
in vec3 vNormal; in vec3 vColour; out vec4 colour;
void main() {
  vec3 n = normalize(vNormal);
  float light = 0.35 + 0.65 * max(dot(n, normalize(vec3(0.3, 0.5, 1.0))), 0.0);
  colour = vec4(vColour * light, 1.0);
}`;

function program(gl) {
  const compile = (kind, text) => {
    const s = gl.createShader(kind);
    gl.shaderSource(s, text);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  };
  const p = gl.createProgram();
  gl.attachShader(p, compile(gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(p, compile(gl.FRAGMENT_SHADER, FRAGMENT));
  gl.linkProgram(p);
  if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
  return p;
}

function panel(clip, label, size) {
  const figure = document.createElement("figure");
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const caption = document.createElement("figcaption");
  caption.textContent = label;
  figure.append(canvas, caption);
  document.getElementById("panels").append(figure);
  const gl = canvas.getContext("webgl2", { preserveDrawingBuffer: true, antialias: true });
  if (!gl) throw new Error("WebGL2 is not available in this browser");
  const prog = program(gl);
  const buffers = {};
  const vao = gl.createVertexArray();
  gl.bindVertexArray(vao);
  for (const name of ["position", "normal", "colour"]) {
    buffers[name] = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buffers[name]);
    const at = gl.getAttribLocation(prog, name);
    gl.enableVertexAttribArray(at);
    gl.vertexAttribPointer(at, 3, gl.FLOAT, false, 0, 0);
  }
  const elements = gl.createBuffer();
  gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, elements);
  gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, clip.indices, gl.STATIC_DRAW);
  const n = clip.base.length;
  return { canvas, gl, prog, vao, buffers, clip, positions: new Float32Array(n), normals: new Float32Array(n),
           colours: new Float32Array(n) };
}

function draw(p, colours) {
  const gl = p.gl, cam = config.camera;
  gl.viewport(0, 0, p.canvas.width, p.canvas.height);
  gl.clearColor(1, 1, 1, 1);
  gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
  gl.enable(gl.DEPTH_TEST);
  gl.useProgram(p.prog);
  gl.uniform3fv(gl.getUniformLocation(p.prog, "centre"), cam.centre);
  gl.uniform2f(gl.getUniformLocation(p.prog, "halfSize"), cam.half, cam.depth);
  gl.bindVertexArray(p.vao);
  for (const [name, data] of [["position", p.positions], ["normal", p.normals], ["colour", colours]]) {
    gl.bindBuffer(gl.ARRAY_BUFFER, p.buffers[name]);
    gl.bufferData(gl.ARRAY_BUFFER, data, gl.DYNAMIC_DRAW);
  }
  gl.drawElements(gl.TRIANGLES, p.clip.indices.length, gl.UNSIGNED_INT, 0);
}

// ------------------------------------------------------------------------------------ the player
function start() {
  document.getElementById("heading").textContent = config.title;
  const clips = config.clips.map((c) => parseGlb(base64Bytes(c.glb)));
  const panels = clips.map((clip, i) => panel(clip, config.clips[i].label, config.size));
  const skin = new Float32Array(clips[0].base.length);
  for (let v = 0; v < skin.length; v += 3) skin.set([0.85, 0.68, 0.58], v);
  const duration = config.frames / config.fps;
  const audio = document.getElementById("speech");
  const scrub = document.getElementById("scrub"), clock = document.getElementById("clock");
  const play = document.getElementById("play"), errors = document.getElementById("errors");
  if (config.audio) audio.src = config.audio;
  scrub.max = duration;
  const hash = new URLSearchParams(location.hash.slice(1));
  let time = Math.min(Math.max(parseFloat(hash.get("t")) || 0, 0), duration);
  if (panels.length > 1) {
    document.getElementById("error-toggle").hidden = false;
    errors.checked = hash.has("errors");
  }

  function render() {
    for (const p of panels) {
      poseAt(p.clip, time, p.positions);
      normals(p.positions, p.clip.indices, p.normals);
    }
    const showErrors = panels.length > 1 && errors.checked;
    draw(panels[0], showErrors ? errorColours(panels[0].positions, panels[1].positions, config.errorMax, panels[0].colours) : skin);
    for (const p of panels.slice(1)) draw(p, skin);
    const legend = document.getElementById("legend");
    legend.hidden = !showErrors;
    legend.textContent = `error colours: blue 0 mm to red ${(config.errorMax * 1000).toFixed(2)} mm and more`;
    scrub.value = time;
    clock.textContent = `${time.toFixed(2)} / ${duration.toFixed(2)} s`;
  }
  // The speech is the clock; without speech, the page's own clock.
  let playing = false, startTime = 0, startClock = 0;
  const now = () => (config.audio ? audio.currentTime : startTime + (performance.now() - startClock) / 1000);
  function tick() {
    if (!playing) return;
    time = Math.min(now(), duration);
    if (time >= duration) stop();
    render();
    requestAnimationFrame(tick);
  }
  function stop() {
    if (!playing) return;
    playing = false;
    time = Math.min(now(), duration);
    if (config.audio) audio.pause();
    play.textContent = "play";
    render();
  }
  play.addEventListener("click", () => {
    if (playing) { stop(); return; }
    if (time >= duration) time = 0;
    startTime = time;
    startClock = performance.now();
    playing = true;
    play.textContent = "pause";
    if (!config.audio) { tick(); return; }
    audio.currentTime = time;
    audio.play().then(tick).catch((e) => { playing = false; problems.push("audio: " + e.message); report(); });
  });
  audio.addEventListener("ended", stop);
  scrub.addEventListener("input", () => {
    time = parseFloat(scrub.value);
    if (config.audio) audio.currentTime = time;
    render();
  });
  errors.addEventListener("change", render);
  render();
  const rects = panels.map((p) => {
    const r = p.canvas.getBoundingClientRect();
    return { left: r.left + window.scrollX, top: r.top + window.scrollY, width: r.width, height: r.height };
  });
  report({ time, frames: config.frames, panels: rects, camera: config.camera });
}

try {
  start();
} catch (e) {
  problems.push(String(e && e.message || e));
  report();
}
