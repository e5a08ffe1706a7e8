// The web console in a real browser: Debian's chromium driven by
// Playwright (playwright-core), against the daemon TestWebConsole runs
// (real VMs under TCG, a GitOps daemon with two generations). Each step
// prints "step: …"; a failure exits 1 saying which. Screenshots go to
// SCREENSHOTS.
//
// Environment: UI_URL (the console's base URL on its loopback listener),
// UI_TLS_URL (on the TLS API listener, a self-signed certificate), UI_TOKEN, UI_NODE_MODULES
// (where npm installed playwright-core), FIRST_COMMIT (generation 1's
// commit, the rollback's target), SCREENSHOTS.
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";

const { UI_URL, UI_TLS_URL, UI_TOKEN, UI_NODE_MODULES, FIRST_COMMIT, SCREENSHOTS } = process.env;
const require = createRequire(`${UI_NODE_MODULES}/package.json`);
const { chromium } = require("playwright-core");

mkdirSync(SCREENSHOTS, { recursive: true });
const step = (s) => console.log(`step: ${s}`);
const fail = (s) => { throw new Error(s); };

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // The browser logs every 4xx it gets (the 401 before the login among
  // them); what matters is an error of the page's own code.
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text()); });

  step("a request without the token is refused");
  for (const [method, path] of [["GET", "/v1/vms"], ["GET", "/v1/events"], ["POST", "/v1/vms/a/stop"]]) {
    const r = await page.request.fetch(`${UI_URL}${path}`, { method, timeout: 10000 });
    if (r.status() !== 401) fail(`${method} ${path} without the token: ${r.status()}`);
  }

  step("a wrong token does not log in");
  await page.goto(`${UI_URL}/ui/`);
  await page.fill("#token", "not-the-token-at-all");
  await page.click("button[type=submit]");
  await page.waitForSelector("form.login [role=alert]:has-text('not the daemon')", { timeout: 10000 });

  step("log in; the fleet lists the VMs with their states");
  await page.fill("#token", UI_TOKEN);
  await page.click("button[type=submit]");
  for (const vm of ["a", "b"]) {
    await page.waitForSelector(`#fleet tr[data-vm="${vm}"] [data-state="running"]`, { timeout: 120000 });
  }
  step("the fleet draws each running VM's last hour: host memory, CPU, network");
  // The daemon samples every 2 s here: a few samples make a line.
  const points = (sel) => page.locator(sel).getAttribute("data-points").then(Number).catch(() => 0);
  for (const vm of ["a", "b"]) {
    for (const g of ["memory", "cpu", "network"]) {
      const sel = `#fleet tr[data-vm="${vm}"] svg[data-graph="${g}"]`;
      const end = Date.now() + 60000;
      while ((await points(sel)) < 2) {
        if (Date.now() > end) fail(`${vm}'s ${g} graph has fewer than 2 points`);
        await page.waitForTimeout(500);
      }
      if (!(await page.locator(`${sel} polyline`).count())) fail(`${vm}'s ${g} graph draws no line`);
    }
    const label = await page.locator(`#fleet tr[data-vm="${vm}"] svg[data-graph="memory"]`).getAttribute("aria-label");
    if (!/host memory, last hour: \d+(\.\d)? MiB now \(guest \d+(\.\d)? MiB\)/.test(label)) fail(`${vm}'s memory graph says ${label}`);
  }
  await page.screenshot({ path: `${SCREENSHOTS}/fleet.png` });

  step("the console page shows the guest's shell prompt and a typed command's output");
  await page.click(`#fleet tr[data-vm="a"] a`);
  await page.waitForSelector("#terminal .xterm-rows", { timeout: 30000 });
  await page.waitForSelector("text=Attached.", { timeout: 30000 });
  for (const g of ["memory", "cpu", "network"]) {
    if ((await points(`#usage svg[data-graph="${g}"]`)) < 2) fail(`a's page has no ${g} graph of its samples`);
  }
  const hostMem = await page.locator(".card:has-text('Host memory')").innerText();
  if (!/guest \d+(\.\d)? MiB, hypervisor \d+(\.\d)? MiB, helpers/.test(hostMem)) fail(`a's host memory card: ${hostMem}`);
  const rows = page.locator("#terminal .xterm-rows");
  const until = async (what, ok, ms) => {
    const end = Date.now() + ms;
    for (;;) {
      const text = await rows.innerText();
      if (ok(text)) return text;
      if (Date.now() > end) fail(`${what}; the terminal shows:\n${text}`);
      await page.waitForTimeout(250);
    }
  };
  await until("no shell prompt", (t) => /[#$] *$/m.test(t), 60000);
  await page.locator("#terminal").click();
  await page.keyboard.type("echo console-$((6*7))-ok\n");
  await until("no output of the typed command", (t) => t.includes("console-42-ok"), 30000);
  await page.screenshot({ path: `${SCREENSHOTS}/console.png`, fullPage: false });

  step("a rollback from the deploys page takes effect");
  await page.click("a[data-nav=deploys]");
  await page.waitForSelector("#generations button[data-rollback='1']", { timeout: 30000 });
  await page.click("#generations button[data-rollback='1']");
  await until2(page, "the rollback", async () => {
    const cur = page.locator("#generations tr", { hasText: "(current)" });
    return (await cur.count()) === 1 && (await cur.innerText()).includes(FIRST_COMMIT.slice(0, 12));
  }, 180000);
  await page.screenshot({ path: `${SCREENSHOTS}/deploys.png`, fullPage: true });

  step("stopping b from the fleet page stops it, and its row changes without a reload");
  await page.click("a[data-nav=fleet]");
  await page.waitForSelector(`#fleet tr[data-vm="b"] [data-state="running"]`, { timeout: 180000 });
  await page.evaluate(() => { window.__notReloaded = true; });
  await page.click(`#fleet tr[data-vm="b"] button[data-action="stop"]`);
  await page.waitForSelector(`#fleet tr[data-vm="b"] [data-state="stopped"]`, { timeout: 60000 });
  if (!(await page.evaluate(() => window.__notReloaded === true))) fail("the page reloaded");
  await page.screenshot({ path: `${SCREENSHOTS}/fleet-b-stopped.png` });

  step("the host page shows the bridges, the images, the firewall, and doctor's and verify's checks");
  await page.click("a[data-nav=host]");
  await page.waitForSelector("#links td:has-text('br-a')", { timeout: 30000 });
  await page.waitForSelector("#images td:has-text('base')", { timeout: 30000 });
  await page.waitForSelector("#ruleset:has-text('table inet microvm')", { timeout: 30000 });
  await page.click("#run-checks");
  await page.waitForSelector("#checks td.pass", { timeout: 120000 });
  const checks = await page.locator("#checks").innerText();
  if (!/^kvm\t/m.test(checks) || !/^bridge br-a\tPASS/m.test(checks)) {
    fail(`the checks lack doctor's kvm or verify's bridge br-a: ${checks}`);
  }
  await page.screenshot({ path: `${SCREENSHOTS}/host.png`, fullPage: true });

  step("on a phone's screen the fleet and its actions fit");
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  await p2.goto(`${UI_URL}/ui/`);
  await p2.fill("#token", UI_TOKEN);
  await p2.click("button[type=submit]");
  await p2.waitForSelector(`#fleet tr[data-vm="a"] td.vm-name .state-running`, { timeout: 60000 });
  const box = await p2.locator(`#fleet tr[data-vm="a"] button[data-action="stop"]`).boundingBox();
  if (!box || box.x + box.width > 390) fail(`a's stop button is off the phone's screen: ${JSON.stringify(box)}`);
  await p2.screenshot({ path: `${SCREENSHOTS}/phone.png` });

  step("on the TLS API listener the console works and its session cookie is Secure");
  const tls = await browser.newContext({ ignoreHTTPSErrors: true });
  const p3 = await tls.newPage();
  p3.on("pageerror", (e) => errors.push(String(e)));
  await p3.goto(`${UI_TLS_URL}/`);
  await p3.fill("#token", UI_TOKEN);
  await p3.click("button[type=submit]");
  await p3.waitForSelector(`#fleet tr[data-vm="a"] [data-state="running"]`, { timeout: 60000 });
  const cookies = await tls.cookies();
  if (cookies.length !== 1 || !cookies[0].secure || !cookies[0].httpOnly || cookies[0].sameSite !== "Strict") fail(`the session cookie over TLS: ${JSON.stringify(cookies)}`);
  const csp = (await p3.request.get(`${UI_TLS_URL}/ui/`)).headers()["content-security-policy"] || "";
  if (!csp.includes("script-src 'self'") || !csp.includes("frame-ancestors 'none'")) fail(`CSP: ${csp}`);

  if (errors.length) fail(`errors in the page: ${errors.join("; ")}`);
  console.log("ok");
} finally {
  await browser.close();
}

async function until2(page, what, ok, ms) {
  const end = Date.now() + ms;
  for (;;) {
    if (await ok()) return;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await page.waitForTimeout(500);
  }
}
