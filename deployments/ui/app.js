// The thought-tree explorer: a list of recent trees and a page per tree, read from the
// gateway's own API (GET /v1/trees, /v1/trees/{id}, /v1/trees/{id}/events). Plain ES module,
// no dependencies, no build step. The API key lives in sessionStorage: this tab only.

const KEY_STORAGE = "rc-api-key";
const TRACE_URL_STORAGE = "rc-trace-url";
const ROW_HEIGHT = 26; // px, as --row in style.css
const OVERSCAN_ROWS = 12; // rows drawn above and below the visible ones
const PAGE_SIZE = 50;
const REFETCH_AFTER_EVENTS_MS = 1000; // a running tree is read at most this often...
const REFETCH_IDLE_MS = 3000; // ...and at least this often while no event arrives
const RETRY_MS = 2000;
const MAX_EVENTS_SHOWN = 500;
const TEXT_PREVIEW = 240;
// Meta notes shown first on a tree's page, in this order; any other note follows.
const OUTCOME_NOTES = ["answer", "summary", "reason", "strategy_choice", "difficulty", "choice_reason"];

// The page is served at <base>/ui/; the API lives at <base>/v1.
const apiBase = location.pathname.replace(/\/ui(\/.*)?$/, "");
const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(apiBase + path, { headers, cache: "no-store" });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiFailure(response.status, body?.error?.message || `HTTP ${response.status}`);
  }
  return body;
}

// Builds an element; text children become text nodes, so data is never parsed as HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const badge = (status) => el("span", { class: `badge ${status}` }, status);
const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : "");
const firstLine = (text) => {
  const line = (text || "").trim().split("\n").find((l) => l.trim()) || "";
  return line.length > TEXT_PREVIEW ? `${line.slice(0, TEXT_PREVIEW)}…` : line;
};

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    return;
  }
  let message = error.message || String(error);
  if (error.status === 401) message = `${message}. Enter an API key above.`;
  box.textContent = message;
  box.hidden = false;
}

// ---- the API key ------------------------------------------------------------------------

function showKeyState() {
  $("key-state").textContent = sessionStorage.getItem(KEY_STORAGE) ? "key set for this tab" : "no key";
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  showKeyState();
  route();
});
$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  showKeyState();
  route();
});

// ---- the list of recent trees -------------------------------------------------------------

const FILTERS = ["effort", "status", "task", "tenant"];

async function showList(params) {
  $("tree-view").hidden = true;
  $("list-view").hidden = false;
  document.title = "reasoning-cluster · thought trees";
  const form = $("filters");
  for (const name of FILTERS) form.elements[name].value = params.get(name) || "";
  $("tree-list").tBodies[0].replaceChildren();
  await loadPage(params, null);
}

async function loadPage(params, before) {
  const query = new URLSearchParams();
  for (const name of FILTERS) if (params.get(name)) query.set(name, params.get(name));
  query.set("limit", String(PAGE_SIZE));
  if (before !== null) query.set("before", String(before));
  const older = $("older");
  older.hidden = true;
  let page;
  try {
    page = await api(`/v1/trees?${query}`);
    showError(null);
  } catch (error) {
    showError(error);
    return;
  }
  const body = $("tree-list").tBodies[0];
  for (const tree of page.data) {
    body.append(
      el(
        "tr",
        { "data-tree-id": tree.tree_id },
        el("td", {}, when(tree.created_at)),
        el("td", { class: "mono" }, el("a", { href: `#/tree/${encodeURIComponent(tree.tree_id)}` }, tree.tree_id)),
        el("td", {}, tree.owner),
        el("td", {}, tree.effort),
        el("td", {}, tree.task),
        el("td", {}, tree.strategy),
        el("td", {}, badge(tree.status)),
        el("td", { class: "question", title: tree.question }, tree.question),
      ),
    );
  }
  $("list-empty").hidden = body.rows.length > 0;
  if (page.has_more) {
    older.hidden = false;
    older.onclick = () => loadPage(params, page.next_before);
  }
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  const query = new URLSearchParams();
  for (const name of FILTERS) if (form.elements[name].value.trim()) query.set(name, form.elements[name].value.trim());
  location.hash = `#/?${query}`;
});
$("open-id").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    const id = event.target.value.trim();
    if (id) location.hash = `#/tree/${encodeURIComponent(id)}`;
  }
});

