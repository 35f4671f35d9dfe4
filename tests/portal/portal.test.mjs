// The portal in Debian's chromium, driven by playwright-core. Started by
// the end-to-end test portal_browser, which runs a fleet and passes what
// it set up in environment variables. Exits non-zero on the first failure.
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run through the portal_browser test)`);
  return value;
};
const BASE = env("BASE_URL");
const A = env("ENDPOINT_A");
const B = env("ENDPOINT_B");
const C = env("ENDPOINT_C");
const PARKED = env("PARKED_EVENT");
const SHOTS = env("SCREENSHOTS");
const XSS = env("XSS");
mkdirSync(SHOTS, { recursive: true });

let step = "start";
let current = null; // the page in use, for the report of a failure
const problems = [];
const check = (ok, message) => {
  if (!ok) throw new Error(`${step}: ${message}`);
};
const log = (message) => console.log(`ok: ${message}`);

// Opens an endpoint's page and waits until it shows that endpoint: a hash
// change renders after a fetch, so until then the previous page's buttons
// (another endpoint's Delete) are still there to be clicked.
async function openEndpoint(page, id) {
  await page.goto(`${BASE}/portal/#/endpoints/${id}`);
  await page.waitForSelector(`.card[data-endpoint="${id}"]`);
}

async function api(method, path, body) {
  const response = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${env("TENANT_TOKEN")}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  check(response.ok, `${method} ${path}: ${response.status}`);
  return response.json();
}

