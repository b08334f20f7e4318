// gld review: one item at a time; a keystroke or a click gives a verdict, which the server
// appends to reviews.csv at once. State lives on the server: a reload shows every verdict.
"use strict";

const state = {queues: [], queue: null, items: [], index: 0};
// actions run one after another: a second keystroke waits for the first verdict's answer, so
// fast typing judges consecutive items, never one item twice
let pending = Promise.resolve();
const enqueue = (action) => { pending = pending.then(action).catch((error) => say(error.message)); };
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function hashParams() {
  return new URLSearchParams(location.hash.slice(1));
}

function say(text) {
  $("message").textContent = text;
}

function drawTabs() {
  const tabs = $("tabs");
  tabs.replaceChildren(...state.queues.map((q) => {
    const button = document.createElement("button");
    button.dataset.queue = q.name;
    button.className = q.name === state.queue ? "current" : "";
    const more = q.total > q.shown ? ` (first ${q.shown} of ${q.total})` : "";
    button.textContent = `${q.title}: ${q.reviewed}/${q.shown} reviewed${more}`;
    button.addEventListener("click", () => enqueue(() => openQueue(q.name)));
    return button;
  }));
  const current = state.queues.find((q) => q.name === state.queue);
  $("description").textContent = current ? current.description : "";
}

function figure(id, imageId, caption, css) {
  const box = $(id);
  box.classList.toggle("hidden", !imageId);
  if (!imageId) return;
  box.querySelector("a").href = `/image/${imageId}`;
  const img = box.querySelector("img");
  img.src = `/thumb/${imageId}`;
  img.className = css || "";
  box.querySelector("figcaption").textContent = caption;
}

function showVerdict(verdict) {
  const badge = $("verdict");
  if (!verdict) {
    badge.className = "badge none";
    badge.textContent = "not reviewed";
    return;
  }
  badge.className = `badge ${verdict.verdict}`;
  const target = verdict.verdict === "relabel" ? ` to ${verdict.landmark_id}` : "";
  badge.textContent = `${verdict.verdict}${target}${verdict.note ? ": " + verdict.note : ""}`;
}

function draw() {
  const item = state.items[state.index];
  const main = $("item");
  if (!item) {
    main.dataset.id = "";
    main.dataset.index = "-1";
    $("position").textContent = "this queue is empty";
    ["why", "decision", "detail"].forEach((id) => { $(id).textContent = ""; });
    ["this", "partner", "pair"].forEach((id) => $(id).classList.add("hidden"));
    $("verdict").textContent = "";
    return;
  }
  main.dataset.id = item.id;
  main.dataset.index = String(state.index);
  history.replaceState(null, "", `#queue=${state.queue}&id=${item.id}`);
  $("position").textContent = `${state.index + 1} / ${state.items.length}`;
  $("why").textContent = item.why;
  $("decision").textContent = `${item.status} (${item.reason}) in class ${item.landmark_id}`;
  $("detail").textContent = item.detail;
  figure("this", item.id, `${item.id}, class ${item.landmark_id} (this image; f: full size)`, item.status);
  const partnerClass = item.partner_landmark === null ? "" : `, class ${item.partner_landmark}`;
  figure("partner", item.partner, `${item.partner}${partnerClass} (beside it)`);
  const pair = $("pair");
  const drawn = item.partner && item.inliers >= 0;
  pair.classList.toggle("hidden", !drawn);
  if (drawn) {
    pair.querySelector("img").src = `/pair/${item.id}/${item.partner}`;
    pair.querySelector("figcaption").textContent = `inlier matches: ${item.inliers}`;
  }
  const suggestions = item.suggestions || [];
  $("suggestions").replaceChildren(...suggestions.map((s) => Object.assign(document.createElement("option"), {value: s})));
  $("suggested").textContent = suggestions.length
    ? "suggested: " + suggestions.slice(0, 9).map((s, i) => `${i + 1}: ${s}`).join(", ") : "";
  const verdict = item.verdict;
  $("landmark").value = verdict && verdict.verdict === "relabel" ? verdict.landmark_id : (suggestions[0] ?? "");
  $("note").value = verdict ? verdict.note : "";
  showVerdict(verdict);
  const next = state.items[state.index + 1];
  if (next) new Image().src = `/thumb/${next.id}`;  // warm the next item's picture
}