// ---- one tree -----------------------------------------------------------------------------

class TreePage {
  constructor(treeId) {
    this.treeId = treeId;
    this.active = true;
    this.nodes = new Map();
    this.children = new Map();
    this.roots = [];
    this.onPath = new Set();
    this.expanded = new Set();
    this.seen = new Map(); // node id -> the status it had when last read
    this.visible = [];
    this.selected = null;
    this.meta = null;
    this.lastEvent = "0";
    this.eventCount = 0;
    this.drawPending = false;
    this.onScroll = () => this.scheduleDraw();
    $("tree-scroll").addEventListener("scroll", this.onScroll);
    $("tree-scroll").scrollTop = 0;
    $("expand-all").onclick = () => this.expandAll();
    $("fold").onclick = () => this.foldToPath();
  }

  stop() {
    this.active = false;
    $("tree-scroll").removeEventListener("scroll", this.onScroll);
  }

  async open() {
    $("list-view").hidden = true;
    $("tree-view").hidden = false;
    $("tree-id").textContent = this.treeId;
    // Nothing of the tree shown before stays on the page while this one loads (or fails to).
    for (const id of ["tree-rows", "tree-facts", "tree-question", "outcome", "budget", "tree-counts"]) $(id).replaceChildren();
    $("tree-status").textContent = "";
    $("tree-spacer").style.height = "0px";
    $("events").replaceChildren();
    $("event-count").textContent = "0";
    $("node-detail").replaceChildren(el("p", { class: "hint" }, "Select a node to see its step, scores and verdicts."));
    document.title = `tree ${this.treeId} · reasoning-cluster`;
    try {
      await this.refresh();
    } catch (error) {
      if (this.active) showError(error);
      return;
    }
    if (!this.active) return; // the user went elsewhere while the tree loaded
    showError(null);
    document.body.dataset.treeReady = this.treeId;
    this.follow();
  }

  async refresh() {
    const tree = await api(`/v1/trees/${encodeURIComponent(this.treeId)}`);
    if (this.active) this.apply(tree);
  }

  // The tree's progress events as they come; the tree is read again after new events.
  async follow() {
    let lastRead = Date.now();
    let changed = false;
    $("live").hidden = this.meta.status !== "running";
    while (this.active) {
      let batch;
      try {
        batch = await api(`/v1/trees/${encodeURIComponent(this.treeId)}/events?after=${encodeURIComponent(this.lastEvent)}`);
      } catch (error) {
        if (!this.active) return;
        showError(error);
        await sleep(RETRY_MS);
        continue;
      }
      if (!this.active) return;
      this.addEvents(batch.events);
      changed ||= batch.events.length > 0;
      if (batch.status !== "running") {
        if (batch.events.length) continue; // the rest of a finished tree's history
        if (this.meta.status === "running") await this.refresh().catch(showError); // its final state
        break;
      }
      if (Date.now() - lastRead >= (changed ? REFETCH_AFTER_EVENTS_MS : REFETCH_IDLE_MS)) {
        try {
          await this.refresh();
          showError(null);
        } catch (error) {
          showError(error);
        }
        lastRead = Date.now();
        changed = false;
      }
    }
    $("live").hidden = true;
  }

  addEvents(events) {
    if (!events.length) return;
    const list = $("events");
    for (const event of events) {
      this.lastEvent = event.id;
      this.eventCount += 1;
      const data = JSON.stringify(event.data);
      list.append(el("li", {}, el("b", {}, event.kind), " ", new Date(event.ts * 1000).toLocaleTimeString(), " ", data.length > 300 ? `${data.slice(0, 300)}…` : data));
    }
    while (list.children.length > MAX_EVENTS_SHOWN) list.firstElementChild.remove();
    $("event-count").textContent = String(this.eventCount);
  }

