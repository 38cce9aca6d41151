"use strict";
const REFRESH_MS = 5000;
const KEY_STORE = "poller-api-key";
const PAGE_SIZE = 100;  // jobs per page; GET /jobs takes up to 1000
let offset = 0;  // the first job shown, in config order
let selected = null;
let followed = null;  // the run started from this page, followed until it has finished
let followedUntil = 0;  // ... or for 30 s at most
let timer = null;
let generation = 0;
let wanted = null;  // a run named by the address (#run=ID, an alert's link): shown, once

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class AuthNeeded extends Error {}

async function api(method, path) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, {method, headers});
  if (response.status === 401 || response.status === 403) {
    throw new AuthNeeded(response.status === 403 ? "That key was refused." : "");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function wall(iso) {  // the instant as the API gives it: in the job's own time zone
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)$/, "") : "";
}

function relative(iso) {
  if (!iso) return "";
  const ahead = new Date(iso) - Date.now();
  const seconds = Math.round(ahead / 1000);
  if (seconds === 0) return ahead > 0 ? "now" : "just now";  // never "in 0s" for the past
  const size = Math.abs(seconds);
  const text = size < 60 ? `${size}s` : size < 3600 ? `${Math.round(size / 60)}m`
    : size < 86400 ? `${Math.round(size / 3600)}h` : `${Math.round(size / 86400)}d`;
  return seconds >= 0 ? `in ${text}` : `${text} ago`;
}

function duration(ms) {  // whole milliseconds, as the API gives them
  if (ms === null || ms === undefined) return "";
  if (ms < 1) return "< 1 ms";  // it took time, under half a millisecond
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

function badge(status) { return el("span", {class: `badge s-${status}`}, status); }

function dryBadge(run) {  // runs recorded before dry_run was kept have no such key
  return run && run.dry_run === true ? el("span", {class: "badge dry"}, "dry run") : null;
}

function lastRun(run) {  // "in 120 ms · 3s ago"; a run still going has no duration yet
  const took = run.duration_ms === null || run.duration_ms === undefined
    ? null : `in ${duration(run.duration_ms)}`;
  return [took, relative(run.started_at)].filter(Boolean).join(" · ");
}

function toast(text, bad) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = bad ? "bad" : "";
  box.style.display = "block";
  clearTimeout(box.hideTimer);
  box.hideTimer = setTimeout(() => { box.style.display = "none"; }, 4000);
}

function renderStatus(status) {
  const next = status.next_run
    ? `${status.next_run.job_id} ${relative(status.next_run.at)}` : "none";
  const rate = status.success_rate === null ? "–" : `${Math.round(status.success_rate * 100)}%`;
  const facts = document.getElementById("facts");
  facts.replaceChildren(
    el("span", {}, "scheduler ", el("b", {}, status.scheduler_running ? "running" : "stalled")),
    el("span", {}, "jobs ", el("b", {}, `${status.jobs_enabled}/${status.jobs}`)),
    el("span", {}, "next ", el("b", {}, next)),
    el("span", {}, "running now ", el("b", {}, status.inflight)),
    el("span", {}, "success ", el("b", {}, rate)),
  );
  renderConfigFile(status.config_file);
}

// The file on disk was refused (the daemon runs on with the last good config): say so loudly.
function renderConfigFile(file) {
  const banner = document.getElementById("configfile");
  banner.hidden = !file || file.valid !== false;
  if (banner.hidden) return;
  const count = file.problem_count;
  const name = String(file.path || "").split(/[\\/]/).pop() || "config.json";
  document.getElementById("configfile-text").textContent =
    `${name} on disk is invalid since ${wall(file.invalid_since) || "a moment ago"} `
    + `(${count} problem${count === 1 ? "" : "s"}); the last good config is running`;
  const problems = (file.problems || []).map(problem => el("li", {}, problem));
  if (count > problems.length) problems.push(el("li", {}, `… and ${count - problems.length} more`));
  document.getElementById("configfile-problems").replaceChildren(...problems);
}

