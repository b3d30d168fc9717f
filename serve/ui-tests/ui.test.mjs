// Browser tests of taskledger's web UI, in Debian's headless Chromium through playwright-core.
// Run by tests/ui.rs, which starts `taskledger serve` on a fresh data directory holding
// fixtures/partner_pipeline.ndjson and fixtures/ui_dlq.ndjson, and passes:
//   TASKLEDGER_UI_BASE (http://127.0.0.1:port), TASKLEDGER_UI_OPERATOR_TOKEN,
//   TASKLEDGER_UI_READER_TOKEN, TASKLEDGER_UI_SCREENSHOTS (a directory), CHROMIUM (the binary).
// The tests run in order and share one signed-in browser page, as a person would.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.TASKLEDGER_UI_BASE;
const operatorToken = process.env.TASKLEDGER_UI_OPERATOR_TOKEN;
const readerToken = process.env.TASKLEDGER_UI_READER_TOKEN;
const shots = process.env.TASKLEDGER_UI_SCREENSHOTS;
mkdirSync(shots, { recursive: true });

let browser, context, page;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(15000);
});

after(async () => { await browser?.close(); });

const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
const rowsOf = (selector) => page.locator(`${selector} tbody tr`);

test("an unknown token is refused and the right one signs in", async () => {
  await page.goto(`${base}/ui/dlq?queue=mail`);
  assert.match(page.url(), /\/ui\/login\?next=/, "a page without a session goes to the sign-in");
  await shot("login");
  await page.fill("#token", "not-a-token");
  await page.click("button[type=submit]");
  assert.match(await page.locator("[role=alert]").innerText(), /unknown token/);
  await page.fill("#token", operatorToken);
  await page.click("button[type=submit]");
  // Back where the link pointed, filter included.
  assert.equal(new URL(page.url()).pathname, "/ui/dlq");
  assert.equal(new URL(page.url()).searchParams.get("queue"), "mail");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "taskledger_session");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.ok(!cookies.some((c) => c.value.includes(operatorToken)), "the token is not in a cookie");
  // Auto-refresh can be paused (and stays paused for the session).
  await page.click("#refresh-toggle");
  assert.equal(await page.getAttribute("#refresh-toggle", "aria-pressed"), "true");
  await page.goto(`${base}/ui/`);
  assert.equal(await page.getAttribute("#refresh-toggle", "aria-pressed"), "true");
});

test("search by taskId prefix and by executionId", async () => {
  await page.goto(`${base}/ui/`);
  await page.fill("#q", "partner_tasks:SATLOC:695d");
  await page.press("#q", "Enter");
  await page.waitForURL(/q=partner_tasks/);
  const found = rowsOf("table.list").filter({ hasText: "partner_tasks:SATLOC:695d:" });
  assert.equal(await found.count(), 2, "two tasks start with the prefix");
  await shot("search");
  // An executionId goes straight to its task, at that execution.
  await page.goto(`${base}/ui/?q=00d10000-0000-4000-8000-000000000002`);
  assert.equal(decodeURIComponent(new URL(page.url()).pathname), "/ui/tasks/partner_tasks:SATLOC:9f01:03010002");
  assert.equal(new URL(page.url()).hash, "#x-00d10000-0000-4000-8000-000000000002");
});

