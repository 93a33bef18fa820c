// kam studio: the page. Every rule semantics lives on the server (the same checker, planner,
// evaluator, prover and diff as the command line); this file only sends the user's edits as
// operations on the YAML and places the texts the server formats. The DOM is built from text
// (textContent), never from HTML strings, so no fact, id or reason text can run as script.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const S = {
  state: null,        // what /api/state gave: policies as loaded, files, pareto curves
  policies: [],       // the policies as edited (the server's view of the edited texts)
  edits: [],          // the operations, in order, applied to the loaded files
  impact: null,
  current: 0,         // index of the policy shown
  seq: 0,             // the newest evaluate request: older answers are dropped
  selected: null,     // the matrix cell whose movers are listed
};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(path, body) {
  const res = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "X-Kam-Token": TOKEN, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({ error: `the server answered ${res.status}` }));
  if (!res.ok) { const err = new Error(data.error || res.statusText); err.status = res.status; err.data = data; throw err; }
  return data;
}

function status(text, kind) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = kind || "muted";
}

const samePath = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// -- edits --------------------------------------------------------------------------------------

function setValue(file, path, value, after) {
  const last = S.edits[S.edits.length - 1];
  if (last && last.op === "set" && last.file === file && samePath(last.path, path)) {
    last.value = value;  // typing in one cell is one edit
  } else {
    S.edits.push({ op: "set", file, path, value, ...(after ? { after } : {}) });
  }
  schedule();
}

function structural(edit) {
  S.edits.push(edit);
  evaluate(true);
}

let timer = null;
function schedule() {
  clearTimeout(timer);
  status("checking…");
  timer = setTimeout(() => evaluate(false), 250);
}

async function evaluate(rerender) {
  const seq = ++S.seq;
  updateButtons();
  status("checking…");
  try {
    const data = await api("/api/evaluate", { edits: S.edits });
    if (seq !== S.seq) return;
    S.policies = data.policies;
    S.impact = data.impact;
    if (rerender) renderPolicy(); else markProblems();
    renderNav();
    renderImpact();
    const errors = data.impact.problems.filter(p => p.severity === "error").length;
    status(errors ? `${errors} problem${errors > 1 ? "s" : ""}: not saveable` :
      S.edits.length ? "checked: impact below is live" : "no changes", errors ? "bad" : "ok");
    runTests(seq);
  } catch (err) {
    if (seq !== S.seq) return;
    if (err.status === 422 && err.data && err.data.problems) {
      // an edit the file's form cannot take: take it back and say why
      S.edits.pop();
      status(err.data.problems[0].message + (err.data.problems[0].hint ? ` (${err.data.problems[0].hint})` : ""), "bad");
      renderPolicy();
    } else status(err.message, "bad");
  }
  updateButtons();
}

async function runTests(seq) {
  if (!S.state.tests) return;
  try {
    const data = await api("/api/tests", { edits: S.edits });
    if (seq !== S.seq) return;
    S.tests = data;
    renderTests(data);
  } catch (err) { /* the impact's status says what is wrong */ }
}

function updateButtons() {
  const has = S.edits.length > 0;
  document.getElementById("undo").disabled = !has;
  document.getElementById("discard").disabled = !has;
  const errors = S.impact ? S.impact.problems.some(p => p.severity === "error") : true;
  document.getElementById("review").disabled = !has || errors;
}

// -- the policy -----------------------------------------------------------------------------------

function renderNav() {
  const nav = document.getElementById("nav");
  nav.replaceChildren(el("h2", { text: "Policies" }));
  const changed = new Set(S.impact ? S.impact.changed_files : []);
  S.policies.forEach((p, i) => {
    const a = el("a", { href: "#" + p.file, "aria-current": i === S.current ? "page" : null,
      onclick: ev => { ev.preventDefault(); S.current = i; renderNav(); renderPolicy(); document.getElementById("policy").focus(); } },
      p.policy || p.file, changed.has(p.file) ? el("span", { class: "dot", title: "changed", text: " ●" }) : null);
    nav.append(a);
  });
  const ent = S.state.entities;
  nav.append(el("p", { class: "note", text: "Portfolio loaded: " + Object.entries(ent).map(([e, n]) => `${n} ${e}s`).join(", ") }));
}

function problemsAt(file, path) {
  if (!S.impact) return [];
  return S.impact.problems.filter(p => p.file === file && p.path.length >= path.length && samePath(p.path.slice(0, path.length), path));
}

function cellInput(p, path, value, opts) {
  const multiline = opts && opts.multiline;
  const input = el(multiline ? "textarea" : "input", { "aria-label": opts.label, "data-file": p.file,
    "data-path": JSON.stringify(path), rows: multiline ? 2 : null, spellcheck: "false", title: multiline ? null : value });
  input.value = value;
  if (multiline) input.rows = Math.min(6, Math.max(2, Math.ceil(String(value).length / 34)));
  input.addEventListener("input", () => {
    input.classList.add("edited");
    setValue(p.file, path, input.value, opts.after);
  });
  const box = el("div", {}, input, el("div", { class: "cell-msg", "data-for": JSON.stringify(path) }));
  return box;
}

