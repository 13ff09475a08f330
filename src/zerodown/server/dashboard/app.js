// zerodown dashboard: a small hash-routed page over the control plane's API. Vanilla JS, no build.
"use strict";

const TOKEN_KEY = "zerodown-token";
const view = document.getElementById("view");
let overview = null;
let cleanup = [];  // what the current page must stop when the user leaves it (streams, timers)

// -- helpers -----------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "string" || typeof child === "number"
      ? document.createTextNode(String(child)) : child);
  }
  return node;
}

const short = (sha) => (sha ? String(sha).slice(0, 10) : "–");
// A revision as a user reads it: `v2 (1f03ba05)` when the API names it, else the short sha.
function revisionText(revision, label) {
  if (label) return label;
  return revision ? String(revision).slice(0, 8) : "–";
}
const rev = (item) => (item ? revisionText(item.revision, item.revision_label) : "–");
const badge = (text, cls) => h("span", { class: `badge ${cls || text}` }, text);
function when(ts) {
  if (!ts) return "–";
  return new Date(ts * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "medium" });
}
function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return `${s.toFixed(1)} s`;
  if (s < 5400) return `${(s / 60).toFixed(1)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
const percent = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)} %`);

function toast(message, isError) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = isError ? "error" : "";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

async function api(path, options) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options && options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...(options || {}), headers });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail;
    const error = new Error(typeof detail === "string" ? detail : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// Confirmation dialog; asks for the token (kept in sessionStorage) when none is stored yet.
function confirmAction(title, text) {
  const dialog = document.getElementById("confirm");
  const needToken = !sessionStorage.getItem(TOKEN_KEY);
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-token-label").hidden = !needToken;
  const input = document.getElementById("confirm-token");
  input.value = "";
  input.required = needToken;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") return resolve(false);
      if (needToken) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      resolve(true);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    (needToken ? input : document.getElementById("confirm-ok")).focus();
  });
}

async function act(title, text, path, body) {
  if (!(await confirmAction(title, text))) return null;
  try {
    const result = await api(path, { method: "POST", body: body ? JSON.stringify(body) : undefined });
    toast(`${title}: accepted`);
    return result;
  } catch (error) {
    if (error.status === 401) sessionStorage.removeItem(TOKEN_KEY);
    toast(`${title} refused: ${error.message}`, true);
    return null;
  }
}

// -- pages -------------------------------------------------------------------------------------

async function servicesPage() {
  const fleets = await api("/api/services");
  const root = h("div", {}, h("h1", {}, "Services"));
  const grid = h("div", { class: "grid" });
  for (const fleet of fleets) grid.appendChild(serviceCard(fleet));
  root.appendChild(grid);
  return root;
}

// Traffic per revision from the router's weights (non-draining, healthy targets): a canary shows
// as two revisions sharing 100 %. [{revision, label, percent}], biggest share first.
function trafficShares(targets) {
  const byRevision = new Map();
  for (const t of targets) {
    if (t.draining || t.health !== "healthy" || !(t.weight > 0)) continue;
    const entry = byRevision.get(t.revision) || { revision: t.revision, label: t.revision_label, weight: 0 };
    entry.weight += t.weight;
    byRevision.set(t.revision, entry);
  }
  const total = [...byRevision.values()].reduce((sum, e) => sum + e.weight, 0);
  return [...byRevision.values()].map((e) => ({ ...e, percent: Math.round((e.weight / total) * 100) }))
    .sort((a, b) => b.percent - a.percent);
}

function weightsList(shares) {
  return h("span", { class: "weights" }, shares.map((w) => h("span", { class: "weight", "data-revision": w.revision },
    h("span", { class: "mono" }, revisionText(w.revision, w.label)), " ", h("b", {}, `${w.percent} %`))));
}

function healthBadge(fleet, running) {
  // Nothing was ever deployed here (or the first deploy is still on its way): no red "0 healthy".
  if (!fleet.revision && !fleet.live && !fleet.targets.length) {
    return running ? badge("first deploy running", "neutral") : badge("not deployed yet", "neutral");
  }
  return badge(`${fleet.healthy} healthy`, fleet.healthy > 0 ? "healthy" : "unhealthy");
}