function renderJobs(page) {
  const body = document.querySelector("#jobs tbody");
  document.getElementById("nojobs").hidden = page.jobs.length > 0;
  body.replaceChildren(...page.jobs.map(job => {
    const bars = el("div", {class: "bars"}, [...job.recent].reverse().map(run =>
      el("span", {class: `s-${run.status}`,
                  title: `${run.status}${run.dry_run === true ? " (dry run)" : ""} `
                    + `${wall(run.started_at)} ${duration(run.duration_ms)}`})));
    const last = job.last_run;
    const next = job.next_fires[0];
    const row = el("tr", {class: "job" + (job.enabled ? "" : " paused")
                          + (job.id === selected ? " selected" : ""),
                          "data-job-id": job.id, onclick: () => select(job.id)},
      el("td", {class: "state"}, el("span", {class: "dot"})),
      el("td", {class: "name"}, el("div", {}, job.label),
        job.description ? el("div", {class: "description"}, job.description) : null,
        el("div", {class: "small"}, job.id)),
      el("td", {}, el("div", {}, job.schedule), el("div", {class: "small"}, job.timezone)),
      el("td", {class: "next"}, next ? [el("div", {}, wall(next.at)),
        el("div", {class: "small"}, relative(next.at) + (next.blackout ? ` · skipped: ${next.blackout}` : ""))]
        : el("span", {class: "small"}, job.enabled ? "never" : "paused")),
      el("td", {class: "last"}, last ? [badge(last.status), dryBadge(last), " ",
        el("span", {class: "small"}, lastRun(last))] : el("span", {class: "small"}, "no runs yet")),
      el("td", {}, bars),
      el("td", {}, job.success_rate === null ? "–" : `${Math.round(job.success_rate * 100)}%`),
      el("td", {class: "actions"},
        el("button", {class: "run-now", type: "button", onclick: event => act(event, "trigger", job.id)}, "Run now"),
        job.enabled
          ? el("button", {class: "pause", type: "button", onclick: event => act(event, "pause", job.id)}, "Pause")
          : el("button", {class: "resume", type: "button", onclick: event => act(event, "resume", job.id)}, "Resume")),
    );
    return row;
  }));
}

function renderPager(page) {
  document.getElementById("pager").hidden = page.total <= PAGE_SIZE;
  document.getElementById("pageinfo").textContent =
    `jobs ${page.offset + 1} to ${page.offset + page.jobs.length} of ${page.total}`;
  document.getElementById("prev").disabled = page.offset === 0;
  document.getElementById("next").disabled = page.offset + page.jobs.length >= page.total;
}

function turn(by) { offset = Math.max(0, offset + by * PAGE_SIZE); refresh(); }

function renderRuns(jobId, runs) {
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-title").textContent = `Recent runs of ${jobId}`;
  const box = document.getElementById("runs");
  if (!runs.length) { box.replaceChildren(el("div", {class: "empty"}, "No runs yet.")); return; }
  box.replaceChildren(...runs.map(run => el("div", {class: run.run_id === wanted?.run_id ? "run wanted" : "run", "data-run-id": run.run_id},
    el("div", {class: "head"}, badge(run.status), dryBadge(run), changedBadge(run),
      el("span", {}, wall(run.started_at)),
      el("span", {class: "small"}, `${run.trigger || ""} · ${duration(run.duration_ms)}`),
      el("span", {class: "small"}, run.run_id),
      run.reason ? el("span", {class: run.status === "skipped" ? "reason neutral" : "reason"}, run.reason) : null),
    run.steps.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["step", "entry", "status", "attempts", "time", "details"].map(h => el("th", {}, h)))),
      el("tbody", {}, run.steps.map(step => el("tr", {class: "step"},
        el("td", {}, `${step.step + 1}` + (step.entry ? `.${step.entry + 1}` : "")), el("td", {class: "entry"}, step.id), el("td", {}, badge(step.status)),
        el("td", {}, step.attempts), el("td", {class: "time"}, step.status === "skipped" ? "" : duration(step.duration_ms)),
        stepDetails(step)))))
      : null,
    monitoring(run))));
  const shown = wanted && box.querySelector(`[data-run-id="${CSS.escape(wanted.run_id)}"]`);
  if (shown && !wanted.scrolled) { shown.scrollIntoView({block: "center"}); wanted.scrolled = true; }
}

