// nlp-serve playground: four demos over the service's own API, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- tabs
const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  tab.focus();
  history.replaceState(null, "", "#" + tab.getAttribute("aria-controls"));
  if (tab.id === "tab-qa") loadDocument();
}
tabs.forEach((tab, index) => {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) selectTab(tabs[(index + step + tabs.length) % tabs.length]);
  });
});

// ---------------------------------------------------------------- errors
async function errorMessage(response) {
  let body = {};
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  const detail = body.error || response.statusText || "no details";
  switch (response.status) {
    case 401: return `This server needs an API key (field at the top): ${detail}`;
    case 429: return `Too busy or too many requests: ${detail}. Retry in ${response.headers.get("retry-after") || 1} s.`;
    case 422: return `Invalid input: ${detail}`;
    case 400: return `Malformed request: ${detail}`;
    case 413: return `The input is too large: ${detail}`;
    case 503: return `The model is not ready: ${detail}`;
    case 408: return `Took too long: ${detail}`;
    default: return `Error ${response.status}: ${detail}`;
  }
}
function showError(id, message) {
  const box = $(id);
  box.textContent = message || "";
  box.hidden = !message;
}
function networkMessage(error) {
  return `Cannot reach the server: ${error.message}`;
}
// ---------------------------------------------------------------- API key
const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("nlp-serve-key") || "";
keyInput.addEventListener("change", () => sessionStorage.setItem("nlp-serve-key", keyInput.value));
function headers(extra = {}) {
  const key = keyInput.value.trim();
  return key ? { ...extra, authorization: "Bearer " + key } : extra;
}
function postJson(path, body, signal) {
  return fetch(path, { method: "POST", headers: headers({ "content-type": "application/json" }), body: JSON.stringify(body), signal });
}

// ---------------------------------------------------------------- SSE over fetch
// Calls onEvent(name, data) for each event of a text/event-stream response.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

// ---------------------------------------------------------------- playground
const pg = { controller: null, prompt: "", output: "" };
function number(id) { const v = $(id).value.trim(); return v === "" ? undefined : Number(v); }
function renderPlayground() {
  const out = $("pg-output");
  out.replaceChildren();
  const prompt = document.createElement("span");
  prompt.className = "prompt";
  prompt.textContent = pg.prompt;
  const generated = document.createElement("span");
  generated.className = "generated";
  generated.textContent = pg.output;
  out.append(prompt, generated);
}
function setRunning(running) {
  $("pg-run").disabled = running;
  $("pg-continue").disabled = running || !pg.output;
  $("pg-stop").disabled = !running;
}
async function runPlayground(prompt) {
  showError("pg-error", "");
  pg.prompt = prompt;
  pg.output = "";
  renderPlayground();
  const stops = $("pg-stop-sequences").value.split("\n").filter((s) => s.length > 0);
  const body = {
    prompt, stream: true,
    temperature: number("pg-temperature"), top_p: number("pg-top-p"), top_k: number("pg-top-k"),
    max_new_tokens: number("pg-max-tokens"), repetition_penalty: number("pg-penalty"),
    seed: number("pg-seed"), stop: stops.length ? stops : undefined,
    stop_at_sentence_end: $("pg-sentence").checked,
  };
  pg.controller = new AbortController();
  setRunning(true);
  const started = performance.now();
  let firstToken = null, tokens = 0;
  $("pg-stats").textContent = "generating…";
  try {
    const response = await postJson("/complete", body, pg.controller.signal);
    if (!response.ok) { showError("pg-error", await errorMessage(response)); return; }
    await readEvents(response, (name, data) => {
      if (name === "token") {
        if (firstToken === null) firstToken = performance.now() - started;
        pg.output += data.text;
        tokens += 1;
        renderPlayground();
      } else if (name === "done") {
        tokens = data.usage.completion_tokens;
        const completion = data.completions[0];
        pg.output = completion.text;
        renderPlayground();
        const seconds = (performance.now() - started) / 1000;
        $("pg-stats").textContent = `time to first token ${Math.round(firstToken ?? seconds * 1000)} ms · ` +
          `${(tokens / seconds).toFixed(1)} tokens/s · ${tokens} tokens · finish: ${completion.finish_reason}`;
      } else if (name === "error") {
        showError("pg-error", `The model failed: ${data.error}`);
      }
    });
  } catch (error) {
    if (error.name === "AbortError") {
      $("pg-stats").textContent = `stopped after ${tokens} tokens`;
    } else {
      showError("pg-error", networkMessage(error));
    }
  } finally {
    pg.controller = null;
    setRunning(false);
  }
}
$("pg-run").addEventListener("click", () => runPlayground($("pg-prompt").value));
$("pg-stop").addEventListener("click", () => pg.controller && pg.controller.abort());
$("pg-continue").addEventListener("click", () => {
  const next = pg.prompt + pg.output;
  $("pg-prompt").value = next;
  runPlayground(next);
});

