// Berth's portal: a client of the same management (ARM) and data-plane APIs that the SDKs and the CLI
// use, signed in with a bearer token (everything the token's roles allow) or an account's API key
// (the playground and the model list only). No framework, no build step: the server embeds this file.

const ARM = "2024-10-01";
const OPENAI = "2024-10-21";
const SUBSCRIPTIONS = "2022-12-01";
const TERMINAL = new Set(["Succeeded", "Failed", "Canceled"]);

const session = {
  token: sessionStorage.getItem("berth.token") || "",
  key: sessionStorage.getItem("berth.key") || "",
  accounts: [],
  account: null, // {id, name, subscription, resourceGroup, location}
};
let pageTimer = null; // the live refresh of the current page

// ---- DOM helpers ---------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function announce(text) {
  document.getElementById("announcer").textContent = text;
}

function fmtDate(iso) {
  if (!iso) return "—";
  const d = new Date(typeof iso === "number" ? iso * 1000 : iso);
  return isNaN(d) ? String(iso) : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** Amounts of a cent or more to the cent; smaller ones (a few calls' tokens) to three significant digits. */
function money(x, currency) {
  const v = Number(x || 0);
  const text = v === 0 || Math.abs(v) >= 0.01 ? v.toFixed(2) : v.toPrecision(3);
  return `${text} ${currency || ""}`.trim();
}

// ---- API -----------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, target) {
    super(message);
    this.status = status;
    this.code = code;
    this.target = target;
  }
}

/** Errors in words: the API's own message, with its code and status. */
function describe(e) {
  if (e instanceof ApiError) return `${e.message}${e.code ? ` (${e.code}, HTTP ${e.status})` : ` (HTTP ${e.status})`}`;
  return `Berth could not be reached: ${e.message}`;
}

function authHeaders() {
  if (session.token) return { Authorization: `Bearer ${session.token}` };
  if (session.key) return { "api-key": session.key };
  return {};
}

async function api(method, path, body, { headers = {} } = {}) {
  const h = { ...authHeaders(), ...headers };
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(path, { method, headers: h, body: payload });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!res.ok) {
    const err = (json && json.error) || {};
    throw new ApiError(res.status, err.code, err.message || text || res.statusText, err.target || err.param);
  }
  return json;
}

function arm(path, version = ARM) {
  return `${path}${path.includes("?") ? "&" : "?"}api-version=${version}`;
}

/** A data-plane path: the selected account's endpoint with a token, the key's own account otherwise. */
function dataPlane(path) {
  const prefix = session.token && session.account ? `/accounts/${encodeURIComponent(session.account.name)}` : "";
  return `${prefix}/openai${path}${path.includes("?") ? "&" : "?"}api-version=${OPENAI}`;
}

function deploymentsPath(name) {
  return `${session.account.id}/deployments${name ? `/${encodeURIComponent(name)}` : ""}`;
}

// ---- sign-in and the account -----------------------------------------------------------------------

function parseAccountId(id) {
  const m = id.match(/^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/Microsoft\.CognitiveServices\/accounts\/([^/]+)$/i);
  return m ? { id, subscription: m[1], resourceGroup: m[2], name: m[3] } : null;
}

async function loadAccounts() {
  const subs = (await api("GET", arm("/subscriptions", SUBSCRIPTIONS))).value || [];
  const accounts = [];
  for (const s of subs) {
    const list = await api("GET", arm(`/subscriptions/${s.subscriptionId}/providers/Microsoft.CognitiveServices/accounts`));
    for (const a of list.value || []) {
      const parsed = parseAccountId(a.id);
      if (parsed) accounts.push({ ...parsed, location: a.location, subscriptionName: s.displayName });
    }
  }
  return accounts;
}

async function signIn(token, key) {
  session.token = token.trim();
  session.key = session.token ? "" : key.trim();
  if (session.token) {
    session.accounts = await loadAccounts();
    if (!session.accounts.length) throw new ApiError(403, "NoAccounts", "This token's roles give access to no account.");
    const remembered = sessionStorage.getItem("berth.account");
    session.account = session.accounts.find((a) => a.id === remembered) || session.accounts[0];
  } else {
    await api("GET", dataPlane("/models"));
    session.accounts = [];
    session.account = null;
  }
  sessionStorage.setItem("berth.token", session.token);
  sessionStorage.setItem("berth.key", session.key);
}

function signOut() {
  sessionStorage.clear();
  session.token = session.key = "";
  session.account = null;
  // Render the sign-in page once: a change of hash renders it (hashchange), so rendering here too
  // would replace the form a moment later and lose whatever was typed into it meanwhile.
  if (location.hash === "#signin") render();
  else location.hash = "#signin";
}

function renderChrome() {
  const signedIn = Boolean(session.token || session.key);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  const select = document.getElementById("account-select");
  select.replaceChildren(
    ...(session.token
      ? session.accounts.map((a) => el("option", { value: a.id, selected: session.account && a.id === session.account.id }, `${a.name} (${a.resourceGroup}, ${a.location})`))
      : [el("option", {}, "API key")]),
  );
  select.disabled = !session.token;
  const page = currentPage();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#${page}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
    const needsToken = a.getAttribute("href") !== "#playground";
    a.hidden = needsToken && !session.token;
  }
}