function changedBadge(run) {
  return run.changed === true ? el("span", {class: "badge changed"}, "changed") : null;
}

// SPEC §9 on a run: its for_each items, what changed (the diff) and which alerts went out.
// Every value is text (a platform's answer, an error): never markup.
function monitoring(run) {
  const parts = [];
  if (run.items_processed) {
    parts.push(el("div", {class: "items"},
      `items: ${run.items_processed} processed, ${run.items_succeeded} succeeded, ${run.items_failed} failed`,
      run.errors?.length ? el("ul", {class: "errors"}, run.errors.map(error => el("li", {}, error))) : null));
  }
  if (run.changed === true && run.diff?.length) {
    parts.push(el("div", {class: "diff"}, "changed:",
      el("ul", {}, run.diff.map(entry => el("li", {class: `d-${entry.change}`}, diffText(entry))))));
  }
  if (run.alerts?.length) {
    parts.push(el("div", {class: "alerts"}, "alerts:",
      el("ul", {}, run.alerts.map(alert => el("li", {class: `a-${alert.status}`},
        `${alert.kind} to ${alert.channel}: ${alert.status}`
        + (alert.attempts > 1 ? ` after ${alert.attempts} attempts` : "")
        + (alert.error ? ` (${alert.error})` : ""))))));
  }
  return parts.length ? el("div", {class: "monitoring"}, parts) : null;
}

function diffText(entry) {
  const show = value => JSON.stringify(value);
  const path = entry.path || "(the output)";
  if (entry.change === "omitted") return `… and ${entry.count} more`;
  if (entry.change === "added") return `+ ${path}: ${show(entry.new)}`;
  if (entry.change === "removed") return `- ${path}: ${show(entry.old)}`;
  return `~ ${path}: ${show(entry.old)} → ${show(entry.new)}`;
}

// Only a failure is an error (red); a skip is a normal outcome, shown grey with its reason
// (a `when` that did not hold, or "not run: …" past a failure or the timeout).
function stepDetails(step) {
  if (step.status === "failed") return el("td", {class: "error"}, step.error || step.reason || "");
  if (step.status === "skipped") {
    return el("td", {class: "note"}, step.reason ? `skipped: ${step.reason}` : "skipped");
  }
  return el("td", {class: "note"}, step.error || step.reason || "");
}

