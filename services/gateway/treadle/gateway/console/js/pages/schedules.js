// Schedules: create, pause, resume and delete cron schedules; when each fires next.

import { gql } from "../api.js";
import { confirm } from "../confirm.js";
import { el, fill, notice, table, time } from "../dom.js";

const QUERY = `query Schedules {
  schedules { name cron timezone paused nextFireAt lastFiredAt task { name queue payload } }
}`;

export async function render(main) {
  const status = el("div", { role: "status", "aria-live": "polite" });
  const list = el("div", { class: "scroll" });

  async function act(s, verb) {
    if (verb === "delete" && !(await confirm(`Delete ${s.name}?`, `Schedule ${s.name} stops for good; the tasks it submitted stay.`, "Delete"))) return;
    const mutation = `${verb}Schedule`;
    const fields = verb === "delete" ? "" : "{ name paused }";
    try {
      await gql(`mutation Act($name: String!) { ${mutation}(name: $name) ${fields} }`, { name: s.name });
      fill(status, notice("ok", `Schedule ${s.name}: ${verb}d.`));
      await load();
    } catch (err) {
      fill(status, notice("error", `Could not ${verb} ${s.name}: ${err.message}`));
    }
  }

  async function load() {
    const data = await gql(QUERY);
    fill(list, table(
      [
        { title: "Name", cell: (s) => s.name },
        { title: "Cron", cell: (s) => el("code", {}, s.cron) },
        { title: "Zone", cell: (s) => s.timezone },
        { title: "Task", cell: (s) => `${s.task.name} on ${s.task.queue || "its handler's queue"}` },
        { title: "Next fire", cell: (s) => (s.paused ? el("span", { class: "tag paused" }, "paused") : time(s.nextFireAt)) },
        { title: "Last fired", cell: (s) => time(s.lastFiredAt) },
        {
          title: "Actions",
          cell: (s) => el("span", { class: "actions" },
            el("button", { type: "button", onclick: () => act(s, s.paused ? "resume" : "pause") }, s.paused ? "Resume" : "Pause"),
            el("button", { type: "button", onclick: () => act(s, "delete") }, "Delete")),
        },
      ],
      data.schedules,
      { empty: "No schedules yet." },
    ));
  }

  const onsubmit = async (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    let payload = null;
    try {
      payload = f.get("payload") ? JSON.parse(f.get("payload")) : null;
    } catch (err) {
      fill(status, notice("error", `The payload is not JSON: ${err.message}`));
      return;
    }
    const input = {
      name: f.get("name"),
      cron: f.get("cron"),
      timezone: f.get("timezone") || "UTC",
      task: { name: f.get("task"), queue: f.get("queue") || null, payload },
    };
    try {
      await gql(`mutation Create($input: CreateScheduleInput!) { createSchedule(input: $input) { name } }`, { input });
      fill(status, notice("ok", `Schedule ${input.name} created.`));
      event.target.reset();
      await load();
    } catch (err) {
      fill(status, notice("error", `Could not create the schedule: ${err.message}`));
    }
  };
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const create = el(
    "form",
    { class: "editor", onsubmit, "aria-label": "Create a schedule" },
    el("h2", {}, "New schedule"),
    el("label", {}, "Name ", el("input", { name: "name", required: true, pattern: "[A-Za-z0-9._\\-]+" })),
    el("label", {}, "Cron ", el("input", { name: "cron", required: true, placeholder: "*/5 * * * *" })),
    el("label", {}, "Time zone ", el("input", { name: "timezone", value: zone })),
    el("label", {}, "Task name ", el("input", { name: "task", required: true })),
    el("label", {}, "Queue ", el("input", { name: "queue", placeholder: "the handler's" })),
    el("label", {}, "Payload (JSON) ", el("input", { name: "payload", placeholder: "{}" })),
    el("div", { class: "buttons" }, el("button", { type: "submit", class: "primary" }, "Create")),
  );
  fill(main, el("h1", {}, "Schedules"), status, list, create);
  await load();
  return null;
}
