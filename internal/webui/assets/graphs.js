// Graphs of the last hour of a VM's samples (GET /v1/samples): its host
// memory, its CPU use and its network, as SVG polylines built with DOM
// calls (no markup is parsed). Each graph says what it shows and its
// latest value in its accessible name.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

// series are the graphs a VM's samples make, each a list of {t, v}:
// memory in bytes (total and guest), CPU in percent of one CPU, network
// in bytes per second received and sent (rates between samples).
export function series(samples) {
  const mem = [], guest = [], cpu = [], rx = [], tx = [];
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    const t = Date.parse(s.time);
    mem.push({ t, v: s.guestBytes + s.hypervisorBytes + s.helperBytes });
    guest.push({ t, v: s.guestBytes });
    if (i === 0) continue;
    const p = samples[i - 1];
    const dt = (t - Date.parse(p.time)) / 1000;
    if (dt <= 0) continue;
    cpu.push({ t, v: Math.max(0, (s.cpuSeconds - p.cpuSeconds) / dt * 100) });
    rx.push({ t, v: Math.max(0, (s.receivedBytes - p.receivedBytes) / dt) });
    tx.push({ t, v: Math.max(0, (s.sentBytes - p.sentBytes) / dt) });
  }
  return { mem, guest, cpu, rx, tx };
}

// graph draws lines (each {points, class}) over the last hour in a box of
// width by height; label is its accessible name. The first line's scale
// is the graph's, from 0 to its largest value (or max, when given).
export function graph(name, label, lines, { width = 120, height = 28, max } = {}) {
  const now = Date.now();
  const hour = 3600 * 1000;
  const all = lines.flatMap((l) => l.points.map((p) => p.v));
  const top = max || Math.max(1, ...all);
  const e = svg("svg", { class: `graph graph-${name}`, viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label, "data-graph": name,
    "data-points": lines.length ? lines[0].points.length : 0 });
  const title = svg("title");
  title.textContent = label;
  e.append(title, svg("rect", { x: 0, y: 0, width, height, class: "graph-bg" }));
  for (const l of lines) {
    if (l.points.length < 1) continue;
    const pts = l.points.map((p) => {
      const x = Math.max(0, width - ((now - p.t) / hour) * width);
      const y = height - 1 - (Math.min(p.v, top) / top) * (height - 2);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    if (pts.length === 1) pts.push(`${width},${pts[0].split(",")[1]}`);
    e.append(svg("polyline", { points: pts.join(" "), class: l.class, fill: "none" }));
  }
  return e;
}

// last is a series' newest value (0 when it has none).
export function last(points) {
  return points.length ? points[points.length - 1].v : 0;
}