function renderPolicy() {
  const main = document.getElementById("policy");
  const p = S.policies[S.current];
  if (!p) { main.replaceChildren(el("p", { text: "No policy files." })); return; }
  if (p.broken) { main.replaceChildren(el("h2", { text: p.file }), el("p", { class: "bad", text: p.broken })); return; }
  const parts = [
    el("h2", { text: p.description || p.policy }),
    el("p", { class: "muted" }, `Policy `, el("code", { text: p.policy }), ` for each ${p.entity} · file `, el("code", { text: p.file })),
  ];
  if (p.header) parts.push(el("details", {}, el("summary", { text: "What this policy says (from the file)" }), el("p", { class: "header-note", text: p.header })));
  if (p.params.length) parts.push(renderParams(p));
  for (const d of p.decisions) parts.push(renderDecision(p, d));
  if (p.derive.length) parts.push(el("section", { class: "card" }, el("h3", { text: "Derived figures" }),
    el("table", {}, el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "name" }), el("th", { scope: "col", text: "how it is computed" }))),
      el("tbody", {}, p.derive.map(f => el("tr", {}, el("td", {}, el("code", { text: f.name })),
        el("td", {}, f.table ? lookupGrid(p, f) : el("code", { text: f.source }), f.comment ? el("div", { class: "note", text: f.comment }) : null,
          el("div", { class: "cell-msg", "data-for": JSON.stringify(f.path) }))))))));
  if (p.invariants.length) parts.push(renderInvariants(p));
  if (p.measures.length) parts.push(renderMeasures(p));
  if (S.state.tests) parts.push(el("section", { class: "card", id: "policy-tests" }, el("h3", { text: "Test cases" }), el("p", { class: "muted", text: "running…" })));
  main.replaceChildren(...parts);
  markProblems();
  drawPareto(p);
  if (S.tests) renderTests(S.tests);
}

// a table of numbers by a value (a floor per tier): a cell per value, written back in the same form
function lookupGrid(p, f) {
  const entries = f.table.entries.map(e => [...e]);
  const rebuild = () => `lookup(${f.table.over}, {${entries.map(([k, v]) => `${k}: ${v}`).join(", ")}})`;
  return el("table", { class: "lookup", "data-feature": f.name },
    el("caption", { class: "note", text: `by ${f.table.over}` }),
    el("thead", {}, el("tr", {}, entries.map(([k]) => el("th", { scope: "col", class: "num", text: k })))),
    el("tbody", {}, el("tr", {}, entries.map((e, i) => {
      const input = el("input", { type: "text", inputmode: "decimal", "aria-label": `${f.name} for ${f.table.over} ${e[0]}` });
      input.value = e[1];
      input.addEventListener("input", () => {
        input.classList.add("edited");
        entries[i][1] = input.value.trim();
        setValue(p.file, f.path, rebuild());
      });
      return el("td", { class: "num" }, input);
    }))));
}

function unitText(unit) {
  return { percent: "%", money: "money", count: "count", number: "" }[unit] || "";
}

function paramShown(param) {
  return param.unit === "percent" ? String(param.text).replace(/%\s*$/, "") : param.text;
}

function renderParams(p) {
  const rows = p.params.map(param => {
    const input = el("input", { type: "text", inputmode: "decimal", id: `param-${p.file}-${param.name}`,
      "aria-describedby": `param-desc-${p.file}-${param.name}`, "data-file": p.file, "data-path": JSON.stringify(param.path) });
    input.value = paramShown(param);
    input.addEventListener("input", () => {
      input.classList.add("edited");
      const raw = input.value.trim().replace(/\s*%$/, "");  // "70" and "70%" mean the same in a % box
      const msg = input.closest(".param").querySelector(".cell-msg");
      const number = /^-?\d+(\.\d+)?$/.test(raw);
      if (!number || (param.unit === "percent" && (parseFloat(raw) < 0 || parseFloat(raw) > 100))) {
        input.classList.add("has-error");
        msg.replaceChildren(el("div", { class: "cell-problem", role: "alert",
          text: param.unit === "percent" ? "a share between 0 and 100, e.g. 70" : "a number, e.g. 60" }));
        return;  // nothing is sent until it is a number
      }
      input.classList.remove("has-error");
      const value = param.unit === "percent" ? raw + "%" : raw.includes(".") ? parseFloat(raw) : parseInt(raw, 10);
      setValue(p.file, param.path, value);
      const curve = document.querySelector(`svg.pareto[data-param="${CSS.escape(param.name)}"]`);
      if (curve && param.unit === "percent") moveCut(curve, parseFloat(raw) / 100);
    });
    return el("div", { class: "param" },
      el("div", {}, el("label", { for: input.id }, el("strong", { text: param.name.replaceAll("_", " ") }), " ", el("code", { class: "muted", text: param.name })),
        el("div", { id: `param-desc-${p.file}-${param.name}`, text: param.comment || "" }),
        el("div", { class: "readers", text: param.readers.length ? "read by " + param.readers.join(", ") : "not read by any rule" })),
      el("div", {}, el("div", { class: "control" }, input, el("span", { class: "muted", text: unitText(param.unit) })),
        el("div", { class: "cell-msg", "data-for": JSON.stringify(param.path) })));
  });
  const section = el("section", { class: "card" }, el("h3", { text: "Cutoffs and rates" }), ...rows);
  for (const curve of S.state.pareto.filter(c => c.file === p.file)) section.append(el("div", { class: "pareto-box", "data-param": curve.param }));
  return section;
}