test("a task's chain and timeline, and the as-of control shows the earlier state", async () => {
  await page.goto(`${base}/ui/?q=partner_tasks:SATLOC:695d:0222071`);
  await page.click("a[data-primary]:text('partner_tasks:SATLOC:695d:02220710')");
  await page.waitForURL(/\/ui\/tasks\//);
  assert.match(await page.locator("#task-status").innerText(), /completed/);
  // The retry chain: two executions, the first with three attempts (worker, outcome, error).
  assert.equal(await page.locator("section.execution").count(), 2);
  const attempts = page.locator("section.execution").first().locator("table.attempts tbody tr");
  assert.equal(await attempts.count(), 3);
  assert.match(await attempts.nth(0).innerText(), /sync-1/);
  assert.match(await attempts.nth(2).innerText(), /dlq/);
  // Rejections are in the timeline with their reason.
  const rejected = page.locator("tr.ev-ReportRejected");
  assert.equal(await rejected.count(), 2);
  assert.match(await rejected.first().innerText(), /duplicateEnqueue/);
  // Raw JSON on demand.
  const raw = page.locator("tr.ev-ExecutionEnqueued details").first();
  assert.equal(await raw.locator("pre").isVisible(), false);
  await raw.locator("summary").click();
  assert.match(await raw.locator("pre").innerText(), /"type": "ExecutionEnqueued"/);
  await shot("task");
  const allEvents = await page.locator("table.timeline tbody tr").count();
  // Slide back to the fourth instant (the first failure): the task was `failed` then.
  await page.locator("#asof-step").fill("3");
  await page.waitForURL(/asOf=/);
  assert.match(await page.locator("#asof-banner").innerText(), /As of/);
  assert.match(await page.locator("#task-status").innerText(), /failed/);
  assert.equal(await page.locator("section.execution").count(), 1, "the manual retry came later");
  const earlier = await page.locator("table.timeline tbody tr").count();
  assert.ok(earlier < allEvents, `${earlier} events as of then, ${allEvents} now`);
  assert.equal(new URL(page.url()).searchParams.get("asOf"), "2026-01-21T10:00:09.412Z");
  await shot("task-as-of");
  // And the slider's end is the present again.
  await page.locator("#asof-step").fill(String(await page.getAttribute("#asof-step", "max")));
  await page.waitForURL((url) => !url.searchParams.has("asOf"));
  assert.match(await page.locator("#task-status").innerText(), /completed/);
});

test("the DLQ filters by queue, category and error text, as deep links", async () => {
  await page.goto(`${base}/ui/dlq`);
  assert.equal(await rowsOf("#dlq-table").count(), 6);
  assert.match(await page.locator("#dlq-total").innerText(), /^6 execution\(s\) in the DLQ of all queues/);
  await shot("dlq");
  await page.selectOption("#dlq-filters select[name=queue]", "mail");
  await page.click("#dlq-filters button[type=submit]");
  await page.waitForURL(/queue=mail/);
  assert.equal(await rowsOf("#dlq-table").count(), 3);
  for (const text of await rowsOf("#dlq-table").allInnerTexts()) assert.match(text, /mail:/);
  await page.selectOption("#dlq-filters select[name=category]", "validation");
  await page.click("#dlq-filters button[type=submit]");
  await page.waitForURL(/category=validation/);
  assert.equal(await rowsOf("#dlq-table").count(), 1);
  assert.match(await rowsOf("#dlq-table").first().innerText(), /mail:welcome:4712/);
  // Error text, any case, across queues; a deep link gives the same list.
  await page.goto(`${base}/ui/dlq?text=ETIMEDOUT`);
  assert.equal(await rowsOf("#dlq-table").count(), 1);
  assert.match(await rowsOf("#dlq-table").first().innerText(), /partner_tasks:SATLOC:9f01:03010001/);
  assert.equal(await page.inputValue("#dlq-filters input[name=text]"), "ETIMEDOUT");
  // A time range: failures from 11:12 on.
  await page.goto(`${base}/ui/dlq?since=2026-01-21T11:12:00Z`);
  assert.equal(await rowsOf("#dlq-table").count(), 3);
  // Paging by cursor: two per page.
  await page.goto(`${base}/ui/dlq?limit=2`);
  assert.equal(await rowsOf("#dlq-table").count(), 2);
  const first = await rowsOf("#dlq-table").allInnerTexts();
  await page.click("#next-page");
  assert.match(page.url(), /cursor=/);
  assert.equal(await rowsOf("#dlq-table").count(), 2);
  const second = await rowsOf("#dlq-table").allInnerTexts();
  assert.notDeepEqual(first, second);
  // Export of the filtered list.
  const csv = await page.request.get(`${base}/ui/dlq?queue=mail&format=csv`);
  assert.equal(csv.status(), 200);
  const lines = (await csv.text()).trim().split("\n");
  assert.equal(lines.length, 4, "a header and three mail entries");
  assert.match(lines[0], /^taskId,executionId,queue/);
  const json = await (await page.request.get(`${base}/ui/dlq?queue=mail&format=json`)).json();
  assert.equal(json.items.length, 3);
});

test("keyboard only: move through the DLQ, select a row, open it", async () => {
  await page.goto(`${base}/ui/dlq`);
  await page.locator("body").click({ position: { x: 1, y: 1 } });
  const focusedRow = () => page.evaluate(() => {
    const rows = [...document.querySelectorAll("#dlq-table [data-row]")];
    return rows.indexOf(document.activeElement);
  });
  await page.keyboard.press("j");
  assert.equal(await focusedRow(), 0);
  await page.keyboard.press("j");
  await page.keyboard.press("ArrowDown");
  assert.equal(await focusedRow(), 2);
  await page.keyboard.press("k");
  assert.equal(await focusedRow(), 1);
  // The focus is visible: an outline on the row.
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.equal(outline, "solid");
  await page.keyboard.press("x");
  assert.equal(await page.locator("#dlq-table tbody tr").nth(1).locator("input[type=checkbox]").isChecked(), true);
  await shot("dlq-keyboard");
  await page.keyboard.press("x");
  assert.equal(await page.locator("#dlq-table tbody tr").nth(1).locator("input[type=checkbox]").isChecked(), false);
  const task = await page.locator("#dlq-table tbody tr").nth(1).locator("a[data-primary]").innerText();
  await page.keyboard.press("Enter");
  await page.waitForURL(/\/ui\/tasks\//);
  assert.equal(decodeURIComponent(new URL(page.url()).pathname), `/ui/tasks/${task}`);
});

test("archive a DLQ entry (confirmed), see it on the timeline, then retry it", async () => {
  await page.goto(`${base}/ui/dlq?text=smtp`);
  assert.equal(await rowsOf("#dlq-table").count(), 1);
  await rowsOf("#dlq-table").first().locator("input[type=checkbox]").check();
  await page.fill("#dlq-actions input[name=reason]", "relay retired");
  await page.fill("#dlq-actions input[name=by]", "ops@example");
  await page.click("#archive-selected");
  // Archiving cannot be undone: one confirmation, naming the execution.
  await page.waitForSelector("#confirm");
  assert.match(await page.locator("main").innerText(), /mail:welcome:4711/);
  await shot("dlq-confirm");
  await page.click("#confirm");
  await page.waitForURL(/\/ui\/dlq\?text=smtp/);
  const outcome = page.locator(".outcomes");
  assert.match(await outcome.innerText(), /1 of 1 accepted/);
  assert.match(await outcome.innerText(), /archive of mail:welcome:4711/);
  assert.equal(await page.locator("#dlq-empty").count(), 1, "no longer in the DLQ");
  await shot("dlq-archived-outcome");
  // The task's timeline has the new event.
  await page.goto(`${base}/ui/tasks/mail:welcome:4711`);
  const archived = page.locator("tr.ev-ExecutionArchived");
  assert.equal(await archived.count(), 1);
  assert.match(await archived.innerText(), /archived from dlq by ops@example: relay retired/);
  assert.match(await page.locator("#task-status").innerText(), /archived/);
  // The archived view lists it; a retry runs at once (it undoes nothing) and says what it did.
  await page.goto(`${base}/ui/dlq?archived=1&text=smtp`);
  assert.equal(await rowsOf("#dlq-table").count(), 1);
  await rowsOf("#dlq-table").first().locator("input[type=checkbox]").check();
  await page.click("#retry-selected");
  await page.waitForURL(/archived=1/);
  assert.match(await page.locator(".outcomes").innerText(), /1 of 1 accepted/);
  assert.match(await page.locator(".outcomes").innerText(), /new execution/);
  await page.goto(`${base}/ui/tasks/mail:welcome:4711`);
  assert.equal(await page.locator("section.execution").count(), 2);
  assert.match(await page.locator("#task-status").innerText(), /queued/);
  assert.equal(await page.locator("tr.ev-ExecutionEnqueued").count(), 2);
  await shot("task-after-retry");
});

test("POSTs need the session's CSRF token and this origin", async () => {
  const form = { action: "archive", sel: "mail:digest:88|00d10000-0000-4000-8000-000000000006", confirmed: "yes" };
  const noToken = await page.request.post(`${base}/ui/actions`, { form, headers: { Origin: base } });
  assert.equal(noToken.status(), 403);
  assert.match(await noToken.text(), /form has expired/);
  await page.goto(`${base}/ui/dlq`);
  const csrf = await page.inputValue("#dlq-actions input[name=csrf]");
  const otherSite = await page.request.post(`${base}/ui/actions`, {
    form: { ...form, csrf }, headers: { Origin: "http://evil.example" },
  });
  assert.equal(otherSite.status(), 403);
  assert.match(await otherSite.text(), /another site/);
  // Nothing was archived.
  await page.goto(`${base}/ui/dlq?queue=mail`);
  assert.match(await page.locator("#dlq-table").innerText(), /mail:digest:88/);
});

test("queues, stuck and due pages; a reader cannot act", async () => {
  // The window of the fixtures' failures (the default is the day before the latest event, and
  // the actions above happened now).
  await page.goto(`${base}/ui/queues?since=2026-01-21T10:00:00Z&until=2026-01-21T12:00:00Z`);
  assert.match(await page.locator("main").innerText(), /partner_tasks/);
  assert.ok(await page.locator("#failure-chart rect").count() > 0, "the chart has bars");
  // Two validation failures still in the DLQ and one archived by the fixture's manual retry;
  // processing: one of each.
  const legend = await page.locator("ul.legend").innerText();
  assert.match(legend, /validation: 3/);
  assert.match(legend, /processing: 2/);
  await shot("queues");
  await page.goto(`${base}/ui/stuck?at=2026-01-21T12:00:00Z`);
  assert.equal(await rowsOf("table.list").count(), 1, "the fixture's one execution still processing");
  await shot("stuck");
  // ui_dlq.ndjson's one execution that failed with retries left: due once its backoff passed.
  await page.goto(`${base}/ui/due?at=2026-01-21T11:30:10Z`);
  assert.equal(await page.locator("table.list").count(), 0, "not due yet right after the failure");
  await page.goto(`${base}/ui/due?at=2027-01-01T00:00:00Z`);
  assert.equal(await rowsOf("table.list").count(), 1);
  assert.match(await rowsOf("table.list").first().innerText(), /mail:welcome:4713/);
  await shot("due");
  // Dark mode follows the system.
  await page.emulateMedia({ colorScheme: "dark" });
  await page.goto(`${base}/ui/dlq`);
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(background, "rgb(20, 23, 28)");
  await shot("dlq-dark");
  await page.emulateMedia({ colorScheme: "light" });
  // A reader sees the DLQ without the actions, and a POST is refused.
  const reader = await browser.newContext();
  const readerPage = await reader.newPage();
  await readerPage.goto(`${base}/ui/login`);
  await readerPage.fill("#token", readerToken);
  await readerPage.click("button[type=submit]");
  await readerPage.goto(`${base}/ui/dlq`);
  assert.ok(await readerPage.locator("#dlq-table tbody tr").count() > 0);
  assert.equal(await readerPage.locator("#dlq-actions").count(), 0);
  // Errors say what is wrong, nothing internal.
  const missing = await readerPage.goto(`${base}/ui/tasks/nosuch:task`);
  assert.equal(missing.status(), 404);
  assert.match(await readerPage.locator("main").innerText(), /no task nosuch:task/);
  const bad = await readerPage.goto(`${base}/ui/dlq?since=yesterday`);
  assert.equal(bad.status(), 400);
  assert.match(await readerPage.locator("main").innerText(), /since: "yesterday" is not an RFC 3339 instant/);
  await reader.close();
});
