// progan studio page: draws the frames a WebSocket brings and sends the controls back.
// The wire format (message types, their fields, the binary frame header) is progan/studio/protocol.py.
// Flow control: the server sends a frame only against a credit; we return one credit per frame once it has been
// drawn (or skipped for a newer one), so a slow or hidden tab pauses the stream instead of queueing it.
// The pattern's layout (mirror, kaleidoscope, tile) is composed here, at the canvas's size in device pixels, with
// the geometry of progan/studio/patterns.py's source_coords (the offline render's).
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const canvas = $("view");
const ctx = canvas.getContext("2d");

let ws = null;
let info = null;
let nextId = 1;
const sentAt = new Map();        // control id -> time sent, until a frame acknowledges it
let pending = null;              // newest decoded frame waiting for the next animation frame
let pendingHeader = null;
let owed = 0;                    // credits to return at the next animation frame
let drawQueued = false;
const arrivals = [];             // frame arrival times over the last second, for frames/s
const coalesced = new Map();     // key -> control, sent once per animation frame (sliders)
let lastSeq = 0;
let asked = null;                // what this page last asked the stream to show, resent after a reconnect
let current = null;              // the frame on screen, kept to compose again on a resize or a new layout
let recorder = null;             // MediaRecorder while recording
let tasteLoad = null;            // id of a load_taste control not yet acknowledged
const TILES = 4;                 // patterns.TILES: copies of the frame across the shorter side of a tiled wall

function status(text) { $("status").textContent = text; }

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

function control(type, fields = {}) {
  const id = nextId++;
  sentAt.set(id, performance.now());
  send({ type, id, ...fields });
  return id;
}

function controlSoon(key, type, fields) {
  coalesced.set(key, [type, fields]);
  queueDraw();
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws${query}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { status(""); lastSeq = 0; sentAt.clear(); resendState(); };
  ws.onmessage = (ev) => (typeof ev.data === "string" ? onText(JSON.parse(ev.data)) : onFrame(ev.data));
  ws.onclose = (ev) => {
    status(ev.code === 1008 ? "access refused: open the URL with its ?token=" : "disconnected; reconnecting\u2026");
    owed = 0;
    setTimeout(connect, 1000);
  };
}

function onText(msg) {
  if (msg.type === "info") showInfo(msg);
  else if (msg.type === "stats") {
    $("clients").textContent = msg.clients;
    if (msg.dropped || msg.errors) document.body.dataset.errors = msg.errors;
  } else if (msg.type === "error") {
    status(msg.message);
    if (msg.errors !== undefined) document.body.dataset.errors = msg.errors;
    if (["prompt", "classes", "label", "prompt_seconds"].includes(msg.about)) note(msg.message, true);
    if (["save_taste", "load_taste"].includes(msg.about)) { tasteLoad = null; noteIn("taste-note", msg.message, true); }
    if (msg.about === "pattern") noteIn("show-note", msg.message, true);
    setTimeout(() => { if ($("status").textContent === msg.message) status(""); }, 4000);
  } else if (msg.type === "notice") {
    note(msg.message, true);
  } else if (msg.type === "condition") {
    showCondition(msg);
  } else if (msg.type === "taste") {
    const text = JSON.stringify(msg.profile, null, 1);
    saveBlob(new Blob([text], { type: "application/json" }), "progan-taste.json");
    noteIn("taste-note", `saved progan-taste.json (${msg.profile.likes} likes, ${msg.profile.dislikes} dislikes)`);
  }
}

function noteIn(id, text, bad) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("bad", !!bad);
}

// Under the prompt box: how a prompt was read, or why it could not be.
function note(text, bad) {
  const el = $("prompt-note");
  el.textContent = text;
  el.classList.toggle("bad", !!bad);
}