function renderDecision(p, d) {
  const body = el("tbody");
  const never = S.impact ? S.impact.problems.filter(x => x.file === p.file && x.code && /unreachable|never|shadow/.test(x.code)) : [];
  d.rules.forEach((r, i) => {
    const path = r.path;
    const dead = never.some(x => samePath(x.path.slice(0, path.length), path));
    const ops = el("td", { class: "ops" },
      el("button", { type: "button", "aria-label": `move rule ${r.id} up`, disabled: i === 0,
        onclick: () => structural({ op: "move", file: p.file, path, to: i - 1 }) }, "↑"),
      el("button", { type: "button", "aria-label": `move rule ${r.id} down`, disabled: i === d.rules.length - 1,
        onclick: () => structural({ op: "move", file: p.file, path, to: i + 1 }) }, "↓"),
      el("button", { type: "button", "aria-label": `remove rule ${r.id}`,
        onclick: () => structural({ op: "delete", file: p.file, path }) }, "✕"));
    const when = r.quota ? el("div", { class: "note", text: "a quota (ranking) rule: edit its ranking in the file" })
      : cellInput(p, [...path, "when"], r.when, { label: `condition of rule ${r.id}`, multiline: true, after: "id" });
    const then = r.then === null ? el("code", { text: r.then_text })
      : cellInput(p, [...path, "then"], r.then, { label: `outcome of rule ${r.id}` });
    if (r.comment) body.append(el("tr", { class: "rule-comment" }, el("td", {}), el("td", { colspan: 5, class: "note", text: r.comment })));
    body.append(el("tr", { "data-rule": r.id },
      el("td", { class: "num", text: String(i + 1) }),
      el("td", { class: "id" }, cellInput(p, [...path, "id"], r.id, { label: `id of rule ${i + 1}` }),
        dead ? el("span", { class: "badge never", text: "never fires" }) : null),
      el("td", { class: "when" }, when),
      el("td", { class: "then" }, then),
      el("td", {}, cellInput(p, [...path, "because"], r.because, { label: `reason text of rule ${r.id}`, multiline: true })),
      el("td", { class: "num count", text: ruleCount(p, d, r) }),
      ops));
  });
  const add = el("button", { type: "button", onclick: () => {
    const id = `new-rule-${d.rules.length + 1}`;
    const index = d.rules.length && !d.rules[d.rules.length - 1].when ? d.rules.length - 1 : d.rules.length;
    structural({ op: "insert", file: p.file, path: [...d.path, "rules"], index,
      item: { id, when: "false", then: d.values[0] || "", because: "describe why" } });
  } }, "+ Add a rule");
  const targets = Object.keys(d.target).length ? el("div", { class: "targets" }, el("span", { class: "note", text: "target shares: " }),
    Object.entries(d.target).map(([k, v]) => {
      const input = el("input", { type: "text", inputmode: "decimal", "aria-label": `target share of ${k}`, size: 4 });
      input.value = String(v).replace(/%\s*$/, "");
      input.addEventListener("input", () => {
        input.classList.add("edited");
        const raw = input.value.trim().replace(/\s*%$/, "");
        if (/^\d+(\.\d+)?$/.test(raw)) setValue(p.file, [...d.path, "target", k], raw + "%");
      });
      return el("label", {}, ` ${k} `, input, "%");
    }), el("div", { class: "cell-msg", "data-for": JSON.stringify([...d.path, "target"]) })) : null;
  return el("section", { class: "card", id: `decision-${d.name}` },
    el("h3", {}, d.description || d.name, " ", el("code", { class: "muted", text: d.name })),
    el("p", { class: "note", text: `${d.hit_words} (hit: ${d.hit}) · values ${d.values.join(", ") || "computed"}` }),
    targets,
    el("table", { class: "grid" },
      el("thead", {}, el("tr", {}, ["#", "rule", "when (condition)", "then", "because (reason shown)", `${p.entity}s`, ""].map(h => el("th", { scope: "col", text: h, title: h === `${p.entity}s` ? `how many ${p.entity}s each rule decides: now → edited` : null })))),
      body),
    el("div", { class: "cell-msg", "data-for": JSON.stringify(d.path) }),
    add);
}