  apply(tree) {
    const firstRead = this.meta === null;
    const hadPath = this.onPath.size > 0;
    this.meta = tree.meta;
    this.budget = tree.budget;
    this.nodes = new Map(tree.nodes.map((node) => [node.node_id, node]));
    this.children = new Map();
    this.roots = [];
    for (const node of tree.nodes) {
      const parent = node.parent_id;
      if (parent === null || !this.nodes.has(parent)) this.roots.push(node.node_id);
      else if (this.children.has(parent)) this.children.get(parent).push(node.node_id);
      else this.children.set(parent, [node.node_id]);
    }
    this.onPath = new Set(tree.winning_path);
    // New nodes open unless pruned, and a branch folds when it is pruned: pruned branches stay
    // folded until asked for.
    for (const node of tree.nodes) {
      const before = this.seen.get(node.node_id);
      this.seen.set(node.node_id, node.status);
      if (before === undefined && node.status !== "pruned") this.expanded.add(node.node_id);
      else if (before !== undefined && before !== "pruned" && node.status === "pruned") this.expanded.delete(node.node_id);
    }
    const leaf = !hadPath && this.onPath.size > 0 ? tree.winning_path[tree.winning_path.length - 1] : null;
    if (leaf !== null) {
      // A finished tree opens on its winning path; one watched to its end keeps what was open.
      if (firstRead) this.expanded = new Set(this.onPath);
      else for (const id of this.onPath) this.expanded.add(id);
      this.selected = leaf;
    }
    this.layout();
    if (leaf !== null) this.scrollToNode(leaf);
    this.redraw();
  }

  scrollToNode(id) {
    const index = this.visible.indexOf(id);
    if (index < 0) return;
    const scroll = $("tree-scroll");
    const top = index * ROW_HEIGHT;
    if (top < scroll.scrollTop || top + ROW_HEIGHT > scroll.scrollTop + scroll.clientHeight) {
      scroll.scrollTop = Math.max(0, top - scroll.clientHeight / 2);
      this.draw();
    }
  }

  redraw() {
    this.drawHead();
    if (this.selected && this.nodes.has(this.selected)) this.drawDetail(this.nodes.get(this.selected));
  }

  // ---- head: facts, outcome, budget

  drawHead() {
    const meta = this.meta;
    const status = $("tree-status");
    status.className = `badge ${meta.status}`;
    status.textContent = meta.status;
    const facts = [
      `tenant ${meta.owner}`,
      `effort ${meta.effort}`,
      `strategy ${meta.strategy}`,
      meta.model && `model ${meta.model}`,
      `created ${when(meta.created_at)}`,
      `updated ${when(meta.updated_at)}`,
    ].filter(Boolean);
    $("tree-facts").textContent = facts.join(" · ");
    $("tree-question").textContent = meta.question;
    const notes = meta.extra || {};
    const order = [...OUTCOME_NOTES.filter((k) => k in notes), ...Object.keys(notes).filter((k) => !OUTCOME_NOTES.includes(k)).sort()];
    const traceId = notes.trace_id;
    $("outcome").replaceChildren(
      order.length
        ? el("dl", {}, order.map((key) => [el("dt", {}, key.replaceAll("_", " ")), el("dd", { "data-note": key }, key === "trace_id" ? traceLink(traceId, null) : notes[key])]))
        : "",
    );
    this.drawBudget();
    const pruned = [...this.nodes.values()].filter((n) => n.status === "pruned").length;
    const answers = [...this.nodes.values()].filter((n) => n.answer !== null && n.answer !== undefined).length;
    const depth = Math.max(0, ...[...this.nodes.values()].map((n) => n.depth));
    $("tree-counts").textContent = `${this.nodes.size} nodes · ${answers} answers · ${pruned} pruned · depth ${depth} · winning path ${this.onPath.size}`;
  }

