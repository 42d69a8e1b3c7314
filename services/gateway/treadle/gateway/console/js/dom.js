// Building DOM nodes (text is always set as text, never parsed as HTML) and
// formatting numbers and times for people.

/** An element: el("a", {href: "#/x", class: "c"}, "text", child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

const numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const integers = new Intl.NumberFormat();

/** 12,345 (a count). */
export function count(n) {
  return n === null || n === undefined ? "–" : integers.format(Number(n));
}

/** A count with its unit: "1 task", "3 tasks". */
export function plural(n, unit) {
  return `${count(n)} ${unit}${Number(n) === 1 ? "" : "s"}`;
}

/** A duration in seconds: "850 ms", "4.2 s", "3 min", "2.5 h", "3 d". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Number(seconds);
  if (s < 1) return `${numbers.format(s * 1000)} ms`;
  if (s < 60) return `${numbers.format(s)} s`;
  if (s < 3600) return `${numbers.format(s / 60)} min`;
  if (s < 86400) return `${numbers.format(s / 3600)} h`;
  return `${numbers.format(s / 86400)} d`;
}

/** A fraction as a percentage: "2.5 %". */
export function percent(fraction) {
  return fraction === null || fraction === undefined ? "–" : `${numbers.format(fraction * 100)} %`;
}

/** A task rate: "12.3 tasks/s", or per minute when under one a second ("4 tasks/min"). */
export function rate(perSecond) {
  const r = Number(perSecond);
  return r > 0 && r < 1 ? `${numbers.format(r * 60)} tasks/min` : `${numbers.format(r)} tasks/s`;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** "3 minutes ago", "in 20 seconds". */
export function ago(iso, now = Date.now()) {
  const seconds = (new Date(iso).getTime() - now) / 1000;
  const size = Math.abs(seconds);
  if (size < 60) return relative.format(Math.round(seconds), "second");
  if (size < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (size < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  return relative.format(Math.round(seconds / 86400), "day");
}

/** A <time>: relative in the text, absolute in its title; kept current by `refreshTimes`. */
export function time(iso) {
  if (!iso) return el("span", { class: "muted" }, "–");
  return el("time", { datetime: iso, title: absolute.format(new Date(iso)) }, ago(iso));
}

/** Re-render the relative text of every <time> on the page. */
export function refreshTimes() {
  const now = Date.now();
  for (const node of document.querySelectorAll("time[datetime]")) {
    node.textContent = ago(node.getAttribute("datetime"), now);
  }
}

/** A task state as a coloured badge. */
export function stateBadge(state) {
  return el("span", { class: `state state-${state}`, "data-state": state }, state);
}

/** JSON shown as indented text. */
export function json(value) {
  return el("pre", { class: "json" }, value === null || value === undefined ? "null" : JSON.stringify(value, null, 2));
}

/** A message in a box: kind "error", "info" or "ok". */
export function notice(kind, ...text) {
  return el("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, ...text);
}

/** A table: columns [{title, cell: row => node, class}], rows. */
export function table(columns, rows, { empty = "Nothing here.", caption } = {}) {
  if (!rows.length) return el("p", { class: "muted empty" }, empty);
  return el(
    "table",
    {},
    caption ? el("caption", {}, caption) : null,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.class }, c.title)))),
    el("tbody", {}, rows.map((row) => el("tr", { "data-id": row.id ?? row.name ?? row.queue }, columns.map((c) => el("td", { class: c.class }, c.cell(row)))))),
  );
}
