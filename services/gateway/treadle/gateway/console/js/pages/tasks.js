// Tasks: every task, filtered; select some to retry or cancel them.

import { taskList } from "../tasklist.js";

export function render(main, params) {
  return taskList(main, params, { title: "Tasks", base: "tasks", actions: ["retry", "cancel"] });
}