async function openQueue(name, id) {
  state.queue = name;
  const data = await api(`/api/queue/${name}`);
  state.items = data.items;
  const at = state.items.findIndex((item) => item.id === id);
  const unreviewed = state.items.findIndex((item) => !item.verdict);
  state.index = at >= 0 ? at : Math.max(unreviewed, 0);
  drawTabs();
  draw();
}

function move(step) {
  const index = state.index + step;
  if (index < 0 || index >= state.items.length) {
    say(step > 0 ? "end of this queue" : "start of this queue");
    return;
  }
  state.index = index;
  say("");
  draw();
}

function markEverywhere(id, verdict) {
  state.items.forEach((item) => { if (item.id === id) item.verdict = verdict; });
}

async function give(verdict) {
  const item = state.items[state.index];
  if (!item) return;
  const body = {id: item.id, verdict, note: $("note").value};
  if (verdict === "relabel") body.landmark_id = $("landmark").value;
  try {
    const data = await api("/api/verdict", body);
    markEverywhere(item.id, data.verdict);
    state.queues = data.queues;
    drawTabs();
    say(`${item.id}: ${verdict}${verdict === "relabel" ? " to " + body.landmark_id : ""}`);
    if (state.index + 1 < state.items.length) state.index += 1;
    draw();
  } catch (error) {
    say(`not saved: ${error.message}`);
  }
}

async function undo() {
  const data = await api("/api/undo", {});  // a JSON body: the app takes writes as JSON only
  state.queues = data.queues;
  drawTabs();
  if (!data.undone) {
    say("nothing to undo");
    return;
  }
  markEverywhere(data.undone.id, data.now);
  const at = state.items.findIndex((item) => item.id === data.undone.id);
  if (at >= 0) state.index = at;
  say(`undone: ${data.undone.id} ${data.undone.verdict}`);
  draw();
}

function otherQueue(step) {
  const names = state.queues.map((q) => q.name);
  const next = names[(names.indexOf(state.queue) + step + names.length) % names.length];
  return openQueue(next);
}

const KEYS = {
  k: () => give("keep"),
  x: () => give("remove"),
  r: () => give("relabel"),
  s: () => move(1),
  ArrowRight: () => move(1),
  ArrowLeft: () => move(-1),
  u: () => undo(),
  "]": () => otherQueue(1),
  "[": () => otherQueue(-1),
};

function fullSize() {  // at once, not queued: a browser opens a window only inside the keystroke
  const item = state.items[state.index];
  if (item) window.open(`/image/${item.id}`, "_blank");
}

document.addEventListener("keydown", (event) => {
  const typing = event.target instanceof HTMLInputElement;
  if (typing) {
    if (event.key === "Enter" && event.target.id === "landmark") enqueue(() => give("relabel"));
    if (event.key === "Escape" || event.key === "Enter") event.target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const item = state.items[state.index];
  if (/^[1-9]$/.test(event.key) && item && item.suggestions[Number(event.key) - 1] !== undefined) {
    $("landmark").value = item.suggestions[Number(event.key) - 1];
    event.preventDefault();
    return;
  }
  if (event.key === "f") {
    fullSize();
    return;
  }
  const action = KEYS[event.key];
  if (action) {
    event.preventDefault();
    enqueue(action);
  }
});

for (const [id, action] of Object.entries({
  keep: () => give("keep"), remove: () => give("remove"), relabel: () => give("relabel"),
  skip: () => move(1), undo: () => undo(), prev: () => move(-1), next: () => move(1),
})) {
  $(id).addEventListener("click", () => enqueue(action));
}

async function start() {
  const data = await api("/api/queues");
  state.queues = data.queues;
  $("run").textContent = `${data.output} (preset ${data.preset}; an edge needs ${data.min_inliers} inliers); verdicts: ${data.reviews}`;
  const params = hashParams();
  const wanted = state.queues.find((q) => q.name === params.get("queue"));
  const first = wanted || state.queues.find((q) => q.shown > 0) || state.queues[0];
  await openQueue(first.name, params.get("id"));
  document.body.dataset.ready = "1";
}

start().catch((error) => say(`cannot load the review: ${error.message}`));