function showCondition(msg) {
  $("now-row").hidden = false;
  $("now-text").textContent = msg.now.text;
  $("now-reading").textContent = msg.now.source === "prompt" ? `read as: ${msg.now.reading}` : msg.now.reading;
  if (msg.now.source !== "data") note("");
  const list = $("next-list");
  list.replaceChildren();
  for (const item of msg.next) {
    const li = document.createElement("li");
    const small = document.createElement("small");
    small.textContent = `read as: ${item.reading}`;
    li.append(item.text, small);
    list.append(li);
  }
  $("queue-box").hidden = !msg.next.length;
  $("prompt-seconds").value = msg.seconds;
}

function onFrame(buf) {
  const n = new DataView(buf).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const bytes = new Uint8Array(buf, 4 + n);
  if (header.kind === "png") { download(new Blob([bytes], { type: "image/png" }), header); return; }
  const now = performance.now();
  arrivals.push(now);
  if (header.t !== null && header.t !== undefined) $("latency").textContent = (now - header.t).toFixed(0);
  if (header.ack !== null && header.ack !== undefined) {
    for (const [id, t] of sentAt) {
      if (id <= header.ack) { $("ctl").textContent = (now - t).toFixed(0); sentAt.delete(id); }
    }
  }
  owed += 1;
  createImageBitmap(new Blob([bytes], { type: "image/jpeg" })).then((bitmap) => {
    if (header.seq < lastSeq) { bitmap.close(); return; }
    if (pending) pending.close();
    pending = bitmap;
    pendingHeader = header;
    lastSeq = header.seq;
    queueDraw();
  }, () => queueDraw());
}

function queueDraw() {
  if (!drawQueued) { drawQueued = true; requestAnimationFrame(draw); }
}

function draw() {
  drawQueued = false;
  if (pending) {
    if (current) current.close();
    current = pending;
    pending = null;
    compose();
    showHeader(pendingHeader);
  }
  for (const [type, fields] of coalesced.values()) control(type, fields);
  coalesced.clear();
  for (; owed > 0; owed--) send({ type: "credit", t: performance.now() });
}

function showHeader(h) {
  const now = performance.now();
  while (arrivals.length && arrivals[0] < now - 1000) arrivals.shift();
  $("fps").textContent = arrivals.length;
  $("render").textContent = h.render_ms.toFixed(1);
  $("batch").textContent = h.batch;
  $("likes").textContent = h.likes;
  $("dislikes").textContent = h.dislikes;
  document.body.dataset.frames = h.seq;
  document.body.dataset.pattern = h.pattern;
  document.body.dataset.phase = h.phase;
  document.body.dataset.showSeed = h.show_seed;
  if (tasteLoad !== null && h.ack !== null && h.ack >= tasteLoad) {
    tasteLoad = null;
    noteIn("taste-note", `taste loaded: ${h.likes} likes, ${h.dislikes} dislikes`);
  }
  setPressed($("freeze"), h.frozen);
  if (h.morph !== null && h.morph !== undefined) $("morph").value = h.morph;
}

function setPressed(button, on) { button.setAttribute("aria-pressed", on ? "true" : "false"); }

function download(blob, header) {
  saveBlob(blob, header.seed !== null && header.grid === 1 ? `progan-seed${header.seed}.png`
                                                           : `progan-frame${header.seq}.png`);
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function showInfo(msg) {
  const first = info === null;
  info = msg;
  $("model-line").textContent = `${msg.output_resolution}\u00d7${msg.output_resolution}, ` +
    `${msg.kimg.toFixed(0)} kimg, ${msg.parameters.toLocaleString()} parameters`;
  const rows = [
    ["resolution", `${msg.output_resolution} (architecture ${msg.resolution}, lod ${msg.lod})`],
    ["training", `${msg.kimg.toFixed(1)} kimg`],
    ["parameters", msg.parameters.toLocaleString()],
    ["latent", msg.latent_size + (msg.num_classes ? `, ${msg.num_classes} classes` : "")],
    ["device", msg.device],
    ["source", msg.source || "\u2013"],
  ];
  const dl = $("info");
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  if (first) { buildSliders(msg); buildCondition(msg.conditioning, msg.text_encoder); showPattern(msg.pattern); }
}

// ---------------------------------------------------------------------------------------------------------------
// Patterns: the motion is the server's (a control), the layout the page's own.

function showPattern(p) {
  $("motion").value = p.motion;
  $("layout").value = p.layout;
  $("coupling").value = p.coupling;
  $("coupling-out").textContent = Number(p.coupling).toFixed(2);
  $("period").value = p.period;
  if (p.motion === "field" && $("grid").value === "1") setGrid(4);  // a field needs neighbours to flow across
  patternRows();
  compose();
}

function patternRows() {
  $("coupling-row").hidden = $("motion").value !== "field";
  $("period-row").hidden = $("motion").value !== "loop";
  document.body.dataset.layout = $("layout").value;
}

function setGrid(n) {
  $("grid").value = String(n);
  control("grid", { value: n });
}

function fitCanvas() {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width === w && canvas.height === h) return false;
  canvas.width = w;
  canvas.height = h;
  return true;
}

