// cartwatch operator dashboard: plain JS against the worker's API, no build step.
// The bearer token (if the API wants one) is kept in sessionStorage for this tab only.
// Every filter lives in the page's URL (history.replaceState), so a view can be shared.
"use strict";

const API = "/cartwatch/api";
const PAGE = 25;
const REFRESH_MS = 10_000;
const state = {
  view: "carts", offset: 0, total: 0, query: new URLSearchParams(),
  // Next and Prev page by the API's cursors (`next`), so a deep page costs the database no
  // more than the first: `after` loaded the page shown, `cursors` those before it, `next` the
  // one after. A page opened by its URL (offset only) starts from the offset.
  after: null, cursors: [], next: null,
  logOffset: 0, logTotal: 0, logQuery: new URLSearchParams(),
  open: new Set(), // abandonment ids whose rows are expanded; kept across refreshes
  answers: new Map(), // abandonment id -> [text, class] of its last "Remind now" answer
  refreshes: 0,
};
const $ = (selector) => document.querySelector(selector);

function token() { return sessionStorage.getItem("cartwatch-token") || ""; }

async function api(path, params, method = "GET") {
  const url = `${API}${path}${params && String(params) ? "?" + params : ""}`;
  const sent = token();
  const headers = sent ? { Authorization: `Bearer ${sent}` } : {};
  const response = await fetch(url, { headers, method });
  if (response.status === 401) {
    // a refusal of a request sent before the token was entered must not ask again
    if (sent === token()) $("#token-form").hidden = false;
    throw new Error("The API needs a token: enter it at the top right.");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error || `${response.status} ${response.statusText}`);
  }
  return response;
}

function text(tag, content, className) {
  const node = document.createElement(tag);
  node.textContent = content ?? "";
  if (className) node.className = className;
  return node;
}

// -- time: the browser's zone, labelled in the header ----------------------------------------

const pad2 = (n) => String(n).padStart(2, "0");
function epochText(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
         `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}
function zoneLabel() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  const minutes = -new Date().getTimezoneOffset();
  const sign = minutes < 0 ? "−" : "+";
  const offset = `UTC${sign}${pad2(Math.floor(Math.abs(minutes) / 60))}:${pad2(Math.abs(minutes) % 60)}`;
  return `Times: ${zone} (${offset})`;
}
function money(amount, currency) { return amount == null ? "" : `${amount} ${currency || ""}`.trim(); }

function nextDay(date) {
  const day = new Date(`${date}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() + 1);
  return day.toISOString().slice(0, 10);
}

// -- URL state ---------------------------------------------------------------------------------

function formParams(form, strip) {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (!String(value).trim()) continue;
    const key = strip ? name.replace(/^log_/, "") : name;
    params.set(key, key === "until" ? nextDay(value) : String(value).trim());
  }
  const store = $("#store-select").value;
  if (store) params.set("store", store);
  return params;
}

function writeUrl() {
  const url = new URLSearchParams();
  url.set("view", state.view);
  if ($("#store-select").value) url.set("store", $("#store-select").value);
  if ($("#period").value !== "day") url.set("period", $("#period").value);
  for (const form of [$("#filters"), $("#log-filters")]) {
    for (const [name, value] of new FormData(form)) {
      if (String(value).trim()) url.set(name, String(value).trim());
    }
  }
  if (state.offset) url.set("offset", state.offset);
  if (state.logOffset) url.set("log_offset", state.logOffset);
  history.replaceState(null, "", `${location.pathname}?${url}`);
}

function readUrl() {
  const url = new URLSearchParams(location.search);
  state.view = url.get("view") === "log" ? "log" : "carts";
  state.offset = Number(url.get("offset")) || 0;
  state.logOffset = Number(url.get("log_offset")) || 0;
  if (url.get("period")) $("#period").value = url.get("period");
  for (const form of [$("#filters"), $("#log-filters")]) {
    for (const field of form.elements) {
      if (field.name && url.has(field.name)) field.value = url.get(field.name);
    }
  }
  return url.get("store") || "";
}

function showError(error) {
  const box = $("#error");
  box.hidden = !error;
  box.textContent = error ? error.message : "";
}

// -- stores ------------------------------------------------------------------------------------