function ruleCount(p, d, r) {
  const counts = S.impact && S.impact.rule_counts ? S.impact.rule_counts[`${p.entity}.${d.name}`] : null;
  if (!counts) return "";
  const [before, after] = counts[r.id] || ["0", "0"];
  return before === after ? before : `${before} → ${after}`;
}

function renderInvariants(p) {
  const results = S.impact && S.impact.invariants ? Object.fromEntries(S.impact.invariants.map(i => [i.id, i])) : {};
  return el("section", { class: "card" }, el("h3", { text: "Guarantees (invariants)" }),
    el("ul", {}, p.invariants.map((inv, i) => {
      const r = results[inv.id];
      return el("li", { "data-invariant": inv.id }, inv.because || inv.id, " ", el("code", { class: "muted", text: `${inv.kind}: ${inv.condition}` }), " ",
        r ? el("span", { class: `badge ${r.new}`, text: r.new }) : null,
        el("div", { class: "cell-msg", "data-for": JSON.stringify(["invariants", i]) }));
    })));
}

function renderMeasures(p) {
  const rows = p.measures.map(m => {
    const r = S.impact && S.impact.measures ? S.impact.measures.find(x => x.entity === p.entity && x.name === m.name) : null;
    return el("tr", {}, el("td", {}, el("code", { text: m.name }), r && r.label !== m.name ? el("span", { class: "muted", text: r.label.slice(m.name.length) }) : null),
      el("td", { class: "num", text: r ? r.before : "" }), el("td", { class: "num", text: r ? r.after : "" }),
      el("td", {}, el("code", { class: "muted", text: m.source })));
  });
  return el("section", { class: "card", id: "measures" }, el("h3", { text: "Figures of the portfolio (measures)" }),
    el("table", {}, el("thead", {}, el("tr", {}, ["measure", "now", "edited", "definition"].map((h, i) => el("th", { scope: "col", class: i && i < 3 ? "num" : null, text: h })))),
      el("tbody", {}, rows)));
}

function markProblems() {
  document.querySelectorAll(".cell-msg").forEach(m => m.replaceChildren());
  document.querySelectorAll(".has-error").forEach(m => m.classList.remove("has-error"));
  if (!S.impact) return;
  const p = S.policies[S.current];
  if (!p) return;
  const boxes = [...document.querySelectorAll(".cell-msg")].map(b => ({ b, path: JSON.parse(b.dataset.for) }));
  // notes (proved, not analysed) are for the command line; the badges say what a reader needs
  for (const prob of S.impact.problems.filter(x => x.file === p.file && x.severity !== "note")) {
    // the deepest cell whose path starts the problem's path
    let best = null;
    for (const x of boxes) if (x.path.length <= prob.path.length && samePath(prob.path.slice(0, x.path.length), x.path) && (!best || x.path.length > best.path.length)) best = x;
    if (!best) continue;
    const kind = { error: "cell-problem", warning: "cell-warning" }[prob.severity] || "cell-note";
    best.b.append(el("div", { class: kind, role: prob.severity === "error" ? "alert" : null },
      `${prob.severity}: ${prob.message}`, prob.hint ? ` (${prob.hint})` : ""));
    if (prob.severity === "error") {
      const input = best.b.parentElement.querySelector("input, textarea");
      if (input) input.classList.add("has-error");
    }
  }
}

// -- the Pareto curve ---------------------------------------------------------------------------------