function signInPage(main) {
  const error = el("p", { class: "form-error", role: "alert" });
  const token = el("textarea", { id: "signin-token", rows: 4, autocomplete: "off", "aria-describedby": "signin-token-hint" });
  const key = el("input", { id: "signin-key", type: "password", autocomplete: "off", "aria-describedby": "signin-key-hint" });
  const form = el(
    "form",
    { class: "panel signin" },
    el("div", { class: "field" }, el("label", { for: "signin-token" }, "Access token"), token, el("span", { class: "hint", id: "signin-token-hint" }, "`berth token` prints one; it grants what your role assignments allow.")),
    el("div", { class: "field" }, el("label", { for: "signin-key" }, "Or an account's API key"), key, el("span", { class: "hint", id: "signin-key-hint" }, "A key reaches only its account's playground.")),
    error,
    el("div", { class: "actions" }, el("button", { class: "primary", type: "submit" }, "Sign in")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    if (!token.value.trim() && !key.value.trim()) {
      error.textContent = "Enter an access token or an API key.";
      return;
    }
    try {
      await signIn(token.value, key.value);
      location.hash = session.token ? "#models" : "#playground";
    } catch (e) {
      session.token = session.key = "";
      error.textContent = `Sign-in failed: ${describe(e)}`;
    }
  });
  main.append(el("h1", {}, "Sign in to Berth"), form);
  token.focus();
}

// ---- charts ----------------------------------------------------------------------------------------

const COLORS = ["#0b5cad", "#d4731c", "#1a7f37", "#8250df", "#cf222e"];

/** A line chart: series of [x, y] points; returns an <svg> with axes and a title for screen readers. */
function lineChart(title, series, { xLabel = "step", yLabel = "" } = {}) {
  const W = 640, H = 250, L = 48, R = 12, T = 24, B = 32;
  series = series.filter((s) => s.points.length);
  const points = series.flatMap((s) => s.points);
  const figure = el("figure", { class: "chart-figure" });
  if (!points.length) {
    figure.append(el("p", { class: "muted" }, "No data yet."));
    return figure;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(0, ...ys), y1 = Math.max(...ys) || 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  chart.append(svg("title", {}, title));
  chart.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }), svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    chart.append(svg("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end" }, y.toFixed(2)), svg("line", { class: "axis", x1: L, y1: sy(y), x2: W - R, y2: sy(y), "stroke-dasharray": "2 4" }));
  }
  for (const x of [x0, Math.round((x0 + x1) / 2), x1]) chart.append(svg("text", { x: sx(x), y: H - B + 16, "text-anchor": "middle" }, x));
  chart.append(svg("text", { x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle" }, xLabel), svg("text", { x: L, y: 12, "text-anchor": "middle" }, yLabel));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    chart.append(svg("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2 }));
  });
  figure.append(
    el("div", { class: "legend" }, series.map((s, i) => el("span", {}, el("span", { class: `swatch c${i % COLORS.length}` }), s.name))),
    chart,
  );
  return figure;
}

/** A small chart of one figure over the last hour (60 minutes, oldest first); `lines` are series of
 *  numbers or nulls (a gap). Its label says the figure and its total or latest value for screen readers. */
