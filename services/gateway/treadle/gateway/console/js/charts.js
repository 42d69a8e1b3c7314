// Time-series charts (uPlot, vendored) that follow their container's width.

import uPlot from "../vendor/uPlot.esm.js";

const COLOURS = ["#2f7d32", "#c62828", "#6a1b9a", "#1565c0", "#ef6c00"];

/**
 * A line chart in `container`: `series` [{label, unit}], `data` [[x seconds...], [y...]...].
 * Returns {update(data), destroy()}.
 */
export function lineChart(container, { title, series, data, format }) {
  const opts = {
    title,
    width: Math.max(container.clientWidth, 280),
    height: 180,
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: COLOURS[i % COLOURS.length],
        width: 2,
        points: { show: true, size: 5 },
        value: (_, v) => (v === null || v === undefined ? "–" : format(v)),
        spanGaps: false,
      })),
    ],
    axes: [{}, { values: (_, ticks) => ticks.map(format), size: 70 }],
    scales: { y: { range: (_, min, max) => [0, Math.max(max, 1e-9) * 1.1] } },
    cursor: { drag: { x: false, y: false } },
  };
  const plot = new uPlot(opts, data, container);
  const resize = new ResizeObserver(() => {
    plot.setSize({ width: Math.max(container.clientWidth, 280), height: 180 });
  });
  resize.observe(container);
  return {
    update: (next) => plot.setData(next),
    destroy: () => {
      resize.disconnect();
      plot.destroy();
    },
  };
}