const W = 520, H = 260, PAD = 36;
function drawPareto(p) {
  for (const box of document.querySelectorAll(".pareto-box")) {
    const curve = S.state.pareto.find(c => c.file === p.file && c.param === box.dataset.param);
    const param = p.params.find(x => x.name === curve.param);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("class", "pareto");
    svg.setAttribute("role", "img");
    svg.dataset.param = curve.param;
    const X = x => PAD + x * (W - 2 * PAD), Y = y => H - PAD - y * (H - 2 * PAD);
    const mk = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text) e.textContent = text; svg.append(e); return e; };
    const title = mk("title", {}, `Cumulative share of ${curve.fact} against the share of ${curve.entity}s ranked by ${curve.fact}; the line is ${curve.param}. Drag it, or use the arrow keys, to move the cutoff.`);
    title.id = `pareto-title-${curve.param}`;
    mk("line", { class: "axis", x1: X(0), y1: Y(0), x2: X(1), y2: Y(0) });
    mk("line", { class: "axis", x1: X(0), y1: Y(0), x2: X(0), y2: Y(1) });
    mk("text", { x: X(0), y: H - 8 }, `share of ${curve.entity}s, biggest ${curve.fact} first (${curve.n.toLocaleString("en-US")})`);
    mk("text", { x: 4, y: PAD - 12 }, `cumulative share of ${curve.fact}`);
    for (const t of [0, 0.5, 1]) mk("text", { x: 4, y: Y(t) + 4 }, `${t * 100}%`);
    mk("polyline", { class: "curve", points: curve.x.map((x, i) => `${X(x).toFixed(1)},${Y(Math.max(0, Math.min(1.05, curve.y[i]))).toFixed(1)}`).join(" ") });
    const cut = mk("line", { class: "cut", x1: X(0), x2: X(1) });
    const handle = mk("circle", { class: "handle", r: 7, cx: X(1) - 8, tabindex: 0, role: "slider", "aria-label": `${curve.param} cutoff`,
      "aria-valuemin": 0, "aria-valuemax": 100 });
    const label = mk("text", { x: X(1) - 130 });
    const info = mk("text", { x: X(0) + 6 });
    svg._set = share => {
      share = Math.max(0, Math.min(1, share));
      const y = Y(share);
      cut.setAttribute("y1", y); cut.setAttribute("y2", y); handle.setAttribute("cy", y);
      label.setAttribute("y", y - 6); label.textContent = `${curve.param} = ${(share * 100).toFixed(0)}%`;
      let k = curve.y.findIndex(v => v > share + 1e-12);
      const xs = k < 0 ? 1 : k === 0 ? 0 : curve.x[k - 1];
      info.setAttribute("y", y + 14); info.textContent = `about ${(xs * 100).toFixed(1)}% of ${curve.entity}s bring ${(share * 100).toFixed(0)}% of ${curve.fact}`;
      handle.setAttribute("aria-valuenow", (share * 100).toFixed(0));
    };
    svg._set(parseFloat(String(param.text)) / 100);
    const commit = share => {
      const pct = Math.round(share * 100);
      const input = document.getElementById(`param-${p.file}-${param.name}`);
      input.value = String(pct);
      input.dispatchEvent(new Event("input"));
    };
    let dragging = false;
    const toShare = ev => { const r = svg.getBoundingClientRect(); const y = (ev.clientY - r.top) * H / r.height; return (H - PAD - y) / (H - 2 * PAD); };
    svg.addEventListener("pointerdown", ev => { dragging = true; svg.setPointerCapture(ev.pointerId); svg._set(toShare(ev)); });
    svg.addEventListener("pointermove", ev => { if (dragging) svg._set(toShare(ev)); });
    svg.addEventListener("pointerup", ev => { if (!dragging) return; dragging = false; commit(Math.max(0, Math.min(1, toShare(ev)))); });
    handle.addEventListener("keydown", ev => {
      if (ev.key !== "ArrowUp" && ev.key !== "ArrowDown") return;
      ev.preventDefault();
      const now = parseFloat(handle.getAttribute("aria-valuenow")) + (ev.key === "ArrowUp" ? 1 : -1);
      svg._set(now / 100); commit(Math.max(0, Math.min(100, now)) / 100);
    });
    svg.setAttribute("aria-labelledby", title.id);
    box.replaceChildren(el("h3", { text: `The ${curve.param.replaceAll("_", " ")} line on the Pareto curve` }), svg);
  }
}

function moveCut(svg, share) { if (svg._set && !Number.isNaN(share)) svg._set(share); }

// -- the impact -----------------------------------------------------------------------------------------

function renderImpact() {
  const side = document.getElementById("impact");
  const im = S.impact;
  const parts = [el("h2", { text: "Impact of the changes" })];
  if (!S.edits.length) parts.push(el("p", { class: "muted", text: "Change a cutoff, a condition or a reason on the left: who moves, the money that moves and every guarantee appear here before anything is saved." }));
  const errors = im.problems.filter(p => p.severity === "error");
  if (errors.length) {
    parts.push(el("section", { class: "card" }, el("h3", { class: "bad", text: "Problems (nothing can be saved until they are fixed)" }),
      el("ul", { class: "problems" }, errors.map(p => el("li", { class: p.severity }, `${p.file}:${p.line}: ${p.message}`, p.hint ? ` (${p.hint})` : "")))));
  }
  if (im.decisions) {
    const moved = im.decisions.filter(d => d.changed > 0 || d.status !== "unchanged");
    parts.push(el("section", { id: "decisions-impact" }, el("h3", { text: moved.length ? "Who moves" : "Who moves: nobody" }),
      moved.map(renderMatrix)));
    if (im.targets && im.targets.length) parts.push(renderTargets(im.targets));
    const changedMeasures = (im.measures || []).filter(m => m.changed);
    if (changedMeasures.length) parts.push(el("section", { class: "card" }, el("h3", { text: "Measures that change" }),
      el("table", {}, el("thead", {}, el("tr", {}, ["measure", "now", "edited"].map((h, i) => el("th", { scope: "col", class: i ? "num" : null, text: h })))),
        el("tbody", {}, changedMeasures.map(m => el("tr", {}, el("td", { text: `${m.entity} ${m.name}` }), el("td", { class: "num", text: m.before }), el("td", { class: "num", text: m.after })))))));
    parts.push(renderInvariantImpact(im.invariants));
  }
  parts.push(el("section", { class: "card", id: "tests" }, el("h3", { text: "Test cases" }), el("p", { class: "muted", text: S.state.tests ? "running…" : "this folder has no test cases (tests/*.yaml)" })));
  S.tests = null;
  if (S.state.history) parts.push(renderHistoryBox());
  parts.push(renderLookup());
  side.replaceChildren(...parts);
  if (S.history) loadHistory();
  if (S.selected) showMovers(S.selected.d, S.selected.b, S.selected.n, false);
}