function serviceCard(fleet) {
  const last = fleet.last_deployment;
  const running = last && !last.terminal;
  const shares = trafficShares(fleet.targets);
  const card = h("section", { class: "card service", "data-route": fleet.route },
    h("header", {},
      h("h2", {}, `${fleet.service} `, h("span", { class: "muted" }, fleet.environment)),
      h("span", { class: "health" }, healthBadge(fleet, running))),
    h("dl", { class: "kv" },
      h("dt", {}, "revision"), h("dd", { class: "mono revision" },
        fleet.revision ? revisionText(fleet.revision, fleet.revision_label) : "–"),
      shares.length > 1 ? [h("dt", {}, "traffic"), h("dd", { class: "traffic" }, weightsList(shares))] : null,
      h("dt", {}, "last"), h("dd", {}, last
        ? h("span", {}, h("a", { href: `#/deployment/${last.id}` }, `${last.kind} ${rev(last)}`),
          " ", badge(last.state), " ", h("span", { class: "muted" }, when(last.created_at)))
        : "never deployed")),
    last && last.reason && !running
      ? h("div", { class: `reason ${last.state === "succeeded" ? "ok" : ""}` }, last.reason) : null);
  if (fleet.targets.length) {
    card.appendChild(h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "instance"), h("th", {}, "revision"),
        h("th", {}, "health"), h("th", { class: "hide-sm" }, "in-flight"))),
      h("tbody", {}, fleet.targets.map((t) => h("tr", {},
        h("td", { class: "mono" }, t.instance), h("td", { class: "mono" }, rev(t)),
        h("td", {}, badge(t.draining ? "draining" : t.health)),
        h("td", { class: "hide-sm" }, t.inflight))))));
  }
  const revision = h("input", { placeholder: "revision (sha, tag)", size: 14, "aria-label": "revision" });
  card.appendChild(h("div", { class: "actions" },
    running ? h("a", { class: "button", href: `#/deployment/${last.id}` }, h("span", { class: "live" }), "follow deployment") : null,
    revision,
    h("button", { class: "primary deploy", disabled: running,
      title: running ? "a deployment is running here: follow it, or abort it first" : null, onclick: async () => {
      const rev = revision.value.trim();
      if (!rev) return toast("type a revision to deploy", true);
      const done = await act(`Deploy ${fleet.service} ${rev}`,
        `Deploy ${rev} of ${fleet.service} to ${fleet.environment}?`, "/api/deployments",
        { service: fleet.service, environment: fleet.environment, revision: rev });
      if (done) location.hash = `#/deployment/${done.id}`;
    } }, "Deploy"),
    h("button", { class: "danger rollback", disabled: running || !fleet.rollback_to,
      title: running ? "a deployment is running here" : !fleet.rollback_to
        ? "no earlier good revision to roll back to" : `roll back to ${rev(fleet.rollback_to)}`, onclick: async () => {
      const done = await act(`Roll back ${fleet.service}`,
        `Roll ${fleet.service} in ${fleet.environment} back from ${revisionText(fleet.revision, fleet.revision_label)} to ${rev(fleet.rollback_to)}?`,
        "/api/rollback", { service: fleet.service, environment: fleet.environment });
      if (done) location.hash = `#/deployment/${done.id}`;
    } }, "Roll back")));
  const charts = h("div", { class: "charts" });
  card.appendChild(charts);
  loadCharts(fleet, charts);
  return card;
}

async function loadCharts(fleet, box) {
  try {
    const data = await api(`/api/metrics?service=${fleet.service}&environment=${fleet.environment}&minutes=15`);
    if (!data.measured) return;
    const period = data.period || 10;
    const labels = {};  // revision -> `v2 (1f03ba05)` for the legends
    for (const t of [...fleet.targets, ...fleet.instances]) labels[t.revision] = revisionText(t.revision, t.revision_label);
    const options = { period, labels };
    box.appendChild(ZdCharts.lineChart("requests / s", data.series, (p) => p.requests / period, "per revision", options));
    box.appendChild(ZdCharts.lineChart("5xx / s", data.series, (p) => (p["5xx"] || 0) / period, "per revision", options));
    box.appendChild(ZdCharts.lineChart("p95 latency (ms)", data.series, (p) => p.latency_ms && p.latency_ms.p95, "per revision", options));
  } catch (error) {
    box.appendChild(h("p", { class: "muted" }, `metrics: ${error.message}`));
  }
}

