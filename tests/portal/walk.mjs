// Walks the seed's path through Berth's portal in headless Chromium: sign in, fine-tune a model from an
// uploaded file and watch its loss, deploy it through the dialog (with the dialog's errors), see the
// deployment reach Succeeded without a reload, chat with it in the playground with streamed text, read
// the costs, and delete it. Saves a screenshot of each page. Run by tests/integration/test_portal.py.
//
// Environment: BERTH_URL, BERTH_TOKEN, BERTH_TRAINING_FILE, SCREENSHOTS (a directory), CHROMIUM.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const url = process.env.BERTH_URL;
const token = process.env.BERTH_TOKEN;
const shots = process.env.SCREENSHOTS;
fs.mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1366, height: 860 } });
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
page.on("pageerror", (e) => consoleErrors.push(String(e)));
const shot = async (name) => {
  await page.screenshot({ path: path.join(shots, name), fullPage: true });
  console.log(`screenshot ${name}`);
};
const step = (text) => console.log(`- ${text}`);

try {
  // Sign in: a wrong token is refused in words, the right one opens the models.
  await page.goto(`${url}/portal`);
  await page.getByLabel("Access token").fill("not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(/Sign-in failed: .*invalid/i).waitFor();
  await shot("01-sign-in.png");
  step("a wrong token is refused with the API's message");
  await page.getByLabel("Access token").fill(token);
  await page.keyboard.press("Tab");
  await page.getByRole("button", { name: "Sign in" }).press("Enter");
  await page.getByRole("heading", { name: "Models", exact: true }).waitFor();
  await page.getByRole("button", { name: "Deploy smollm2", exact: true }).waitFor();
  step("signed in with the keyboard");

  // Fine-tuning: upload a file, start a job, watch its loss until it succeeds.
  await page.getByRole("link", { name: "Fine-tuning" }).click();
  await page.getByLabel("JSONL file").setInputFiles(process.env.BERTH_TRAINING_FILE);
  await page.getByRole("button", { name: "Upload" }).click();
  await page.getByLabel("Training file").locator("option", { hasText: path.basename(process.env.BERTH_TRAINING_FILE) }).waitFor({ state: "attached" });
  await page.getByLabel("Epochs").fill("1");
  await page.getByLabel("Suffix").fill("portal");
  await page.getByRole("button", { name: "Start" }).click();
  await page.locator("#ft-chart path").first().waitFor({ timeout: 240_000 });
  step("the job's loss curve is drawn while it runs");
  await page.locator(".badge.succeeded").first().waitFor({ timeout: 300_000 });
  const fineTuned = (await page.locator("tbody tr td:nth-child(5)").first().innerText()).trim();
  assert.match(fineTuned, /^smollm2\.ft-[0-9a-f]{32}-portal$/);
  await page.locator("#ft-chart path").first().waitFor();
  await shot("02-fine-tuning.png");
  step(`fine-tuned ${fineTuned}`);

  // Models: the fine-tuned model and its checkpoint, with the loss curve.
  await page.getByRole("link", { name: "Models" }).click();
  await page.getByRole("heading", { name: "Fine-tuned models" }).waitFor();
  await page.getByRole("heading", { name: "Checkpoints" }).waitFor();
  const row = page.locator("tr", { hasText: fineTuned }).first();
  await page.getByRole("button", { name: `Loss curve of ${fineTuned}` }).click();
  await page.locator("tr:not([hidden]) svg.chart path").first().waitFor();
  await shot("03-models.png");
  step("models list base, fine-tuned and checkpoint models, with the loss curve");

  // The deploy dialog: keyboard focus, types from the catalog, errors next to their field.
  await row.getByRole("button", { name: `Deploy ${fineTuned}` }).click();
  const dialog = page.getByRole("dialog", { name: `Deploy ${fineTuned}` });
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), "deploy-name");
  const types = await dialog.getByLabel("Deployment type").locator("option").allInnerTexts();
  assert.ok(types.includes("Standard") && types.includes("Developer"), `types offered: ${types}`);
  await dialog.getByLabel("Deployment name").fill("x");
  await dialog.getByRole("button", { name: "Create" }).click();
  await dialog.locator("#deploy-name-error", { hasText: "2 to 64" }).waitFor();
  assert.equal(await dialog.getByLabel("Deployment name").getAttribute("aria-invalid"), "true");
  await dialog.getByLabel("Deployment name").fill("pirate");
  await dialog.getByLabel("Deployment type").selectOption("Standard");
  await dialog.getByLabel("Capacity").fill("1000");
  await dialog.getByRole("button", { name: "Create" }).click();
  await dialog.locator("#deploy-capacity-error", { hasText: /quota/i }).waitFor();
  await shot("04-deploy-dialog.png");
  step("the dialog shows a bad name and the API's quota refusal next to their fields");
  await dialog.getByLabel("Capacity").fill("20");
  await page.evaluate(() => (window.__noReload = true));
  await dialog.getByRole("button", { name: "Create" }).click();

  // Deployments: the state goes to Succeeded with no reload.
  await page.getByRole("heading", { name: "Deployments", exact: true }).waitFor();
  const states = [];
  const cell = page.locator('tr[data-deployment="pirate"] td[data-state]');
  const deadline = Date.now() + 180_000;
  for (;;) {
    const s = await cell.getAttribute("data-state").catch(() => null);
    if (s && states.at(-1) !== s) states.push(s);
    if (s === "Succeeded" || s === "Failed") break;
    assert.ok(Date.now() < deadline, `states seen: ${states}`);
    await page.waitForTimeout(50);
  }
  assert.equal(states.at(-1), "Succeeded", `states seen: ${states}`);
  assert.equal(await page.evaluate(() => window.__noReload), true, "the page was reloaded");
  const deletion = await page.locator('tr[data-deployment="pirate"] td:nth-child(6)').innerText();
  assert.notEqual(deletion.trim(), "—", "the idle-deletion date is shown");
  await shot("05-deployments.png");
  step(`deployment states seen without reloading: ${states.join(" -> ")}; deleted if idle after ${deletion.trim()}`);

  // Scale from the pane.
  await page.getByLabel("New capacity for pirate").fill("30");
  await page.getByRole("button", { name: "Scale pirate" }).click();
  await page.locator('tr[data-deployment="pirate"] td.num', { hasText: "30" }).waitFor();
  step("scaled to 30 from the pane");

  // Playground: streamed text, then usage with cached tokens.
  await page.getByRole("link", { name: "Playground" }).click();
  await page.getByLabel("Deployment", { exact: true }).selectOption("pirate");
  await page.getByLabel("System message").fill("You are a helpful assistant. Answer in one sentence.");
  await page.getByLabel("Temperature").fill("0");
  await page.getByLabel("Max tokens").fill("40");
  const chunks = await page.evaluate(() => {
    window.__chunks = 0;
    new MutationObserver(() => window.__chunks++).observe(document.getElementById("pg-transcript"), { subtree: true, characterData: true, childList: true });
    return 0;
  });
  assert.equal(chunks, 0);
  await page.getByLabel("Message", { exact: true }).fill("Who invented the telephone?");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.locator(".msg.assistant .usage", { hasText: "completion tokens" }).waitFor({ timeout: 120_000 });
  const answer = await page.locator(".msg.assistant .text").first().innerText();
  const updates = await page.evaluate(() => window.__chunks);
  assert.ok(answer.trim().length > 0, "an answer");
  assert.ok(updates > 3, `the answer arrived in ${updates} updates`);
  await page.getByLabel("Message", { exact: true }).fill("And when?");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.locator(".msg.assistant .usage").nth(1).waitFor({ timeout: 120_000 });
  const usage = await page.locator(".msg.assistant .usage").nth(1).innerText();
  assert.match(usage, /\d+ prompt tokens \(\d+ cached\)/);
  await shot("06-playground.png");
  step(`playground answer streamed in ${updates} updates: ${JSON.stringify(answer.trim())}; second turn: ${usage}`);

  // Structured output from the playground: a JSON schema holds the answer to its shape.
  await page.getByLabel("Response format").selectOption("json_schema");
  await page.getByLabel("Schema", { exact: true }).fill('{"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"], "additionalProperties": false}');
  await page.getByLabel("Max tokens").fill("60");
  await page.getByLabel("Message", { exact: true }).fill("Which city is the capital of France?");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.locator(".msg.assistant .usage").nth(2).waitFor({ timeout: 120_000 });
  const structured = JSON.parse(await page.locator(".msg.assistant .text").nth(2).innerText());
  assert.deepEqual(Object.keys(structured), ["city"]);
  assert.equal(typeof structured.city, "string");
  step(`playground JSON-schema answer: ${JSON.stringify(structured)}`);

  // Costs: the period's hosting and tokens, as a chart and a table.
  await page.getByRole("link", { name: "Costs" }).click();
  await page.locator("#cost-report svg.chart").waitFor();
  await page.locator("#cost-report td", { hasText: "pirate" }).first().waitFor();
  await shot("07-costs.png");
  step("costs chart and table list the deployment");

  // The pane's last-hour charts count the playground's three calls (summed over replicas, from the database).
  await page.getByRole("link", { name: "Deployments" }).click();
  const requests = page.locator('tr[data-deployment="pirate"] svg.spark[aria-label^="Requests"]');
  await requests.waitFor();
  const label = await requests.getAttribute("aria-label");
  assert.equal(label, "Requests: 3 requests", `last hour: ${label}`);
  const ttft = await page.locator('tr[data-deployment="pirate"] svg.spark[aria-label^="Time to first token"]').getAttribute("aria-label");
  assert.match(ttft, /p50 ≤ \d+ ms, p95 ≤ \d+ ms/);
  assert.ok((await page.locator('tr[data-deployment="pirate"] svg.spark path').count()) >= 3, "lines are drawn");
  await shot("10-deployments-last-hour.png");
  step(`last-hour charts: ${label}; ${ttft}`);

  // Delete from the pane, confirming in a dialog.
  await page.getByRole("button", { name: "Delete pirate" }).click();
  await page.getByRole("dialog", { name: "Delete the deployment pirate?" }).getByRole("button", { name: "Delete" }).click();
  await page.locator('tr[data-deployment="pirate"]').waitFor({ state: "detached", timeout: 60_000 });
  await shot("08-deleted.png");
  step("deleted from the pane");

  // An API key reaches only its account's playground.
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Or an account's API key").fill(process.env.BERTH_API_KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Chat playground" }).waitFor();
  assert.equal(await page.getByRole("link", { name: "Models" }).isVisible(), false);
  await page.getByLabel("Deployment", { exact: true }).fill("smol");
  await page.getByLabel("Max tokens").fill("8");
  await page.getByLabel("Message", { exact: true }).fill("Hi");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.locator(".msg.assistant .usage", { hasText: "completion tokens" }).waitFor({ timeout: 120_000 });
  await page.getByLabel("Deployment", { exact: true }).fill("nowhere");
  await page.getByLabel("Message", { exact: true }).fill("Hi");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.getByText(/does not exist.*DeploymentNotFound, HTTP 404/).waitFor();
  await shot("09-playground-with-a-key.png");
  step("with an API key: the playground only, and a missing deployment explained in words");

  const unexpected = consoleErrors.filter((e) => !/status of 4\d\d/.test(e));
  assert.deepEqual(unexpected, [], `script errors: ${unexpected.join(" | ")}`);
} catch (e) {
  await page.screenshot({ path: path.join(shots, "failure.png"), fullPage: true }).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