// ---------------------------------------------------------------- Smart Compose
const compose = { timer: null, controller: null, sequence: 0, suggestion: "" };
const body = $("compose-body");
const PAUSE_MS = 250;
const CONTEXT_CHARS = 600;
function renderGhost() {
  $("compose-before").textContent = body.value;
  $("compose-ghost").textContent = compose.suggestion;
  $("compose-mirror").scrollTop = body.scrollTop;
}
function dismiss() {
  compose.sequence += 1; // any answer still on its way is now stale
  if (compose.controller) compose.controller.abort();
  compose.controller = null;
  clearTimeout(compose.timer);
  compose.suggestion = "";
  renderGhost();
}
async function suggest() {
  if (body.selectionStart !== body.value.length || body.value.trim() === "") return;
  const sequence = ++compose.sequence;
  const text = body.value;
  compose.controller = new AbortController();
  const started = performance.now();
  try {
    const response = await postJson("/complete", {
      prompt: text.slice(-CONTEXT_CHARS), max_new_tokens: 6, temperature: 0, stop: ["\n"],
    }, compose.controller.signal);
    if (!response.ok) { showError("compose-error", await errorMessage(response)); return; }
    const answer = await response.json();
    // Stale if the user typed meanwhile: never show it.
    if (sequence !== compose.sequence || body.value !== text) return;
    showError("compose-error", "");
    compose.suggestion = answer.completions[0].text;
    renderGhost();
    $("compose-status").textContent = `suggestion in ${Math.round(performance.now() - started)} ms` +
      ` (server: queue ${response.headers.get("x-queue-time")} ms, model ${response.headers.get("x-inference-time")} ms)`;
  } catch (error) {
    if (error.name !== "AbortError") showError("compose-error", networkMessage(error));
  }
}
body.addEventListener("input", () => {
  dismiss();
  compose.timer = setTimeout(suggest, PAUSE_MS);
});
body.addEventListener("keydown", (event) => {
  if (event.key === "Tab" && compose.suggestion) {
    event.preventDefault();
    body.value += compose.suggestion;
    body.selectionStart = body.selectionEnd = body.value.length;
    dismiss();
    $("compose-status").textContent = "suggestion accepted";
  } else if (event.key === "Escape" && compose.suggestion) {
    dismiss();
  }
});
body.addEventListener("scroll", renderGhost);
body.addEventListener("click", () => { if (body.selectionStart !== body.value.length) dismiss(); });
renderGhost();

