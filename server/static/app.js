// The technicians' page: one image + one question -> POST /v1/vqa (stream=true), the answer as it
// streams, then timings and usage; /health and /v1/system polled for the header badge and the
// device panel. Plain JS, no build step, nothing loaded from outside this server.
// Server and user text only ever goes through textContent (never innerHTML): no XSS by construction.
"use strict";

const KEY_STORAGE = "tinyllava-med.apiKey";  // sessionStorage: gone when the tab closes
const HEALTH_EVERY_MS = 5000;
// The embedded default (server/assets/README.md): the page says plainly what it is.
const DEMO_MODEL = "tinyllava-med-synthetic-demo";
const DEMO_NOTE = "This server runs the built-in demo model (" + DEMO_MODEL + "): it was trained only on " +
  "synthetic, computer-drawn images and knows nothing of real scans. Not for clinical use. " +
  "Serve a real model with: tinyllava-med serve --bundle DIR.";
const SYSTEM_EVERY_MS = 3000;

const $ = (id) => document.getElementById(id);
let controller = null;    // AbortController of the request in flight
let previewUrl = null;

function setState(state) {
  document.body.dataset.state = state;  // idle | running | done | error (tests wait on it)
  $("ask").disabled = state === "running";
  $("stop").disabled = state !== "running";
}

function showStatus(text) { $("status").textContent = text; }

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function apiHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

// The server's errors come as {"error": {"message", "type", "code", "param"}} (OpenAI's shape).
async function errorMessage(res) {
  let message = "";
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) message = String(body.error.message);
  } catch (e) { /* not JSON: fall back to the status line */ }
  return "HTTP " + res.status + ": " + (message || res.statusText || "request failed");
}

// --- formatting -------------------------------------------------------------------------------

function ms(v) { return typeof v === "number" ? v.toFixed(1) + " ms" : "–"; }
function num(v, digits) { return typeof v === "number" ? v.toFixed(digits) : "–"; }
function bytes(v) {
  if (typeof v !== "number") return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(i ? 1 : 0) + " " + units[i];
}

function fillFacts(dl, rows) {
  const items = [];
  for (const [label, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value;
    items.push(dt, dd);
  }
  dl.replaceChildren(...items);
}

// --- the image ---------------------------------------------------------------------------------

function isDicom(file) {
  const name = file.name.toLowerCase();
  return file.type === "application/dicom" || name.endsWith(".dcm") || name.endsWith(".dicom") ||
    !(file.type.startsWith("image/"));
}

function onImageChosen() {
  const file = $("image").files[0];
  const img = $("preview");
  if (previewUrl) { URL.revokeObjectURL(previewUrl); previewUrl = null; }
  img.hidden = true;
  img.removeAttribute("src");
  $("image-info").textContent = "";
  if (!file) return;
  if (isDicom(file)) {
    $("image-info").textContent = "DICOM (" + bytes(file.size) + "): decoded and windowed on the server.";
    return;
  }
  previewUrl = URL.createObjectURL(file);
  img.src = previewUrl;
  img.hidden = false;
  $("image-info").textContent = bytes(file.size);
}

function describeImage(info) {
  if (!info) return;
  let text = info.format.toUpperCase() + ", " + info.width + " × " + info.height;
  if (info.frames > 1) text += ", frame " + (info.frame + 1) + " of " + info.frames;
  if (info.modality) text += ", modality " + info.modality;
  $("image-info").textContent = text;
}

// --- server-sent events over fetch (EventSource cannot POST) -----------------------------------

// Yields the `data` of each event; stops at `data: [DONE]`.
async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    // Normalise CRLF / CR line ends; a trailing CR may be the first half of a CRLF, so wait for more.
    const held = buf.endsWith("\r") ? "\r" : "";
    const text = (held ? buf.slice(0, -1) : buf).replace(/\r\n?/g, "\n");
    const events = text.split("\n\n");
    buf = events.pop() + held;
    for (const ev of events) {
      const data = ev.split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
        .join("\n");
      if (!data) continue;  // a comment or keep-alive
      if (data === "[DONE]") return;
      yield data;
    }
  }
}

function showResult(result, clientTtft) {
  $("answer").textContent = result.answer;
  describeImage(result.image);
  const t = result.timings || {};
  const u = result.usage || {};
  const cached = u.prompt_tokens_details ? u.prompt_tokens_details.cached_tokens : undefined;
  fillFacts($("timings"), [
    ["Time to first token", ms(t.ttft_ms)],
    ["Prefill", ms(t.prefill_ms)],
    ["Decode", num(t.decode_tokens_per_s, 1) + " tok/s"],
    ["Image encode", ms(t.image_encode_ms) + (t.image_cache_hits ? " (cached image)" : "")],
    ["Preprocess", ms(t.preprocess_ms)],
    ["Queue", ms(t.queue_ms)],
    ["Total (server)", ms(t.total_ms)],
    ["First text in this browser", ms(clientTtft)],
    ["Tokens", (u.prompt_tokens ?? "–") + " prompt (" + (cached ?? 0) + " cached) + " +
      (u.completion_tokens ?? "–") + " generated"],
    ["Finish", result.finish_reason || "–"],
    ["Model", result.model || "–"],
    ["Request id", result.request_id || "–"],
  ]);
}