async function deploymentsPage() {
  const list = await api("/api/deployments?limit=100");
  return h("div", {}, h("h1", {}, "Deployments"), h("div", { class: "card" }, h("table", {},
    h("thead", {}, h("tr", {}, ["when", "service", "revision", "kind", "state", "duration", "actor"]
      .map((c) => h("th", { class: ["actor", "duration"].includes(c) ? "hide-sm" : null }, c)))),
    h("tbody", {}, list.map((d) => h("tr", {},
      h("td", {}, h("a", { href: `#/deployment/${d.id}` }, when(d.created_at))),
      h("td", {}, `${d.service}/${d.environment}`),
      h("td", { class: "mono" }, rev(d)), h("td", {}, d.kind),
      h("td", {}, badge(d.state)), h("td", { class: "hide-sm" }, seconds(d.duration)),
      h("td", { class: "hide-sm" }, d.actor)))))));
}

const GOOD = new Set(["instance_healthy", "traffic_added", "rollback_finished", "batch_finished"]);
const BAD = new Set(["instance_failed", "rollback_started"]);

function eventClass(event) {
  if (event.kind === "state") return event.data.to === "succeeded" ? "state good" : ["rolled_back", "failed", "rolling_back"].includes(event.data.to) ? "state bad" : "state";
  if (event.kind === "batch_finished") return event.data.ok === false ? "bad" : "good";
  if (event.kind === "hook_finished") return event.data.ok === false ? "bad" : "good";
  if (event.kind === "health_probe") return event.data.ok ? "detail" : "detail bad";
  if (event.kind === "decision" && event.data.reason) return "decision bad";
  if (GOOD.has(event.kind)) return "good";
  if (BAD.has(event.kind)) return "bad";
  if (event.kind.startsWith("alarm")) return "alarm";
  if (event.kind.startsWith("analysis")) return "analysis";
  return event.kind;
}