async function loadStores(wanted) {
  const select = $("#store-select");
  const current = wanted ?? select.value;
  try {
    const { stores } = await (await api("/stores/")).json();
    const names = new Set(stores);
    if (current) names.add(current);
    select.replaceChildren(text("option", "all stores"),
                           ...[...names].sort().map((name) => text("option", name)));
    select.firstChild.value = "";
    select.value = current;
  } catch (error) {  // keep the URL's store selected until the list can be read
    if (current && ![...select.options].some((option) => option.value === current)) {
      select.append(text("option", current));
    }
    select.value = current;
    showError(error);
  }
}

// -- carts -------------------------------------------------------------------------------------

async function loadCarts() {
  const params = new URLSearchParams(state.query);
  params.set("limit", PAGE);
  if (state.after) params.set("after", state.after);
  else params.set("offset", state.offset);
  document.body.dataset.carts = "loading";
  try {
    const page = await (await api("/carts/", params)).json();
    state.total = page.total;
    state.totalExact = page.total_exact;
    state.next = page.next;
    renderCarts(page.carts);
    showError(null);
  } catch (error) {
    renderCarts([]);
    showError(error);
  }
  document.body.dataset.carts = "ready";
}

function remindersCell(cart) {
  const cell = document.createElement("td");
  cell.className = "reminders";
  const summary = cart.reminders || { counts: {} };
  const parts = Object.entries(summary.counts).map(([status, n]) => `${n} ${status}`);
  cell.append(text("span", parts.join(" · ") || "—"));
  if (summary.last_reason) cell.append(text("span", ` (${summary.last_reason})`, "muted"));
  if (summary.counts.sent) cell.title = "a reminder was sent";
  return cell;
}

function renderCarts(carts) {
  const body = $("#cart-table tbody");
  body.replaceChildren();
  for (const cart of carts) {
    const row = document.createElement("tr");
    row.className = "cart";
    row.dataset.id = cart.abandonment_id;
    const customer = cart.customer || {};
    const reminded = Boolean((cart.reminders || { counts: {} }).counts.sent);
    const id = text("td", cart.abandonment_id);
    if (reminded) {
      row.classList.add("reminded");
      id.prepend(text("span", "✉", "marker"));
      id.firstChild.title = "reminded";
    }
    row.append(text("td", "▸"), text("td", epochText(cart.abandoned_at)),
               text("td", cart.store_id, "store-id"), id,
               text("td", customer.name || customer.email || "—"),
               text("td", cart.item_count, "num"), text("td", money(cart.total, cart.currency), "num"));
    const statusCell = document.createElement("td");
    statusCell.append(text("span", cart.status, `status ${cart.status}`));
    row.append(statusCell, remindersCell(cart));
    const details = detailsRow(cart);
    const toggle = (open) => {
      details.hidden = !open;
      row.firstChild.textContent = open ? "▾" : "▸";
      if (open) { state.open.add(cart.abandonment_id); loadAttempts(cart, details); }
      else state.open.delete(cart.abandonment_id);
    };
    row.addEventListener("click", () => toggle(details.hidden));
    body.append(row, details);
    if (state.open.has(cart.abandonment_id)) toggle(true);
  }
  // Beyond 1,000 matches the API counts no further: "1,000+"; paging goes on while the API
  // gives a `next`.
  const last = state.offset + carts.length;
  const total = state.totalExact === false ? `${state.total.toLocaleString("en")}+` : `${state.total}`;
  $("#count").textContent = `${total} carts`;
  $("#page").textContent = state.total ? `${state.offset + 1}–${last} of ${total}` : "";
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = !state.next;
}

function detailsRow(cart) {
  const row = document.createElement("tr");
  row.className = "lines";
  row.hidden = true;
  const cell = document.createElement("td");
  cell.colSpan = 9;
  const table = document.createElement("table");
  for (const line of cart.lines) {
    const tr = document.createElement("tr");
    tr.append(text("td", line.sku), text("td", line.name), text("td", `× ${line.quantity}`),
              text("td", money(line.unit_price, cart.currency), "num"),
              text("td", money(line.line_total, cart.currency), "num"));
    table.append(tr);
  }
  const customer = cart.customer || {};
  const who = [customer.email, customer.phone].filter(Boolean).join(" · ");
  cell.append(table, text("div", who, "muted"));
  if (cart.order_id) cell.append(text("div", `Recovered by order ${cart.order_id}: ${money(cart.revenue, cart.revenue_currency)}`, "muted"));
  const attempts = text("ol", "", "attempts");
  const actions = document.createElement("div");
  actions.className = "actions";
  const remind = text("button", "Remind now", "remind");
  remind.type = "button";
  remind.disabled = cart.status !== "abandoned";
  const [said, how] = state.answers.get(cart.abandonment_id) || ["", ""];
  const answer = text("span", said, `remind-answer ${how}`.trim());
  remind.addEventListener("click", (event) => { event.stopPropagation(); remindNow(cart, answer); });
  actions.append(remind, answer);
  cell.append(text("h3", "Reminders"), attempts, actions);
  cell.addEventListener("click", (event) => event.stopPropagation());
  row.append(cell);
  return row;
}

