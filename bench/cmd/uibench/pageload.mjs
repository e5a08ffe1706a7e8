// Loads the web console's fleet page ROUNDS times in Debian's chromium
// (Playwright) and prints, per load, the milliseconds from the start of
// the navigation to the fleet table showing VMS rows (performance.now()
// in the page, whose origin is the navigation's start): the page, its
// modules, the API check and the first event of the stream.
import { createRequire } from "node:module";

const { UI_URL, UI_TOKEN, UI_NODE_MODULES, VMS, ROUNDS } = process.env;
const require = createRequire(`${UI_NODE_MODULES}/package.json`);
const { chromium } = require("playwright-core");
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const login = await ctx.request.post(`${UI_URL}/ui/login`, { data: { token: UI_TOKEN }, headers: { Origin: UI_URL } });
  if (login.status() !== 204) throw new Error(`login: ${login.status()}`);
  for (let i = 0; i < Number(ROUNDS); i++) {
    const page = await ctx.newPage();
    await page.goto(`${UI_URL}/ui/`);
    await page.waitForFunction((n) => document.querySelectorAll("#fleet tbody tr").length === n, Number(VMS), { polling: "raf", timeout: 60000 });
    console.log(await page.evaluate(() => performance.now()));
    await page.close();
  }
} finally {
  await browser.close();
}