async function deploymentPage(id) {
  const record = await api(`/api/deployments/${id}`);
  const header = h("div");
  const batches = h("div", { class: "batches" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const showProbes = h("input", { type: "checkbox", id: "show-probes" });
  const root = h("div", {}, header,
    h("div", { class: "card" },
      h("h2", {}, "Batches"), batches,
      h("header", {}, h("h2", {}, "Timeline"),
        h("label", { class: "muted" }, showProbes, " health probes and output")),
      timeline));
  let current = record;
  let ended = false;  // the final record arrived: later answers to a refresh are older than it
  const batchState = new Map();

  // The canary's step, traffic per revision and whether it waits (from the API's `progress`).
  function canaryPanel(d) {
    const p = d.progress;
    if (!p) return null;
    // The new revision has its label; the baseline shows as its short sha.
    const shares = p.weights.map((w) => ({ revision: w.revision, percent: w.percent,
      label: w.revision === d.revision ? d.revision_label : null }));
    const state = p.paused ? "paused" : p.waiting_for_promote ? "waiting" : p.phase;
    return h("div", { class: `canary ${state}`, id: "canary" },
      h("span", { id: "canary-status", class: `canary-status ${state}` }, p.status),
      p.phase === "ended" ? null : [" ", h("span", { class: "muted" }, "traffic "), weightsList(shares)],
      p.analysis && p.phase === "step" ? h("div", { class: "muted canary-analysis" }, `last analysis: ${p.analysis.reason}`) : null);
  }

  function actionButton(cls, label, allowed, why, onclick) {
    return h("button", { class: cls, disabled: !allowed, title: allowed ? null : why, onclick }, label);
  }

  function renderHeader() {
    const d = current;
    const can = d.actions || {};
    const steering = overview && overview.features.promote && d.strategy === "canary";
    const notHolding = d.progress && d.progress.phase === "step" ? "" : "applies while the canary holds a step";
    header.replaceChildren(...[
      h("h1", {}, `${d.kind} ${d.service}/${d.environment} `, h("span", { class: "mono" }, rev(d)), " ",
        h("span", { id: "deployment-state" }, badge(d.state)),
        d.terminal ? null : h("span", { class: "muted live-note" }, " ", h("span", { class: "live" }), "live")),
      d.reason ? h("div", { class: `reason ${d.state === "succeeded" ? "ok" : ""}`, id: "deployment-reason" }, d.reason) : null,
      d.terminal ? null : canaryPanel(d),
      h("dl", { class: "kv" },
        h("dt", {}, "deployment"), h("dd", { class: "mono" }, d.id),
        h("dt", {}, "previous"), h("dd", { class: "mono" }, revisionText(d.previous_revision, null)),
        h("dt", {}, "commit"), h("dd", {}, d.commit_message || "–"),
        h("dt", {}, "strategy"), h("dd", {}, d.strategy),
        h("dt", {}, "actor"), h("dd", {}, d.actor),
        h("dt", {}, "started"), h("dd", {}, when(d.started_at || d.created_at)),
        h("dt", {}, "duration"), h("dd", {}, seconds(d.duration))),
      d.terminal ? null : h("div", { class: "actions" },
        actionButton("danger abort", "Abort", can.abort, "it is already rolling back", () => act("Abort deployment",
          `Abort ${rev(d)} of ${d.service}/${d.environment}? The fleet rolls back.`,
          `/api/deployments/${d.id}/abort`)),
        ...(steering
          ? [["promote", "Promote", notHolding], ["promote_full", "Promote fully", notHolding],
            ["pause", "Pause", notHolding || "already paused"], ["resume", "Resume", notHolding || "not paused"]]
            .map(([cmd, label, why]) => actionButton(cmd, label, can[cmd], why, async () => {
              if (await act(label, `${label} ${d.service}/${d.environment}?`, `/api/deployments/${d.id}/${cmd}`)) refresh();
            }))
          : []))].filter(Boolean));  // replaceChildren would print null as text
  }

  // The record again (progress and actions change with the canary's steps and commands); only
  // the newest answer counts, and none after the final record.
  let asked = 0;
  async function refresh() {
    const mine = ++asked;
    try {
      const fresh = await api(`/api/deployments/${record.id}`);
      if (mine !== asked || ended) return;
      current = fresh;
      renderHeader();
    } catch (error) {
      toast(`could not refresh: ${error.message}`, true);
    }
  }

  // Batches overlap in surge mode, and a rollback numbers its batches from 1 again: a finished
  // batch belongs to the newest open batch with its number.
  function renderBatch(event) {
    if (event.kind === "batch_started") {
      const node = h("span", { class: "b" }, `batch ${event.data.batch}${event.data.of ? `/${event.data.of}` : ""}: ${(event.data.instances || []).length} instance(s)`);
      batchState.set(node, { batch: event.data.batch, open: true });
      batches.appendChild(node);
      return;
    }
    const open = [...batchState.entries()].filter(([, b]) => b.open && b.batch === event.data.batch);
    if (!open.length) return;
    const [node, info] = open[open.length - 1];
    info.open = false;
    node.className = `b ${event.data.ok === false ? "fail" : "ok"}`;
    node.textContent += ` — ${event.data.ok === false ? "failed" : "done"} ${seconds(event.data.seconds)}`;
  }

  const start = record.created_at;
  const offset = (at) => `+${(at - start).toFixed(1)}s`;
  // Repeats (the same analysis verdict or probe result every interval) fold into the first line
  // of their kind since the last other event: it shows the newest message and a count. The
  // repeats stay in the list, hidden, and the count opens them.
  const REPEATING = new Set(["analysis", "health_probe"]);
  let groups = new Map();
  function repeatKey(event) {
    const d = event.data || {};
    const shape = String(event.message).replace(/\d+(\.\d+)?/g, "#");
    return JSON.stringify([event.kind, d.step, d.verdict, d.instance, d.ok, shape]);
  }
  function addEvent(event) {
    if (event.kind === "batch_started" || event.kind === "batch_finished") renderBatch(event);
    const cls = eventClass(event);
    const noisy = ["health_probe", "hook_output", "build_output"].includes(event.kind);
    const text = h("span", { class: "m" }, event.message);
    const item = h("li", { class: `${cls} ev-${event.kind}`, hidden: noisy && !showProbes.checked },
      h("span", { class: "t" }, offset(event.at)), h("span", { class: "k" }, event.kind), text);
    if (!REPEATING.has(event.kind)) {
      if (!noisy) groups = new Map();  // a real step: what repeats after it starts anew
      timeline.appendChild(item);
      return;
    }
    const key = repeatKey(event);
    const group = groups.get(key);
    if (!group) {
      groups.set(key, { item, text, count: 1, repeats: [], more: null });
      timeline.appendChild(item);
      return;
    }
    group.count += 1;
    group.text.textContent = event.message;  // the newest numbers
    if (!group.more) {
      group.more = h("button", { class: "link repeat-count", type: "button", "aria-expanded": "false",
        onclick: () => {
          const open = group.more.getAttribute("aria-expanded") !== "true";
          group.more.setAttribute("aria-expanded", String(open));
          for (const li of group.repeats) li.hidden = !open;
        } });
      group.item.appendChild(group.more);
    }
    group.more.textContent = `×${group.count} (last ${offset(event.at)})`;
    item.classList.add("repeat");
    item.hidden = group.more.getAttribute("aria-expanded") !== "true";
    group.repeats.push(item);
    timeline.appendChild(item);
  }
  showProbes.addEventListener("change", () => {
    for (const li of timeline.querySelectorAll(".ev-health_probe:not(.repeat), .ev-hook_output, .ev-build_output")) li.hidden = !showProbes.checked;
  });

  renderHeader();
  const REFRESHING = new Set(["state", "step", "decision", "rollback_started", "batch_started"]);
  cleanup.push(followEvents(record.id, (event) => {
    addEvent(event);
    if (event.kind === "state") {
      const to = event.data.to;
      // Rolling back or over: no button applies any more (the refresh below confirms it).
      const actions = ["pending", "in_progress"].includes(to) ? current.actions : {};
      current = { ...current, state: to, actions };
      renderHeader();
    }
    if (REFRESHING.has(event.kind) && !ended) refresh();
  }, (final) => {
    ended = true;
    current = final;
    renderHeader();
  }));
  return root;
}

// A deployment's events as they happen, then its final record; returns how to stop. EventSource
// cannot send a token, so when reads need one (read_only_public: false) this polls instead.
function followEvents(id, onEvent, onEnd) {
  if (!overview || overview.read_only_public !== false) {
    const source = new EventSource(`/api/deployments/${id}/events/stream`);
    source.addEventListener("deployment_event", (message) => onEvent(JSON.parse(message.data)));
    source.addEventListener("end", (message) => {
      source.close();
      onEnd(JSON.parse(message.data));
    });
    return () => source.close();
  }
  let after = 0;
  let timer = null;
  let stopped = false;
  async function poll() {
    try {
      // The record first: once it is terminal, the events read after it are all there are.
      const record = await api(`/api/deployments/${id}`);
      for (const event of await api(`/api/deployments/${id}/events?after=${after}`)) {
        after = Math.max(after, event.seq);
        if (!stopped) onEvent(event);
      }
      if (record.terminal) return stopped ? null : onEnd(record);
    } catch (error) {
      toast(`could not refresh: ${error.message}; retrying`, true);
    }
    if (!stopped) timer = setTimeout(poll, 1000);
  }
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}

async function alarmsPage() {
  const alarms = await api("/api/alarms?limit=200");
  const rows = alarms.map((a) => h("tr", {},
    h("td", {}, when(a.at)), h("td", {}, a.alarm || "–"),
    h("td", {}, a.service ? `${a.service}/${a.environment}` : h("a", { href: `#/deployment/${a.deployment_id}` }, short(a.deployment_id))),
    h("td", {}, a.new_state ? badge(a.new_state) : "–"),
    h("td", { class: "hide-sm" }, a.value === undefined || a.value === null ? "–" : `${a.value} / ${a.threshold}`),
    h("td", {}, a.reason || a.message || "")));
  return h("div", {}, h("h1", {}, "Alarms"), h("div", { class: "card" },
    rows.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "when"), h("th", {}, "alarm"), h("th", {}, "where"),
        h("th", {}, "state"), h("th", { class: "hide-sm" }, "value / threshold"), h("th", {}, "reason"))),
      h("tbody", {}, rows)) : h("p", { class: "muted" }, "No alarm has changed state yet.")));
}

