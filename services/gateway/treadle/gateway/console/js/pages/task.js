// One task: its fields, payload, result, every failed attempt with its
// traceback, and a timeline; followed live until it finishes.

import { gql, subscribe } from "../api.js";
import { confirm } from "../confirm.js";
import { count, duration, el, fill, json, notice, stateBadge, time } from "../dom.js";

const FIELDS = `id name queue state payload result attempts maxAttempts priority runAt createdAt
  startedAt finishedAt idempotencyKey cancelRequested timeoutSeconds traceId
  retry { baseSeconds factor maxSeconds }
  errors { type message traceback attempt failedAt }`;

const QUERY = `query Task($id: ID!) { task(id: $id) { ${FIELDS} } }`;
const UPDATES = `subscription Task($id: ID!) { taskUpdates(id: $id) { ${FIELDS} } }`;

const WAITING = new Set(["QUEUED", "SCHEDULED", "RETRYING", "RUNNING"]);
const RETRYABLE = new Set(["DEAD", "CANCELLED"]);

/** What happened, in order: derived from the task's times and its errors. */
export function timeline(t) {
  const events = [{ at: t.createdAt, text: "submitted" }];
  if (new Date(t.runAt) - new Date(t.createdAt) > 1000 && !t.errors.length) {
    events.push({ at: t.runAt, text: "due to run" });
  }
  for (const e of t.errors) {
    if (e.failedAt) events.push({ at: e.failedAt, text: `attempt ${e.attempt} failed: ${e.type}`, kind: "failed" });
  }
  if (t.startedAt) events.push({ at: t.startedAt, text: `attempt ${t.attempts} started` });
  if (t.state === "RETRYING" && t.runAt) events.push({ at: t.runAt, text: "next attempt due" });
  if (t.finishedAt) events.push({ at: t.finishedAt, text: t.state.toLowerCase(), kind: t.state });
  return events.sort((a, b) => new Date(a.at) - new Date(b.at));
}

function details(t) {
  const row = (label, value) => [el("dt", {}, label), el("dd", {}, value)];
  return el(
    "dl",
    { class: "fields" },
    row("State", [stateBadge(t.state), t.cancelRequested ? el("span", { class: "tag" }, "cancel requested") : null]),
    row("Name", t.name),
    row("Queue", el("a", { href: `#/tasks?queue=${encodeURIComponent(t.queue)}` }, t.queue)),
    row("Attempts", `${count(t.attempts)} of ${count(t.maxAttempts)}`),
    row("Priority", count(t.priority)),
    row("Created", time(t.createdAt)),
    row("Run at", time(t.runAt)),
    row("Started", time(t.startedAt)),
    row("Finished", time(t.finishedAt)),
    row("Took", t.startedAt && t.finishedAt ? duration((new Date(t.finishedAt) - new Date(t.startedAt)) / 1000) : "–"),
    row("Time limit", t.timeoutSeconds ? duration(t.timeoutSeconds) : "none"),
    row("Retry backoff", `${duration(t.retry.baseSeconds)} × ${t.retry.factor}ⁿ, at most ${duration(t.retry.maxSeconds)}`),
    row("Idempotency key", t.idempotencyKey ?? "–"),
    row("Trace id", t.traceId ? el("code", { class: "trace" }, t.traceId) : "–"),
    row("Id", el("code", {}, t.id)),
  );
}

export async function render(main, params) {
  const id = params.get("id");
  const data = await gql(QUERY, { id });
  if (!data.task) {
    fill(main, el("h1", {}, "Task not found"), notice("error", `There is no task ${id}.`), el("p", {}, el("a", { href: "#/tasks" }, "All tasks")));
    return null;
  }
  const status = el("div", { role: "status", "aria-live": "polite" });
  const body = el("div");

  async function act(verb, mutation) {
    if (!(await confirm(`${verb} this task?`, `${verb} task ${id}.`, verb))) return;
    try {
      const reply = await gql(`mutation Act($id: ID!) { ${mutation}(id: $id) { ${FIELDS} } }`, { id });
      fill(status, notice("ok", `${verb}: done.`));
      draw(reply[mutation]);
      follow();
    } catch (err) {
      fill(status, notice("error", `${verb} failed: ${err.message}`));
    }
  }

  function draw(t) {
    fill(
      body,
      el("div", { class: "actions" },
        RETRYABLE.has(t.state) ? el("button", { type: "button", onclick: () => act("Retry", "retryTask") }, "Retry") : null,
        WAITING.has(t.state) ? el("button", { type: "button", onclick: () => act("Cancel", "cancelTask") }, "Cancel") : null),
      details(t),
      el("h2", {}, "Timeline"),
      el("ol", { class: "timeline" }, timeline(t).map((e) => el("li", { class: e.kind ? `event-${e.kind}` : null }, time(e.at), " ", e.text))),
      el("div", { class: "two" },
        el("section", {}, el("h2", {}, "Payload"), json(t.payload)),
        el("section", {}, el("h2", {}, "Result"), t.result === null ? el("p", { class: "muted" }, "none") : json(t.result))),
      el("h2", {}, `Errors (${count(t.errors.length)})`),
      t.errors.length
        ? el("ol", { class: "errors" }, t.errors.map((e) => el("li", {},
            el("p", {}, el("strong", {}, `Attempt ${e.attempt}: ${e.type}`), " ", e.message, " ", time(e.failedAt)),
            e.traceback ? el("details", {}, el("summary", {}, "Traceback"), el("pre", { class: "traceback" }, e.traceback)) : null)))
        : el("p", { class: "muted" }, "No failed attempts."),
    );
  }

  let stop = null;
  function follow() {
    stop?.();
    stop = subscribe(UPDATES, { id }, { next: (d) => draw(d.taskUpdates), error: () => {} });
  }

  fill(main, el("h1", {}, "Task ", el("code", {}, id.slice(0, 8)), " ", data.task.name), status, body);
  draw(data.task);
  if (WAITING.has(data.task.state)) follow();
  return () => stop?.();
}