async function open(browser, url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on("dialog", (d) => {
    // confirm() of Delete is the only dialog the portal opens.
    if (d.type() !== "confirm") problems.push(`unexpected ${d.type()} dialog: ${d.message()}`);
    d.accept();
  });
  await page.goto(url);
  current = page;
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

// A datetime-local value (the browser's time zone) `offset` ms from now.
async function localTime(page, offset) {
  return page.evaluate((ms) => {
    const d = new Date(Date.now() + ms);
    d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
    return d.toISOString().slice(0, 16);
  }, offset);
}

// Waits until the log shows attempt rows and every one has `value` in
// its data attribute `field`, for a filter just applied.
async function logRowsAll(page, field, value) {
  await page.waitForFunction(([f, v]) => {
    const rows = [...document.querySelectorAll("tr.attempt-row")];
    return rows.length > 0 && rows.every((r) => r.dataset[f] === v);
  }, [field, value], { timeout: 10000 });
  return page.locator("tr.attempt-row").count();
}

async function noScriptRan(page) {
  const pwned = await page.evaluate(() => window.__pwned);
  check(pwned === undefined, `a script from the data ran (window.__pwned = ${pwned})`);
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  // --- Opening a session URL -------------------------------------------
  step = "open a session";
  const page = await open(browser, env("SESSION_URL"));
  await page.waitForSelector(`tr.endpoint-row[data-id="${A}"]`, { timeout: 10000 });
  check(!page.url().includes("session="), "the token stays in the address bar");
  check(await page.evaluate(() => document.cookie) === "", "a cookie was set");
  await page.waitForFunction(() => [...document.querySelectorAll("[data-rate-for]")].every((b) => b.textContent !== "…"));
  const description = await page.locator(`tr.endpoint-row[data-id="${A}"] .muted`).textContent();
  check(description === XSS, "the description is shown as text");
  await noScriptRan(page);
  // The 24 h success badges: A got all three, C failed all three.
  const rateA = page.locator(`[data-rate-for="${A}"]`);
  const rateC = page.locator(`[data-rate-for="${C}"]`);
  check(await rateA.textContent() === "100% ok", `A's badge says ${await rateA.textContent()}`);
  check((await rateA.getAttribute("class")).split(" ").includes("ok"), "A's badge is not green");
  check(await rateC.textContent() === "0% ok", `C's badge says ${await rateC.textContent()}`);
  check((await rateC.getAttribute("class")).split(" ").includes("bad"), "C's badge is not red");
  await shot(page, "endpoints");
  log("session opened, endpoints listed with their 24 h success badges, the description shown as text");

  // --- Creating an endpoint through the form ---------------------------
  step = "create an endpoint";
  await page.click("#new-endpoint");
  await page.waitForSelector("#endpoint-form");
  await page.fill("#ep-url", env("RECEIVER_URL"));
  await page.fill("#ep-description", "made in the browser");
  await page.check('input.ep-type[value="order.paid"]');
  await page.fill("#ep-types", "invoice.*");
  await page.fill("#ep-headers", "X-Team: billing");
  await page.check("#ep-ordered");
  await page.fill("#ep-rate-limit", "200");
  await shot(page, "endpoint-form");
  await page.click("#ep-save");
  await page.waitForSelector("#reveal-secret");
  check(await page.locator("#new-secret").isHidden(), "the secret is shown before reveal");
  await page.click("#reveal-secret");
  const created = await page.locator("#new-secret").textContent();
  check(created.startsWith("whsec_"), `the secret shown is ${created}`);
  await shot(page, "verify");
  const listed = await api("GET", "/v1/endpoints?limit=500");
  const made = listed.data.find((e) => e.url === env("RECEIVER_URL"));
  check(made, "the endpoint is not in the API's list");
  check(made.event_types.includes("order.paid") && made.event_types.includes("invoice.*"), `event types ${made.event_types}`);
  check(made.headers["X-Team"] !== undefined || made.headers["x-team"] !== undefined, "the header was not saved");
  check(made.ordered === true && made.rate_limit === 200, `ordered ${made.ordered}, rate_limit ${made.rate_limit}`);
  await openEndpoint(page, made.id);
  await page.waitForSelector("#ep-delivery-rules");
  const rules = await page.locator("#ep-delivery-rules").textContent();
  check(rules.includes("Ordered per key") && rules.includes("200 attempts/s"), `the endpoint page says ${rules}`);
  log("endpoint created through the form; its secret shown once, behind reveal");

  // --- An event sent through the API shows in the delivery log ---------
  step = "delivery log";
  await page.goto(`${BASE}/portal/#/log`);
  await page.waitForSelector("#log-rows", { state: "attached" });
  const sent = await api("POST", "/v1/events", { type: "order.paid", payload: { note: XSS, total: 7 } });
  const started = Date.now();
  await page.waitForSelector(`tr.attempt-row[data-event-id="${sent.id}"]`, { timeout: 10000 });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  await noScriptRan(page);
  await shot(page, "delivery-log");
  log(`the event showed in the delivery log after ${seconds} s`);

  // Filters: result and event type narrow it down.
  await page.selectOption("#f-result", "exhausted");
  await page.click("#f-apply");
  await page.waitForFunction(() => window.location.hash.includes("result=exhausted"));
  await page.waitForTimeout(500);
  check(await page.locator(`tr.attempt-row[data-event-id="${sent.id}"]`).count() === 0, "the result filter let a success through");
  await page.goto(`${BASE}/portal/#/log?event_type=order.paid`);
  await page.waitForSelector(`tr.attempt-row[data-event-id="${sent.id}"]`, { timeout: 5000 });
  await page.goto(`${BASE}/portal/#/log?event_type=nothing.here`);
  await page.waitForFunction(() => document.getElementById("f-type")?.value === "nothing.here");
  await page.waitForTimeout(500);
  check(await page.locator("tr.attempt-row").count() === 0, "the event type filter let others through");
  log("filters by result and event type");

  // Endpoint, picked in the form: only C's three attempts.
  await page.goto(`${BASE}/portal/#/log`);
  await page.waitForSelector(`#f-endpoint option[value="${C}"]`, { state: "attached" });
  await page.selectOption("#f-endpoint", C);
  await page.click("#f-apply");
  await page.waitForFunction((c) => window.location.hash.includes("endpoint=" + c), C);
  const cRows = await logRowsAll(page, "endpointId", C);
  check(cRows === 3, `C has ${cRows} attempts in the log`);

  // Event id, typed in the form: only that event's attempts.
  await page.goto(`${BASE}/portal/#/log`);
  await page.waitForSelector("#f-event");
  await page.fill("#f-event", sent.id);
  await page.click("#f-apply");
  await page.waitForFunction((id) => window.location.hash.includes("event=" + id), sent.id);
  const eventRows = await logRowsAll(page, "eventId", sent.id);
  check(eventRows >= 3, `the event has ${eventRows} attempts in the log`);

  // Time range: an hour either side holds the event; a range before or
  // after it holds nothing.
  await page.goto(`${BASE}/portal/#/log`);
  await page.waitForSelector("#f-since");
  await page.fill("#f-since", await localTime(page, -3600e3));
  await page.fill("#f-until", await localTime(page, 3600e3));
  await page.fill("#f-type", "order.paid");
  await page.click("#f-apply");
  await page.waitForFunction(() => window.location.hash.includes("since=") && window.location.hash.includes("until="));
  await page.waitForSelector(`tr.attempt-row[data-event-id="${sent.id}"]`, { timeout: 5000 });
  for (const [name, from, to] of [["a later range", 3600e3, 7200e3], ["an earlier range", -7200e3, -3600e3]]) {
    const since = await localTime(page, from);
    await page.goto(`${BASE}/portal/#/log?since=${since}&until=${await localTime(page, to)}`);
    await page.waitForFunction((v) => document.getElementById("f-since")?.value === v, since);
    await page.waitForTimeout(500);
    check(await page.locator("tr.attempt-row").count() === 0, `${name} shows attempts`);
  }
  log(`filters by endpoint (${cRows} of C's), event id (${eventRows}) and time range`);

  // --- Opening it, replaying, seeing the new attempt --------------------
  step = "event and replay";
  await page.goto(`${BASE}/portal/#/log?event=${sent.id}`);
  await page.click(`tr.attempt-row[data-event-id="${sent.id}"] a.event-link`);
  await page.waitForSelector("#payload");
  const payload = await page.locator("#payload").textContent();
  check(payload.includes("<script>") && payload.includes("onerror"), "the payload is not shown as text");
  check(await page.locator("#payload script, #payload img").count() === 0, "the payload became elements");
  await noScriptRan(page);
  const rows = `#event-attempts tr.attempt-row`;
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length >= 2, rows, { timeout: 10000 });
  const before = await page.locator(rows).count();
  await page.click(`tr.delivery-row[data-endpoint-id="${A}"] button.replay`);
  await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel).length > n, [rows, before], { timeout: 15000 });
  await shot(page, "event");
  log(`replayed: ${before} attempts, then ${await page.locator(rows).count()}`);

  // --- Rotating a secret -----------------------------------------------
  step = "rotate a secret";
  await openEndpoint(page, A);
  await page.click("#rotate-secret");
  await page.waitForSelector("#reveal-secret");
  await page.click("#reveal-secret");
  const rotated = await page.locator("#new-secret").textContent();
  check(rotated.startsWith("whsec_") && rotated !== env("ENDPOINT_A_SECRET"), "no new secret");
  log("secret rotated and shown once");

  // --- Send an example event, disable and enable, delete ----------------
  step = "send an example event";
  await openEndpoint(page, A);
  await page.click("#send-example");
  await page.waitForSelector(`#event-deliveries tr.delivery-row[data-endpoint-id="${A}"]`, { timeout: 15000 });
  const example = await page.locator("#payload").textContent();
  check(example.includes('"ord_1"'), `the example payload is the catalogue's: ${example}`);
  log("example event sent (the catalogue's example) and delivered");

  step = "disable, enable and delete";
  await openEndpoint(page, A);
  await page.click("#disable");
  await page.waitForSelector("#enable");
  check((await api("GET", `/v1/endpoints/${A}`)).enabled === false, "not disabled");
  await page.click("#enable");
  await page.waitForSelector("#disable");
  check((await api("GET", `/v1/endpoints/${A}`)).enabled === true, "not enabled");
  await openEndpoint(page, made.id);
  await page.click("#delete");
  await page.waitForSelector(`tr.endpoint-row[data-id="${A}"]`);
  check(await page.locator(`tr.endpoint-row[data-id="${made.id}"]`).count() === 0, "the deleted endpoint is listed");
  log("disabled, enabled, and deleted the form's endpoint");

  // --- The chart renders with data -------------------------------------
  step = "chart";
  await openEndpoint(page, A);
  await page.waitForSelector("svg.chart circle.rate-point", { timeout: 15000 });
  const points = await page.locator("svg.chart circle").count();
  check(points >= 3, `only ${points} points`);
  await page.click("#chart-7d");
  await page.waitForSelector("svg.chart circle.p95-point", { timeout: 30000 });
  await page.click("#chart-24h");
  await page.waitForSelector("svg.chart circle.p50-point", { timeout: 15000 });
  await shot(page, "endpoint");
  log(`chart drawn with ${points} points`);

  // --- A recovery's progress bar reaching done --------------------------
  step = "recovery";
  await openEndpoint(page, B);
  await page.click("#recover-start");
  await page.waitForSelector('#recover-progress[data-state="done"]', { timeout: 30000 });
  const state = await page.locator("#recover-state").textContent();
  check(/done: (\d+) of \1 resent/.test(state) && !state.startsWith("done: 0"), `recovery said ${state}`);
  await shot(page, "recovery");
  log(`recovery: ${state}`);

  // --- A parked message, requeued from its endpoint's page --------------
  step = "parked message";
  await openEndpoint(page, C);
  const parkedRow = page.locator("#parked tr.parked-row");
  await parkedRow.first().waitFor({ timeout: 15000 });
  check(await parkedRow.count() === 1, `${await parkedRow.count()} parked messages for C`);
  const parkedText = await parkedRow.textContent();
  check(parkedText.includes(PARKED) && parkedText.includes("exhausted"), `the parked row says ${parkedText}`);
  await page.waitForSelector("svg.chart circle.rate-point", { timeout: 15000 });
  await shot(page, "parked");
  await page.click("#parked button.requeue");
  await page.waitForSelector("#parked >> text=No parked messages.", { timeout: 15000 });
  await page.goto(`${BASE}/portal/#/log?event=${PARKED}`);
  await page.waitForSelector(`tr.attempt-row[data-event-id="${PARKED}"][data-result="succeeded"]`, { timeout: 20000 });
  const delivered = (await api("GET", `/v1/events/${PARKED}`)).deliveries.find((d) => d.endpoint_id === C);
  check(delivered && delivered.state === "succeeded", `C's delivery is ${delivered && delivered.state}`);
  log("the parked message was requeued and delivered, and the log shows it");
  await page.context().close();

  // --- A read-only session ---------------------------------------------
  step = "read-only session";
  const ro = await open(browser, env("READ_ONLY_URL"));
  await ro.waitForSelector(`tr.endpoint-row[data-id="${A}"]`);
  for (const hash of ["#/endpoints", `#/endpoints/${A}`, `#/events/${sent.id}`, `#/endpoints/${A}/verify`]) {
    await ro.goto(`${BASE}/portal/${hash}`);
    await ro.waitForLoadState("networkidle");
    await ro.waitForTimeout(300);
    const writes = await ro.locator("[data-write], #recover-start, button.replay, #rotate-secret").count();
    check(writes === 0, `${writes} write buttons on ${hash}`);
  }
  await shot(ro, "read-only");
  const refused = await ro.evaluate(async (id) => {
    const token = sessionStorage.getItem("hookfleet.portal.session");
    const r = await fetch(`/v1/endpoints/${id}/disable`, { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    return [r.status, (await r.json()).error.code];
  }, A);
  check(refused[0] === 403 && refused[1] === "forbidden", `a write answered ${refused}`);
  await ro.context().close();
  log("read-only: no write buttons, and 403 from the API");

  // --- An expired session ----------------------------------------------
  step = "expired session";
  const old = await open(browser, env("EXPIRED_URL"));
  await old.waitForSelector("#refused", { timeout: 10000 });
  const expiredToken = env("EXPIRED_URL").split("#session=")[1];
  const status = await old.evaluate(async (token) => {
    const r = await fetch("/v1/endpoints", { headers: { Authorization: `Bearer ${token}` } });
    return [r.status, (await r.json()).error.code];
  }, expiredToken);
  check(status[0] === 401 && status[1] === "session_expired", `the API answered ${status}`);
  await shot(old, "expired");
  await old.context().close();
  log(`expired session refused (the API answers ${status})`);

  step = "console";
  check(problems.length === 0, problems.join("\n"));
  log("no script errors and no Content-Security-Policy violations");
} catch (error) {
  console.error(`FAILED ${error.message}`);
  if (current) {
    console.error(`at ${current.url()}: ${await current.locator("main").textContent().catch(() => "?")}`);
    await current.screenshot({ path: `${SHOTS}/failure.png` }).catch(() => {});
  }
  for (const p of problems) console.error(p);
  process.exitCode = 1;
} finally {
  await browser.close();
}
