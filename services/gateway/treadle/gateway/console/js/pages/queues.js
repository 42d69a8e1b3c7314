// Queues: pause and resume, and edit concurrency, time limit and retry policy.

import { gql } from "../api.js";
import { confirm } from "../confirm.js";
import { count, duration, el, fill, notice, table, time } from "../dom.js";

const QUEUE = `name paused maxConcurrent maxAttempts timeoutSeconds updatedAt
  retry { baseSeconds factor maxSeconds }`;
const QUERY = `query Queues {
  queues { ${QUEUE} }
  queueStatsList { queue length scheduled running retrying }
}`;

function number(name, label, value, { step = "any", min = 0, hint } = {}) {
  return el("label", {}, label, " ", el("input", { name, type: "number", step, min, value: value ?? "", size: 6 }), hint ? el("span", { class: "hint" }, ` ${hint}`) : null);
}

export async function render(main) {
  const status = el("div", { role: "status", "aria-live": "polite" });
  const list = el("div", { class: "scroll" });
  const editor = el("div");
  fill(main, el("h1", {}, "Queues"), status, list, editor);

  async function load() {
    const data = await gql(QUERY);
    const stats = Object.fromEntries(data.queueStatsList.map((s) => [s.queue, s]));
    fill(list, table(
      [
        { title: "Queue", cell: (q) => el("a", { href: `#/tasks?queue=${encodeURIComponent(q.name)}` }, q.name) },
        { title: "State", cell: (q) => el("span", { class: q.paused ? "tag paused" : "tag" }, q.paused ? "paused" : "running") },
        { title: "Ready", class: "num", cell: (q) => count(stats[q.name]?.length ?? 0) },
        { title: "Running", class: "num", cell: (q) => count(stats[q.name]?.running ?? 0) },
        { title: "Max concurrent", class: "num", cell: (q) => (q.maxConcurrent === null ? "no limit" : count(q.maxConcurrent)) },
        { title: "Max attempts", class: "num", cell: (q) => count(q.maxAttempts) },
        { title: "Time limit", class: "num", cell: (q) => (q.timeoutSeconds ? duration(q.timeoutSeconds) : "none") },
        { title: "Retry backoff", cell: (q) => `${duration(q.retry.baseSeconds)} × ${q.retry.factor}ⁿ ≤ ${duration(q.retry.maxSeconds)}` },
        { title: "Changed", cell: (q) => time(q.updatedAt) },
        {
          title: "Actions",
          cell: (q) => el("span", { class: "actions" },
            el("button", { type: "button", "data-action": q.paused ? "resume" : "pause", onclick: () => toggle(q) }, q.paused ? "Resume" : "Pause"),
            el("button", { type: "button", "data-action": "edit", onclick: () => edit(q) }, "Edit")),
        },
      ],
      data.queues,
      { empty: "No queues yet: a queue appears when a task is submitted to it or it is configured." },
    ));
  }

  async function toggle(q) {
    const verb = q.paused ? "resume" : "pause";
    if (!q.paused && !(await confirm(`Pause ${q.name}?`, `Queue ${q.name} will accept tasks but start none until resumed.`, "Pause"))) return;
    try {
      await gql(`mutation Toggle($name: String!) { ${verb}Queue(name: $name) { name paused } }`, { name: q.name });
      fill(status, notice("ok", `Queue ${q.name} ${q.paused ? "resumed" : "paused"}.`));
      await load();
    } catch (err) {
      fill(status, notice("error", `Could not ${verb} ${q.name}: ${err.message}`));
    }
  }

  function edit(q) {
    const onsubmit = async (event) => {
      event.preventDefault();
      const f = new FormData(event.target);
      const num = (name) => (f.get(name) === "" ? null : Number(f.get(name)));
      const input = {
        name: q.name,
        maxConcurrent: num("maxConcurrent") ?? 0,
        maxAttempts: num("maxAttempts"),
        timeoutSeconds: num("timeoutSeconds") ?? 0,
        retry: { baseSeconds: num("baseSeconds"), factor: num("factor"), maxSeconds: num("maxSeconds") },
      };
      try {
        await gql(`mutation Update($input: UpdateQueueInput!) { updateQueue(input: $input) { name } }`, { input });
        fill(status, notice("ok", `Queue ${q.name} saved.`));
        fill(editor);
        await load();
      } catch (err) {
        fill(status, notice("error", `Could not save ${q.name}: ${err.message}`));
      }
    };
    const form = el(
      "form",
      { class: "editor", onsubmit, "aria-label": `Edit queue ${q.name}` },
      el("h2", {}, `Edit ${q.name}`),
      number("maxConcurrent", "Max concurrent", q.maxConcurrent, { step: 1, hint: "empty or 0: no limit" }),
      number("maxAttempts", "Max attempts", q.maxAttempts, { step: 1, min: 1 }),
      number("timeoutSeconds", "Time limit (s)", q.timeoutSeconds, { hint: "empty or 0: none" }),
      el("fieldset", {}, el("legend", {}, "Retry backoff: base × factorⁿ, at most max"),
        number("baseSeconds", "Base (s)", q.retry.baseSeconds),
        number("factor", "Factor", q.retry.factor, { min: 1 }),
        number("maxSeconds", "Max (s)", q.retry.maxSeconds)),
      el("div", { class: "buttons" },
        el("button", { type: "button", onclick: () => fill(editor) }, "Cancel"),
        el("button", { type: "submit", class: "primary" }, "Save")),
    );
    fill(editor, form);
    form.querySelector("input").focus();
  }

  await load();
  return null;
}