async function kpisPage(params) {
  const days = Number(params.get("days") || 30);
  const list = await api(`/api/kpis?days=${days}`);
  const picker = h("select", { "aria-label": "period", onchange: (e) => { location.hash = `#/kpis?days=${e.target.value}`; } },
    [7, 30, 90, 365].map((d) => h("option", { value: d, selected: d === days }, `last ${d} days`)));
  const cards = list.map((k) => h("section", { class: "card kpi", "data-route": `${k.service}.${k.environment}` },
    h("header", {}, h("h2", {}, `${k.service} `, h("span", { class: "muted" }, k.environment))),
    h("table", {}, h("tbody", {},
      h("tr", {}, h("th", {}, "deploys / week"), h("td", {}, k.deploys_per_week.toFixed(1))),
      h("tr", {}, h("th", {}, "success rate"), h("td", {}, `${percent(k.success_rate)} (${k.succeeded}/${k.deployments})`)),
      h("tr", {}, h("th", {}, "deploy duration"), h("td", {}, `mean ${seconds(k.duration_mean)}, p95 ${seconds(k.duration_p95)}`)),
      h("tr", {}, h("th", {}, "rollbacks"), h("td", {}, `${k.rollbacks} automatic, ${k.manual_rollbacks} manual; max ${seconds(k.rollback_seconds_max)}`)),
      h("tr", {}, h("th", {}, "time to restore"), h("td", {}, `mean ${seconds(k.time_to_restore_mean)}${k.unrestored ? `, ${k.unrestored} not restored yet` : ""}`)),
      h("tr", {}, h("th", {}, "change failure rate"), h("td", {}, percent(k.change_failure_rate))),
      h("tr", {}, h("th", {}, "lead time"), h("td", {}, `mean ${seconds(k.lead_time_mean)}, median ${seconds(k.lead_time_median)}`)),
      h("tr", {}, h("th", {}, "downtime"), h("td", {}, k.downtime_measured ? seconds(k.downtime_seconds) : "not measured")))),
    h("h3", {}, "targets"),
    h("table", {}, h("tbody", {}, k.checks.map((c) => h("tr", {},
      h("td", {}, c.name), h("td", {}, c.target),
      h("td", {}, c.met === null ? badge("no data", "") : badge(c.met ? "met" : "not met", c.met ? "met" : "not-met"))))))));
  return h("div", {}, h("h1", {}, "KPIs ", picker), h("div", { class: "grid" }, cards));
}

