// progan studio page: draws the frames a WebSocket brings and sends the controls back.
// The wire format (message types, their fields, the binary frame header) is progan/studio/protocol.py.
// Flow control: the server sends a frame only against a credit; we return one credit per frame once it has been
// drawn (or skipped for a newer one), so a slow or hidden tab pauses the stream instead of queueing it.
// The pattern's layout (mirror, kaleidoscope, tile) is composed here, at the canvas's size in device pixels, with
// the geometry of progan/studio/patterns.py's source_coords (the offline render's).
// The display runs at the screen's refresh rate whatever the generator's: each animation frame shows a crossfade
// from the picture on screen to the latest rendered frame (see tick()).
// Music is measured here (Web Audio API): only its loudness and onsets are sent, as "drive" and "hit" controls.
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
let pendingHeader = null;        // the newest frame header not yet shown
let headerSeq = -1;              // the seq of the header shown last
let lastBytes = null;            // the latest frame's JPEG, to tell a new picture from the same one sent again
let owed = 0;                    // credits to return at the next animation frame
const arrivals = [];             // frame arrival times over the last second, for frames/s
// The display. A rendered frame fades in over about one arrival interval, from the picture on screen when it came:
// a crossfade (not motion interpolation), so every animation frame shows a new picture, a late frame only makes
// the fade settle, and nothing ever waits. Blended at the frame's own size (cheap), then laid out by compose().
const shown = document.createElement("canvas");   // the picture on screen, at the frame's size
const shownCtx = shown.getContext("2d");
const from = document.createElement("canvas");    // the picture on screen when the latest frame came
const fromCtx = from.getContext("2d");
let latest = null;               // the latest rendered frame (ImageBitmap), fading in over `from`
let fadeStart = 0;
let fadeLength = 100;            // ms
let interval = 100;              // ms between rendered frames, a running mean
let lastArrival = 0;
let lastAlpha = -1;              // the blend on screen; -1: to be drawn
let lastTick = 0;
let tickGap = 1000 / 60;         // ms between animation frames (the screen's refresh), a running mean
const paints = [];               // times of the pictures drawn over the last second, for displayed frames/s
let displayed = 0;
const coalesced = new Map();     // key -> control, sent once per animation frame (sliders)
let lastSeq = 0;
let asked = null;                // what this page last asked the stream to show, resent after a reconnect
let recorder = null;             // MediaRecorder while recording
let tasteLoad = null;            // id of a load_taste control not yet acknowledged
let sound = null;                // the music's audio graph and measurements, made when a source is first picked
let reactions = null;            // the server's audio settings (info.audio): defaults, peak memory, silence floor
let setlistName = null;          // a setlist file sent and not yet answered
let setlistSent = null;          // the setlist this page loaded ({text, name}), sent again after a reconnect
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
}

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  ws = new WebSocket(`${proto}//${location.host}/ws${query}`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { status(""); lastSeq = 0; headerSeq = -1; lastBytes = null; sentAt.clear(); resendState(); };
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
    if (msg.about === "setlist") { setlistName = setlistSent = null; noteIn("setlist-note", msg.message, true); }
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

// What plays now and what comes next: prompts, a class, a caption of the data, or a setlist's entries (which
// carry their own seconds and come round again).
function showCondition(msg) {
  const playing = (item) => (item.seconds ? `${item.text} (${item.seconds} s)` : item.text);
  $("now-row").hidden = false;
  $("now-text").textContent = playing(msg.now);
  $("now-reading").textContent = msg.now.source === "prompt" ? `read as: ${msg.now.reading}` : msg.now.reading;
  if (msg.now.source !== "data") note("");
  const list = $("next-list");
  list.replaceChildren();
  for (const item of msg.next) {
    const li = document.createElement("li");
    const small = document.createElement("small");
    small.textContent = item.source === "prompt" ? `read as: ${item.reading}` : item.reading;
    li.append(playing(item), small);
    list.append(li);
  }
  const setlist = msg.now.seconds !== undefined || msg.next.some((item) => item.seconds !== undefined);
  $("queue-box").hidden = !msg.next.length;
  $("queue-label").textContent = setlist ? "next (the setlist loops)" : "next";
  $("prompt-seconds").value = msg.seconds;
  document.body.dataset.now = msg.now.text;
  if (setlistName !== null && setlist) {
    noteIn("setlist-note", `playing ${setlistName} in a loop: ${msg.next.length + 1} entries`);
    setlistName = null;
  }
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
  if (sameBytes(bytes, lastBytes)) {  // a frozen stream's frame again: nothing new to fade in
    newerHeader(header);
    return;
  }
  lastBytes = bytes;
  createImageBitmap(new Blob([bytes], { type: "image/jpeg" })).then((bitmap) => {
    if (header.seq < lastSeq) { bitmap.close(); return; }
    if (pending) pending.close();
    pending = bitmap;
    newerHeader(header);
    lastSeq = header.seq;
  }, () => { lastBytes = null; newerHeader(header); });  // not drawable: the next frame is decoded afresh
}

function newerHeader(h) {
  if (h.seq > headerSeq && (!pendingHeader || h.seq > pendingHeader.seq)) pendingHeader = h;
}

function sameBytes(a, b) {
  if (!b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Every animation frame: take the newest rendered frame, send what is owed (coalesced controls, credits, the
// music's drive), and draw the crossfade's next picture.
function tick(now) {
  requestAnimationFrame(tick);
  if (lastTick && now - lastTick < 250) tickGap = 0.9 * tickGap + 0.1 * (now - lastTick);
  lastTick = now;
  if (pending) take(now);
  if (pendingHeader) { showHeader(pendingHeader); headerSeq = pendingHeader.seq; pendingHeader = null; }
  for (const [type, fields] of coalesced.values()) control(type, fields);
  coalesced.clear();
  for (; owed > 0; owed--) send({ type: "credit", t: performance.now() });
  if (sound) listen(now);
  if (!latest) return;
  const alpha = Math.min(1, (now - fadeStart) / fadeLength);
  if (alpha === lastAlpha) return;  // settled: the picture on screen is the latest frame
  lastAlpha = alpha;
  shownCtx.globalAlpha = 1;
  shownCtx.drawImage(from, 0, 0);
  shownCtx.globalAlpha = alpha;
  shownCtx.drawImage(latest, 0, 0);
  shownCtx.globalAlpha = 1;
  compose();
  displayed += 1;
  paints.push(now);
  while (paints.length && paints[0] < now - 1000) paints.shift();
  document.body.dataset.displayed = displayed;
}

// A new rendered frame: what is on screen becomes what it fades in over, for about one arrival interval (a little
// more, so that a frame arriving a bit late finds the fade still under way). The fade is one animation frame along
// already when it is first drawn: frames that come as often as the screen refreshes are shown as they come.
function take(now) {
  const w = pending.width, h = pending.height;
  if (from.width !== w || from.height !== h) { from.width = w; from.height = h; }
  fromCtx.clearRect(0, 0, w, h);
  fromCtx.drawImage(latest ? shown : pending, 0, 0, w, h);  // the first frame fades in over itself
  if (shown.width !== w || shown.height !== h) { shown.width = w; shown.height = h; }
  if (lastArrival && now - lastArrival < 1000) interval = 0.8 * interval + 0.2 * (now - lastArrival);
  lastArrival = now;
  fadeLength = Math.min(500, 1.25 * interval);
  fadeStart = now - tickGap;
  lastAlpha = -1;
  if (latest) latest.close();
  latest = pending;
  pending = null;
}

function showHeader(h) {
  const now = performance.now();
  while (arrivals.length && arrivals[0] < now - 1000) arrivals.shift();
  $("fps").textContent = arrivals.length;
  $("shown-fps").textContent = paints.length;
  $("render").textContent = h.render_ms.toFixed(1);
  $("batch").textContent = h.batch;
  $("likes").textContent = h.likes;
  $("dislikes").textContent = h.dislikes;
  document.body.dataset.frames = h.seq;
  document.body.dataset.pattern = h.pattern;
  document.body.dataset.phase = h.phase;
  document.body.dataset.showSeed = h.show_seed;
  document.body.dataset.rate = h.rate;
  document.body.dataset.hits = h.hits;
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
  if (first) {
    buildSliders(msg);
    buildCondition(msg.conditioning, msg.text_encoder);
    showPattern(msg.pattern);
    showReactions(msg.audio);
  }
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

// Draw the picture on screen (`shown`, at the frame's size) on the canvas in the chosen layout; each piece is the frame placed by a transform and clipped,
// which is patterns.source_coords read forwards.
function compose() {
  if (!latest) return;
  const W = canvas.width, H = canvas.height, f = shown, layout = $("layout").value;
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

// ---------------------------------------------------------------------------------------------------------------
// Setlists (progan/studio/setlist.py): the file is read here and parsed by the server, which names a bad line.

async function loadSetlist(file) {
  if (!info) return;
  const limit = info.conditioning.max_setlist_chars;
  const text = file.size <= 4 * limit ? await file.text() : null;
  if (text === null || text.length > limit) {
    noteIn("setlist-note", `${file.name} is longer than the page sends (${limit} characters); give it to ` +
      "progan studio --setlist instead", true);
    return;
  }
  setlistName = file.name;
  setlistSent = { text, name: file.name };
  control("setlist", setlistSent);
  noteIn("setlist-note", `loading ${file.name}\u2026`);
}

// ---------------------------------------------------------------------------------------------------------------
// Music: a song the viewer picks or drops (played from the page's memory) or the microphone, measured with an
// AnalyserNode on every animation frame. The loudness is the RMS of the latest samples over its running peak (as
// progan/studio/audio.py measures a song offline); an onset is a peak of the spectral flux (the summed rise of every
// frequency bin's magnitude) above its recent mean by two standard deviations. The loudness goes to the server as
// "drive", each onset as a "hit"; the sound itself never leaves the page.

const ONSET_GAP = 120;           // ms: onsets closer together are one hit
const FLUX_MEMORY = 90;          // animation frames (1.5 s) of flux that an onset stands out from
const DRIVE_EVERY = 33;          // ms between drive controls

function audioGraph() {
  if (sound) return sound;
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  analyser.smoothingTimeConstant = 0;  // the flux compares each window with the one before, unsmoothed
  const element = $("song");
  const elementSource = ctx.createMediaElementSource(element);
  elementSource.connect(ctx.destination);
  elementSource.connect(analyser);
  const mute = ctx.createGain();       // the analyser is pulled through a silent path (the microphone is not played)
  mute.gain.value = 0;
  analyser.connect(mute).connect(ctx.destination);
  sound = {
    ctx, analyser, element, mic: null, url: null, name: "",
    wave: new Float32Array(analyser.fftSize), spectrum: new Float32Array(analyser.frequencyBinCount),
    previous: new Float32Array(analyser.frequencyBinCount), flux: [], fluxPeak: 0, peak: reactions.peak_floor,
    energy: 0, onsets: 0, lastHit: -Infinity, lastDrive: 0, lastTime: 0, live: false,
  };
  return sound;
}

function playSong(file) {
  const s = audioGraph();
  stopMic();
  if (s.url) URL.revokeObjectURL(s.url);
  s.url = URL.createObjectURL(file);
  s.name = file.name;
  s.element.src = s.url;
  s.element.hidden = false;
  s.ctx.resume();
  noteIn("music-note", `loading ${file.name}\u2026`);
  s.element.play().then(
    () => noteIn("music-note", `playing ${file.name}; the sound stays in this browser`),
    (e) => { if (e.name === "NotAllowedError") noteIn("music-note", `press play to start ${file.name}`); });
}

function songError() {
  const s = sound;
  if (!s || !s.element.error || !s.url) return;
  const why = { 1: "loading it was stopped", 2: "it could not be read", 3: "it could not be decoded",
    4: "this browser cannot read it as audio" }[s.element.error.code] || "it cannot be played";
  noteIn("music-note", `cannot play ${s.name}: ${why}`, true);
  s.element.hidden = true;
}

async function useMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    noteIn("music-note", "the microphone needs a secure page: open the studio at localhost or over https", true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(
      { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  } catch (e) {
    const why = {
      NotAllowedError: "the microphone was refused; allow it for this page in the browser's site settings and " +
        "press Microphone again",
      SecurityError: "the microphone was refused by the browser's settings",
      NotFoundError: "no microphone was found",
      NotReadableError: "the microphone is in use by another program or cannot be read",
    }[e.name] || `the microphone cannot be used: ${e.name}: ${e.message}`;
    noteIn("music-note", why, true);
    return;
  }
  const s = audioGraph();
  s.element.pause();
  stopMic();
  s.mic = { stream, source: s.ctx.createMediaStreamSource(stream) };
  s.mic.source.connect(s.analyser);
  s.ctx.resume();
  setPressed($("mic"), true);
  noteIn("music-note", "listening to the microphone; the sound stays in this browser");
}

function stopMic() {
  if (!sound || !sound.mic) return;
  sound.mic.source.disconnect();
  for (const track of sound.mic.stream.getTracks()) track.stop();
  sound.mic = null;
  setPressed($("mic"), false);
}

function stopMusic() {
  if (!sound) return;
  sound.element.pause();
  stopMic();
  noteIn("music-note", "stopped");
}

// Measure the music once an animation frame, and drive the show with it.
function listen(now) {
  const s = sound;
  const live = s.mic !== null || (!s.element.paused && !s.element.ended);
  if (!live) {
    if (s.live) { s.live = false; s.energy = 0; $("energy").value = 0; send({ type: "drive", energy: 0, motion: 0 }); }
    return;
  }
  s.live = true;
  const dt = s.lastTime ? Math.min(0.25, (now - s.lastTime) / 1000) : 0;
  s.lastTime = now;
  s.analyser.getFloatTimeDomainData(s.wave);
  let sum = 0;
  for (const x of s.wave) sum += x * x;
  const rms = Math.sqrt(sum / s.wave.length), floor = reactions.peak_floor;
  s.peak = Math.max(rms, s.peak * Math.exp(-dt / reactions.peak_seconds), floor);
  s.energy = rms >= floor ? rms / s.peak : 0;
  s.analyser.getFloatFrequencyData(s.spectrum);  // dB
  let flux = 0;
  for (let i = 0; i < s.spectrum.length; i++) {
    const m = Math.pow(10, s.spectrum[i] / 20);
    flux += Math.max(0, m - s.previous[i]);
    s.previous[i] = m;
  }
  const mean = s.flux.reduce((a, b) => a + b, 0) / Math.max(1, s.flux.length);
  const sd = Math.sqrt(s.flux.reduce((a, b) => a + (b - mean) * (b - mean), 0) / Math.max(1, s.flux.length));
  s.fluxPeak = Math.max(flux, s.fluxPeak * Math.exp(-dt / reactions.peak_seconds));
  if (s.flux.length >= 10 && flux > mean + 2 * sd && flux > 0.1 * s.fluxPeak && s.energy > 0 &&
      now - s.lastHit >= ONSET_GAP) {
    s.lastHit = now;
    s.onsets += 1;
    $("onsets").textContent = s.onsets;
    document.body.dataset.onsets = s.onsets;
    const action = $("on-hit").value;
    if (action !== "none") send({ type: "hit", action, strength: Number($("hit-strength").value) });
  }
  s.flux.push(flux);
  if (s.flux.length > FLUX_MEMORY) s.flux.shift();
  $("energy").value = s.energy;
  document.body.dataset.energy = s.energy.toFixed(3);
  if (now - s.lastDrive >= DRIVE_EVERY) {
    s.lastDrive = now;
    send({ type: "drive", energy: Math.round(s.energy * 1000) / 1000, motion: Number($("audio-motion").value) });
  }
}

function showReactions(a) {
  reactions = a;
  $("audio-motion").value = a.motion;
  $("audio-motion-out").textContent = Number(a.motion).toFixed(2);
  $("on-hit").value = a.hit;
  $("hit-strength").value = a.strength;
  $("hit-strength-out").textContent = Number(a.strength).toFixed(2);
}

// A file dropped anywhere on the page: a song, a setlist or a taste profile, by its type.
function dropped(file) {
  if (file.type.startsWith("audio/") || /\.(wav|mp3|ogg|oga|flac|m4a|aac|opus|webm)$/i.test(file.name)) playSong(file);
  else if (/\.json$/i.test(file.name)) loadTaste(file);
  else loadSetlist(file);
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
  if (setlistSent) control("setlist", setlistSent);
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
  $("load-setlist").addEventListener("click", () => $("setlist-file").click());
  $("setlist-file").addEventListener("change", () => {
    const file = $("setlist-file").files[0];
    $("setlist-file").value = "";
    if (file) loadSetlist(file);
  });
  $("next-entry").addEventListener("click", () => control("next"));
  $("song-pick").addEventListener("click", () => $("song-file").click());
  $("song-file").addEventListener("change", () => {
    const file = $("song-file").files[0];
    $("song-file").value = "";
    if (file) playSong(file);
  });
  $("song").addEventListener("error", songError);
  $("mic").addEventListener("click", () => (sound && sound.mic ? stopMic() : useMicrophone()));
  $("music-stop").addEventListener("click", stopMusic);
  for (const id of ["audio-motion", "hit-strength"]) {
    $(id).addEventListener("input", () => { $(`${id}-out`).textContent = Number($(id).value).toFixed(2); });
  }
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file && info) dropped(file);
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
    else if (e.key === "n") control("next");
  });
  connect();
  requestAnimationFrame(tick);
}

setup();
