// The microvm web console: the fleet, one VM (spec, console log, serial
// console), deploys and the host, from the daemon's own API. Pages are
// built with DOM calls and textContent only (nothing the daemon says is
// parsed as HTML). The fleet updates from the daemon's event stream.

import { series, graph, last } from "./graphs.js";

const main = document.getElementById("main");
const live = document.getElementById("live");
const logout = document.getElementById("logout");
const ACTION = { "X-Microvm-Console": "1" };

// el builds an element: attributes (on* as listeners), then children
// (strings become text).
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// render makes nodes the page's content (null and undefined left out).
function render(...nodes) {
  main.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
}

class Unauthorized extends Error {}

// api calls the daemon; a 401 shows the login form.
async function api(method, path, body) {
  const opts = { method, headers: method === "GET" ? {} : { ...ACTION }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  if (res.status === 401) throw new Unauthorized();
  const text = await res.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch { /* plain text */ }
  if (!res.ok) throw new Error((data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

// fmtBytes shows a byte count; sizes the daemon spells ("512M") stay.
// table is a scrollable table: headers, then rows (a <tr> as is, else an
// array of cells, each a <td> as is or the content of one); empty is said
// instead of an empty table.
function table(id, headers, rows, empty) {
  if (!rows.length && empty) return el("p", { class: "muted" }, empty);
  const cell = (c) => (c instanceof HTMLTableCellElement ? c : el("td", {}, c));
  return el("div", { class: "scroll" }, el("table", { id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r) => (r instanceof HTMLTableRowElement ? r : el("tr", {}, r.map(cell)))))));
}

function fmtBytes(n) {
  if (typeof n === "string") return n;
  if (!n) return "0";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${u[i]}`;
}

function fmtDuration(s) {
  if (s === undefined || s === null || isNaN(s)) return "";
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function fmtRate(n) {
  return `${fmtBytes(n)}/s`;
}

// usageGraphs are a VM's graphs of the last hour (its samples): host
// memory, CPU, network; big ones on its page, small ones in the fleet.
function usageGraphs(name, samples, big) {
  const s = series(samples || []);
  const size = big ? { width: 360, height: 90 } : { width: 96, height: 24 };
  const mem = last(s.mem), cpu = last(s.cpu), rx = last(s.rx), tx = last(s.tx);
  const g = (key, label, lines, opts = {}) => el("figure", { class: "usage" }, graph(key, label, lines, { ...size, ...opts }),
    big ? el("figcaption", {}, label) : null);
  return [
    g("memory", `${name} host memory, last hour: ${fmtBytes(mem)} now (guest ${fmtBytes(last(s.guest))})`,
      [{ points: s.mem, class: "line-total" }, { points: s.guest, class: "line-guest" }]),
    g("cpu", `${name} CPU, last hour: ${cpu.toFixed(0)}% of a CPU now`, [{ points: s.cpu, class: "line-cpu" }], { max: Math.max(100, ...s.cpu.map((p) => p.v)) }),
    g("network", `${name} network, last hour: ${fmtRate(rx)} in, ${fmtRate(tx)} out now`,
      [{ points: s.rx, class: "line-rx" }, { points: s.tx, class: "line-tx" }]),
  ];
}

// samples are the fleet's last hour of samples, refreshed while a page
// shows them.
let samples = {};

async function refreshSamples() {
  try { samples = (await api("GET", "/v1/samples")) || {}; } catch { /* kept as they were */ }
}

function uptime(vm) {
  if (vm.state !== "running" || !vm.startedAt) return "";
  return fmtDuration((Date.now() - Date.parse(vm.startedAt)) / 1000);
}

function stateCell(state) {
  return el("span", { class: `state state-${state}`, "data-state": state }, state);
}

function showError(where, err) {
  if (err instanceof Unauthorized) return loginPage();
  where.replaceChildren(el("p", { class: "error", role: "alert" }, String(err.message || err)));
}

// ---- login

function loginPage(message) {
  closeStreams();
  logout.hidden = true;
  const input = el("input", { type: "password", id: "token", name: "token", autocomplete: "current-password", required: true, "aria-describedby": "token-help" });
  const msg = el("p", { class: "error", role: "alert" }, message || "");
  const form = el("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    const res = await fetch("/ui/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: input.value }) });
    if (res.ok) { route(); return; }
    msg.textContent = (await res.text()).trim() || "login failed";
  } },
    el("label", { for: "token" }, "The daemon's API token"),
    input,
    el("small", { id: "token-help", class: "muted" }, "The contents of the daemon's --api-token-file."),
    el("button", { class: "primary", type: "submit" }, "Log in"),
    msg);
  render(el("h1", {}, "Log in"), form);
  input.focus();
}

logout.addEventListener("click", async () => {
  await fetch("/ui/logout", { method: "POST" });
  loginPage();
});

// ---- the fleet

let events = null;
let ticker = null;
let consoleSocket = null;

function closeStreams() {
  if (events) { events.close(); events = null; }
  if (ticker) { clearInterval(ticker); ticker = null; }
  if (consoleSocket) { consoleSocket.close(); consoleSocket = null; }
  live.textContent = "";
}

async function vmAction(name, verb, button) {
  button.disabled = true;
  try {
    await api("POST", `/v1/vms/${encodeURIComponent(name)}/${verb}`);
  } catch (err) {
    if (err instanceof Unauthorized) return loginPage();
    alert(`${verb} ${name}: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

function actionButtons(vm) {
  const running = vm.state === "running" || vm.state === "starting";
  const b = (verb, label, enabled) => el("button", { type: "button", "data-action": verb, "aria-label": `${label} ${vm.name}`, disabled: !enabled || undefined,
    onclick: (e) => vmAction(vm.name, verb, e.currentTarget) }, label);
  return el("div", { class: "actions" }, b("start", "Start", !running), b("stop", "Stop", running), b("restart", "Restart", vm.state === "running"));
}

function fleetRow(vm) {
  const s = vm.spec || {};
  const net = s.net || {};
  // data-label names the cell where a phone shows a row as a card.
  return el("tr", { "data-vm": vm.name },
    el("td", { class: "vm-name" }, el("a", { href: `#/vm/${encodeURIComponent(vm.name)}` }, vm.name), " ", el("span", { class: `state state-${vm.state}` }, vm.state)),
    el("td", { class: "hide-small" }, stateCell(vm.state)),
    el("td", { "data-label": "Address" }, net.address || ""),
    el("td", { class: "hide-small" }, s.hypervisor || ""),
    el("td", { class: "hide-small" }, s.vcpu || ""),
    el("td", { class: "hide-small" }, s.memory ? fmtBytes(s.memory) : ""),
    el("td", { class: "hide-small usage-cell", "data-usage": vm.name }, usageGraphs(vm.name, samples[vm.name], false)),
    el("td", { "data-uptime": vm.startedAt || "", "data-label": "Up" }, uptime(vm)),
    el("td", { class: "hide-small" }, vm.bootSeconds ? `${vm.bootSeconds.toFixed(1)}s` : ""),
    el("td", { class: "hide-small" }, vm.restarts ?? 0),
    el("td", { class: "wrap hide-small" }, vm.lastExit || vm.failure || ""),
    el("td", {}, actionButtons(vm)));
}

function fleetPage() {
  const body = el("tbody");
  const table = el("table", { id: "fleet" },
    el("thead", {}, el("tr", {}, ["VM", "State", "Address"].map((h) => el("th", { scope: "col" }, h)),
      ["Hypervisor", "vCPUs", "Memory", "Host memory · CPU · network (1 h)"].map((h) => el("th", { scope: "col", class: "hide-small" }, h)),
      el("th", { scope: "col" }, "Uptime"),
      ["Boot", "Restarts", "Last exit"].map((h) => el("th", { scope: "col", class: "hide-small" }, h)),
      el("th", { scope: "col" }, "Actions"))),
    body);
  const status = el("p", { class: "muted" }, "Connecting…");
  render(el("h1", {}, "Fleet"), status, el("div", { class: "scroll" }, table));
  const drawUsage = () => {
    for (const td of body.querySelectorAll("td[data-usage]")) td.replaceChildren(...usageGraphs(td.dataset.usage, samples[td.dataset.usage], false));
  };
  refreshSamples().then(drawUsage);
  let tick = 0;
  events = new EventSource("/v1/events");
  events.addEventListener("vms", (e) => {
    const vms = JSON.parse(e.data);
    status.textContent = `${vms.length} VMs, ${vms.filter((v) => v.state === "running").length} running`;
    live.textContent = "live";
    body.replaceChildren(...vms.map(fleetRow));
  });
  events.onerror = async () => {
    live.textContent = "reconnecting…";
    try { await api("GET", "/v1/vms"); } catch (err) { if (err instanceof Unauthorized) loginPage(); }
  };
  ticker = setInterval(() => {
    if (++tick % 10 === 0) refreshSamples().then(drawUsage);
    for (const td of body.querySelectorAll("td[data-uptime]")) {
      const since = td.getAttribute("data-uptime");
      const row = td.closest("tr");
      const state = row && row.querySelector("[data-state]");
      td.textContent = since && state && state.dataset.state === "running" ? fmtDuration((Date.now() - Date.parse(since)) / 1000) : "";
    }
  }, 1000);
}

// ---- one VM

async function vmPage(name) {
  render(el("h1", {}, name), el("p", { class: "muted" }, "Loading…"));
  let vm, snaps = [], log = "", history = [];
  try {
    vm = await api("GET", `/v1/vms/${encodeURIComponent(name)}`);
    [snaps, log, history] = await Promise.all([
      api("GET", `/v1/vms/${encodeURIComponent(name)}/snapshots`).catch(() => []),
      api("GET", `/v1/vms/${encodeURIComponent(name)}/logs`).catch((e) => `(${e.message})`),
      api("GET", `/v1/vms/${encodeURIComponent(name)}/samples`).catch(() => []),
    ]);
  } catch (err) {
    return showError(main, err);
  }
  const spec = vm.spec || {};
  const volumes = spec.volumes || [];
  const term = el("div", { id: "terminal", role: "region", "aria-label": `serial console of ${name}` });
  const consoleStatus = el("p", { class: "muted", role: "status" });
  const logPre = el("pre", { id: "console-log", tabindex: "0" }, typeof log === "string" ? log.slice(-64 * 1024) : "");
  const hm = vm.hostMemory;
  const usage = el("div", { class: "graphs", id: "usage" }, usageGraphs(name, history, true));
  render(
    el("p", {}, el("a", { href: "#/" }, "← Fleet")),
    el("h1", {}, name, " ", stateCell(vm.state)),
    el("div", { class: "cards" },
      card("Address", (spec.net || {}).address), card("Hypervisor", spec.hypervisor), card("vCPUs", spec.vcpu),
      card("Memory", spec.memory ? fmtBytes(spec.memory) : ""), card("Image", spec.image), card("Restarts", vm.restarts ?? 0),
      card("Boot", vm.bootSeconds ? `${vm.bootSeconds.toFixed(1)}s` : ""), card("Last exit", vm.lastExit || vm.failure || ""),
      card("Host memory", hm ? `${fmtBytes(hm.totalBytes)}: guest ${fmtBytes(hm.guestBytes)}, hypervisor ${fmtBytes(hm.hypervisorBytes)}, helpers ${fmtBytes(hm.helperBytes)}${hm.balloonBytes ? `; ${fmtBytes(hm.balloonBytes)} taken back` : ""}` : "")),
    actionButtons(vm),
    el("h2", {}, "The last hour"), usage,
    el("h2", {}, "Serial console"), consoleStatus, term,
    el("h2", {}, "Console log"), logPre,
    el("h2", {}, "Volumes"),
    table(undefined, ["Name", "Mount point", "Size"], volumes.map((v) => [v.name, v.mountPoint, fmtBytes(v.size)]), "No volumes."),
    el("h2", {}, "Snapshots"),
    table(undefined, ["Name", "Volume", "Taken", "Size"], (snaps || []).map((s) => [s.name, s.volume, new Date(s.time).toLocaleString(), fmtBytes(s.size)]), "No snapshots."),
    el("h2", {}, "Applied spec"), el("pre", { id: "spec", tabindex: "0" }, JSON.stringify(spec, null, 2)));
  logPre.scrollTop = logPre.scrollHeight;
  ticker = setInterval(async () => {
    const h = await api("GET", `/v1/vms/${encodeURIComponent(name)}/samples`).catch(() => null);
    if (h) usage.replaceChildren(...usageGraphs(name, h, true));
  }, 10000);
  if (vm.state === "running") openConsole(name, term, consoleStatus);
  else consoleStatus.textContent = `The console opens when ${name} runs.`;
}

function card(label, value) {
  return el("div", { class: "card" }, el("b", {}, label), value === undefined || value === "" ? "—" : String(value));
}

async function openConsole(name, where, status) {
  const { Terminal } = await import("./vendor/xterm.mjs");
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
  term.open(where);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/v1/vms/${encodeURIComponent(name)}/console`);
  ws.binaryType = "arraybuffer";
  consoleSocket = ws;
  const enc = new TextEncoder();
  ws.onopen = () => { status.textContent = "Attached. Typing goes to the VM's serial console."; ws.send(enc.encode("\r")); term.focus(); };
  ws.onmessage = (e) => term.write(new Uint8Array(e.data));
  ws.onclose = () => { status.textContent = "The console is closed (another client may be attached, or the VM stopped)."; };
  term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
}

// ---- deploys

async function deploysPage() {
  render(el("h1", {}, "Deploys"), el("p", { class: "muted" }, "Loading…"));
  let st, history;
  try {
    [st, history] = await Promise.all([api("GET", "/v1/deploy"), api("GET", "/v1/deploy/history")]);
  } catch (err) {
    return showError(main, err);
  }
  const run = async (path, button) => {
    button.disabled = true;
    try { await api("POST", path); } catch (err) { if (err instanceof Unauthorized) return loginPage(); alert(err.message); }
    deploysPage();
  };
  const gens = (history || []).slice().sort((a, b) => b.number - a.number);
  const current = st.current ? st.current.number : 0;
  render(
    el("h1", {}, "Deploys"),
    el("div", { class: "cards" }, card("Branch", st.branch), card("Path", st.path), card("Current generation", current || "none"),
      card("Remote head", (st.remoteHead || "").slice(0, 12)), card("Last fetch", st.lastFetch ? new Date(st.lastFetch).toLocaleString() : ""),
      card("Deploys", st.suspended ? "suspended" : "active")),
    st.fetchError ? el("p", { class: "error" }, st.fetchError) : null,
    el("div", { class: "actions" },
      el("button", { type: "button", id: "suspend", onclick: (e) => run(st.suspended ? "/v1/deploy/resume" : "/v1/deploy/suspend", e.currentTarget) }, st.suspended ? "Resume deploys" : "Suspend deploys"),
      el("button", { type: "button", id: "trigger", onclick: (e) => run("/v1/deploy/trigger", e.currentTarget) }, "Fetch now")),
    el("h2", {}, "Generations"),
    generationsTable(gens, current, run));
}

function generationsTable(gens, current, run) {
  const row = (g) => el("tr", { "data-generation": g.number },
    el("td", {}, g.number, g.number === current ? " (current)" : ""),
    el("td", {}, el("code", {}, (g.commit.hash || "").slice(0, 12))),
    el("td", {}, g.commit.author || ""),
    el("td", { class: "wrap" }, (g.commit.message || "").split("\n")[0]),
    el("td", {}, g.signer ? `signed by ${g.signer}` : g.commit.signed ? "signed" : "unsigned"),
    el("td", { class: "wrap" }, el("span", { class: g.status === "succeeded" ? "pass" : g.status === "failed" ? "fail" : "skip" }, g.status),
      g.error ? ` — ${g.error}` : "", g.rolledBackTo ? ` (rolled back to ${g.rolledBackTo})` : "", g.manual ? " (by hand)" : ""),
    el("td", {}, g.started ? new Date(g.started).toLocaleString() : ""),
    el("td", {}, g.finished ? fmtDuration((Date.parse(g.finished) - Date.parse(g.started)) / 1000) : ""),
    el("td", {}, g.status === "succeeded" && g.number !== current
      ? el("button", { type: "button", "data-rollback": g.number, "aria-label": `Roll back to generation ${g.number}`,
        onclick: (e) => run(`/v1/deploy/rollback?generation=${g.number}`, e.currentTarget) }, "Roll back here")
      : null));
  return table("generations", ["#", "Commit", "Author", "Message", "Signature", "Result", "Started", "Took", ""], gens.map(row));
}

// ---- the host

async function hostPage() {
  render(el("h1", {}, "Host"), el("p", { class: "muted" }, "Loading…"));
  let h;
  try {
    h = await api("GET", "/v1/host");
  } catch (err) {
    return showError(main, err);
  }
  const links = (h.network && h.network.links) || [];
  const results = el("div", { id: "checks" }, el("p", { class: "muted" }, "The checks of microvm doctor and microvm verify run on demand (they log in to each VM)."));
  render(
    el("h1", {}, "Host"),
    el("div", { class: "cards" }, card("Uplink", h.network && h.network.uplink), card("Firewall in sync", h.network && h.network.inSync ? "yes" : "no")),
    el("h2", {}, "Bridges and TAPs"),
    table("links", ["Interface", "VM", "Type", "Up", "Bridge", "Addresses"], links.map((l) => [l.name, l.vm, l.type, l.up ? "up" : "down", l.master || "", (l.addrs || []).join(", ")])),
    el("h2", {}, "Images in the store"),
    table("images", ["Name", "Source", "Size"], h.images.map((i) => [i.name, el("td", { class: "wrap" }, i.source), fmtBytes(i.size)])),
    el("h2", {}, "Checks"),
    el("button", { type: "button", id: "run-checks", onclick: async (e) => {
      const button = e.currentTarget;
      button.disabled = true;
      results.replaceChildren(el("p", { class: "muted" }, "Running…"));
      try {
        const res = await api("POST", "/v1/host/checks");
        results.replaceChildren(table(undefined, ["Check", "Result", "Evidence or fix"],
          res.map((r) => [r.name, el("td", { class: r.status.toLowerCase() }, r.status), el("td", { class: "wrap" }, r.evidence)])));
      } catch (err) { showError(results, err); }
      button.disabled = false;
    } }, "Run doctor and verify"),
    results,
    el("h2", {}, "Firewall (as microvm render nftables prints it)"),
    el("pre", { id: "ruleset", tabindex: "0" }, h.firewall));
}

// ---- routing

async function route() {
  closeStreams();
  const hash = location.hash || "#/";
  const page = hash.startsWith("#/vm/") ? "vm" : hash === "#/deploys" ? "deploys" : hash === "#/host" ? "host" : "fleet";
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === (page === "vm" ? "fleet" : page)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    await api("GET", "/v1/vms");
  } catch (err) {
    if (err instanceof Unauthorized) return loginPage();
  }
  logout.hidden = false;
  if (page === "vm") return vmPage(decodeURIComponent(hash.slice(5)));
  if (page === "deploys") return deploysPage();
  if (page === "host") return hostPage();
  return fleetPage();
}

window.addEventListener("hashchange", route);
route();