function sparkline(label, lines, summary) {
  const W = 120, H = 28;
  const values = lines.flat().filter((v) => v != null);
  const max = Math.max(1e-9, ...values);
  const chart = svg("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${label}: ${summary}` });
  chart.append(svg("title", {}, `${label} in the last hour: ${summary}`));
  lines.forEach((series, i) => {
    let d = "";
    series.forEach((v, j) => {
      if (v == null) return;
      const x = (j / (series.length - 1)) * (W - 2) + 1, y = H - 2 - (v / max) * (H - 4);
      d += `${d && series[j - 1] != null ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      // A minute alone between gaps shows as a dot.
      if (series[j - 1] == null && series[j + 1] == null) chart.append(svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 1.8, fill: COLORS[i % COLORS.length] }));
    });
    if (d) chart.append(svg("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.5 }));
  });
  return el("div", { class: "spark-row" }, el("span", { class: "spark-label" }, label), chart, el("span", { class: "spark-value" }, summary));
}

/** A deployment's last hour: calls, tokens, time to first token (p50 and p95) and 429s. */
function lastHourCharts(points) {
  const sum = (k) => points.reduce((a, p) => a + p[k], 0);
  const p50 = points.map((p) => p.timeToFirstTokenP50Ms), p95 = points.map((p) => p.timeToFirstTokenP95Ms);
  const lastOf = (xs) => xs.filter((v) => v != null).at(-1);
  const ttft = lastOf(p50) == null ? "no calls" : `p50 ≤ ${lastOf(p50)} ms, p95 ≤ ${lastOf(p95)} ms`;
  return el(
    "div",
    { class: "last-hour" },
    sparkline("Requests", [points.map((p) => p.requests)], `${sum("requests")} requests`),
    sparkline("Tokens", [points.map((p) => p.tokens)], `${sum("tokens")} tokens`),
    sparkline("Time to first token", [p50, p95], ttft),
    sparkline("429s", [points.map((p) => p.rateLimited)], `${sum("rateLimited")} refused`),
  );
}

/** Horizontal stacked bars: rows of {label, parts: [value...]} with part names. */
function barChart(title, partNames, rows, unit) {
  const W = 720, rowH = 26, L = 170, R = 90, T = 8;
  const H = T + rows.length * rowH + 8;
  const max = Math.max(...rows.map((r) => r.parts.reduce((a, b) => a + b, 0)), 1e-9);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  chart.append(svg("title", {}, title));
  rows.forEach((r, i) => {
    const y = T + i * rowH;
    chart.append(svg("text", { x: L - 8, y: y + 16, "text-anchor": "end" }, r.label));
    let x = L;
    r.parts.forEach((v, j) => {
      const w = (v / max) * (W - L - R);
      if (w > 0) chart.append(svg("rect", { x, y: y + 4, width: Math.max(w, 1), height: rowH - 8, fill: COLORS[j % COLORS.length] }, svg("title", {}, `${partNames[j]}: ${money(v, unit)}`)));
      x += w;
    });
    chart.append(svg("text", { x: x + 6, y: y + 16 }, money(r.parts.reduce((a, b) => a + b, 0), unit)));
  });
  return el(
    "figure",
    { class: "chart-figure" },
    el("div", { class: "legend" }, partNames.map((n, i) => el("span", {}, el("span", { class: `swatch c${i % COLORS.length}` }), n))),
    chart,
  );
}

// ---- fine-tuning data shared by pages ------------------------------------------------------------

async function jobs() {
  return (await api("GET", dataPlane("/fine_tuning/jobs?limit=100"))).data || [];
}

async function lossSeries(jobId) {
  const events = [];
  for (let after = null, more = true; more; ) {
    const page = await api("GET", dataPlane(`/fine_tuning/jobs/${jobId}/events?limit=100${after ? `&after=${after}` : ""}`));
    events.push(...(page.data || []));
    more = Boolean(page.has_more) && page.data.length > 0;
    after = more ? page.data[page.data.length - 1].id : null;
  }
  const metrics = events.filter((e) => e.type === "metrics" && e.data).map((e) => e.data).sort((a, b) => a.step - b.step);
  return [
    { name: "training loss", points: metrics.filter((m) => m.train_loss != null).map((m) => [m.step, m.train_loss]) },
    { name: "validation loss", points: metrics.filter((m) => m.valid_loss != null).map((m) => [m.step, m.valid_loss]) },
  ];
}

// ---- models and the deploy dialog ---------------------------------------------------------------------

function modelKind(m) {
  if (m.name.startsWith("ftchkpt-")) return "Checkpoint";
  return m.baseModel ? "Fine-tuned" : "Base";
}

async function modelsPage(main) {
  main.append(el("h1", {}, "Models"));
  const list = (await api("GET", arm(`${session.account.id}/models`))).value || [];
  let allJobs = [];
  try {
    allJobs = await jobs();
  } catch {
    allJobs = [];
  }
  const jobOf = async (m) => {
    const direct = allJobs.find((j) => j.fine_tuned_model === m.name);
    if (direct) return direct;
    for (const j of allJobs) {
      const cps = (await api("GET", dataPlane(`/fine_tuning/jobs/${j.id}/checkpoints`))).data || [];
      if (cps.some((c) => c.id === m.name)) return j;
    }
    return null;
  };
  for (const kind of ["Base", "Fine-tuned", "Checkpoint"]) {
    const models = list.filter((m) => modelKind(m) === kind);
    if (!models.length) continue;
    main.append(el("h2", {}, { Base: "Base models", "Fine-tuned": "Fine-tuned models", Checkpoint: "Checkpoints" }[kind]));
    const rows = models.flatMap((m, i) => {
      // The loss curve of a fine-tuned model or checkpoint opens in a full-width row below it.
      const chartId = `loss-${kind}-${i}`;
      const chartCell = el("td", { colspan: 5 });
      const chartRow = el("tr", { id: chartId, hidden: true }, chartCell);
      const curve =
        kind === "Base"
          ? null
          : el("button", { type: "button", class: "quiet link", "aria-expanded": "false", "aria-controls": chartId, "aria-label": `Loss curve of ${m.name}` }, "Loss curve");
      if (curve) {
        curve.addEventListener("click", async () => {
          const open = chartRow.hidden;
          chartRow.hidden = !open;
          curve.setAttribute("aria-expanded", String(open));
          if (!open || chartRow.dataset.loaded) return;
          chartRow.dataset.loaded = "1";
          try {
            const job = await jobOf(m);
            chartCell.append(job ? lineChart(`Loss of ${job.id}`, await lossSeries(job.id), { yLabel: "loss" }) : el("p", { class: "muted" }, "This model was imported, not trained here."));
          } catch (e) {
            chartCell.append(el("p", { class: "form-error" }, describe(e)));
          }
        });
      }
      const row = el(
        "tr",
        {},
        el("td", {}, el("strong", {}, m.name), curve ? el("div", {}, curve) : null),
        el("td", {}, m.baseModel ? m.baseModel.name : "—"),
        el("td", {}, fmtDate(m.systemData && m.systemData.createdAt)),
        el("td", {}, (m.skus || []).map((s) => s.name).join(", ") || "none in this region"),
        el("td", {}, el("button", { type: "button", class: "primary", disabled: !(m.skus || []).length, "aria-label": `Deploy ${m.name}`, onclick: () => deployDialog(m) }, "Deploy")),
      );
      return [row, chartRow];
    });
    main.append(
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Model"), el("th", {}, "Base model"), el("th", {}, "Created"), el("th", {}, "Deployment types"), el("th", {}, ""))), el("tbody", {}, rows)),
    );
  }
  if (!list.length) main.append(el("p", { class: "muted" }, "No models yet: add a base model (`berth base-model add`) or fine-tune one."));
}

/** Which field of the deploy dialog an API error concerns. */
function fieldOf(e) {
  const c = `${e.code || ""} ${e.target || ""}`.toLowerCase();
  if (/capacity|quota|ptu/.test(c) || /capacity/i.test(e.message)) return "capacity";
  if (/sku|deploymenttype/.test(c)) return "type";
  if (/name|conflict|exists/.test(c)) return "name";
  return null;
}

function field(id, label, control, hint) {
  return el(
    "div",
    { class: "field" },
    el("label", { for: id }, label),
    control,
    hint === undefined || hint === null ? null : el("span", { class: "hint", id: `${id}-hint` }, hint),
    el("span", { class: "error", id: `${id}-error`, role: "alert" }),
  );
}

function deployDialog(model) {
  const skus = model.skus || [];
  const name = el("input", { id: "deploy-name", required: true, maxlength: 64, value: model.name.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 64), "aria-describedby": "deploy-name-hint deploy-name-error" });
  const type = el("select", { id: "deploy-type", "aria-describedby": "deploy-type-error" }, skus.map((s) => el("option", { value: s.name }, s.name)));
  const capacity = el("input", { id: "deploy-capacity", type: "number", required: true, "aria-describedby": "deploy-capacity-hint deploy-capacity-error" });
  const general = el("p", { class: "form-error", role: "alert" });
  const create = el("button", { type: "submit", class: "primary" }, "Create");
  const capacityField = field("deploy-capacity", "Capacity", capacity, "");
  const syncCapacity = () => {
    const s = skus.find((x) => x.name === type.value);
    if (!s) return;
    Object.assign(capacity, { min: s.capacity.minimum, max: s.capacity.maximum, step: s.capacity.step, value: s.capacity.default });
    const unit = /Provisioned/.test(s.name) ? "PTU" : "thousand tokens per minute";
    capacityField.querySelector(".hint").textContent = `${s.capacity.minimum}–${s.capacity.maximum} ${unit}, in steps of ${s.capacity.step}.`;
  };
  type.addEventListener("change", syncCapacity);
  const dialog = el(
    "dialog",
    { "aria-labelledby": "deploy-title" },
    el(
      "form",
      { method: "dialog", novalidate: true },
      el("h2", { id: "deploy-title" }, `Deploy ${model.name}`),
      field("deploy-name", "Deployment name", name, "Letters, digits, '-' and '_'; up to 64 characters. Clients call the deployment by this name."),
      field("deploy-type", "Deployment type", type),
      capacityField,
      general,
      el("div", { class: "actions" }, el("button", { type: "button", onclick: () => dialog.close() }, "Cancel"), create),
    ),
  );
  syncCapacity();
  const showError = (which, text) => {
    const input = { name, type, capacity }[which];
    if (input) {
      input.setAttribute("aria-invalid", "true");
      dialog.querySelector(`#deploy-${which}-error`).textContent = text;
      input.focus();
    } else {
      general.textContent = text;
    }
  };
  dialog.querySelector("form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const n of dialog.querySelectorAll(".error")) n.textContent = "";
    for (const n of dialog.querySelectorAll("[aria-invalid]")) n.removeAttribute("aria-invalid");
    general.textContent = "";
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{1,63}$/.test(name.value)) return showError("name", "Use 2 to 64 letters, digits, '-' or '_', starting with a letter or digit.");
    const cap = Number(capacity.value);
    if (!Number.isInteger(cap) || cap < Number(capacity.min) || cap > Number(capacity.max)) return showError("capacity", `Capacity must be a whole number from ${capacity.min} to ${capacity.max}.`);
    create.disabled = true;
    try {
      const existing = await api("GET", arm(deploymentsPath(name.value))).catch((e) => (e.status === 404 ? null : Promise.reject(e)));
      if (existing) return showError("name", `A deployment named '${name.value}' already exists in this account.`);
      await api("PUT", arm(deploymentsPath(name.value)), { sku: { name: type.value, capacity: cap }, properties: { model: { format: "OpenAI", name: model.name, version: "1" } } });
      dialog.close();
      announce(`Deployment ${name.value} is being created.`);
      location.hash = "#deployments";
    } catch (e) {
      showError(fieldOf(e), describe(e));
    } finally {
      create.disabled = false;
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  name.focus();
  name.select();
}

// ---- deployments -----------------------------------------------------------------------------------

function confirmDialog(question, action) {
  return new Promise((resolve) => {
    const dialog = el(
      "dialog",
      { "aria-labelledby": "confirm-title" },
      el("h2", { id: "confirm-title" }, question),
      el("div", { class: "actions" }, el("button", { type: "button", onclick: () => (dialog.close(), resolve(false)) }, "Cancel"), el("button", { type: "button", class: "primary danger", onclick: () => (dialog.close(), resolve(true)) }, action)),
    );
    dialog.addEventListener("close", () => (dialog.remove(), resolve(false)));
    document.body.append(dialog);
    dialog.showModal();
  });
}

const seenStates = new Map();

async function deploymentsPage(main) {
  main.append(el("h1", {}, "Deployments"));
  const status = el("p", { class: "form-error", role: "alert" });
  const body = el("tbody");
  main.append(
    el(
      "table",
      { id: "deployments" },
      el("thead", {}, el("tr", {}, ["Name", "Model", "Type", "Capacity", "State", "Deleted if idle after", "Last hour", ""].map((h) => el("th", { class: h === "Capacity" ? "num" : "" }, h)))),
      body,
    ),
    status,
  );
  // The operator also sees the engine pools deployments run on, with each server's health.
  const pools = el("section", { id: "engine-pools", hidden: true });
  main.append(pools);
  const started = new Map();
  const refresh = async () => {
    await enginePools(pools);
    let list;
    try {
      list = (await api("GET", arm(deploymentsPath()))).value || [];
      status.textContent = "";
    } catch (e) {
      status.textContent = describe(e);
      return 5000;
    }
    // Keep what the user is typing: rows are replaced only when something changed.
    const signature = JSON.stringify(list.map((d) => [d.name, d.properties.provisioningState, d.sku, d.properties.scheduledDeletionTime]));
    const busy = list.some((d) => !TERMINAL.has(d.properties.provisioningState));
    if (body.dataset.signature !== signature || busy) {
      body.dataset.signature = signature;
      body.replaceChildren(...list.map((d) => deploymentRow(d, started, refreshNow)));
      if (!list.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No deployments. Deploy one from Models.")));
    }
    // Each deployment's last hour, summed over every replica, redrawn at each refresh.
    await Promise.all(
      list.map(async (d) => {
        const cell = body.querySelector(`tr[data-deployment="${CSS.escape(d.name)}"] td.last-hour-cell`);
        if (!cell) return;
        try {
          const points = (await api("GET", arm(`${deploymentsPath(d.name)}/lastHour`))).value || [];
          cell.replaceChildren(lastHourCharts(points));
        } catch (e) {
          cell.replaceChildren(el("span", { class: "muted" }, describe(e)));
        }
      }),
    );
    for (const d of list) {
      const was = seenStates.get(d.name);
      if (was && was !== d.properties.provisioningState) announce(`${d.name}: ${d.properties.provisioningState}`);
      seenStates.set(d.name, d.properties.provisioningState);
    }
    return busy ? 700 : 5000;
  };
  const refreshNow = () => live(refresh);
  await live(refresh);
}

/** Fills `section` with the engine pools and their endpoints; hidden unless the user is the operator and pools exist. */
async function enginePools(section) {
  let pools;
  try {
    pools = (await api("GET", "/berth/v1/engine-pools")).value || [];
  } catch {
    section.hidden = true;
    return;
  }
  section.hidden = pools.length === 0;
  const rows = pools.flatMap((p) =>
    p.endpoints.map((e) =>
      el(
        "tr",
        { "data-endpoint": e.url },
        el("td", {}, p.name),
        el("td", {}, e.url),
        el("td", { "data-health": e.health }, el("span", { class: `badge ${e.health === "up" ? "Succeeded" : e.health === "down" ? "Failed" : "Creating"}` }, e.health), e.error ? el("div", { class: "muted" }, e.error) : ""),
        el("td", {}, e.adapters.length ? e.adapters.join(", ") : "none"),
        el("td", { class: "num" }, `${e.running} / ${e.waiting}`),
        el("td", { class: "num" }, `${Math.round(e.kv_cache_usage * 100)}%`),
      ),
    ),
  );
  section.replaceChildren(
    el("h2", {}, "Engine pools"),
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ["Pool", "Endpoint", "Health", "Adapters loaded", "Running / waiting", "KV cache"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows),
    ),
  );
}

/** Runs `step` now and again after the delay it returns, while its page is shown. */
async function live(step) {
  clearTimeout(pageTimer);
  const page = currentPage();
  let delay = 5000;
  try {
    delay = await step();
  } catch (e) {
    announce(describe(e));
  }
  if (currentPage() === page) pageTimer = setTimeout(() => live(step), delay);
}

function deploymentRow(d, started, refreshNow) {
  const state = d.properties.provisioningState;
  const name = d.name;
  if (!TERMINAL.has(state) && !started.has(name)) started.set(name, Date.now());
  const stateCell = el("td", { "data-state": state });
  if (!TERMINAL.has(state)) {
    const secs = Math.round((Date.now() - (started.get(name) || Date.now())) / 1000);
    stateCell.append(el("progress", { "aria-label": `${name} provisioning` }), el("span", { class: `badge ${state}` }, state), el("span", { class: "muted" }, ` ${secs}s`));
  } else {
    stateCell.append(el("span", { class: `badge ${state}` }, state));
    if (d.properties.error) stateCell.append(el("div", { class: "form-error" }, d.properties.error.message));
  }
  const capacity = el("input", { type: "number", value: d.sku.capacity, min: 1, "aria-label": `New capacity for ${name}` });
  const rowError = el("div", { class: "form-error", role: "alert" });
  const scale = el(
    "form",
    { class: "scale" },
    capacity,
    el("button", { type: "submit", "aria-label": `Scale ${name}` }, "Scale"),
  );
  scale.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    rowError.textContent = "";
    try {
      await api("PUT", arm(deploymentsPath(name)), { sku: { name: d.sku.name, capacity: Number(capacity.value) }, properties: { model: d.properties.model } });
      announce(`${name} scaled to ${capacity.value}.`);
      refreshNow();
    } catch (e) {
      rowError.textContent = describe(e);
    }
  });
  const del = el("button", { type: "button", class: "danger", "aria-label": `Delete ${name}` }, "Delete");
  del.addEventListener("click", async () => {
    if (!(await confirmDialog(`Delete the deployment ${name}?`, "Delete"))) return;
    try {
      await api("DELETE", arm(deploymentsPath(name)));
      announce(`${name} deleted.`);
      refreshNow();
    } catch (e) {
      rowError.textContent = describe(e);
    }
  });
  return el(
    "tr",
    { "data-deployment": name },
    el("td", {}, el("strong", {}, name)),
    el(
      "td",
      {},
      d.properties.model.name,
      d.properties.enginePool ? el("div", { class: "muted engine-pool" }, `on engine pool ${d.properties.enginePool}`) : "",
    ),
    el("td", {}, d.sku.name),
    el("td", { class: "num" }, d.sku.capacity),
    stateCell,
    el("td", {}, fmtDate(d.properties.scheduledDeletionTime)),
    el("td", { class: "last-hour-cell" }),
    el("td", {}, el("div", { class: "row" }, scale, del), rowError),
  );
}

// ---- playground ------------------------------------------------------------------------------------

async function playgroundPage(main) {
  main.append(el("h1", {}, "Chat playground"));
  let names = [];
  if (session.token) {
    names = ((await api("GET", arm(deploymentsPath()))).value || []).filter((d) => d.properties.provisioningState === "Succeeded").map((d) => d.name);
  }
  const deployment = session.token
    ? el("select", { id: "pg-deployment" }, names.map((n) => el("option", { value: n }, n)))
    : el("input", { id: "pg-deployment", placeholder: "deployment name" });
  const system = el("textarea", { id: "pg-system", rows: 4 }, "You are a helpful assistant.");
  const temperature = el("input", { id: "pg-temperature", type: "number", min: 0, max: 2, step: 0.1, value: 0.7 });
  const maxTokens = el("input", { id: "pg-max-tokens", type: "number", min: 1, max: 4096, step: 1, value: 128 });
  const format = el(
    "select",
    { id: "pg-format" },
    el("option", { value: "text" }, "Text"),
    el("option", { value: "json_object" }, "JSON object"),
    el("option", { value: "json_schema" }, "JSON schema"),
  );
  const schema = el("textarea", { id: "pg-schema", rows: 5, placeholder: '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}' });
  const tools = el("textarea", { id: "pg-tools", rows: 5, placeholder: '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]' });
  const schemaField = field("pg-schema", "Schema", schema);
  // Shown only for a JSON schema (a style, not `hidden`: the field's own display would override it).
  const showSchema = () => {
    schemaField.style.display = format.value === "json_schema" ? "" : "none";
  };
  showSchema();
  format.addEventListener("change", showSchema);
  const transcript = el("div", { class: "transcript", id: "pg-transcript", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const input = el("textarea", { id: "pg-input", rows: 3, placeholder: "Type a message; Enter sends, Shift+Enter starts a new line." });
  const send = el("button", { type: "submit", class: "primary" }, "Send");
  const clear = el("button", { type: "button" }, "Clear chat");
  const error = el("p", { class: "form-error", role: "alert" });
  const history = [];
  clear.addEventListener("click", () => {
    history.length = 0;
    transcript.replaceChildren();
  });
  const form = el("form", {}, field("pg-input", "Message", input), error, el("div", { class: "actions" }, clear, send));
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const text = input.value.trim();
    if (!text) return;
    if (!deployment.value) {
      error.textContent = "Choose a deployment first.";
      return;
    }
    const extra = {};
    try {
      if (format.value === "json_object") extra.response_format = { type: "json_object" };
      if (format.value === "json_schema") {
        extra.response_format = { type: "json_schema", json_schema: { name: "playground", strict: true, schema: JSON.parse(schema.value || "{}") } };
      }
    } catch (e) {
      error.textContent = `The schema is not valid JSON: ${e.message}`;
      return;
    }
    try {
      if (tools.value.trim()) extra.tools = JSON.parse(tools.value);
    } catch (e) {
      error.textContent = `The tools are not valid JSON: ${e.message}`;
      return;
    }
    history.push({ role: "user", content: text });
    transcript.append(el("div", { class: "msg user" }, el("span", { class: "who" }, "You"), el("div", { class: "text" }, text)));
    input.value = "";
    const answer = el("div", { class: "text" });
    const usage = el("div", { class: "usage" });
    transcript.append(el("div", { class: "msg assistant" }, el("span", { class: "who" }, "Assistant"), answer, usage));
    send.disabled = true;
    try {
      const messages = [...(system.value.trim() ? [{ role: "system", content: system.value }] : []), ...history];
      const reply = await streamChat(deployment.value, { messages, temperature: Number(temperature.value), max_tokens: Number(maxTokens.value), ...extra }, (delta) => {
        answer.textContent += delta;
        transcript.scrollTop = transcript.scrollHeight;
      });
      for (const call of reply.calls) {
        answer.append(el("pre", { class: "tool-call" }, `${call.function.name}(${call.function.arguments})`));
      }
      history.push(reply.calls.length ? { role: "assistant", content: reply.text || null, tool_calls: reply.calls } : { role: "assistant", content: reply.text });
      if (reply.usage) {
        const cached = (reply.usage.prompt_tokens_details && reply.usage.prompt_tokens_details.cached_tokens) || 0;
        usage.textContent = `${reply.usage.prompt_tokens} prompt tokens (${cached} cached) · ${reply.usage.completion_tokens} completion tokens · ${reply.finish || "done"}`;
      }
    } catch (e) {
      history.pop();
      answer.textContent = "";
      error.textContent = describe(e);
    } finally {
      send.disabled = false;
      input.focus();
    }
  });
  main.append(
    el(
      "div",
      { class: "chat" },
      el(
        "div",
        { class: "panel" },
        field("pg-deployment", "Deployment", deployment, names.length || !session.token ? "" : "No deployment has succeeded yet."),
        field("pg-system", "System message", system),
        el("div", { class: "row" }, field("pg-temperature", "Temperature", temperature), field("pg-max-tokens", "Max tokens", maxTokens)),
        field("pg-format", "Response format", format),
        schemaField,
        field("pg-tools", "Tools (JSON)", tools, "Function tools the model may call; its calls are shown as name(arguments)."),
      ),
      el("div", {}, transcript, form),
    ),
  );
}

/** POSTs a streamed chat completion and reads its server-sent events. */
async function streamChat(deployment, body, onDelta) {
  const res = await fetch(dataPlane(`/deployments/${encodeURIComponent(deployment)}/chat/completions`), {
    method: "POST",
    headers: { ...authHeaders(), "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok) {
    let err = {};
    try {
      err = (await res.json()).error || {};
    } catch {
      err = {};
    }
    throw new ApiError(res.status, err.code, err.message || res.statusText);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "", usage = null, finish = null;
  const calls = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(500, chunk.error.code, chunk.error.message);
        for (const choice of chunk.choices || []) {
          const delta = (choice.delta && choice.delta.content) || "";
          if (delta) {
            text += delta;
            onDelta(delta);
          }
          for (const d of (choice.delta && choice.delta.tool_calls) || []) {
            const call = (calls[d.index] = calls[d.index] || { id: "", type: "function", function: { name: "", arguments: "" } });
            if (d.id) call.id = d.id;
            if (d.function && d.function.name) call.function.name += d.function.name;
            if (d.function && d.function.arguments) call.function.arguments += d.function.arguments;
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
        if (chunk.usage) usage = chunk.usage;
      }
    }
  }
  return { text, usage, finish, calls: calls.filter(Boolean) };
}

// ---- costs -------------------------------------------------------------------------------------------

function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

async function costsPage(main) {
  main.append(el("h1", {}, "Costs"));
  const today = new Date();
  const from = el("input", { id: "cost-from", type: "date", value: isoDay(new Date(today.getTime() - 6 * 86400000)) });
  const to = el("input", { id: "cost-to", type: "date", value: isoDay(today) });
  const out = el("div", { id: "cost-report" });
  const form = el("form", { class: "row panel" }, field("cost-from", "From", from), field("cost-to", "To (inclusive)", to), el("div", { class: "field" }, el("button", { type: "submit", class: "primary" }, "Show")));
  const show = async () => {
    out.replaceChildren();
    if (!from.value || !to.value || from.value > to.value) {
      out.append(el("p", { class: "form-error", role: "alert" }, "Choose a start date on or before the end date."));
      return;
    }
    const end = new Date(`${to.value}T00:00:00Z`);
    end.setUTCDate(end.getUTCDate() + 1);
    const a = session.account;
    const q = `from=${from.value}T00:00:00Z&to=${end.toISOString().replace(/\.\d+Z$/, "Z")}&resourceGroup=${encodeURIComponent(a.resourceGroup)}&account=${encodeURIComponent(a.name)}`;
    try {
      const report = await api("GET", arm(`/subscriptions/${a.subscription}/providers/Microsoft.CognitiveServices/costs?${q}`));
      const lines = report.value || [];
      out.append(el("p", {}, `Total for ${a.name}: `, el("strong", {}, money(report.totalCost, report.currency)), ` (${fmtDate(report.from)} to ${fmtDate(report.to)})`));
      if (!lines.length) {
        out.append(el("p", { class: "muted" }, "Nothing was deployed or called in this period."));
        return;
      }
      out.append(barChart("Cost per deployment: hosting and tokens", ["hosting", "tokens"], lines.map((l) => ({ label: l.deployment, parts: [l.hostingCost, l.tokenCost] })), report.currency));
      out.append(
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ["Deployment", "Model", "Type", "Hosting hours", "Hosting", "Requests", "Input tokens", "Cached", "Output tokens", "Tokens", "Total"].map((h, i) => el("th", { class: i >= 3 ? "num" : "" }, h)))),
          el(
            "tbody",
            {},
            lines.map((l) =>
              el(
                "tr",
                {},
                el("td", {}, l.deployment),
                el("td", {}, l.model),
                el("td", {}, l.sku),
                el("td", { class: "num" }, l.hostingHours.toFixed(2)),
                el("td", { class: "num" }, money(l.hostingCost, report.currency)),
                el("td", { class: "num" }, l.requests),
                el("td", { class: "num" }, l.inputTokens),
                el("td", { class: "num" }, l.cachedInputTokens),
                el("td", { class: "num" }, l.outputTokens),
                el("td", { class: "num" }, money(l.tokenCost, report.currency)),
                el("td", { class: "num" }, money(l.totalCost, report.currency)),
              ),
            ),
          ),
        ),
      );
    } catch (e) {
      out.append(el("p", { class: "form-error", role: "alert" }, describe(e)));
    }
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    show();
  });
  main.append(form, out);
  await show();
}

