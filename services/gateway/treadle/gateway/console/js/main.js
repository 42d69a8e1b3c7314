// The console's router: the URL fragment names the page (#/tasks?queue=q),
// each page is a module whose `render(main, params)` fills <main> and returns
// a function that stops what it started (subscriptions, timers).

import { onSocketState, hasKey, forgetKey } from "./api.js";
import { el, fill, notice, refreshTimes } from "./dom.js";
import * as overview from "./pages/overview.js";
import * as tasks from "./pages/tasks.js";
import * as task from "./pages/task.js";
import * as dead from "./pages/dead.js";
import * as queues from "./pages/queues.js";
import * as schedules from "./pages/schedules.js";
import * as replicas from "./pages/replicas.js";
import * as errors from "./pages/errors.js";

const PAGES = {
  "": overview,
  tasks,
  task,
  dead,
  queues,
  schedules,
  replicas,
  errors,
};

const main = document.getElementById("main");
let stop = null;
let shown = 0;

function route() {
  const [path, query = ""] = window.location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...rest] = path.split("/");
  const params = new URLSearchParams(query);
  if (rest.length) params.set("id", decodeURIComponent(rest.join("/")));
  return { name, params };
}

async function show() {
  if (stop) {
    stop();
    stop = null;
  }
  const { name, params } = route();
  const page = PAGES[name];
  const which = ++shown;
  for (const link of document.querySelectorAll("header nav a")) {
    const target = link.getAttribute("href").replace(/^#\/?/, "");
    if (target === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!page) {
    fill(main, el("h1", {}, "Not found"), notice("error", `There is no page “${name}”.`));
    return;
  }
  main.setAttribute("aria-busy", "true");
  try {
    const cleanup = await page.render(main, params);
    if (which !== shown) cleanup?.();
    else stop = cleanup ?? null;
  } catch (err) {
    if (which === shown) fill(main, el("h1", {}, "Could not load this page"), notice("error", err.message));
  }
  if (which === shown) {
    main.removeAttribute("aria-busy");
    // Which view <main> shows now (the tests wait for it).
    main.dataset.shown = window.location.hash || "#/";
  }
}

// A page's links only change the fragment; a click on a link to the page
// already shown still renders it again (filters reset, figures re-read).
window.addEventListener("hashchange", show);

const live = document.getElementById("live");
onSocketState((state) => {
  live.textContent = state;
  live.dataset.state = state;
});

document.querySelector("header").append(
  el("button", {
    type: "button",
    class: "link forget-key",
    title: "Forget the API key kept in this tab",
    onclick: () => {
      forgetKey();
      show();
    },
  }, "Forget key"),
);
setInterval(() => {
  refreshTimes();
  document.querySelector(".forget-key").hidden = !hasKey();
}, 1000);
document.querySelector(".forget-key").hidden = !hasKey();

show();
