// Dead letters: tasks that used every attempt (DEAD); retry or delete them in bulk.

import { el } from "../dom.js";
import { taskList } from "../tasklist.js";

export function render(main, params) {
  return taskList(main, params, {
    title: "Dead letters",
    base: "dead",
    fixedStates: ["DEAD"],
    actions: ["retry", "purge"],
    allMatching: true,
    intro: el("p", { class: "muted" }, "Tasks that failed every attempt. Retrying one gives it fresh attempts; deleting one removes it for good."),
  });
}
