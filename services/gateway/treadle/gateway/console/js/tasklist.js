// A page of tasks with filters, cursor paging both ways, live states and bulk
// actions: the Tasks page and the Dead letters page are two uses of it.

import { gql, subscribe } from "./api.js";
import { confirm } from "./confirm.js";
import { count, duration, el, fill, notice, plural, stateBadge, table, time } from "./dom.js";

export const STATES = ["QUEUED", "SCHEDULED", "RUNNING", "RETRYING", "SUCCEEDED", "DEAD", "CANCELLED"];
const FINISHED = new Set(["SUCCEEDED", "DEAD", "CANCELLED"]);
const PAGE_SIZES = [20, 50, 100, 200];
const PAGE_SIZE = 50;

// The page size is a literal, not a variable: the gateway's cost estimate
// counts a variable page size as the largest one allowed.
function query(backward, size) {
  const page = backward ? `last: ${size}, before: $cursor` : `first: ${size}, after: $cursor`;
  return `query Tasks($queue: String, $states: [TaskState!], $name: String,
      $createdAfter: DateTime, $createdBefore: DateTime, $idempotencyKey: String, $cursor: String) {
    tasks(queue: $queue, states: $states, name: $name, createdAfter: $createdAfter,
          createdBefore: $createdBefore, idempotencyKey: $idempotencyKey, ${page}) {
      nodes { id name queue state attempts maxAttempts createdAt startedAt finishedAt error { type message } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
    queues { name }
  }`;
}

const UPDATES = `subscription Updates($id: ID!) {
  taskUpdates(id: $id) { id state attempts startedAt finishedAt error { type message } }
}`;

const ACTIONS = {
  retry: { mutation: "retryTasks", verb: "Retry", done: "retried", applies: "DEAD or CANCELLED" },
  cancel: { mutation: "cancelTasks", verb: "Cancel", done: "cancelled", applies: "waiting or running" },
  purge: { mutation: "purgeTasks", verb: "Delete", done: "deleted", applies: "finished" },
};

/** The `datetime-local` value of an ISO time, in the browser's zone, and back. */
function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}
function fromLocal(value) {
  return value ? new Date(value).toISOString() : "";
}

/** The filters a URL's parameters name, as GraphQL variables. */
function variables(params, fixedStates) {
  const states = fixedStates ?? params.getAll("state").filter((s) => STATES.includes(s));
  const v = {
    queue: params.get("queue") || null,
    states: states.length ? states : null,
    name: params.get("name") || null,
    createdAfter: params.get("since") || null,
    createdBefore: params.get("until") || null,
    idempotencyKey: params.get("key") || null,
  };
  v.cursor = params.get("before") || params.get("after") || null;
  return v;
}

/** The TaskSelection of every task the filters match (null: the filters say
 *  more than a selection can: an idempotency key). */
function selectionOf(vars) {
  if (vars.idempotencyKey) return null;
  const selection = {};
  for (const name of ["queue", "states", "name", "createdAfter", "createdBefore"]) {
    if (vars[name]) selection[name] = vars[name];
  }
  return selection;
}

function filterForm(params, queues, { base, fixedStates, size }) {
  const onsubmit = (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const next = new URLSearchParams();
    for (const [name, value] of form) {
      if (!value || (name === "size" && Number(value) === PAGE_SIZE)) continue;
      next.append(name, ["since", "until"].includes(name) ? fromLocal(value) : value);
    }
    const id = next.get("id");
    if (id) {
      window.location.hash = `#/task/${encodeURIComponent(id)}`;
      return;
    }
    window.location.hash = `#/${base}${next.size ? `?${next}` : ""}`;
  };
  const state = params.get("state") ?? "";
  return el(
    "form",
    { class: "filters", onsubmit, role: "search" },
    el("label", {}, "Queue ", el("select", { name: "queue" }, el("option", { value: "" }, "any"), queues.map((q) => el("option", { value: q.name, selected: q.name === params.get("queue") }, q.name)))),
    fixedStates ? null : el("label", {}, "State ", el("select", { name: "state" }, el("option", { value: "" }, "any"), STATES.map((s) => el("option", { value: s, selected: s === state }, s)))),
    el("label", {}, "Name ", el("input", { name: "name", value: params.get("name") ?? "", size: 12 })),
    el("label", {}, "Created after ", el("input", { name: "since", type: "datetime-local", value: localInput(params.get("since")) })),
    el("label", {}, "before ", el("input", { name: "until", type: "datetime-local", value: localInput(params.get("until")) })),
    el("label", {}, "Idempotency key ", el("input", { name: "key", value: params.get("key") ?? "", size: 12 })),
    el("label", {}, "Task id ", el("input", { name: "id", size: 14, placeholder: "go to a task" })),
    el("label", {}, "Per page ", el("select", { name: "size" }, [...new Set([...PAGE_SIZES, size])].sort((a, b) => a - b).map((n) => el("option", { value: n, selected: n === size }, n)))),
    el("button", { type: "submit", class: "primary" }, "Apply"),
    el("a", { href: `#/${base}`, class: "reset" }, "Reset"),
  );
}

