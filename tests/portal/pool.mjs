// The portal on a deployment served by an engine pool: deploy a fine-tune of the pool's base through
// the dialog, see it reach Succeeded with its pool named, read the pool's endpoints and their health,
// and chat with it in the playground. Run by tests/integration/test_pool.py.
//
// Environment: BERTH_URL, BERTH_TOKEN, BERTH_MODEL (a fine-tune of a base on the pool), BERTH_POOL,
// SCREENSHOTS (a directory), CHROMIUM.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const { BERTH_URL: url, BERTH_TOKEN: token, BERTH_MODEL: model, BERTH_POOL: pool, SCREENSHOTS: shots } = process.env;
fs.mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1366, height: 860 } });
const consoleErrors = [];
page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
page.on("pageerror", (e) => consoleErrors.push(String(e)));
const shot = (name) => page.screenshot({ path: path.join(shots, name), fullPage: true });

try {
  await page.goto(`${url}/portal`);
  await page.getByLabel("Access token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Models", exact: true }).waitFor();

  await page.getByRole("button", { name: `Deploy ${model}`, exact: true }).click();
  const dialog = page.getByRole("dialog", { name: `Deploy ${model}` });
  await dialog.getByLabel("Deployment name").fill("from-portal");
  await dialog.getByLabel("Deployment type").selectOption("Standard");
  await dialog.getByLabel("Capacity").fill("5");
  await dialog.getByRole("button", { name: "Create" }).click();

  await page.getByRole("heading", { name: "Deployments", exact: true }).waitFor();
  const row = page.locator('tr[data-deployment="from-portal"]');
  await row.locator('td[data-state="Succeeded"]').waitFor({ timeout: 120_000 });
  await row.locator(".engine-pool", { hasText: `on engine pool ${pool}` }).waitFor();
  const section = page.locator("#engine-pools");
  await section.getByRole("heading", { name: "Engine pools" }).waitFor();
  const health = await section.locator("td[data-health]").allInnerTexts();
  assert.ok(health.length === 2 && health.every((h) => h.startsWith("up")), `endpoint health: ${health}`);
  const adapters = await section.locator("tbody tr td:nth-child(4)").allInnerTexts();
  assert.ok(adapters.some((a) => a.includes(model)), `adapters loaded: ${adapters}`);
  await shot("pool-deployments.png");
  console.log(`- deployed on pool ${pool}; endpoints ${health.join(", ")}`);

  await page.getByRole("link", { name: "Playground" }).click();
  await page.getByLabel("Deployment", { exact: true }).selectOption("from-portal");
  await page.getByLabel("Temperature").fill("0");
  await page.getByLabel("Max tokens").fill("24");
  await page.getByLabel("Message", { exact: true }).fill("What is the capital of France?");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.locator(".msg.assistant .usage", { hasText: "completion tokens" }).waitFor({ timeout: 120_000 });
  const answer = await page.locator(".msg.assistant .text").first().innerText();
  assert.ok(answer.trim().length > 0, "an answer");
  await shot("pool-playground.png");
  console.log(`- playground answer through the pool: ${JSON.stringify(answer.trim())}`);

  await page.getByRole("link", { name: "Deployments" }).click();
  await page.getByRole("button", { name: "Delete from-portal" }).click();
  await page.getByRole("dialog", { name: "Delete the deployment from-portal?" }).getByRole("button", { name: "Delete" }).click();
  await page.locator('tr[data-deployment="from-portal"]').waitFor({ state: "detached" });

  const unexpected = consoleErrors.filter((e) => !/status of 4\d\d/.test(e));
  assert.deepEqual(unexpected, [], `script errors: ${unexpected.join(" | ")}`);
} catch (e) {
  await page.screenshot({ path: path.join(shots, "pool-failure.png"), fullPage: true }).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