// ---- fine-tuning -------------------------------------------------------------------------------------

async function fineTuningPage(main) {
  main.append(el("h1", {}, "Fine-tuning"));
  const models = ((await api("GET", arm(`${session.account.id}/models`))).value || []).filter((m) => !m.baseModel && !m.name.startsWith("ftchkpt-"));
  const files = (await api("GET", dataPlane("/files"))).data || [];
  const fileOptions = (withNone) => [...(withNone ? [el("option", { value: "" }, "none")] : []), ...files.map((f) => el("option", { value: f.id }, `${f.filename} (${f.id})`))];

  const upload = el("input", { id: "ft-upload", type: "file", accept: ".jsonl,application/jsonl,application/json" });
  const uploadError = el("p", { class: "form-error", role: "alert" });
  const uploadForm = el("form", { class: "panel" }, el("h2", {}, "Upload training data"), field("ft-upload", "JSONL file", upload, 'One {"messages": [...]} conversation a line.'), uploadError, el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Upload")));
  uploadForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    uploadError.textContent = "";
    if (!upload.files.length) {
      uploadError.textContent = "Choose a file first.";
      return;
    }
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", upload.files[0]);
    try {
      const f = await api("POST", dataPlane("/files"), form);
      announce(`Uploaded ${f.filename} as ${f.id}.`);
      render();
    } catch (e) {
      uploadError.textContent = describe(e);
    }
  });

  const base = el("select", { id: "ft-model" }, models.map((m) => el("option", { value: m.name }, m.name)));
  const training = el("select", { id: "ft-training" }, fileOptions(false));
  const validation = el("select", { id: "ft-validation" }, fileOptions(true));
  const epochs = el("input", { id: "ft-epochs", type: "number", min: 1, max: 50, value: 2 });
  const suffix = el("input", { id: "ft-suffix", maxlength: 40 });
  const jobError = el("p", { class: "form-error", role: "alert" });
  const jobForm = el(
    "form",
    { class: "panel" },
    el("h2", {}, "Start a job"),
    el("div", { class: "row" }, field("ft-model", "Base model", base), field("ft-training", "Training file", training), field("ft-validation", "Validation file", validation), field("ft-epochs", "Epochs", epochs), field("ft-suffix", "Suffix", suffix)),
    jobError,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Start")),
  );
  jobForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    jobError.textContent = "";
    const body = { model: base.value, training_file: training.value, hyperparameters: { n_epochs: Number(epochs.value) } };
    if (validation.value) body.validation_file = validation.value;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    try {
      const job = await api("POST", dataPlane("/fine_tuning/jobs"), body);
      announce(`Started ${job.id}.`);
      render();
    } catch (e) {
      jobError.textContent = describe(e);
    }
  });

  const jobsBody = el("tbody");
  const chart = el("div", { id: "ft-chart" });
  let watched = null;
  main.append(
    uploadForm,
    jobForm,
    el("h2", {}, "Jobs"),
    el("table", {}, el("thead", {}, el("tr", {}, ["Job", "Model", "Status", "Trained tokens", "Fine-tuned model", ""].map((h) => el("th", {}, h)))), jobsBody),
    chart,
  );
  const refresh = async () => {
    let list = [];
    try {
      list = await jobs();
    } catch (e) {
      jobError.textContent = describe(e);
      return 5000;
    }
    jobsBody.replaceChildren(
      ...list.map((j) =>
        el(
          "tr",
          {},
          el("td", {}, j.id),
          el("td", {}, j.model),
          el("td", {}, el("span", { class: `badge ${j.status}` }, j.status)),
          el("td", {}, j.trained_tokens ?? "—"),
          el("td", {}, j.fine_tuned_model || "—"),
          el("td", {}, el("button", { type: "button", "aria-label": `Show the loss of ${j.id}`, onclick: () => ((watched = j.id), live(refresh)) }, "Loss")),
        ),
      ),
    );
    if (!list.length) jobsBody.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No jobs yet.")));
    if (!watched && list.length) watched = list[0].id;
    if (watched) {
      try {
        chart.replaceChildren(el("h2", {}, `Loss of ${watched}`), lineChart(`Loss of ${watched}`, await lossSeries(watched), { yLabel: "loss" }));
      } catch (e) {
        chart.replaceChildren(el("p", { class: "form-error", role: "alert" }, describe(e)));
      }
    }
    return list.some((j) => j.status === "running" || j.status === "pending") ? 2000 : 10000;
  };
  await live(refresh);
}

