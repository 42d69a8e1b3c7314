// Error patterns: the most frequent (type, message) of failed attempts.

import { gql } from "../api.js";
import { count, el, fill, table, time } from "../dom.js";

const QUERY = `query Errors($since: DateTime, $queue: String) {
  errorPatterns(since: $since, queue: $queue, limit: 50) { type message count queues lastSeenAt exampleTaskIds }
}`;

const RANGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };

export async function render(main, params) {
  const range = RANGES[params.get("range")] ? params.get("range") : "24h";
  const since = new Date(Date.now() - RANGES[range] * 1000).toISOString();
  const data = await gql(QUERY, { since, queue: params.get("queue") || null });
  fill(
    main,
    el("h1", {}, "Error patterns"),
    el("nav", { class: "ranges", "aria-label": "Time range" }, "Last: ", Object.keys(RANGES).map((r) => el("a", { href: `#/errors?range=${r}`, "aria-current": r === range ? "true" : null }, r))),
    el("div", { class: "scroll" }, table(
      [
        { title: "Count", class: "num", cell: (p) => count(p.count) },
        { title: "Error", cell: (p) => el("span", {}, el("strong", {}, p.type), ": ", p.message) },
        { title: "Queues", cell: (p) => p.queues.join(", ") },
        { title: "Last seen", cell: (p) => time(p.lastSeenAt) },
        { title: "Examples", cell: (p) => p.exampleTaskIds.map((id) => [el("a", { href: `#/task/${encodeURIComponent(id)}`, class: "mono" }, id.slice(0, 8)), " "]) },
      ],
      data.errorPatterns,
      { empty: `No failed attempts in the last ${range}.` },
    )),
  );
  return null;
}
