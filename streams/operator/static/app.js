// cartwatch operator dashboard: plain JS against the worker's API, no build step.
// The bearer token (if the API wants one) is kept in sessionStorage for this tab only.
"use strict";

const API = "/cartwatch/api";
const PAGE = 25;
const state = { offset: 0, total: 0, query: new URLSearchParams() };
const $ = (selector) => document.querySelector(selector);

function token() { return sessionStorage.getItem("cartwatch-token") || ""; }

async function api(path, params) {
  const url = `${API}${path}${params && String(params) ? "?" + params : ""}`;
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const response = await fetch(url, { headers });
  if (response.status === 401) {
    $("#token-form").hidden = false;
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

function when(iso) { return iso ? iso.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "") : ""; }
function epochText(seconds) { return seconds ? when(new Date(seconds * 1000).toISOString()) : ""; }
function money(amount, currency) { return amount == null ? "" : `${amount} ${currency || ""}`.trim(); }

function nextDay(date) {
  const day = new Date(`${date}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() + 1);
  return day.toISOString().slice(0, 10);
}

function filterParams() {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData($("#filters"))) {
    if (!String(value).trim()) continue;
    params.set(name, name === "until" ? nextDay(value) : String(value).trim());
  }
  return params;
}

function showError(error) {
  const box = $("#error");
  box.hidden = !error;
  box.textContent = error ? error.message : "";
}

async function loadCarts() {
  const params = new URLSearchParams(state.query);
  params.set("limit", PAGE);
  params.set("offset", state.offset);
  document.body.dataset.carts = "loading";
  try {
    const page = await (await api("/carts/", params)).json();
    state.total = page.total;
    renderCarts(page.carts);
    showError(null);
  } catch (error) {
    renderCarts([]);
    showError(error);
  }
  document.body.dataset.carts = "ready";
}

function renderCarts(carts) {
  const body = $("#cart-table tbody");
  body.replaceChildren();
  for (const cart of carts) {
    const row = document.createElement("tr");
    row.className = "cart";
    row.dataset.id = cart.abandonment_id;
    const customer = cart.customer || {};
    const status = text("span", cart.status, `status ${cart.status}`);
    row.append(text("td", "▸"), text("td", epochText(cart.abandoned_at)),
               text("td", cart.store_id), text("td", cart.abandonment_id),
               text("td", customer.name || customer.email || "—"),
               text("td", cart.item_count, "num"), text("td", money(cart.total, cart.currency), "num"));
    const statusCell = document.createElement("td");
    statusCell.append(status);
    row.append(statusCell);
    const lines = linesRow(cart);
    row.addEventListener("click", () => {
      lines.hidden = !lines.hidden;
      row.firstChild.textContent = lines.hidden ? "▸" : "▾";
    });
    body.append(row, lines);
  }
  const last = Math.min(state.offset + carts.length, state.total);
  $("#count").textContent = `${state.total} carts`;
  $("#page").textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}` : "";
  $("#prev").disabled = state.offset === 0;
  $("#next").disabled = last >= state.total;
}

function linesRow(cart) {
  const row = document.createElement("tr");
  row.className = "lines";
  row.hidden = true;
  const cell = document.createElement("td");
  cell.colSpan = 8;
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
  row.append(cell);
  return row;
}

async function exportCsv() {
  try {
    const blob = await (await api("/carts.csv", state.query)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "abandoned-carts.csv";
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    showError(error);
  }
}

// -- insights ------------------------------------------------------------------------------

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

// Grouped bars: one group per period, one bar per series.
function barChart(svg, rows, series) {
  const width = svg.clientWidth || 480, height = svg.clientHeight || 180, pad = 24;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const top = Math.max(1, ...rows.flatMap((row) => series.map(([key]) => row[key])));
  const group = (width - 2 * pad) / Math.max(rows.length, 1);
  const bar = Math.min(36, Math.max(2, (group - 6) / series.length));
  rows.forEach((row, index) => {
    series.forEach(([key, color], position) => {
      const h = (height - 2 * pad) * row[key] / top;
      const x = pad + index * group + 3 + position * bar;
      svg.append(svgNode("rect", { x, y: height - pad - h, width: bar - 1, height: h,
                                   fill: color, "data-series": key },
                         null));
      svg.lastChild.append(svgNode("title", {}, `${row.period} ${key}: ${row[key]}`));
    });
    svg.append(svgNode("text", { x: pad + index * group + 3, y: height - 8 }, row.period.slice(5)));
  });
  svg.append(svgNode("text", { x: 2, y: pad - 8 }, `max ${Number(top.toFixed(2))}`));
  series.forEach(([key, color], position) => {
    svg.append(svgNode("rect", { x: width - 110, y: 6 + position * 14, width: 10, height: 10, fill: color }));
    svg.append(svgNode("text", { x: width - 96, y: 15 + position * 14 }, key));
  });
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

// -- wiring ----------------------------------------------------------------------------------

function search(event) {
  if (event) event.preventDefault();
  state.query = filterParams();
  state.offset = 0;
  loadCarts();
  loadInsights();
}

$("#filters").addEventListener("submit", search);
$("#export").addEventListener("click", exportCsv);
$("#period").addEventListener("change", loadInsights);
$("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadCarts(); });
$("#next").addEventListener("click", () => { state.offset += PAGE; loadCarts(); });
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("cartwatch-token", $("#token").value);
  $("#token-form").hidden = true;
  search();
});
search();