async function loadAttempts(cart, details) {
  const list = details.querySelector(".attempts");
  try {
    const detail = await (await api(`/carts/${encodeURIComponent(cart.cart_id)}/`)).json();
    const mine = detail.abandonments.find((a) => a.abandonment_id === cart.abandonment_id);
    const entries = (mine ? mine.reminders : []).slice().sort((a, b) => b.at - a.at);
    list.replaceChildren(...entries.map((entry) => {
      const item = text("li", "");
      item.dataset.status = entry.status;
      item.append(text("span", entry.status, `status ${entry.status}`),
                  text("span", ` step ${entry.step ?? "—"} · ${entry.channel || "no channel"}` +
                               ` · ${epochText(entry.at)}`),
                  text("span", entry.reason || entry.error ? ` — ${entry.reason || entry.error}` : "", "muted"));
      return item;
    }));
    if (!entries.length) list.replaceChildren(text("li", "No reminder attempts yet.", "muted"));
  } catch (error) {
    list.replaceChildren(text("li", error.message, "error"));
  }
}

async function remindNow(cart, answer) {
  answer.textContent = "asking the notifier…";
  answer.className = "remind-answer";
  try {
    const response = await api(`/carts/${encodeURIComponent(cart.cart_id)}/remind/`, null, "POST");
    const body = await response.json();
    answer.textContent = `${response.status}: ${body.requested ? "requested" : ""} ${body.note || ""}`.trim();
    answer.classList.add("ok");
  } catch (error) {
    answer.textContent = error.message;
    answer.classList.add("error");
  }
  state.answers.set(cart.abandonment_id, [answer.textContent, answer.classList[1]]);
}