// -- pipelines ---------------------------------------------------------------------------------

const RUN_ENDED = new Set(["succeeded", "failed", "cancelled", "superseded"]);
const LOG_PAGE = 5000;  // the API's most lines per answer

function runDuration(run) {
  if (run.duration !== null && run.duration !== undefined) return seconds(run.duration);
  if (run.started_at && !RUN_ENDED.has(run.state)) return `${seconds(Date.now() / 1000 - run.started_at)} so far`;
  return "–";
}

async function pipelinesPage() {
  const runs = await api("/api/pipeline/runs?limit=100");
  const hide = ["environment", "trigger", "actor", "duration", "reason"];
  return h("div", {}, h("h1", {}, "Pipelines"), h("div", { class: "card" },
    runs.length ? h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ["when", "branch", "sha", "environment", "state", "trigger", "actor", "duration", "reason"]
        .map((c) => h("th", { class: hide.includes(c) ? "hide-sm" : null }, c)))),
      h("tbody", {}, runs.map((r) => h("tr", { "data-run": r.id },
        h("td", {}, h("a", { href: `#/pipeline/${r.id}` }, when(r.created_at))),
        h("td", { class: "branch" }, r.branch), h("td", { class: "mono" }, short(r.sha)),
        h("td", { class: "hide-sm" }, r.environment || "–"),
        h("td", {}, badge(r.state)), h("td", { class: "hide-sm" }, r.trigger),
        h("td", { class: "hide-sm" }, r.actor), h("td", { class: "hide-sm" }, runDuration(r)),
        h("td", { class: "hide-sm reason-cell" }, r.reason || "")))))
      : h("p", { class: "muted" }, "No pipeline has run yet.")));
}

