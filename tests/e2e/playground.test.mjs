// End-to-end tests of the page at `/`: the real server on the tiny models,
// driven through Debian's Chromium by playwright-core. Screenshots of every
// tab go to tests/artifacts/screenshots/.
//
//   node --test tests/e2e/    (make e2e installs what it needs)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer } from "node:net";
import { createRequire } from "node:module";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "../..");
const require = createRequire(path.join(ROOT, "build/e2e/package.json"));
const { chromium } = require("playwright-core");
const SHOTS = path.join(ROOT, "tests/artifacts/screenshots");
const BINARY = path.join(ROOT, "target/release/nlp-serve");
const BROWSER = process.env.CHROMIUM || "/usr/bin/chromium";

let server, browser, base;

function freePort() {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function waitReady(url) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url + "/ready")).ok) return;
    } catch (_) { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server never became ready");
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(BINARY, ["--profile", "tiny"], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), NLP_SERVE__SERVER__HOST: "127.0.0.1",
           // A store of its own, fresh for each run.
           NLP_SERVE__DOCUMENTS__DATABASE: path.join(tmpdir(), `nlp-serve-e2e-${process.pid}`, "documents.sqlite"),
           NLP_SERVE__LOGGING__LEVEL: "warn", NLP_SERVE__RUNTIME__TORCH_THREADS: "1" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  await waitReady(base);
  browser = await chromium.launch({ executablePath: BROWSER, args: ["--no-sandbox"] });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
});

async function openTab(name, viewport = { width: 1280, height: 860 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.on("request", (request) => {
    if (!request.url().startsWith(base)) errors.push(new Error("outside request: " + request.url()));
  });
  await page.goto(base + "/#" + name);
  return { page, context, errors };
}

/// Slows the network so streams and requests stay in flight long enough to act on.
async function throttle(page, latencyMs, bytesPerSecond) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: latencyMs, downloadThroughput: bytesPerSecond, uploadThroughput: -1,
  });
}

test("playground streams tokens, stops, and continues", async () => {
  const { page, context, errors } = await openTab("playground");
  await page.fill("#pg-prompt", "Machine learning is");
  await page.fill("#pg-max-tokens", "100");
  await page.fill("#pg-seed", "3");
  await page.uncheck("#pg-sentence");
  // Count how often the output changes: streaming updates it as tokens
  // arrive (the tiny model is fast, so several tokens may share a chunk).
  await page.evaluate(() => {
    window.updates = 0;
    new MutationObserver(() => { window.updates += 1; })
      .observe(document.getElementById("pg-output"), { childList: true, subtree: true, characterData: true });
  });
  await page.click("#pg-run");
  await page.waitForFunction(() => document.getElementById("pg-stats").textContent.includes("tokens/s"));
  const first = await page.textContent("#pg-output .generated");
  assert.ok(first.length > 0, "some text was generated");
  const updates = await page.evaluate(() => window.updates);
  assert.ok(updates > 3, `the output grew in several steps (${updates} updates; ${await page.textContent("#pg-stats")})`);
  assert.match(await page.textContent("#pg-stats"), /time to first token \d+ ms/);
  await page.screenshot({ path: path.join(SHOTS, "playground.png") });

  // Continue: prompt plus output become the new prompt.
  await page.click("#pg-continue");
  assert.equal(await page.inputValue("#pg-prompt"), "Machine learning is" + first);
  await page.waitForFunction(() => document.getElementById("pg-stats").textContent.includes("tokens/s"));
  assert.equal(await page.textContent("#pg-output .prompt"), "Machine learning is" + first);
  assert.ok((await page.textContent("#pg-output .generated")).length > 0);

  // Stop: a long generation over a slow network, stopped after its first
  // tokens. The stream is aborted and nothing more arrives. (That the server
  // then stops generating is shown by the engine tests.)
  await throttle(page, 20, 400);
  await page.fill("#pg-prompt", "Stop me");
  await page.fill("#pg-max-tokens", "250");
  await page.click("#pg-run");
  await page.waitForFunction(() => document.querySelector("#pg-output .generated").textContent.length > 0);
  await page.click("#pg-stop");
  await page.waitForFunction(() => document.getElementById("pg-stats").textContent.startsWith("stopped after"));
  assert.equal(await page.isEnabled("#pg-run"), true);
  // "stopped after" is only shown when reading the stream was aborted mid-way.
  const atStop = await page.textContent("#pg-output .generated");
  await page.waitForTimeout(500);
  assert.equal(await page.textContent("#pg-output .generated"), atStop, "nothing arrives after Stop");
  assert.deepEqual(errors, []);
  await context.close();
});