// ---- routing -----------------------------------------------------------------------------------------

const PAGES = { models: modelsPage, deployments: deploymentsPage, playground: playgroundPage, costs: costsPage, "fine-tuning": fineTuningPage };

function currentPage() {
  const page = location.hash.replace(/^#/, "");
  return PAGES[page] ? page : session.token ? "models" : session.key ? "playground" : "signin";
}

async function render() {
  clearTimeout(pageTimer);
  const main = document.getElementById("main");
  main.replaceChildren();
  const signedIn = Boolean(session.token || session.key);
  renderChrome();
  if (!signedIn) return signInPage(main);
  const page = currentPage();
  if (!session.token && page !== "playground") {
    location.hash = "#playground";
    return;
  }
  try {
    await PAGES[page](main);
  } catch (e) {
    main.append(el("p", { class: "form-error", role: "alert" }, describe(e)));
    if (e instanceof ApiError && e.status === 401) main.append(el("p", {}, el("button", { type: "button", onclick: signOut }, "Sign in again")));
  }
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  document.getElementById("account-select").addEventListener("change", (ev) => {
    session.account = session.accounts.find((a) => a.id === ev.target.value) || session.account;
    sessionStorage.setItem("berth.account", session.account.id);
    render();
  });
  window.addEventListener("hashchange", render);
  if (session.token || session.key) {
    try {
      await signIn(session.token, session.key);
    } catch {
      session.token = session.key = "";
    }
  }
  render();
}

start();