// Draw `current` on the canvas in the chosen layout; each piece is the frame placed by a transform and clipped,
// which is patterns.source_coords read forwards.
function compose() {
  if (!current) return;
  const W = canvas.width, H = canvas.height, f = current, layout = $("layout").value;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, W, H);
  ctx.imageSmoothingEnabled = $("smooth").checked;
  ctx.imageSmoothingQuality = "high";
  const piece = (place, clip, x, y, s) => {
    ctx.save();
    place();
    if (clip) { ctx.beginPath(); clip(); ctx.clip(); }
    ctx.drawImage(f, x, y, s, s);
    ctx.restore();
  };
  if (layout === "mirror" || layout === "kaleidoscope") {
    const s = Math.max(W, H), x0 = (W - s) / 2, y0 = (H - s) / 2;
    for (const fx of [false, true]) {
      for (const fy of layout === "kaleidoscope" ? [false, true] : [false]) {
        piece(() => { ctx.translate(fx ? W : 0, fy ? H : 0); ctx.scale(fx ? -1 : 1, fy ? -1 : 1); },
              () => ctx.rect(0, 0, W / 2, layout === "kaleidoscope" ? H / 2 : H), x0, y0, s);
      }
    }
  } else if (layout === "kaleidoscope6") {
    // Wedges overlap by eps and lie on the whole frame, so their anti-aliased edges show no dark seams.
    const s = Math.hypot(W, H), wedge = Math.PI / 6, eps = 0.01;
    const clip = () => { ctx.moveTo(0, 0); ctx.arc(0, 0, s, -eps, wedge + eps); ctx.closePath(); };
    piece(() => ctx.translate(W / 2, H / 2), null, -s / 2, -s / 2, s);
    for (let k = 0; k < 6; k++) {
      piece(() => { ctx.translate(W / 2, H / 2); ctx.rotate(k * 2 * wedge); }, clip, -s / 2, -s / 2, s);
      piece(() => { ctx.translate(W / 2, H / 2); ctx.rotate((k + 1) * 2 * wedge); ctx.scale(1, -1); },
            clip, -s / 2, -s / 2, s);
    }
  } else if (layout === "tile") {
    const T = Math.min(W, H) / TILES;
    const span = (n) => [Math.floor(-n / 2 / T + 0.5), Math.ceil(n / 2 / T + 0.5)];
    const [i0, i1] = span(W), [j0, j1] = span(H);
    for (let i = i0; i <= i1; i++) {
      for (let j = j0; j <= j1; j++) {
        const mx = Math.abs(i) % 2 === 1, my = Math.abs(j) % 2 === 1;  // every other copy mirrored: edges meet
        piece(() => {
          ctx.translate(W / 2 + (i - 0.5) * T + (mx ? T : 0), H / 2 + (j - 0.5) * T + (my ? T : 0));
          ctx.scale(mx ? -1 : 1, my ? -1 : 1);
        }, null, 0, 0, T);
      }
    }
  } else {
    const s = Math.min(W, H);
    piece(() => {}, null, (W - s) / 2, (H - s) / 2, s);
  }
}