async function download(path, params, filename) {
  try {
    const blob = await (await api(path, params)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = filename;
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    showError(error);
  }
}

// -- operator notifications -------------------------------------------------------------------

async function loadNotices() {
  const params = new URLSearchParams();
  if ($("#store-select").value) params.set("store", $("#store-select").value);
  document.body.dataset.notices = "loading";
  try {
    const { notifications } = await (await api("/operator-notifications/", params)).json();
    $("#notice-list").replaceChildren(...notifications.map((note) => {
      const item = text("li", "");
      item.dataset.at = note.at;
      item.dataset.store = note.store_id;
      item.append(text("span", note.event, `status ${note.event}`),
                  text("b", ` ${note.store_id}`),
                  text("span", ` ${note.abandonment_id} · step ${note.step}` +
                               `${note.channel ? " · " + note.channel : ""}`),
                  text("div", `${epochText(note.at)}${note.detail ? " — " + note.detail : ""}`, "muted"));
      return item;
    }));
    $("#notice-count").textContent = notifications.length ? `${notifications.length} newest first` : "none";
  } catch (error) {
    showError(error);
  }
  document.body.dataset.notices = "ready";
}

// -- execution log ------------------------------------------------------------------------------

async function loadLog() {
  const params = new URLSearchParams(state.logQuery);
  params.set("limit", PAGE);
  params.set("offset", state.logOffset);
  document.body.dataset.log = "loading";
  try {
    const page = await (await api("/log/", params)).json();
    state.logTotal = page.total;
    $("#log-table tbody").replaceChildren(...page.attempts.map((entry) => {
      const row = document.createElement("tr");
      row.dataset.status = entry.status;
      row.dataset.store = entry.store_id || "";
      const status = document.createElement("td");
      status.append(text("span", entry.status, `status ${entry.status}`));
      row.append(text("td", epochText(entry.at)), text("td", entry.store_id),
                 text("td", entry.abandonment_id), text("td", entry.step, "num"),
                 text("td", entry.channel || "—"), status,
                 text("td", entry.reason || entry.error || "", "reason"),
                 text("td", entry.attempt, "num"));
      return row;
    }));
    const last = Math.min(state.logOffset + page.attempts.length, state.logTotal);
    $("#log-count").textContent = `${state.logTotal} attempts`;
    $("#log-page").textContent = state.logTotal ? `${state.logOffset + 1}–${last} of ${state.logTotal}` : "";
    $("#log-prev").disabled = state.logOffset === 0;
    $("#log-next").disabled = last >= state.logTotal;
    showError(null);
  } catch (error) {
    showError(error);
  }
  document.body.dataset.log = "ready";
}

// -- insights -----------------------------------------------------------------------------------

function byPeriod(buckets) {
  const periods = new Map();
  for (const bucket of buckets) {
    const sum = periods.get(bucket.period_start) || { period: bucket.period_start, created: 0,
      abandoned: 0, reminded: 0, recovered: 0, revenue: 0, currencies: new Set() };
    sum.created += bucket.carts_created;
    sum.abandoned += bucket.abandoned;
    sum.reminded += bucket.reminded;
    sum.recovered += bucket.recovered;
    for (const [currency, amount] of Object.entries(bucket.recovered_revenue)) {
      sum.revenue += Number(amount);
      sum.currencies.add(currency);
    }
    periods.set(bucket.period_start, sum);
  }
  return [...periods.values()].sort((a, b) => a.period.localeCompare(b.period));
}

function renderKpis(rows) {
  const total = (key) => rows.reduce((sum, row) => sum + row[key], 0);
  const rate = (part, whole) => (whole ? `${(100 * part / whole).toFixed(1)} %` : "—");
  const currencies = new Set(rows.flatMap((row) => [...row.currencies]));
  const figures = [
    ["Carts created", total("created")], ["Abandoned", total("abandoned")],
    ["Abandonment rate", rate(total("abandoned"), total("created"))],
    ["Reminded", total("reminded")], ["Recovered", total("recovered")],
    ["Recovery rate", rate(total("recovered"), total("abandoned"))],
    ["Recovered revenue", `${total("revenue").toFixed(2)} ${[...currencies].join("/")}`],
  ];
  $("#kpis").replaceChildren(...figures.map(([label, value]) => {
    const box = text("div", label, "kpi");
    box.prepend(text("b", value));
    return box;
  }));
}

const SVG = "http://www.w3.org/2000/svg";
function svgNode(tag, attributes, content) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (content != null) node.textContent = content;
  return node;
}

// Grouped bars: one group per period, one bar per series, each bar labelled with its value.
// Groups are at most 160 px wide and centred, so one day of data is a readable group, not a
// sliver at the left edge.
function barChart(svg, rows, series) {
  const width = svg.clientWidth || 480, height = svg.clientHeight || 180;
  const padX = 12, top = 34, bottom = 22;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const max = Math.max(1, ...rows.flatMap((row) => series.map(([key]) => row[key])));
  const inner = width - 2 * padX;
  const group = Math.min(160, inner / Math.max(rows.length, 1));
  const left = padX + (inner - group * rows.length) / 2;
  const bar = Math.min(56, Math.max(2, (group - 10) / series.length));
  const span = bar * series.length;  // the group's bars, centred in its slot
  const plot = height - top - bottom;
  svg.append(svgNode("line", { x1: padX, x2: width - padX, y1: height - bottom, y2: height - bottom,
                               stroke: "#d5d9e3" }));
  rows.forEach((row, index) => {
    const x0 = left + index * group + (group - span) / 2;
    series.forEach(([key, color], position) => {
      const h = plot * row[key] / max;
      const x = x0 + position * bar;
      const rect = svgNode("rect", { x, y: height - bottom - h, width: bar - 2, height: h,
                                     fill: color, "data-series": key });
      rect.append(svgNode("title", {}, `${row.period} ${key}: ${row[key]}`));
      svg.append(rect);
      if (bar >= 14) {
        const value = Number.isInteger(row[key]) ? row[key] : row[key].toFixed(2);
        svg.append(svgNode("text", { x: x + (bar - 2) / 2, y: height - bottom - h - 3,
                                     "text-anchor": "middle", class: "value" }, value));
      }
    });
    const label = rows.length > 8 ? row.period.slice(5) : row.period;
    svg.append(svgNode("text", { x: x0 + span / 2, y: height - 6, "text-anchor": "middle" }, label));
  });
  if (!rows.length) svg.append(svgNode("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no data"));
  let x = padX;
  for (const [key, color] of series) {  // legend in one line at the top
    svg.append(svgNode("rect", { x, y: 8, width: 10, height: 10, fill: color }));
    svg.append(svgNode("text", { x: x + 14, y: 17 }, key));
    x += 30 + key.length * 7;
  }
}

