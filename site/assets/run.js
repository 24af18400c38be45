// The run page's samples view (search, filters, paging), shared by every runs/<id>/index.html;
// the page sets RUN (its outcome field and dropped fields) and loads samples.js first.
// Samples are data from a model: they are only ever put into the page as text nodes.
let samples = [], matching = [], page = 0;

async function inflate(base64) {
  const bytes = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function isScalar(v) { return v === null || ["string", "number", "boolean"].includes(typeof v); }

function renderValue(v) {
  if (v === null || typeof v === "number" || typeof v === "boolean") return el("code", String(v));
  if (typeof v === "string") return (v.length > 80 || v.includes("\n")) ? el("pre", v) : el("span", v);
  if (Array.isArray(v)) {
    if (v.every(isScalar)) return v.length > 0 && v.some(x => typeof x === "string" && (x.length > 80 || x.includes("\n")))
      ? listOf(v) : el("code", "[" + v.map(x => typeof x === "string" ? JSON.stringify(x) : String(x)).join(", ") + "]");
    if (v.every(x => x && typeof x === "object" && !Array.isArray(x))) return tableOf(v);
    return listOf(v);
  }
  const dl = el("dl");
  for (const [k, x] of Object.entries(v)) { dl.append(el("dt", k)); const dd = el("dd"); dd.append(renderValue(x)); dl.append(dd); }
  return dl;
}

function listOf(items) {
  const ol = el("ol");
  items.forEach(x => { const li = el("li"); li.append(renderValue(x)); ol.append(li); });
  return ol;
}

function tableOf(rows) {
  const keys = [...new Set(rows.flatMap(r => Object.keys(r)))];
  const table = el("table"), head = el("tr");
  keys.forEach(k => head.append(el("th", k)));
  table.append(head);
  rows.forEach(r => {
    const tr = el("tr");
    keys.forEach(k => { const td = el("td"); if (k in r) td.append(renderValue(r[k])); tr.append(td); });
    table.append(tr);
  });
  return table;
}

function isWhole(r) { return RUN.dropped.length === 0 || RUN.dropped.some(k => k in r); }

function renderInputs(requests, record) {
  // A context shown once with its continuations, each beside the record's per-choice numbers
  // (log-probabilities) when a list field has one number per continuation.
  const box = el("div", null, "inputs");
  for (const request of requests) {
    if (request.continuations) {
      box.append(el("div", "context", "meta"), el("pre", request.context));
      const perChoice = Object.entries(record).filter(([, v]) => Array.isArray(v) && v.length === request.continuations.length && v.every(x => typeof x === "number"));
      box.append(tableOf(request.continuations.map((c, i) => Object.fromEntries([["continuation", JSON.stringify(c)], ...perChoice.map(([k, v]) => [k, v[i]])]))));
    } else {
      box.append(renderValue(request));
    }
  }
  return box;
}

function renderSample(item) {
  const r = item.record;
  const article = el("article", null, "sample");
  article.dataset.doc = r.doc_id;
  const head = el("div", null, "head");
  head.append(el("b", "#" + (item.index + 1)), el("code", "doc " + r.doc_id));
  if (RUN.outcome && RUN.outcome in r) {
    const yes = Number(r[RUN.outcome]) === 1;
    head.append(el("span", RUN.outcome + ": " + (yes ? "yes" : "no"), "badge " + (yes === RUN.oneIsGood ? "good" : "bad")));
  }
  for (const [k, v] of Object.entries(r)) {
    if (k === "doc_id" || k === RUN.outcome || !isScalar(v) || String(v).length > 40) continue;
    const chip = el("span", null, "chip");
    chip.append(el("b", k + " "), document.createTextNode(typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : String(v)));
    head.append(chip);
  }
  if (!isWhole(r)) head.append(el("span", "score fields only", "trimmed"));
  article.append(head);
  if (item.inputs) {
    const input = el("details");
    input.append(el("summary", "input"), renderInputs(item.inputs, r));
    article.append(input);
  }
  const details = el("details");
  details.append(el("summary", "whole record"), renderValue(r));
  article.append(details);
  return article;
}

function compare(value, op, wanted) {
  if (value === undefined) return false;
  if (op === "has") return JSON.stringify(value).toLowerCase().includes(wanted.toLowerCase());
  const a = Number(value), b = Number(wanted);
  const numeric = wanted.trim() !== "" && !Number.isNaN(b) && (typeof value === "number" || typeof value === "boolean");
  const x = numeric ? a : String(value), y = numeric ? b : wanted;
  if (op === "eq") return x === y || (!numeric && String(value) === wanted);
  if (op === "ne") return !(x === y);
  if (op === "lt") return x < y;
  return x > y;
}

function applyFilters() {
  const query = document.getElementById("search").value.trim().toLowerCase();
  const outcome = document.getElementById("outcome")?.value ?? "";
  const field = document.getElementById("field").value, op = document.getElementById("op").value;
  const wanted = document.getElementById("value").value;
  const wholeOnly = document.getElementById("whole-only")?.checked ?? false;
  matching = samples.filter(item =>
    (!query || item.text.includes(query)) &&
    (outcome === "" || Number(item.record[RUN.outcome]) === Number(outcome)) &&
    (!field || wanted === "" || compare(item.record[field], op, wanted)) &&
    (!wholeOnly || isWhole(item.record)));
  page = 0;
  show();
}

function show() {
  const size = Number(document.getElementById("page-size").value);
  const pages = Math.max(1, Math.ceil(matching.length / size));
  page = Math.min(page, pages - 1);
  const list = document.getElementById("sample-list");
  list.replaceChildren(...matching.slice(page * size, (page + 1) * size).map(renderSample));
  if (matching.length === 0) list.append(el("p", "no sample matches", "meta"));
  document.getElementById("page-info").textContent = `page ${page + 1} of ${pages}`;
  document.getElementById("count").textContent = `${matching.length} of ${samples.length} samples`;
  document.getElementById("prev").disabled = page === 0;
  document.getElementById("next").disabled = page >= pages - 1;
}

async function main() {
  const text = await inflate(window.HARNESS_SAMPLES_GZ);
  const inputs = new Map();
  if (window.HARNESS_INPUTS_GZ) {
    (await inflate(window.HARNESS_INPUTS_GZ)).split("\n").filter(Boolean).forEach(line => {
      const entry = JSON.parse(line);
      inputs.set(entry.doc_id, {requests: entry.requests, text: line.toLowerCase()});
    });
  }
  samples = text.split("\n").filter(Boolean).map((line, index) => {
    const record = JSON.parse(line), input = inputs.get(record.doc_id);
    return {index, record, inputs: input?.requests, text: line.toLowerCase() + (input ? "\n" + input.text : "")};
  });
  document.getElementById("download").href = URL.createObjectURL(new Blob([text], {type: "application/x-ndjson"}));
  ["search", "value"].forEach(id => document.getElementById(id).addEventListener("input", applyFilters));
  ["outcome", "field", "op", "whole-only"].forEach(id => document.getElementById(id)?.addEventListener("change", applyFilters));
  document.getElementById("page-size").addEventListener("change", () => { page = 0; show(); });
  document.getElementById("prev").addEventListener("click", () => { page -= 1; show(); });
  document.getElementById("next").addEventListener("click", () => { page += 1; show(); });
  document.body.dataset.samplesLoaded = "true";
  applyFilters();
}
main();