// Where canvas pixel (x, y) samples the frame, (u, v) in [0, 1] (patterns.source_coords for one point), or null
// off the frame.
function sourceUV(x, y) {
  const W = canvas.width, H = canvas.height, layout = $("layout").value;
  const px = x - W / 2, py = y - H / 2;
  const clamp = (t) => Math.min(1, Math.max(0, t));
  if (layout === "mirror" || layout === "kaleidoscope") {
    const s = Math.max(W, H);
    return [clamp(0.5 - Math.abs(px / s)), clamp(layout === "kaleidoscope" ? 0.5 - Math.abs(py / s) : 0.5 + py / s)];
  }
  if (layout === "kaleidoscope6") {
    const s = Math.hypot(W, H), r = Math.hypot(px, py) / s, third = Math.PI / 3;
    let a = ((Math.atan2(py, px) % third) + third) % third;
    a = Math.min(a, third - a);
    return [clamp(0.5 + r * Math.cos(a)), clamp(0.5 + r * Math.sin(a))];
  }
  if (layout === "tile") {
    const T = Math.min(W, H) / TILES;
    const tri = (t) => { t = ((t % 2) + 2) % 2; return t <= 1 ? t : 2 - t; };
    return [tri(px / T + 0.5), tri(py / T + 0.5)];
  }
  const s = Math.min(W, H), u = px / s + 0.5, v = py / s + 0.5;
  return u < 0 || u > 1 || v < 0 || v > 1 ? null : [u, v];
}

// ---------------------------------------------------------------------------------------------------------------
// Wall mode and recording

function toggleWall() {
  const on = !document.body.classList.contains("wall");
  document.body.classList.toggle("wall", on);
  if (on) {
    if (document.activeElement) document.activeElement.blur();  // keys must reach the page, not a hidden control
    if (document.documentElement.requestFullscreen) document.documentElement.requestFullscreen().catch(() => {});
    $("wall-hint").hidden = false;
    setTimeout(() => { $("wall-hint").hidden = true; }, 3000);
  } else {
    $("wall-hint").hidden = true;
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  }
}

function toggleRecord() {
  if (recorder) { recorder.stop(); return; }
  const types = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"];
  const type = typeof MediaRecorder === "undefined" ? null : types.find((t) => MediaRecorder.isTypeSupported(t));
  if (!type || !canvas.captureStream) {
    noteIn("show-note", "this browser cannot record the canvas (no MediaRecorder for WebM)", true);
    return;
  }
  const stream = canvas.captureStream(60);
  const chunks = [];
  const name = `progan-${$("motion").value}-${$("layout").value}-${Date.now()}.webm`;
  recorder = new MediaRecorder(stream, { mimeType: type, videoBitsPerSecond: 8e6 });
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = () => {
    for (const track of stream.getTracks()) track.stop();
    recorder = null;
    setPressed($("record"), false);
    $("record").textContent = "Record";
    const blob = new Blob(chunks, { type: "video/webm" });
    saveBlob(blob, name);
    noteIn("show-note", `saved ${name} (${(blob.size / 1024).toFixed(0)} KiB)`);
  };
  recorder.onerror = (e) => {
    noteIn("show-note", `recording failed: ${e.error ? e.error.message : "unknown error"}`, true);
  };
  recorder.start(250);
  setPressed($("record"), true);
  $("record").textContent = "Stop";
  noteIn("show-note", "recording what is on screen\u2026");
}

async function loadTaste(file) {
  if (file.size > 4096) { noteIn("taste-note", `${file.name} is too large for a taste profile`, true); return; }
  let profile;
  try {
    profile = JSON.parse(await file.text());
  } catch (e) {
    noteIn("taste-note", `${file.name} is not a taste profile: ${e.message}`, true);
    return;
  }
  tasteLoad = control("load_taste", { profile });
  noteIn("taste-note", `loading ${file.name}\u2026`);
}