test("playground shows API errors", async () => {
  const { page, context } = await openTab("playground");
  await page.fill("#pg-temperature", "9");
  await page.click("#pg-run");
  await page.waitForSelector("#pg-error:not([hidden])");
  assert.match(await page.textContent("#pg-error"), /Invalid input: temperature: must be between 0 and 5/);
  await context.close();
});

test("smart compose suggests, Tab accepts, typing cancels", async () => {
  const { page, context, errors } = await openTab("compose");
  const body = "#compose-body";
  await page.click(body);
  await page.keyboard.press("End");
  await page.evaluate(() => { const t = document.getElementById("compose-body"); t.selectionStart = t.selectionEnd = t.value.length; });
  await page.keyboard.type(" new");
  await page.waitForFunction(() => document.getElementById("compose-ghost").textContent.length > 0);
  const suggestion = await page.textContent("#compose-ghost");
  const typed = await page.inputValue(body);
  assert.match(await page.textContent("#compose-status"), /suggestion in \d+ ms/);
  await page.screenshot({ path: path.join(SHOTS, "smart-compose.png") });
  await page.keyboard.press("Tab");
  assert.equal(await page.inputValue(body), typed + suggestion);
  assert.equal(await page.textContent("#compose-ghost"), "");
  assert.equal(await page.evaluate(() => document.activeElement.id), "compose-body", "Tab did not move focus");

  // Typing on dismisses the suggestion and cancels the request in flight.
  await throttle(page, 600, -1);
  const aborted = [];
  page.on("requestfailed", (request) => { if (request.url().endsWith("/complete")) aborted.push(request); });
  await page.keyboard.type(" a");
  await page.waitForRequest((r) => r.url().endsWith("/complete"));
  await page.keyboard.type("b");
  assert.equal(await page.textContent("#compose-ghost"), "", "typing removes any suggestion at once");
  await page.waitForFunction(() => document.getElementById("compose-ghost").textContent.length > 0, null, { timeout: 10_000 });
  assert.ok(aborted.length >= 1, "the request in flight was cancelled");
  // The suggestion shown belongs to the text as it is now.
  const now = await page.inputValue(body);
  assert.ok(now.endsWith(" ab"), now);
  assert.deepEqual(errors, []);
  await context.close();
});

test("question answering highlights the answer in place", async () => {
  const { page, context, errors } = await openTab("qa");
  await page.waitForFunction(() => document.getElementById("qa-document").textContent.length > 1000);
  await page.click("#qa-ask");
  await page.waitForSelector("#qa-document mark.best");
  const check = () => page.evaluate(async () => {
    const view = document.getElementById("qa-document");
    const best = view.querySelector("mark.best");
    // Code points before the mark = the answer's start offset.
    const range = document.createRange();
    range.setStart(view, 0);
    range.setEndBefore(best);
    const before = range.toString();
    const first = document.querySelector("#qa-answers li");
    return { mark: best.textContent, start: Array.from(before).length,
             answer: first.firstChild.textContent, score: first.querySelector(".score").textContent };
  });
  let seen = await check();
  assert.equal(seen.mark, seen.answer);
  assert.match(seen.score, new RegExp(`characters ${seen.start}–`));
  // The passages read are shaded: three of the reference document.
  assert.equal(await page.locator("#qa-document .passage").count() > 0, true);
  await page.screenshot({ path: path.join(SHOTS, "question-answering.png") });

  await page.check("#qa-own");
  await page.fill("#qa-context", "The Eiffel Tower is in Paris. It was finished in 1889.");
  await page.fill("#qa-question", "When was it finished?");
  await page.click("#qa-ask");
  await page.waitForSelector("#qa-document mark.best");
  seen = await check();
  assert.equal(seen.mark, seen.answer);
  assert.ok("The Eiffel Tower is in Paris. It was finished in 1889.".includes(seen.mark));
  assert.deepEqual(errors, []);
  await context.close();
});

// The text of every shaded passage and of the best answer, and the answer list.
const shown = (page) => page.evaluate(() => ({
  label: document.getElementById("qa-document-label").textContent,
  text: document.getElementById("qa-document").textContent,
  passages: Array.from(document.querySelectorAll("#qa-document .passage")).map((p) => p.textContent).join(""),
  best: (document.querySelector("#qa-document mark.best") || {}).textContent,
  inPassage: !!document.querySelector("#qa-document .passage mark.best"),
  answer: (document.querySelector("#qa-answers li") || { firstChild: {} }).firstChild.textContent,
}));

