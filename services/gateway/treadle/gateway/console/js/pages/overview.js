// Overview: figures, charts from `trends`, the per-queue table, alerts.
// Everything is read again every few seconds.

import { gql } from "../api.js";
import { lineChart } from "../charts.js";
import { count, duration, el, fill, notice, percent, rate, stateBadge, table, time } from "../dom.js";

const REFRESH_MS = 5000;

const QUERY = `query Overview {
  overview {
    tasksByState { state count }
    throughputLastMinute throughputLastHour errorRate
    avgProcessingSeconds p95ProcessingSeconds activeReplicas finishedLastHour lastUpdated
  }
  queueStatsList {
    queue length scheduled running retrying maxConcurrent paused oldestEnqueuedAt
    totalEnqueued totalCompleted totalFailed totalDead totalCancelled
  }
  systemHealth { status checkedAt alerts { severity metric message queue replica value threshold time } }
  trends(granularity: HOUR) {
    buckets { start submitted completed failed dead avgDurationSeconds p95DurationSeconds }
  }
}`;

function figure(label, value, extra) {
  return el("div", { class: "figure" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value), extra ? el("div", { class: "muted" }, extra) : null);
}

function queueTable(rows) {
  const link = (q, state, text) => el("a", { href: `#/tasks?queue=${encodeURIComponent(q)}${state ? `&state=${state}` : ""}` }, text);
  return table(
    [
      { title: "Queue", cell: (r) => el("span", {}, link(r.queue, "", r.queue), r.paused ? el("span", { class: "tag" }, "paused") : null) },
      { title: "Ready", class: "num", cell: (r) => link(r.queue, "QUEUED", count(r.length)) },
      { title: "Scheduled", class: "num", cell: (r) => link(r.queue, "SCHEDULED", count(r.scheduled)) },
      { title: "Running", class: "num", cell: (r) => link(r.queue, "RUNNING", count(r.running)) },
      { title: "Retrying", class: "num", cell: (r) => link(r.queue, "RETRYING", count(r.retrying)) },
      { title: "Max concurrent", class: "num", cell: (r) => (r.maxConcurrent === null ? "no limit" : count(r.maxConcurrent)) },
      { title: "Oldest ready", cell: (r) => (r.oldestEnqueuedAt ? time(r.oldestEnqueuedAt) : "–") },
      { title: "Enqueued", class: "num", cell: (r) => count(r.totalEnqueued) },
      { title: "Completed", class: "num", cell: (r) => count(r.totalCompleted) },
      { title: "Failed attempts", class: "num", cell: (r) => count(r.totalFailed) },
      { title: "Dead", class: "num", cell: (r) => link(r.queue, "DEAD", count(r.totalDead)) },
      { title: "Cancelled", class: "num", cell: (r) => count(r.totalCancelled) },
    ],
    rows,
    { empty: "No queues yet: submit a task.", caption: "Queues now and over their lifetime" },
  );
}

function alerts(health) {
  if (!health.alerts.length) return notice("ok", `Healthy: no alert thresholds crossed (checked `, time(health.checkedAt), ").");
  return el(
    "ul",
    { class: "alerts" },
    health.alerts.map((a) => el("li", { class: `alert ${a.severity.toLowerCase()}` }, el("strong", {}, a.severity), " ", a.message, a.queue ? ` (queue ${a.queue})` : "", a.replica ? ` (replica ${a.replica})` : "", " ", time(a.time))),
  );
}

function series(buckets) {
  const x = buckets.map((b) => new Date(b.start).getTime() / 1000);
  const num = (v) => (v === null || v === undefined ? null : Number(v));
  return {
    throughput: [x, buckets.map((b) => num(b.completed)), buckets.map((b) => num(b.failed)), buckets.map((b) => num(b.dead))],
    failure: [x, buckets.map((b) => {
      const done = num(b.completed) + num(b.failed);
      return done ? num(b.failed) / done : null;
    })],
    latency: [x, buckets.map((b) => b.avgDurationSeconds), buckets.map((b) => b.p95DurationSeconds)],
  };
}

export async function render(main) {
  const data = await gql(QUERY);
  const figures = el("div", { class: "figures" });
  const health = el("section", { "aria-labelledby": "alerts-h" });
  const queues = el("section", { class: "scroll" });
  const charts = el("div", { class: "charts" });
  const boxes = [el("div", { class: "chart" }), el("div", { class: "chart" }), el("div", { class: "chart" })];
  charts.append(...boxes);
  fill(
    main,
    el("h1", {}, "Overview"),
    figures,
    el("h2", { id: "alerts-h" }, "Alerts"),
    health,
    el("h2", {}, "Last 24 hours (per hour)"),
    charts,
    el("h2", {}, "Queues"),
    queues,
  );

  const show = (d) => {
    const o = d.overview;
    const states = Object.fromEntries(o.tasksByState.map((s) => [s.state, s.count]));
    fill(
      figures,
      figure("Throughput", rate(o.throughputLastMinute), `last minute; ${rate(o.throughputLastHour)} last hour`),
      figure("Error rate", percent(o.errorRate), `${count(o.finishedLastHour)} finished last hour`),
      figure("Processing time", `${duration(o.avgProcessingSeconds)} avg`, `p95 ${duration(o.p95ProcessingSeconds)}`),
      figure("Replicas", count(o.activeReplicas), "alive"),
      el("div", { class: "figure states" }, el("div", { class: "label" }, "Tasks by state"), el("div", {}, o.tasksByState.filter((s) => Number(s.count) > 0 || ["QUEUED", "RUNNING", "DEAD"].includes(s.state)).map((s) => el("a", { class: "state-count", href: `#/tasks?state=${s.state}` }, stateBadge(s.state), " ", count(states[s.state]))))),
    );
    fill(health, el("p", {}, "Status: ", el("strong", { class: `status ${d.systemHealth.status.toLowerCase()}` }, d.systemHealth.status)), alerts(d.systemHealth));
    fill(queues, queueTable(d.queueStatsList));
  };
  show(data);

  const s = series(data.trends.buckets);
  const plots = [
    lineChart(boxes[0], { title: "Throughput (tasks per hour)", series: [{ label: "completed" }, { label: "failed attempts" }, { label: "dead" }], data: s.throughput, format: count }),
    lineChart(boxes[1], { title: "Failure rate (failed / all attempts)", series: [{ label: "failure rate" }], data: s.failure, format: percent }),
    lineChart(boxes[2], { title: "Processing time", series: [{ label: "average" }, { label: "p95" }], data: s.latency, format: duration }),
  ];

  let stopped = false;
  const timer = setInterval(async () => {
    try {
      const next = await gql(QUERY);
      if (stopped) return;
      show(next);
      const t = series(next.trends.buckets);
      plots[0].update(t.throughput);
      plots[1].update(t.failure);
      plots[2].update(t.latency);
    } catch {
      // The next refresh tries again; the page keeps the last figures.
    }
  }, REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
    plots.forEach((p) => p.destroy());
  };
}