  drawBudget() {
    const granted = this.budget?.granted || {};
    const spent = this.budget?.spent || {};
    const reserved = this.budget?.reserved || {};
    const finished = this.meta.status !== "running";
    const bars = Object.keys(granted).sort().map((resource) => {
      const total = granted[resource] || 0;
      const used = spent[resource] || 0;
      const held = reserved[resource] || 0;
      const rest = Math.max(0, total - used - held);
      const pct = (n) => `${total ? (100 * n) / total : 0}%`;
      return el(
        "div",
        { class: "resource", "data-resource": resource },
        el("div", { class: "legend" }, el("b", {}, resource.replaceAll("_", " ")), `granted ${total}`,
          el("span", {}, el("i", { class: "spent" }), `spent ${used}`),
          el("span", {}, el("i", { class: "reserved" }), `reserved ${held}`),
          el("span", {}, el("i", { class: finished ? "released" : "left" }), `${finished ? "released" : "left"} ${rest}`)),
        el("div", { class: "bar", title: `${used} spent, ${held} reserved, ${rest} ${finished ? "released" : "left"} of ${total}` },
          el("span", { class: "spent", style: `width:${pct(used)}` }),
          el("span", { class: "reserved", style: `width:${pct(held)}` }),
          finished ? el("span", { class: "released", style: `width:${pct(rest)}` }) : ""),
      );
    });
    $("budget").replaceChildren(...bars);
  }

  // ---- the tree: a virtual list of the rows of expanded nodes

  layout() {
    const rows = [];
    const stack = [...this.roots].reverse();
    while (stack.length) {
      const id = stack.pop();
      rows.push(id);
      const kids = this.expanded.has(id) ? this.children.get(id) : undefined;
      if (kids) for (let i = kids.length - 1; i >= 0; i -= 1) stack.push(kids[i]);
    }
    this.visible = rows;
    $("tree-spacer").style.height = `${rows.length * ROW_HEIGHT}px`;
    this.draw();
  }

  scheduleDraw() {
    if (this.drawPending) return;
    this.drawPending = true;
    requestAnimationFrame(() => {
      this.drawPending = false;
      if (this.active) this.draw();
    });
  }

  draw() {
    const scroll = $("tree-scroll");
    const first = Math.max(0, Math.floor(scroll.scrollTop / ROW_HEIGHT) - OVERSCAN_ROWS);
    const count = Math.ceil(scroll.clientHeight / ROW_HEIGHT) + 2 * OVERSCAN_ROWS;
    const last = Math.min(this.visible.length, first + count);
    const rows = $("tree-rows");
    rows.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    rows.replaceChildren(...this.visible.slice(first, last).map((id) => this.row(this.nodes.get(id))));
  }

  row(node) {
    const id = node.node_id;
    const kids = this.children.get(id) || [];
    const open = this.expanded.has(id);
    const classes = ["row", node.status];
    if (this.onPath.has(id)) classes.push("on-path");
    if (this.selected === id) classes.push("selected");
    const toggle = el("span", { class: "toggle" }, kids.length ? (open ? "▾" : "▸") : "·");
    const row = el(
      "div",
      { class: classes.join(" "), "data-node-id": id, title: firstLine(node.text) },
      el("span", { class: "indent", style: `width:${node.depth * 18}px` }),
      toggle,
      el("span", { class: "nid mono" }, id),
      badge(node.status),
      node.score !== null && node.score !== undefined ? el("span", { class: "num" }, node.score.toFixed(2)) : "",
      el("span", { class: "text" }, firstLine(node.text) || "(empty step)"),
      node.answer !== null && node.answer !== undefined ? el("span", { class: "badge answer" }, `= ${node.answer}`) : "",
      el("span", { class: "num" }, `${node.completion_tokens} tok`),
      kids.length && !open ? el("span", { class: "folded" }, `${kids.length} folded`) : "",
    );
    row.addEventListener("click", (event) => {
      if (event.target === toggle && kids.length) this.toggle(id);
      else this.select(id);
    });
    row.addEventListener("dblclick", () => kids.length && this.toggle(id));
    return row;
  }

  toggle(id) {
    if (this.expanded.has(id)) this.expanded.delete(id);
    else this.expanded.add(id);
    this.layout();
  }

  select(id) {
    this.selected = id;
    this.draw();
    this.drawDetail(this.nodes.get(id));
  }

  expandAll() {
    for (const id of this.children.keys()) this.expanded.add(id);
    this.layout();
  }