function renderMatrix(d) {
  const box = el("div", { class: "card", "data-decision": `${d.entity}.${d.decision}` });
  const named = m => (d.labels && d.labels[m]) || m;  // money's heading carries its currency: profit (CN¥)
  const money = Object.entries(d.money).map(([k, v]) => `${named(k)} ${v}`).join(", ");
  box.append(el("h3", {}, `${d.entity} ${d.decision}: `, el("span", { text: d.status === "changed" ? `${d.changed_text} change` : d.status })));
  if (money) box.append(el("p", { class: "note", text: `money at stake (those who change): ${money}` }));
  if (!d.rows.length) return box;
  const shown = (d.measures || []).slice(0, 2);
  const table = el("table", { class: "matrix" },
    el("caption", { class: "note", text: `rows: now · columns: edited · each cell: ${d.entity}s${shown.length ? ", " + shown.map(named).join(", ") : ""}` }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "now ↓ edited →" }), d.cols.map(c => el("th", { scope: "col", class: "num", text: c })))),
    el("tbody", {}, d.rows.map(b => el("tr", {}, el("th", { scope: "row", text: b }), d.cols.map(n => {
      const c = d.cells[`${b}\u0000${n}`];
      if (!c) return el("td", { class: "num muted", text: "" });
      const td = el("td", { class: `cell ${b === n ? "same" : "moved"}`, tabindex: 0, role: "button", "aria-pressed": "false",
        "aria-label": `${c.entities_text} ${d.entity}s from ${b} to ${n}`, "data-from": b, "data-to": n },
        el("span", { text: c.entities_text }), shown.map(m => el("span", { class: "money", text: `${m} ${c.money[m]}` })));
      const open = () => showMovers(d, b, n, true);
      td.addEventListener("click", open);
      td.addEventListener("keydown", ev => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); open(); } });
      return td;
    })))));
  box.append(table);
  if (d.rules.length) box.append(el("p", { class: "note", text: "rules that gain or lose: " + d.rules.map(r => `${r.rule} ${r.before} → ${r.after} (${r.delta})`).join("; ") }));
  box.append(el("div", { class: "movers" }));
  return box;
}

async function showMovers(d, b, n, focus) {
  S.selected = { d, b, n };
  const box = document.querySelector(`[data-decision="${CSS.escape(d.entity + "." + d.decision)}"]`);
  if (!box) return;
  box.querySelectorAll("td.cell").forEach(td => td.setAttribute("aria-pressed", td.dataset.from === b && td.dataset.to === n ? "true" : "false"));
  const target = box.querySelector(".movers");
  target.replaceChildren(el("p", { class: "muted", text: "loading…" }));
  try {
    const data = await api("/api/movers", { edits: S.edits, entity: d.entity, decision: d.decision, before: b, after: n });
    const measures = d.measures && d.measures.length ? d.measures : data.rows.length ? Object.keys(data.rows[0].money_text) : [];
    target.replaceChildren(
      el("h3", { tabindex: -1, text: `${data.count_text} ${d.entity}s from ${b} to ${n}${data.count > data.shown ? ` (the ${data.shown} biggest shown)` : ""}` }),
      el("table", { class: "movers-table" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "id" }), measures.slice(0, 2).map(m => el("th", { scope: "col", class: "num", text: (data.labels && data.labels[m]) || (d.labels && d.labels[m]) || m })),
          el("th", { scope: "col", text: "now: rule and reason" }), el("th", { scope: "col", text: "edited: rule and reason" }))),
        el("tbody", {}, data.rows.map(r => el("tr", {},
          el("td", {}, el("a", { href: "#lookup", onclick: ev => { ev.preventDefault(); lookup(r.id); } }, r.id)),
          measures.slice(0, 2).map(m => el("td", { class: "num", text: r.money_text[m] })),
          el("td", {}, el("strong", { text: r.before.value }), " ", el("code", { class: "muted", text: r.before.rule }), el("div", { text: r.before.because })),
          el("td", {}, el("strong", { text: r.after.value }), " ", el("code", { class: "muted", text: r.after.rule }), el("div", { text: r.after.because })))))));
    if (focus) target.querySelector("h3").focus();
  } catch (err) { target.replaceChildren(el("p", { class: "bad", text: err.message })); }
}

function renderTargets(targets) {
  return el("section", { class: "card" }, el("h3", { text: "Shares against the target" }), targets.map(t =>
    el("table", {}, el("caption", { class: "note", text: `${t.entity} ${t.decision}` }),
      el("thead", {}, el("tr", {}, ["value", "target", "now", "edited"].map((h, i) => el("th", { scope: "col", class: i ? "num" : null, text: h })))),
      el("tbody", {}, t.rows.map(r => el("tr", {}, el("td", { text: r.value }), el("td", { class: "num", text: r.target }),
        el("td", { class: "num", text: r.before }), el("td", { class: "num", text: r.after })))))));
}