// The prompt box (text models), the class picker and blend (class models); disabled with the reason otherwise.
function buildCondition(c, encoder) {
  const box = $("prompt");
  const reason = c.prompt_unavailable || (encoder && encoder.startsWith("failed") ? `text encoder ${encoder}` : null);
  for (const el of [box, $("prompt-go"), $("prompt-queue")]) el.disabled = !!reason;
  box.maxLength = c.max_prompt_chars;
  $("prompt-reason").hidden = !reason;
  $("prompt-reason").textContent = reason ? `Prompts: ${reason}.` : "";
  if (!reason) box.title = `${c.describe}. Enter: show it now; Shift+Enter: queue it after what plays now`;
  $("prompt-seconds").min = c.prompt_seconds_range[0];
  $("prompt-seconds").max = c.prompt_seconds_range[1];
  $("class-row").hidden = c.kind !== "class";
  if (c.kind === "class") {
    const select = $("label");
    const names = $("class-names");
    select.replaceChildren();
    names.replaceChildren();
    c.classes.forEach((name, i) => {
      select.append(new Option(name, i));
      names.append(new Option(name));
    });
  }
}

function sendPrompt(queue) {
  const text = $("prompt").value;
  if (!text.trim()) { note("type what you want to see first", true); return; }
  control("prompt", { text, queue });
  if (!queue) asked = ["prompt", { text, queue: false }];
  note(queue ? `queued: ${text}` : `reading: ${text}\u2026`);
  $("prompt").select();
}

// "cat=0.7, dog=0.3" (or one name) -> {"cat": 0.7, "dog": 0.3}; weights default to 1.
function sendBlend() {
  const weights = {};
  for (const part of $("blend").value.split(",")) {
    if (!part.trim()) continue;
    const at = part.lastIndexOf("=");
    const name = (at < 0 ? part : part.slice(0, at)).trim();
    const w = at < 0 ? 1 : Number(part.slice(at + 1));
    if (!Number.isFinite(w)) { note(`the weight of ${name} is not a number`, true); return; }
    weights[name] = (weights[name] || 0) + w;
  }
  if (!Object.keys(weights).length) { note("name one class or more, e.g. cat=0.7, dog=0.3", true); return; }
  control("classes", { weights });
  asked = ["classes", { weights }];
}

function buildSliders(msg) {
  const box = $("sliders");
  box.replaceChildren();
  for (let i = 0; i < msg.sliders; i++) {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"), {
      type: "range", min: -msg.slider_range, max: msg.slider_range, step: 0.05, value: 0, className: "sefa" });
    input.dataset.index = i;
    input.title = `direction ${i} (eigenvalue ${msg.sefa_eigenvalues[i]})`;
    const out = document.createElement("output");
    out.textContent = "0.00";
    input.addEventListener("input", () => {
      out.textContent = Number(input.value).toFixed(2);
      controlSoon(`slider${i}`, "slider", { index: i, value: Number(input.value) });
    });
    label.append(`#${i}`, input, out);
    box.append(label);
  }
}

// After a reconnect the server holds a fresh session: tell it what the page shows.
function resendState() {
  control("speed", { value: Number($("speed").value) });
  control("truncation", { value: Number($("truncation").value) });
  control("freeze", { value: $("freeze").getAttribute("aria-pressed") === "true" });
  const grid = Number($("grid").value);
  if (grid !== 1) control("grid", { value: grid });
  for (const input of document.querySelectorAll("input.sefa")) {
    if (Number(input.value) !== 0) control("slider", { index: Number(input.dataset.index), value: Number(input.value) });
  }
  if (asked) control(...asked);
  if (info !== null) {  // a reconnect (on the first connect the server's pattern is the page's)
    control("pattern", { motion: $("motion").value, coupling: Number($("coupling").value),
                         period: Number($("period").value) });
  }
}

function bindRange(id, digits) {
  const input = $(id);
  input.addEventListener("input", () => {
    $(`${id}-out`).textContent = Number(input.value).toFixed(digits);
    controlSoon(id, id, { value: Number(input.value) });
  });
}

function toggleFreeze() {
  const on = $("freeze").getAttribute("aria-pressed") !== "true";
  setPressed($("freeze"), on);
  control("freeze", { value: on });
}

function jump() {
  const seed = Number($("seed").value);
  if (!Number.isInteger(seed) || seed < 0 || seed > 4294967295) { status("seed must be an integer in [0, 2^32)"); return; }
  setPressed($("freeze"), true);
  control("freeze", { value: true });
  control("seed", { value: seed });
}