/**
 * Render the list into `main`. `options`: {title, base (the page's path),
 * fixedStates (states the page always shows), actions (["retry", ...]), intro}.
 */
export async function taskList(main, params, options) {
  const { title, base, fixedStates = null, actions = [], intro = null, allMatching = false } = options;
  const vars = variables(params, fixedStates);
  const size = Math.min(Math.max(Number.parseInt(params.get("size"), 10) || PAGE_SIZE, 1), 200);
  const QUERY = query(Boolean(params.get("before")), size);
  const data = await gql(QUERY, vars);
  const page = data.tasks;
  const rows = page.nodes;
  const selected = new Set();
  const status = el("div", { class: "status-line", role: "status", "aria-live": "polite" });

  const link = (cursor, direction) => {
    const next = new URLSearchParams(params);
    next.delete("after");
    next.delete("before");
    next.delete("id");
    next.set(direction, cursor);
    return `#/${base}?${next}`;
  };

  const bulkButtons = actions.map((name) =>
    el("button", { type: "button", "data-action": name, disabled: true, onclick: () => bulk(name, [...selected]) }, `${ACTIONS[name].verb} selected`),
  );
  const matching = allMatching ? selectionOf(vars) : null;
  const allButtons = matching
    ? actions.map((name) =>
        el("button", { type: "button", "data-action": `${name}-all`, onclick: () => bulkAll(name, matching) }, `${ACTIONS[name].verb} all matching…`),
      )
    : [];
  const counter = el("span", { class: "muted" }, "none selected");
  const onSelect = () => {
    counter.textContent = selected.size ? `${plural(selected.size, "task")} selected` : "none selected";
    for (const b of bulkButtons) b.disabled = selected.size === 0;
    all.checked = rows.length > 0 && selected.size === rows.length;
    all.indeterminate = selected.size > 0 && selected.size < rows.length;
  };
  const all = el("input", {
    type: "checkbox",
    "aria-label": "Select every task on this page",
    onchange: (e) => {
      for (const box of main.querySelectorAll("input.pick")) {
        box.checked = e.target.checked;
        if (box.checked) selected.add(box.value);
        else selected.delete(box.value);
      }
      onSelect();
    },
  });

  async function bulk(name, ids) {
    const action = ACTIONS[name];
    const ok = await confirm(
      `${action.verb} ${plural(ids.length, "task")}?`,
      `${action.verb} the ${plural(ids.length, "selected task")}. Only ${action.applies} tasks change; the others are left as they are.`,
    );
    if (!ok) return;
    try {
      const reply = await gql(`mutation Bulk($selection: TaskSelection!) { ${action.mutation}(selection: $selection) { affected ids more } }`, { selection: { ids } });
      const result = reply[action.mutation];
      fill(status, notice("ok", `${plural(result.affected, "task")} ${action.done}${ids.length > result.affected ? ` (${count(ids.length - result.affected)} left as they were)` : ""}.`));
      selected.clear();
      onSelect();
      await refresh();
    } catch (err) {
      fill(status, notice("error", `${action.verb} failed: ${err.message}`));
    }
  }

  // Every task the filters match, however many pages: counted first for the
  // confirmation, then done by the server in batches until none is left.
  async function bulkAll(name, selection) {
    const action = ACTIONS[name];
    let total;
    try {
      total = (await gql(`query Count($selection: TaskSelection!) { taskCount(selection: $selection) }`, { selection })).taskCount;
    } catch (err) {
      fill(status, notice("error", `Could not count the tasks: ${err.message}`));
      return;
    }
    if (!total) {
      fill(status, notice("info", "No task matches the filters."));
      return;
    }
    const ok = await confirm(
      `${action.verb} all ${plural(total, "matching task")}?`,
      `${action.verb} every task the filters match (${plural(total, "task")} now), in batches on the server. Only ${action.applies} tasks change.`,
    );
    if (!ok) return;
    let done = 0;
    try {
      for (;;) {
        const reply = await gql(`mutation Bulk($selection: TaskSelection!) { ${action.mutation}(selection: $selection) { affected more } }`, { selection: { ...selection, limit: 500 } });
        const result = reply[action.mutation];
        done += result.affected;
        fill(status, notice("info", `${count(done)} of about ${count(total)} ${action.done}…`));
        if (!result.more || result.affected === 0) break;
      }
      fill(status, notice("ok", `${plural(done, "task")} ${action.done}.`));
      await refresh();
    } catch (err) {
      fill(status, notice("error", `${action.verb} stopped after ${count(done)}: ${err.message}`));
    }
  }

  const columns = [
    ...(actions.length ? [{ title: all, class: "pick", cell: (t) => el("input", { type: "checkbox", class: "pick", value: t.id, "aria-label": `Select task ${t.id}`, onchange: (e) => { if (e.target.checked) selected.add(t.id); else selected.delete(t.id); onSelect(); } }) }] : []),
    { title: "Task", cell: (t) => el("a", { href: `#/task/${encodeURIComponent(t.id)}`, class: "mono" }, t.id.slice(0, 8)) },
    { title: "Name", cell: (t) => t.name },
    { title: "Queue", cell: (t) => el("a", { href: `#/${base}?queue=${encodeURIComponent(t.queue)}` }, t.queue) },
    { title: "State", cell: (t) => el("span", { class: "state-cell" }, stateBadge(t.state)) },
    { title: "Attempts", class: "num", cell: (t) => el("span", { class: "attempts" }, `${t.attempts} / ${t.maxAttempts}`) },
    { title: "Created", cell: (t) => time(t.createdAt) },
    { title: "Took", class: "num", cell: (t) => el("span", { class: "took" }, t.startedAt && t.finishedAt ? duration((new Date(t.finishedAt) - new Date(t.startedAt)) / 1000) : "–") },
    { title: "Last error", cell: (t) => el("span", { class: "error-cell" }, t.error ? `${t.error.type}: ${t.error.message}` : "") },
  ];

  const listing = el("div", { class: "scroll" });
  // Coming back from an older page, newer ones exist, and the other way round.
  const info = page.pageInfo;
  const newer = (info.hasPreviousPage || Boolean(params.get("after"))) && info.startCursor;
  const older = (info.hasNextPage || Boolean(params.get("before"))) && info.endCursor;
  const nav = el(
    "nav",
    { class: "pager", "aria-label": "Pages of tasks" },
    newer ? el("a", { href: link(info.startCursor, "before"), rel: "prev" }, "← Newer") : el("span", { class: "muted" }, "← Newer"),
    el("span", { class: "muted" }, `${plural(rows.length, "task")} on this page`),
    older ? el("a", { href: link(info.endCursor, "after"), rel: "next" }, "Older →") : el("span", { class: "muted" }, "Older →"),
  );

  // Live: each unfinished task on the page follows its own taskUpdates
  // subscription (all over one WebSocket).
  const subscriptions = new Map();
  function follow() {
    for (const t of rows) {
      if (FINISHED.has(t.state) || subscriptions.has(t.id)) continue;
      subscriptions.set(
        t.id,
        subscribe(UPDATES, { id: t.id }, {
          next: ({ taskUpdates: u }) => {
            Object.assign(t, u);
            const row = listing.querySelector(`tr[data-id="${CSS.escape(t.id)}"]`);
            if (!row) return;
            fill(row.querySelector(".state-cell"), stateBadge(u.state));
            row.querySelector(".attempts").textContent = `${u.attempts} / ${t.maxAttempts}`;
            fill(row.querySelector(".error-cell"), u.error ? `${u.error.type}: ${u.error.message}` : "");
            if (u.startedAt && u.finishedAt) row.querySelector(".took").textContent = duration((new Date(u.finishedAt) - new Date(u.startedAt)) / 1000);
          },
          error: () => {},
        }),
      );
    }
  }
  function unfollow() {
    for (const stop of subscriptions.values()) stop();
    subscriptions.clear();
  }

  function draw() {
    fill(listing, table(columns, rows, { empty: "No tasks match." }));
    onSelect();
  }

  async function refresh() {
    const next = await gql(QUERY, vars);
    rows.splice(0, rows.length, ...next.tasks.nodes);
    unfollow();
    draw();
    follow();
  }

  fill(
    main,
    el("h1", {}, title),
    intro,
    filterForm(params, data.queues, { base, fixedStates, size }),
    actions.length ? el("div", { class: "bulk" }, counter, bulkButtons, allButtons) : null,
    status,
    listing,
    nav,
    el("p", {}, el("button", { type: "button", onclick: () => refresh().catch((err) => fill(status, notice("error", err.message))) }, "Refresh")),
  );
  draw();
  follow();
  return unfollow;
}