async function loadInsights() {
  const params = new URLSearchParams();
  params.set("period", $("#period").value);
  for (const name of ["store", "since", "until"]) {
    if (state.query.get(name)) params.set(name, state.query.get(name));
  }
  document.body.dataset.insights = "loading";
  try {
    const result = await (await api("/insights/", params)).json();
    const rows = byPeriod(result.buckets);
    renderKpis(rows);
    barChart($("#chart-carts"), rows, [["abandoned", "#d9822b"], ["reminded", "#8a63d2"],
                                       ["recovered", "#1f9d55"]]);
    barChart($("#chart-revenue"), rows, [["revenue", "#2f6fde"]]);
  } catch (error) {
    showError(error);
  }
  document.body.dataset.insights = "ready";
}

// -- wiring ----------------------------------------------------------------------------------------

function showView() {
  $("#view-carts").hidden = state.view !== "carts";
  $("#view-log").hidden = state.view !== "log";
  for (const tab of document.querySelectorAll(".tabs a")) {
    tab.classList.toggle("active", tab.dataset.view === state.view);
  }
  document.body.dataset.view = state.view;
}

// Loads what the current view shows; `keepPage` is false when filters changed.
function refresh(keepPage = true) {
  state.query = formParams($("#filters"), false);
  state.logQuery = formParams($("#log-filters"), true);
  if (!keepPage) { state.offset = 0; state.logOffset = 0; state.after = null; state.cursors = []; }
  writeUrl();
  $("#refreshed").textContent = `updated ${epochText(Date.now() / 1000).slice(11)}`;
  if (state.view === "log") return loadLog();
  return Promise.all([loadCarts(), loadInsights(), loadNotices()]);
}

function search(event) {
  if (event) event.preventDefault();
  refresh(false);
}

let timer = null;
function setAuto(on) {
  clearInterval(timer);
  timer = on ? setInterval(() => {
    if (document.hidden) return;
    state.refreshes += 1;
    document.body.dataset.refreshes = state.refreshes;
    loadStores();
    refresh(true);
  }, REFRESH_MS) : null;
  document.body.dataset.refresh = on ? "on" : "paused";
}

$("#filters").addEventListener("submit", search);
$("#log-filters").addEventListener("submit", search);
$("#export").addEventListener("click", () => download("/carts.csv", state.query, "abandoned-carts.csv"));
$("#log-export").addEventListener("click", () => download("/log.csv", state.logQuery, "execution-log.csv"));
$("#period").addEventListener("change", () => { writeUrl(); loadInsights(); });
$("#store-select").addEventListener("change", () => refresh(false));
$("#auto").addEventListener("change", () => setAuto($("#auto").checked));
$("#prev").addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE);
  state.after = state.cursors.length ? state.cursors.pop() : null;
  writeUrl(); loadCarts();
});
$("#next").addEventListener("click", () => {
  if (!state.next) return;
  state.cursors.push(state.after);
  state.after = state.next;
  state.offset += PAGE;
  writeUrl(); loadCarts();
});
$("#log-prev").addEventListener("click", () => { state.logOffset = Math.max(0, state.logOffset - PAGE); writeUrl(); loadLog(); });
$("#log-next").addEventListener("click", () => { state.logOffset += PAGE; writeUrl(); loadLog(); });
for (const tab of document.querySelectorAll(".tabs a")) {
  tab.addEventListener("click", (event) => {
    event.preventDefault();
    state.view = tab.dataset.view;
    showView();
    refresh(true);
  });
}
$("#token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem("cartwatch-token", $("#token").value);
  $("#token-form").hidden = true;
  await loadStores();
  refresh(true);
});

$("#tz").textContent = zoneLabel();
(async () => {
  const store = readUrl();
  showView();
  await loadStores(store);
  refresh(true);
  setAuto($("#auto").checked);
})();