// ---------------------------------------------------------------- question answering
// The document store: the reference document, the user's documents, or all
// of them; the text shown is the one answers and passages point into.
const ALL = "__all__";
const qa = { documents: [], texts: new Map(), shown: null };
async function loadDocument() {
  if (qa.documents.length) return;
  await refreshDocuments();
}
async function refreshDocuments(select) {
  try {
    const response = await fetch("/documents", { headers: headers() });
    if (!response.ok) { showError("qa-error", await errorMessage(response)); return; }
    qa.documents = (await response.json()).documents;
    const source = $("qa-source");
    const previous = select || source.value;
    source.replaceChildren();
    for (const doc of qa.documents) source.append(new Option(doc.title, doc.id));
    source.append(new Option("All documents", ALL));
    if (previous && Array.from(source.options).some((o) => o.value === previous)) source.value = previous;
    await showSource();
  } catch (error) {
    showError("qa-error", networkMessage(error));
  }
}
async function documentText(id) {
  if (!qa.texts.has(id)) {
    const response = await fetch(`/documents/${encodeURIComponent(id)}`, { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    qa.texts.set(id, (await response.json()).text);
  }
  return qa.texts.get(id);
}
function titleOf(id) {
  const doc = qa.documents.find((d) => d.id === id);
  return doc ? doc.title : id;
}
// Shows the selected document (for "all": nothing until an answer names one).
async function showSource() {
  $("qa-answers").replaceChildren();
  if ($("qa-own").checked) {
    $("qa-document-label").textContent = "Your context";
    renderDocument($("qa-context").value, [], []);
    return;
  }
  const id = $("qa-source").value;
  if (id === ALL) {
    qa.shown = null;
    $("qa-document-label").textContent = "All documents: the answer's document appears here";
    renderDocument("", [], []);
    return;
  }
  await showDocument(id, [], []);
}
async function showDocument(id, answers, passages) {
  const text = await documentText(id);
  qa.shown = id;
  $("qa-document-label").textContent = `Document: ${titleOf(id)}`;
  renderDocument(text, answers.filter((a) => a.document === id), passages.filter((p) => p.document === id));
}
// Offsets are in Unicode code points, as the API documents. Answers are
// marked (overlaps keep the better one), passages read are shaded.
function renderDocument(text, answers, passages) {
  const view = $("qa-document");
  view.replaceChildren();
  const chars = Array.from(text);
  const answerAt = new Array(chars.length).fill(-1);
  answers.forEach((a, rank) => {
    if (answerAt.slice(a.start, a.end).some((r) => r >= 0)) return;
    for (let i = a.start; i < a.end && i < chars.length; i++) answerAt[i] = rank;
  });
  const passageAt = new Array(chars.length).fill(false);
  for (const p of passages) {
    if (p.score === null) continue; // a context read whole: nothing to show
    for (let i = p.start; i < p.end && i < chars.length; i++) passageAt[i] = true;
  }
  let i = 0;
  while (i < chars.length) {
    let j = i;
    while (j < chars.length && answerAt[j] === answerAt[i] && passageAt[j] === passageAt[i]) j++;
    let node = document.createTextNode(chars.slice(i, j).join(""));
    if (answerAt[i] >= 0) {
      const mark = document.createElement("mark");
      mark.append(node);
      mark.dataset.rank = String(answerAt[i] + 1);
      if (answerAt[i] === 0) mark.className = "best";
      node = mark;
    }
    if (passageAt[i]) {
      const shade = document.createElement("span");
      shade.className = "passage";
      shade.append(node);
      node = shade;
    }
    view.append(node);
    i = j;
  }
  const best = view.querySelector("mark.best") || view.querySelector(".passage");
  if (best) best.scrollIntoView({ block: "center" });
}
$("qa-own").addEventListener("change", () => {
  const own = $("qa-own").checked;
  $("qa-context").hidden = !own;
  $("qa-context-label").hidden = !own;
  $("qa-source").disabled = own;
  showSource();
});
$("qa-source").addEventListener("change", () => showSource().catch((e) => showError("qa-error", e.message)));
async function ask() {
  showError("qa-error", "");
  const own = $("qa-own").checked;
  const source = $("qa-source").value;
  const request = { question: $("qa-question").value, top_k: Number($("qa-top-k").value) };
  if (own) request.context = $("qa-context").value;
  else if (source === ALL) request.documents = "all";
  else request.document = source;
  $("qa-ask").disabled = true;
  try {
    const response = await postJson("/qa", request);
    if (!response.ok) { showError("qa-error", await errorMessage(response)); return; }
    const answer = await response.json();
    const list = $("qa-answers");
    list.replaceChildren();
    for (const item of answer.answers) {
      const li = document.createElement("li");
      li.textContent = item.text;
      const score = document.createElement("span");
      score.className = "score";
      const where = source === ALL && !own ? ` in ${titleOf(item.document)}` : "";
      score.textContent = `score ${item.score.toFixed(4)} · characters ${item.start}–${item.end}${where}`;
      li.append(score);
      list.append(li);
    }
    if (!answer.answers.length) list.textContent = "No answer found.";
    if (own) {
      renderDocument(request.context, answer.answers, answer.passages);
    } else {
      // For "all": the best answer's document, else the best passage's.
      const id = source !== ALL ? source
        : (answer.answers[0] || answer.passages[0] || {}).document;
      if (id) await showDocument(id, answer.answers, answer.passages);
    }
  } catch (error) {
    showError("qa-error", error.message && !(error instanceof TypeError) ? error.message : networkMessage(error));
  } finally {
    $("qa-ask").disabled = false;
  }
}
$("qa-ask").addEventListener("click", ask);
$("qa-question").addEventListener("keydown", (event) => { if (event.key === "Enter") ask(); });
$("qa-add-file").addEventListener("change", async () => {
  const file = $("qa-add-file").files[0];
  if (!file) return;
  $("qa-add-text").value = await file.text();
  if (!$("qa-add-title").value) $("qa-add-title").value = file.name.replace(/\.(txt|md|markdown)$/i, "");
});
$("qa-add-store").addEventListener("click", async () => {
  showError("qa-error", "");
  const title = $("qa-add-title").value.trim() || "Untitled";
  $("qa-add-store").disabled = true;
  try {
    const response = await postJson("/documents", { title, text: $("qa-add-text").value });
    if (!response.ok) { showError("qa-error", await errorMessage(response)); return; }
    const stored = await response.json();
    $("qa-own").checked = false;
    $("qa-context").hidden = true;
    $("qa-context-label").hidden = true;
    $("qa-source").disabled = false;
    // The list is rebuilt with the new document selected before the status
    // says so: a pick made after "Stored" appears is not overridden.
    await refreshDocuments(stored.id);
    $("qa-add-status").textContent = `Stored “${stored.title}”: ${stored.chars} characters, ${stored.passages} passage(s).`;
  } catch (error) {
    showError("qa-error", networkMessage(error));
  } finally {
    $("qa-add-store").disabled = false;
  }
});

// ---------------------------------------------------------------- translation
$("tr-run").addEventListener("click", async () => {
  showError("tr-error", "");
  const paragraphs = $("tr-source").value.split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean);
  if (!paragraphs.length) { showError("tr-error", "Enter some English text first."); return; }
  $("tr-run").disabled = true;
  const started = performance.now();
  try {
    const response = await postJson("/translate", { text: paragraphs });
    if (!response.ok) { showError("tr-error", await errorMessage(response)); return; }
    const answer = await response.json();
    $("tr-output").textContent = answer.translations.join("\n\n");
    $("tr-stats").textContent = `${paragraphs.length} paragraph(s) in ${Math.round(performance.now() - started)} ms`;
  } catch (error) {
    showError("tr-error", networkMessage(error));
  } finally {
    $("tr-run").disabled = false;
  }
});

// ---------------------------------------------------------------- start
const initial = tabs.find((tab) => "#" + tab.getAttribute("aria-controls") === location.hash);
if (initial) selectTab(initial);