async function ask(event) {
  event.preventDefault();
  const file = $("image").files[0];
  const question = $("question").value.trim();
  showError("");
  if (!file) { showError("Choose an image first."); $("image").focus(); return; }
  if (!question) { showError("Type a question."); $("question").focus(); return; }

  const form = new FormData();
  form.append("image", file);
  form.append("question", question);
  const maxTokens = $("max-tokens").value.trim();
  if (maxTokens) form.append("max_tokens", maxTokens);
  form.append("stream", "true");

  $("answer").textContent = "";
  $("timings").replaceChildren();
  setState("running");
  showStatus("Sending the image…");
  controller = new AbortController();
  const t0 = performance.now();
  let clientTtft;
  let result = null;
  try {
    const res = await fetch("/v1/vqa", { method: "POST", body: form, headers: apiHeaders(),
                                         signal: controller.signal });
    if (!res.ok) throw new Error(await errorMessage(res));
    showStatus("Waiting for the first token…");
    for await (const data of sseData(res.body)) {
      const msg = JSON.parse(data);
      if (msg.error) throw new Error(msg.error.message || "the server reported an error");
      if (typeof msg.delta === "string") {
        if (clientTtft === undefined) { clientTtft = performance.now() - t0; showStatus("Generating…"); }
        $("answer").textContent += msg.delta;
      } else if (typeof msg.answer === "string") {
        result = msg;
      }
    }
    if (!result) throw new Error("the answer stream ended early; see the server log");
    showResult(result, clientTtft);
    showStatus("Done in " + ms(performance.now() - t0) + ".");
    setState("done");
  } catch (e) {
    if (e.name === "AbortError") {
      showStatus("Stopped.");
      setState("idle");
    } else {
      showError(e instanceof TypeError ? "Cannot reach the server (" + e.message + ")." : e.message);
      showStatus("Failed.");
      setState("error");
    }
  } finally {
    controller = null;
  }
}

// --- health badge and device panel -------------------------------------------------------------

async function pollHealth() {
  const badge = $("health");
  try {
    const res = await fetch("/health", { cache: "no-store" });
    const body = await res.json();
    badge.textContent = body.status || ("HTTP " + res.status);
    badge.dataset.level = res.ok ? "ok" : "warn";
    badge.title = body.error ? String(body.error) : "model " + (body.model || "?");
    const note = $("model-note");
    note.hidden = body.model !== DEMO_MODEL;
    note.textContent = note.hidden ? "" : DEMO_NOTE;
  } catch (e) {
    badge.textContent = "unreachable";
    badge.dataset.level = "bad";
  }
}

let systemBusy = false;
async function pollSystem() {
  if (systemBusy || document.hidden) return;
  systemBusy = true;
  try {
    const res = await fetch("/v1/system", { headers: apiHeaders(), cache: "no-store" });
    if (!res.ok) {
      $("system-note").textContent = res.status === 401 ? "Enter the API key to see this device's telemetry."
        : await errorMessage(res);
      $("telemetry").replaceChildren();
      return;
    }
    const s = await res.json();
    $("system-note").textContent = "";
    const temps = Object.values(s.temperatures_c || {});
    const providers = Object.entries((s.service && s.service.providers) || {})
      .map(([graph, list]) => graph + ": " + list.join(", ")).join("; ");
    const rows = [
      ["Model", s.service.model + " (" + s.service.status + ")"],
      ["Runtime", providers || "–"],
      ["Requests", s.service.running + " running, " + s.service.waiting + " waiting (max " +
        s.service.max_concurrency + " + " + s.service.max_queue + ")"],
      ["CPU", num(s.cpu.percent, 0) + " % of " + s.cpu.count + " cores" +
        (s.cpu.load_avg ? ", load " + s.cpu.load_avg.map((x) => x.toFixed(2)).join(" ") : "")],
      ["Memory", num(s.memory.used_percent, 0) + " % used, " + bytes(s.memory.available_bytes) + " free of " +
        bytes(s.memory.total_bytes)],
      ["Server process", bytes(s.process.rss_bytes) + " RSS, " + num(s.process.cpu_percent, 0) + " % CPU, up " +
        num(s.process.uptime_s, 0) + " s"],
    ];
    if (s.disk) rows.push(["Disk", bytes(s.disk.free_bytes) + " free of " + bytes(s.disk.total_bytes)]);
    if (temps.length) rows.push(["Hottest sensor", num(Math.max(...temps), 1) + " °C"]);
    const p = s.platform || {};
    rows.push(["Platform", [p.system, p.machine].filter(Boolean).join(" ") +
      (p.release ? ", kernel " + p.release : "") + (p.python ? ", Python " + p.python : "")]);
    fillFacts($("telemetry"), rows);
  } catch (e) {
    $("system-note").textContent = "Telemetry unavailable (" + e.message + ").";
  } finally {
    systemBusy = false;
  }
}

// --- wiring ------------------------------------------------------------------------------------

function init() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    const v = key.value.trim();
    if (v) sessionStorage.setItem(KEY_STORAGE, v); else sessionStorage.removeItem(KEY_STORAGE);
    pollSystem();
  });
  $("image").addEventListener("change", onImageChosen);
  $("preview").addEventListener("error", () => {  // not a picture this browser can show; the server decides
    $("preview").hidden = true;
    $("image-info").textContent += " (no preview)";
  });
  $("ask-form").addEventListener("submit", ask);
  $("stop").addEventListener("click", () => { if (controller) controller.abort(); });
  setState("idle");
  pollHealth();
  pollSystem();
  setInterval(pollHealth, HEALTH_EVERY_MS);
  setInterval(pollSystem, SYSTEM_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", init);