function renderInvariantImpact(invariants) {
  return el("section", { class: "card", id: "invariants" }, el("h3", { text: "Guarantees, proved again" }),
    el("ul", {}, (invariants || []).map(i => el("li", { "data-invariant": i.id },
      el("span", { class: `badge ${i.new}`, text: i.new === "violated" ? "BROKEN" : i.new }), " ",
      i.because || i.id, " ", el("code", { class: "muted", text: i.id }),
      i.new === "violated" && i.example ? el("div", { class: "bad", text: `for example ${i.example}` }) : null,
      i.new === "not-analysed" && i.reason ? el("div", { class: "note", text: `not analysed: ${i.reason}` }) : null,
      i.new_broken ? el("div", { class: "bad", text: `broken by ${i.new_broken.toLocaleString("en-US")} ${i.entity}s of this portfolio` }) : null))));
}

function renderTests(data) {
  const mine = document.getElementById("policy-tests");
  const p = S.policies[S.current];
  if (mine && p && data.cases) {
    const cases = data.cases.filter(c => c.file === p.file);
    mine.replaceChildren(el("h3", { text: `Test cases (tests/${p.file})` }),
      cases.length ? el("ul", {}, cases.map(c => el("li", {}, el("span", { class: `badge ${c.passed ? "passed" : "failed"}`, text: c.passed ? "passes" : "fails" }), " ", c.name)))
        : el("p", { class: "muted", text: "no test cases for this policy" }));
  }
  const box = document.getElementById("tests");
  if (!box) return;
  if (data.skipped) { box.replaceChildren(el("h3", { text: "Test cases" }), el("p", { class: "muted", text: data.skipped })); return; }
  box.replaceChildren(el("h3", {}, "Test cases: ", el("span", { class: data.failed ? "bad" : "ok", text: `${data.passed} passed, ${data.failed} failed` })),
    el("ul", {}, data.cases.filter(c => !c.passed).map(c => el("li", {}, el("span", { class: "badge failed", text: "failed" }), ` ${c.name} (${c.file}:${c.line})`,
      el("ul", {}, c.failures.map(f => el("li", { text: f })))))));
}

function renderHistoryBox() {
  return el("section", { class: "card", id: "history" }, el("h3", { text: "Over the recorded periods: then and edited" }),
    el("p", { class: "note", text: "Each recorded period decided again with the edited policies (their previous() reading what they decided themselves), beside what was decided then; and how many customers changed value from one period to the next, which hysteresis rules exist to keep low." }),
    el("button", { type: "button", id: "history-go", onclick: () => { S.history = true; loadHistory(); } }, "Replay over the history"),
    el("div", { id: "history-result" }));
}

async function loadHistory() {
  const out = document.getElementById("history-result");
  if (!out) return;
  const seq = S.seq;
  out.replaceChildren(el("p", { class: "muted", text: "replaying…" }));
  try {
    const data = await api("/api/history", { edits: S.edits });
    if (seq !== S.seq) return;
    const parts = data.decisions.length ? [] : [el("p", { text: "The edited policies decide every recorded period as it was decided, with as many changes from period to period." })];
    for (const d of data.decisions) {
      const first = d.rows.find(r => r.money);
      const measures = first ? Object.keys(first.money) : [];
      const named = m => (first && first.labels && first.labels[m]) || m;
      parts.push(el("table", { class: "history-table", "data-decision": `${d.entity}.${d.decision}` },
        el("caption", { class: "note", text: `${d.entity} ${d.decision}` }),
        el("thead", {}, el("tr", {}, ["period", "decided otherwise", ...measures.map(named), "moved since the period before: then → edited"].map((h, i) => el("th", { scope: "col", class: i ? "num" : null, text: h })))),
        el("tbody", {}, d.rows.map(r => r.note ? el("tr", {}, el("td", { text: r.period }), el("td", { colspan: 2 + measures.length, class: "note", text: r.note })) :
          el("tr", {}, el("td", { text: r.period }), el("td", { class: "num", text: `${r.changed} of ${r.entities}` }),
            measures.map(m => el("td", { class: "num", text: r.money[m] })),
            el("td", { class: "num", text: r.bounced_then === "-" ? "-" : `${r.bounced_then} → ${r.bounced_edited}` }))))));
    }
    for (const n of data.notes) parts.push(el("p", { class: "note", text: n }));
    out.replaceChildren(...parts);
  } catch (err) { out.replaceChildren(el("p", { class: "bad", text: err.message })); }
}

function renderLookup() {
  const input = el("input", { type: "search", id: "lookup-id", placeholder: "customer, prospect or quote id", autocomplete: "off" });
  const form = el("form", { role: "search", onsubmit: ev => { ev.preventDefault(); lookup(input.value); } },
    el("label", { for: "lookup-id", text: "Find by id " }), input, " ", el("button", { type: "submit" }, "Explain"));
  return el("section", { class: "card", id: "lookup" }, el("h3", { text: "One customer, before and after" }), form, el("div", { id: "lookup-result" }));
}