function jobSummary(job) {
  const parts = Object.entries(job.summary || {}).filter(([k]) => k !== "deployments").map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`);
  if (job.exit_code !== null && job.exit_code !== undefined && job.exit_code !== 0) parts.unshift(`exit ${job.exit_code}`);
  return parts.join(", ");
}

async function pipelinePage(id) {
  let run = await api(`/api/pipeline/runs/${encodeURIComponent(id)}`);
  const header = h("div");
  const jobsBody = h("tbody");
  const log = h("pre", { class: "log", id: "run-log", tabindex: "0", "aria-label": "run log" });
  const logNote = h("span", { class: "muted" });
  const logTitle = h("h2", { id: "log-title" }, "Log");
  const logCard = h("div", { class: "card" }, h("header", {}, logTitle, logNote), log);
  let shownJob = null;  // the job whose lines the log shows; null: every job's
  let lastJobs = [];
  const root = h("div", {}, header,
    h("div", { class: "card" }, h("h2", {}, "Jobs"), h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, h("th", {}, "job"), h("th", { class: "hide-sm" }, "kind"), h("th", {}, "state"),
        h("th", {}, "duration"), h("th", { class: "hide-sm" }, "details"))),
      jobsBody)),
    logCard);
  let lastLine = 0;
  let shownHeader = "";
  let timer = null;
  let stopped = false;

  function renderHeader() {
    const r = run;
    const key = JSON.stringify([r.state, r.reason, r.approvers, r.duration, r.started_at]);
    if (key === shownHeader) {  // only the running time moved: keep the buttons (and focus)
      const duration = header.querySelector("#run-duration");
      if (duration) duration.textContent = runDuration(r);
      return;
    }
    shownHeader = key;
    const live = !RUN_ENDED.has(r.state);
    header.replaceChildren(...[
      h("h1", {}, `pipeline ${r.branch} `, h("span", { class: "mono" }, short(r.sha)), " ",
        h("span", { id: "run-state" }, badge(r.state)),
        live ? h("span", { class: "muted live-note" }, " ", h("span", { class: "live" }), "live") : null),
      r.reason ? h("div", { class: `reason ${r.state === "succeeded" ? "ok" : ""}`, id: "run-reason" }, r.reason) : null,
      h("dl", { class: "kv" },
        h("dt", {}, "run"), h("dd", { class: "mono" }, r.id),
        h("dt", {}, "environment"), h("dd", {}, r.environment || "– (deploys nowhere)"),
        h("dt", {}, "commit"), h("dd", {}, r.commit_message || "–"),
        h("dt", {}, "trigger"), h("dd", {}, `${r.trigger} by ${r.actor}`),
        h("dt", {}, "started"), h("dd", {}, when(r.started_at || r.created_at)),
        h("dt", {}, "duration"), h("dd", { id: "run-duration" }, runDuration(r)),
        h("dt", {}, "approvers"), h("dd", { id: "run-approvers" },
          r.approvers && r.approvers.length ? r.approvers.join(", ") : "none yet")),
      r.state === "waiting" ? h("div", { class: "actions" },
        h("button", { class: "primary approve", onclick: approveRun }, "Approve")) : null,
    ].filter(Boolean));  // replaceChildren would print null as text
  }

  async function approveRun() {
    const target = run.environment ? ` to ${run.environment}` : "";
    const done = await act("Approve run",
      `Approve the deploy of ${short(run.sha)} (${run.branch})${target}? Your token's name is recorded as an approver.`,
      `/api/pipeline/runs/${run.id}/approve`);
    if (done) {
      run = { ...run, approvers: done.approvers };
      renderHeader();
    }
  }

  // Opening a job (its name) narrows the log to its lines; opening it again shows every job's.
  function showJob(name) {
    shownJob = shownJob === name ? null : name;
    for (const line of log.children) line.hidden = shownJob !== null && line.dataset.job !== shownJob;
    logTitle.replaceChildren(...(shownJob === null ? ["Log"] : [`Log of ${shownJob} `,
      h("button", { class: "link", type: "button", id: "log-all", onclick: () => showJob(shownJob) }, "all jobs")]));
    renderJobs(lastJobs);
    noteLog();
    if (shownJob !== null) logCard.scrollIntoView({ block: "nearest" });
  }

  function noteLog() {
    const shown = [...log.children].some((line) => !line.hidden);
    logNote.textContent = shown ? "" : shownJob === null ? "no output yet" : `no output from ${shownJob} yet`;
  }

  function renderJobs(jobs) {
    lastJobs = jobs;
    jobsBody.replaceChildren(...jobs.map((j) => h("tr", { "data-job": j.name, class: j.name === shownJob ? "selected" : null },
      h("td", {}, h("button", { class: "link job-log", type: "button", "aria-pressed": String(j.name === shownJob),
        title: `show the log of ${j.name}`, onclick: () => showJob(j.name) }, j.name)),
      h("td", { class: "hide-sm" }, j.kind),
      h("td", {}, badge(j.state)),
      h("td", {}, j.duration !== null ? seconds(j.duration)
        : j.started_at && j.state === "running" ? `${seconds(Date.now() / 1000 - j.started_at)} so far` : "–"),
      h("td", { class: "hide-sm" }, [jobSummary(j), j.reason].filter(Boolean).join(" — "),
        // a deploy job's deployments (service -> id), each with its own live page
        Object.entries((j.summary || {}).deployments || {}).flatMap(([service, deployment]) => [" ",
          h("a", { class: "deployment-link", href: `#/deployment/${deployment}` }, `${service} deployment ${short(deployment)}`)])))));
    if (!jobs.length) jobsBody.appendChild(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No job has started yet.")));
  }

  async function loadLog() {
    for (;;) {
      const lines = await api(`/api/pipeline/runs/${run.id}/logs?after=${lastLine}`);
      if (!lines.length) break;
      const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      const chunk = document.createDocumentFragment();
      for (const line of lines) {
        chunk.appendChild(h("span", { class: "ln", "data-job": line.job, hidden: shownJob !== null && line.job !== shownJob },
          h("span", { class: "job" }, line.job), line.line, "\n"));
        lastLine = Math.max(lastLine, line.id);
      }
      log.appendChild(chunk);
      if (atBottom) log.scrollTop = log.scrollHeight;
      if (lines.length < LOG_PAGE) break;
    }
    noteLog();
  }

  async function refresh() {
    const [fresh, jobs] = await Promise.all([
      api(`/api/pipeline/runs/${run.id}`), api(`/api/pipeline/runs/${run.id}/jobs`)]);
    run = fresh;
    renderJobs(jobs);
    await loadLog();
    renderHeader();
  }

  // Poll every second while the run is not finished (one poll at a time; the last one after
  // the run ended picks up its final lines).
  async function poll() {
    if (stopped) return;
    try {
      await refresh();
    } catch (error) {
      logNote.textContent = `could not refresh: ${error.message}; retrying`;
    }
    if (!stopped && !RUN_ENDED.has(run.state)) timer = setTimeout(poll, 1000);
  }
  cleanup.push(() => { stopped = true; clearTimeout(timer); });
  await refresh();
  if (!stopped && !RUN_ENDED.has(run.state)) timer = setTimeout(poll, 1000);
  return root;
}