function renderDetail(job) {  // null when GET /jobs/{id} failed (a job just removed, say)
  const description = document.getElementById("detail-description");
  description.textContent = job?.description || "";
  description.hidden = !job?.description;
  const output = job?.last_output;  // absent from a daemon older than the page
  document.getElementById("output").hidden = !output;
  if (!output) return;
  document.getElementById("output-text").textContent = output.text;  // text, never markup
  document.getElementById("output-note").textContent = output.is_cut
    ? `cut: the first ${output.text.length} of ${output.total_chars} characters` : "";
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation;
  try {
    const [status, page] = await Promise.all([api("GET", "/status"), api("GET", `/jobs?offset=${offset}&limit=${PAGE_SIZE}`)]);
    if (wanted && !wanted.record) await findWanted();
    const path = selected ? `/jobs/${encodeURIComponent(selected)}` : null;
    let [runs, detail] = path ? await Promise.all([api("GET", `${path}/runs?limit=10`),
      api("GET", path).catch(err => { if (err instanceof AuthNeeded) throw err; return null; })])
      : [null, null];
    if (runs && wanted?.record?.job_id === selected && !runs.some(run => run.run_id === wanted.run_id))
      runs = [...runs, wanted.record];  // older than the recent ten: shown below them
    if (mine !== generation) return;  // a newer refresh has started: it will draw
    if (!page.jobs.length && offset > 0 && page.total > 0) {  // jobs were removed: last page
      offset = Math.floor((page.total - 1) / PAGE_SIZE) * PAGE_SIZE;
      return refresh();
    }
    document.getElementById("keyform").style.display = "none";
    document.getElementById("content").hidden = false;
    renderStatus(status);
    renderJobs(page);
    renderPager(page);
    if (runs) { renderRuns(selected, runs); renderDetail(detail); }
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    const ended = run => run && run.run_id === followed && run.status !== "running";
    const followedJob = page.jobs.find(job => job.id === selected);
    if (followed && (runs || []).some(ended) && (!followedJob || ended(followedJob.last_run)))
      followed = null;  // both the list of runs and the job's row show it finished
    if (Date.now() > followedUntil) followed = null;
    const busy = followed !== null
      || page.jobs.some(job => job.running > 0 || job.last_run?.status === "running")
      || (runs || []).some(run => run.status === "running");
    timer = setTimeout(refresh, busy ? 1000 : REFRESH_MS);  // follow a run closely
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof AuthNeeded) { askKey(err.message); return; }
    document.getElementById("updated").textContent = "not reachable: " + err.message;
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

async function findWanted() {  // the run an alert links to: its job is selected
  try {
    wanted.record = await api("GET", `/runs/${encodeURIComponent(wanted.run_id)}`);
    selected = wanted.record.job_id;
  } catch (err) {
    if (err instanceof AuthNeeded) throw err;
    toast(`run ${wanted.run_id}: ${err.message}`, true);
    wanted = null;
  }
}

function askKey(message) {
  document.getElementById("content").hidden = true;
  document.getElementById("keyform").style.display = "block";
  document.getElementById("keyerror").textContent = message;
  document.getElementById("key").focus();
}

function select(jobId) { selected = jobId; followed = null; refresh(); }

async function act(event, action, jobId) {
  event.stopPropagation();
  try {
    const result = await api("POST", `/jobs/${encodeURIComponent(jobId)}/${action}`);
    toast(action === "trigger" ? `${jobId}: run ${result.run_id.slice(0, 8)} started`
      : `${jobId}: ${result.action}${result.applied ? "" : " (the daemon reloads it shortly)"}`);
    if (action === "trigger") {
      selected = jobId;
      followed = result.run_id;
      followedUntil = Date.now() + 30000;
    }
  } catch (err) {
    if (err instanceof AuthNeeded) { askKey(err.message); return; }
    toast(`${jobId}: ${err.message}`, true);
  }
  refresh();
}

// The address the daemon prints at start carries the key in its fragment (#key=...), which
// the browser never sends: take it into the tab and out of the address bar and history.
// An alert links to one run (#run=ID): that job is opened with the run marked.
function readAddress() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const run = fragment.get("run");
  if (run) wanted = {run_id: run, record: null, scrolled: false};
  const given = fragment.get("key");
  if (!given) return;
  sessionStorage.setItem(KEY_STORE, given);
  history.replaceState(null, "", location.pathname + location.search + (run ? `#run=${encodeURIComponent(run)}` : ""));
}

readAddress();
window.addEventListener("hashchange", () => { readAddress(); if (wanted) refresh(); });
document.getElementById("prev").addEventListener("click", () => turn(-1));
document.getElementById("next").addEventListener("click", () => turn(1));
document.getElementById("keyform").addEventListener("submit", event => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, document.getElementById("key").value);
  refresh();
});
refresh();
