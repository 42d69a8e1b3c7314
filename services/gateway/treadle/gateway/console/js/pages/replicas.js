// Replicas: which scheduler processes are alive, their heartbeats and load.

import { gql } from "../api.js";
import { count, el, fill, table, time } from "../dom.js";

const QUERY = `query Replicas { replicas { id host pid version startedAt lastHeartbeatAt alive stoppedAt running } }`;

export async function render(main) {
  const list = el("div", { class: "scroll" });
  fill(main, el("h1", {}, "Replicas"), list);
  const load = async () => {
    const data = await gql(QUERY);
    fill(list, table(
      [
        { title: "Replica", cell: (r) => el("code", {}, r.id) },
        { title: "Alive", cell: (r) => el("span", { class: r.alive ? "tag ok" : "tag gone" }, r.alive ? "alive" : "gone") },
        { title: "Host", cell: (r) => `${r.host} (pid ${r.pid})` },
        { title: "Version", cell: (r) => r.version },
        { title: "Running", class: "num", cell: (r) => count(r.running) },
        { title: "Last heartbeat", cell: (r) => time(r.lastHeartbeatAt) },
        { title: "Started", cell: (r) => time(r.startedAt) },
        { title: "Stopped", cell: (r) => time(r.stoppedAt) },
      ],
      data.replicas,
      { empty: "No replica registered recently." },
    ));
  };
  await load();
  const timer = setInterval(() => load().catch(() => {}), 5000);
  return () => clearInterval(timer);
}