// -- routing -----------------------------------------------------------------------------------

async function route() {
  for (const stop of cleanup.splice(0)) stop();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  const page = parts[0] || "services";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.nav === page || (page === "deployment" && link.dataset.nav === "deployments")
      || (page === "pipeline" && link.dataset.nav === "pipelines"));
  }
  try {
    if (!overview) {
      overview = await api("/api/overview");
      document.getElementById("project").textContent = overview.project;
    }
    let content;
    if (page === "deployment") content = await deploymentPage(parts[1]);
    else if (page === "deployments") content = await deploymentsPage();
    else if (page === "pipeline") content = await pipelinePage(parts[1]);
    else if (page === "pipelines") content = await pipelinesPage();
    else if (page === "alarms") content = await alarmsPage();
    else if (page === "kpis") content = await kpisPage(params);
    else content = await servicesPage();
    view.replaceChildren(content);
  } catch (error) {
    if (error.status === 401) return view.replaceChildren(signInPage(error.message));
    view.replaceChildren(h("div", { class: "reason" }, `Could not load this page: ${error.message}`));
  }
}

// Reads need a token here (server.read_only_public: false), or the stored one was refused: ask
// for one in the page, which says why (a blocking prompt, once dismissed, left a dead page).
function signInPage(message) {
  const refused = sessionStorage.getItem(TOKEN_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
  const input = h("input", { id: "signin-token", type: "password", autocomplete: "off",
    required: true, "aria-label": "API token", placeholder: "zd_…" });
  return h("form", { class: "card signin", id: "signin", onsubmit: (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    route();
  } },
    h("h1", {}, "Sign in"),
    h("p", {}, "This server keeps its dashboard and API closed: reading needs an API token."),
    refused ? h("div", { class: "reason", id: "signin-error" }, `That token was refused: ${message}`) : null,
    h("label", {}, "API token ", input),
    h("p", { class: "muted" }, "Make one on the server with ", h("code", {}, "zerodown token create NAME"),
      "; it is kept in this tab only."),
    h("div", { class: "actions" }, h("button", { class: "primary", type: "submit", id: "signin-ok" }, "Sign in")));
}

// The services and pipelines pages refresh themselves while shown (health and runs change
// without events).
setInterval(() => {
  const page = (location.hash.slice(1) || "/").split("/").filter(Boolean)[0] || "services";
  if (["services", "pipelines"].includes(page) && !document.getElementById("confirm").open
    && !document.getElementById("signin") && document.activeElement.tagName !== "INPUT") route();
}, 5000);
window.addEventListener("hashchange", route);
route();