test("question answering over a pasted document: stored, picked, read passages shaded", async () => {
  const { page, context, errors } = await openTab("qa");
  await page.waitForFunction(() => document.getElementById("qa-document").textContent.length > 1000);
  const text = "# Seabirds\n\nAlbatrosses glide over the Southern Ocean for days without flapping.\n\n" +
    "Puffins nest in burrows on cliffs in the North Atlantic.";
  await page.click("#qa-add summary");
  await page.fill("#qa-add-title", "Seabirds");
  await page.fill("#qa-add-text", text);
  await page.click("#qa-add-store");
  await page.waitForFunction(() => document.getElementById("qa-add-status").textContent.startsWith("Stored"));
  assert.match(await page.textContent("#qa-add-status"), /Stored “Seabirds”: 138 characters, 2 passage\(s\)\./);
  // The new document is picked and shown.
  assert.equal(await page.evaluate(() => document.getElementById("qa-source").selectedOptions[0].text), "Seabirds");
  await page.waitForFunction(() => document.getElementById("qa-document").textContent.includes("Puffins"));
  await page.fill("#qa-question", "Where do puffins nest?");
  await page.click("#qa-ask");
  await page.waitForSelector("#qa-document mark.best");
  const seen = await shown(page);
  assert.equal(seen.label, "Document: Seabirds");
  assert.equal(seen.text, text);
  assert.equal(seen.best, seen.answer);
  assert.ok(seen.inPassage, "the answer lies in a shaded passage");
  assert.ok(seen.passages.startsWith("Puffins nest in burrows"), seen.passages);
  await page.screenshot({ path: path.join(SHOTS, "question-answering-document.png") });
  assert.deepEqual(errors, []);
  await context.close();
});

test("question answering over all documents, one added from a file", async () => {
  const { page, context, errors } = await openTab("qa");
  await page.waitForFunction(() => document.getElementById("qa-document").textContent.length > 1000);
  await page.click("#qa-add summary");
  const text = "Oaks can live for a thousand years.\n";
  await page.setInputFiles("#qa-add-file", { name: "oaks.md", mimeType: "text/markdown", buffer: Buffer.from(text) });
  await page.waitForFunction(() => document.getElementById("qa-add-title").value === "oaks");
  assert.equal(await page.inputValue("#qa-add-text"), text);
  await page.click("#qa-add-store");
  await page.waitForFunction(() => document.getElementById("qa-add-status").textContent.startsWith("Stored"));
  await page.selectOption("#qa-source", "__all__");
  await page.fill("#qa-question", "How long can oaks live?");
  await page.click("#qa-ask");
  await page.waitForSelector("#qa-document mark.best");
  const seen = await shown(page);
  // The best passage is the oak one: its document is shown.
  assert.equal(seen.label, "Document: oaks");
  assert.equal(seen.text, text);
  assert.equal(seen.best, seen.answer);
  assert.match(await page.textContent("#qa-answers li .score"), / in oaks$/);
  assert.deepEqual(errors, []);
  await context.close();
});

test("translation translates several paragraphs", async () => {
  const { page, context, errors } = await openTab("translate");
  await page.click("#tr-run");
  await page.waitForFunction(() => document.getElementById("tr-output").textContent.length > 0);
  const output = await page.textContent("#tr-output");
  assert.equal(output.split("\n\n").length, 2, "one translation per paragraph");
  assert.match(await page.textContent("#tr-stats"), /2 paragraph\(s\) in \d+ ms/);
  await page.screenshot({ path: path.join(SHOTS, "translation.png") });
  assert.deepEqual(errors, []);
  await context.close();
});

test("tabs work from the keyboard and on a phone-sized screen", async () => {
  const { page, context } = await openTab("playground", { width: 390, height: 844 });
  await page.focus("#tab-playground");
  await page.keyboard.press("ArrowRight");
  assert.equal(await page.evaluate(() => document.activeElement.id), "tab-compose");
  assert.equal(await page.isVisible("#compose"), true);
  assert.equal(await page.isVisible("#playground"), false);
  // Nothing wider than the screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the screen`);
  // Every control has a label.
  const unlabelled = await page.evaluate(() => Array.from(document.querySelectorAll("input, textarea, select"))
    .filter((el) => !(el.labels && el.labels.length) && !el.closest("label")).map((el) => el.id));
  assert.deepEqual(unlabelled, []);
  await page.keyboard.press("ArrowLeft");
  await page.screenshot({ path: path.join(SHOTS, "phone-playground.png"), fullPage: true });
  await context.close();
});