  foldToPath() {
    this.expanded = new Set(this.onPath);
    $("tree-scroll").scrollTop = 0;
    this.layout();
  }

  // ---- one node

  drawDetail(node) {
    const scores = node.scores || {};
    const verdicts = node.verdicts || {};
    const verifiers = [...new Set([...Object.keys(scores), ...Object.keys(verdicts)])].sort();
    const parent = node.parent_id;
    const mean = node.visits ? (node.value_sum / node.visits).toFixed(3) : null;
    const facts = [
      ["depth", node.depth],
      ["parent", parent ? el("a", { href: "#", onclick: (e) => { e.preventDefault(); this.select(parent); } }, parent) : "root"],
      ["score", node.score === null || node.score === undefined ? "not scored" : node.score.toFixed(4)],
      ["tokens", `${node.completion_tokens} generated · ${node.prompt_tokens} prompt · ${node.cached_tokens} cached`],
      ["replica", node.replica || "—"],
      ["log-probability", node.logprob === null || node.logprob === undefined ? "—" : node.logprob.toFixed(4)],
      node.visits ? ["visits", `${node.visits} (mean value ${mean})`] : null,
      ["created", when(node.created_at)],
      node.span_id ? ["span", traceLink(node.trace_id || this.meta.extra?.trace_id, node.span_id)] : null,
    ].filter(Boolean);
    $("node-detail").replaceChildren(
      el("h2", {}, `node ${node.node_id} `, badge(node.status), this.onPath.has(node.node_id) ? el("span", { class: "badge won" }, "winning path") : ""),
      el("table", {}, el("tbody", {}, facts.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))),
      node.answer !== null && node.answer !== undefined ? el("p", {}, el("b", {}, "answer: "), node.answer) : "",
      el("pre", { class: "step" }, node.text || "(empty step)"),
      verifiers.length
        ? el("table", { class: "verdicts" },
            el("thead", {}, el("tr", {}, el("th", {}, "verifier"), el("th", {}, "score"), el("th", {}, "verdict"))),
            el("tbody", {}, verifiers.map((v) => el("tr", { "data-verifier": v }, el("td", {}, v),
              el("td", {}, v in scores ? Number(scores[v]).toFixed(3) : "—"), el("td", {}, verdicts[v] ?? "—")))))
        : el("p", { class: "hint" }, "No verifier has scored this node."),
    );
  }
}

// A trace or span id, linked when the user set a trace viewer URL in this browser
// (localStorage `rc-trace-url`, e.g. http://127.0.0.1:16686/trace/{trace_id}).
function traceLink(traceId, spanId) {
  const label = spanId ? `${spanId}${traceId ? ` (trace ${traceId})` : ""}` : traceId;
  const template = localStorage.getItem(TRACE_URL_STORAGE);
  if (!template || !traceId) return el("span", { class: "mono" }, label);
  const href = template.replaceAll("{trace_id}", encodeURIComponent(traceId)).replaceAll("{span_id}", encodeURIComponent(spanId || ""));
  return el("a", { class: "mono", href, target: "_blank", rel: "noopener noreferrer" }, label);
}

$("trace-url").value = localStorage.getItem(TRACE_URL_STORAGE) || "";
$("trace-url").addEventListener("change", (event) => {
  const template = event.target.value.trim();
  if (template) localStorage.setItem(TRACE_URL_STORAGE, template);
  else localStorage.removeItem(TRACE_URL_STORAGE);
  if (current?.meta) current.redraw();
});

// ---- routing: #/?filters (the list) and #/tree/<id> ----------------------------------------

let current = null;

function route() {
  if (current) current.stop();
  current = null;
  delete document.body.dataset.treeReady;
  showError(null);
  const hash = location.hash.replace(/^#/, "") || "/";
  const match = hash.match(/^\/tree\/([^?]+)/);
  if (match) {
    current = new TreePage(decodeURIComponent(match[1]));
    current.open();
  } else {
    showList(new URLSearchParams(hash.split("?")[1] || ""));
  }
}

window.addEventListener("hashchange", route);
showKeyState();
route();
