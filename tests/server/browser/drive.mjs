// Drives Debian's chromium (headless) over the technicians' page, as a technician would, and prints
// what the page showed as one JSON object; tests/server/test_page_browser.py starts the server and
// judges the result. Usage: node drive.mjs CONFIG.json   (CONFIG: see test_page_browser.py)
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const TIMEOUT_MS = config.timeoutMs ?? 60000;

// Flags for a closed network: without the background-networking ones Chromium keeps trying
// Google's hosts. playwright-core adds --headless itself.
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"];

async function facts(page, id) {
  return page.$$eval(`#${id} dt`, (dts) => Object.fromEntries(dts.map((dt) => [dt.textContent,
                                                                                  dt.nextElementSibling.textContent])));
}

// Submits the form and waits until the page settles (done or error); counts how often the answer
// box changed while the request ran, to see the answer arrive in pieces.
async function ask(page, { image, question, maxTokens }) {
  await page.setInputFiles("#image", image);
  await page.fill("#question", question);
  if (maxTokens !== undefined) await page.fill("#max-tokens", String(maxTokens));
  await page.evaluate(() => {
    // One record per change of the answer box: a clear, one per streamed piece, the final text.
    // A page that waited for the whole answer would make at most two.
    window.__updates = 0;
    window.__observer?.disconnect();
    window.__observer = new MutationObserver((records) => { window.__updates += records.length; });
    window.__observer.observe(document.getElementById("answer"), { childList: true, characterData: true });
  });
  const response = page.waitForResponse((r) => r.url().endsWith("/v1/vqa"));
  await page.click("#ask");
  const contentType = (await response).headers()["content-type"] ?? "";
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null,
                             { timeout: TIMEOUT_MS });
  return {
    state: await page.evaluate(() => document.body.dataset.state),
    answer: await page.textContent("#answer"),
    error: await page.textContent("#error"),
    errorVisible: await page.isVisible("#error"),
    status: await page.textContent("#status"),
    imageInfo: await page.textContent("#image-info"),
    timings: await facts(page, "timings"),
    timingsVisible: await page.isVisible("#timings dd"),
    answerUpdates: await page.evaluate(() => window.__updates),
    contentType,
  };
}

const profile = mkdtempSync(join(tmpdir(), "chromium-profile-"));
const out = { requests: [], pageErrors: [], consoleErrors: [], cases: [] };
const context = await chromium.launchPersistentContext(profile, {
  executablePath: config.chromium ?? "/usr/bin/chromium", headless: true, args: ARGS,
  viewport: { width: 1280, height: 1000 },
});
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on("request", (r) => out.requests.push(r.url()));
  page.on("pageerror", (e) => out.pageErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") out.consoleErrors.push(m.text()); });

  await page.goto(config.url);
  await page.waitForFunction(() => document.getElementById("health").dataset.level === "ok");
  out.health = await page.textContent("#health");
  out.modelNote = await page.isVisible("#model-note") ? await page.textContent("#model-note") : null;
  out.title = await page.title();

  if (config.withoutKey) {  // the page is public; the API is not: the server's 401 message must show
    out.withoutKey = await ask(page, config.withoutKey);
    out.systemNoteWithoutKey = await page.textContent("#system-note");
  }
  if (config.apiKey) {
    await page.fill("#api-key", config.apiKey);
    await page.press("#api-key", "Tab");  // `change` stores it and refreshes the device panel
  }
  for (const [i, c] of config.cases.entries()) {
    const result = await ask(page, c);
    result.screenshot = join(config.screenshotDir, `page-${i}.png`);
    await page.screenshot({ path: result.screenshot, fullPage: true });
    out.cases.push(result);
  }
  await page.waitForFunction(() => document.querySelectorAll("#telemetry dt").length > 0);
  out.telemetry = await facts(page, "telemetry");
  out.keyInSessionStorage = await page.evaluate(() => sessionStorage.getItem("tinyllava-med.apiKey"));
  out.keyInLocalStorage = await page.evaluate(() => localStorage.length);
  out.accessibleNames = await page.evaluate(() =>
    [...document.querySelectorAll("input, textarea, button")].map((el) => ({
      id: el.id, labelled: el.labels?.length > 0 || !!el.textContent.trim() })));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(out) + "\n");