async function lookup(id) {
  if (!String(id).trim()) return;
  const input = document.getElementById("lookup-id");
  input.value = id;
  const out = document.getElementById("lookup-result");
  out.replaceChildren(el("p", { class: "muted", text: "explaining…" }));
  try {
    const data = await api("/api/explain", { edits: S.edits, id });
    out.replaceChildren(el("div", { class: "two" },
      el("div", {}, el("h3", { text: "now" }), el("pre", { class: "trace", text: data.before })),
      el("div", {}, el("h3", { text: "edited" }), el("pre", { class: "trace", text: data.after }))));
  } catch (err) { out.replaceChildren(el("p", { class: "bad", role: "alert", text: err.data && err.data.problems ? err.data.problems.map(p => p.message + (p.hint ? ` (${p.hint})` : "")).join("; ") : err.message })); }
  document.getElementById("lookup").scrollIntoView({ block: "nearest" });
}

// -- save -----------------------------------------------------------------------------------------------

function diffView(text) {
  return text.split("\n").map(line => el("span", { class: line.startsWith("@@") ? "hunk" : line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : null, text: line + "\n" }));
}

function openSave() {
  const dlg = document.getElementById("save-dialog");
  const moved = (S.impact.decisions || []).filter(d => d.changed > 0).map(d => el("li", { text: `${d.entity} ${d.decision}: ${d.changed_text} change` }));
  const failing = S.tests && S.tests.cases ? S.tests.cases.filter(c => !c.passed) : [];
  document.getElementById("save-problems").replaceChildren(
    el("p", { text: moved.length ? "What the change does:" : "Nobody is decided otherwise." }), moved.length ? el("ul", {}, moved) : null,
    failing.length ? el("p", { class: "bad", text: `${failing.length} test case${failing.length > 1 ? "s" : ""} will fail after saving (kam test, and CI where it runs it): ${failing.map(c => c.name).join("; ")}` }) : null);
  document.getElementById("save-diff").replaceChildren(...diffView(S.impact.diff));
  document.getElementById("save-result").replaceChildren();
  document.getElementById("save-go").disabled = false;
  dlg.showModal();
}

async function doSave() {
  const out = document.getElementById("save-result");
  const commit = document.getElementById("save-commit").checked;
  document.getElementById("save-go").disabled = true;
  try {
    const data = await api("/api/save", { edits: S.edits, loaded: S.state.files, commit,
      branch: document.getElementById("save-branch").value, message: document.getElementById("save-message").value });
    S.state.files = data.files;
    S.edits = [];
    S.selected = null;
    out.replaceChildren(el("p", { class: "ok", text: data.saved.length ? `Saved ${data.saved.join(", ")}.` : "Nothing to save: the files already say this." }),
      data.commit ? el("p", { class: "ok", text: `Committed on the new branch ${data.commit.branch} (${data.commit.commit.slice(0, 10)}); nothing was pushed.` }) : null,
      data.commit_error ? el("p", { class: "bad", role: "alert", text: `Saved, but not committed: ${data.commit_error}` }) : null);
    await reload();
  } catch (err) {
    const probs = err.data && err.data.problems ? err.data.problems : [];
    const lines = probs.length ? probs.map(p => p.hint ? `${p.message} (${p.hint})` : p.message) : [err.message];
    out.replaceChildren(el("p", { class: "bad", role: "alert", text: "Not saved." }), el("ul", {}, lines.map(t => el("li", { text: t }))));
    document.getElementById("save-go").disabled = err.status === 409;
  }
}

async function reload() {
  S.state = await api("/api/state");
  S.policies = S.state.policies;
  await evaluate(true);
}

async function start() {
  if (!TOKEN) { document.getElementById("policy").replaceChildren(el("p", { class: "bad", text: "Open the address kam studio printed (it ends with ?token=…)." })); return; }
  try {
    S.state = await api("/api/state");
  } catch (err) { status(err.message, "bad"); return; }
  S.policies = S.state.policies;
  document.getElementById("where").textContent = S.state.folder;
  const wanted = S.policies.findIndex(p => "#" + p.file === location.hash);
  S.current = wanted >= 0 ? wanted : 0;
  document.getElementById("undo").addEventListener("click", () => { S.edits.pop(); S.selected = null; evaluate(true); });
  document.getElementById("discard").addEventListener("click", () => {
    if (!confirm("Discard every change you made on this page?")) return;
    S.edits = []; S.selected = null; evaluate(true);
  });
  window.addEventListener("beforeunload", ev => { if (S.edits.length) { ev.preventDefault(); ev.returnValue = ""; } });
  document.getElementById("review").addEventListener("click", openSave);
  document.getElementById("save-cancel").addEventListener("click", () => document.getElementById("save-dialog").close());
  document.getElementById("save-go").addEventListener("click", doSave);
  renderNav();
  await evaluate(true);
}

document.addEventListener("DOMContentLoaded", start);