function setup() {
  bindRange("speed", 2);
  bindRange("truncation", 2);
  $("freeze").addEventListener("click", toggleFreeze);
  $("save").addEventListener("click", () => control("save"));
  $("go").addEventListener("click", jump);
  $("seed").addEventListener("keydown", (e) => { if (e.key === "Enter") jump(); });
  $("grid").addEventListener("change", () => control("grid", { value: Number($("grid").value) }));
  $("motion").addEventListener("change", () => {
    control("pattern", { motion: $("motion").value });
    if ($("motion").value === "field" && $("grid").value === "1") setGrid(4);
    patternRows();
  });
  $("layout").addEventListener("change", () => { patternRows(); compose(); });
  $("smooth").addEventListener("change", compose);
  $("coupling").addEventListener("input", () => {
    $("coupling-out").textContent = Number($("coupling").value).toFixed(2);
    controlSoon("coupling", "pattern", { coupling: Number($("coupling").value) });
  });
  $("period").addEventListener("change", () => {
    const v = Number($("period").value);
    if (Number.isFinite(v)) control("pattern", { period: v });
  });
  $("wall").addEventListener("click", toggleWall);
  $("record").addEventListener("click", toggleRecord);
  $("save-taste").addEventListener("click", () => control("save_taste"));
  $("load-taste").addEventListener("click", () => $("taste-file").click());
  $("taste-file").addEventListener("change", () => {
    const file = $("taste-file").files[0];
    $("taste-file").value = "";
    if (file) loadTaste(file);
  });
  new ResizeObserver(() => { if (fitCanvas()) compose(); }).observe(canvas);
  patternRows();
  $("shuffle").addEventListener("click", () => control("shuffle"));
  $("label").addEventListener("change", () => {
    asked = ["label", { value: Number($("label").value) }];
    control(...asked);
  });
  $("blend").addEventListener("keydown", (e) => { if (e.key === "Enter") sendBlend(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); sendPrompt(e.shiftKey); }
  });
  $("prompt-go").addEventListener("click", () => sendPrompt(false));
  $("prompt-queue").addEventListener("click", () => sendPrompt(true));
  $("clear-queue").addEventListener("click", () => control("clear_queue"));
  $("prompt-seconds").addEventListener("change", () => {
    const v = Number($("prompt-seconds").value);
    if (Number.isFinite(v)) control("prompt_seconds", { value: v });
  });
  $("like").addEventListener("click", () => control("like", { frame: lastSeq }));
  $("dislike").addEventListener("click", () => control("dislike", { frame: lastSeq }));
  $("reset-prefs").addEventListener("click", () => control("reset_preferences"));
  $("reset-sliders").addEventListener("click", () => {
    for (const input of document.querySelectorAll("input.sefa")) {
      input.value = 0;
      input.nextElementSibling.textContent = "0.00";
    }
    control("reset_sliders");
  });
  canvas.addEventListener("click", (e) => {
    const grid = Number($("grid").value);
    if (grid === 1) return;
    const r = canvas.getBoundingClientRect();
    const uv = sourceUV((e.clientX - r.left) / r.width * canvas.width, (e.clientY - r.top) / r.height * canvas.height);
    if (!uv) return;
    const col = Math.min(grid - 1, Math.floor(uv[0] * grid));
    const row = Math.min(grid - 1, Math.floor(uv[1] * grid));
    control(e.shiftKey ? "dislike" : "like", { frame: lastSeq, cell: row * grid + col });
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("wall")) { toggleWall(); return; }
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.ctrlKey || e.metaKey) return;
    if (e.key === " ") { e.preventDefault(); toggleFreeze(); }
    else if (e.key === "f") toggleWall();
    else if (e.key === "r") toggleRecord();
    else if (e.key === "l") control("like", { frame: lastSeq });
    else if (e.key === "d") control("dislike", { frame: lastSeq });
    else if (e.key === "s") control("save");
  });
  connect();
}

setup();
