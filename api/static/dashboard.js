// The dashboard's behaviour: the playground (submit, long-poll the result,
// mark a parse error), the live overview and sparkline, the task list.
// No framework, no build step. The page works without it too (read only).
"use strict";

(function () {
  const body = document.body;
  const $ = (id) => document.getElementById(id);
  const maxWait = Number(body.dataset.maxWait) || 30;
  const cancelUrl = body.dataset.cancelUrl || null;
  const STORE = "calculator-submissions";
  const KEEP = 20;
  let refreshNow = () => {};  // set once the live parts are running

  // --- the playground -------------------------------------------------------

  const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/;

  // "x=10, y=1 t=2.5" -> the JSON text of {"x": 10, "y": 1, "t": 2.5}. The
  // numbers are copied as typed (not through JS numbers, which would round
  // big integers); the API decides what it accepts.
  function variablesJson(text) {
    const parts = text.replace(/\s*=\s*/g, "=").split(/[\s,;]+/).filter(Boolean);
    const pairs = [];
    for (const part of parts) {
      const match = /^([^=]+)=(.*)$/.exec(part);
      if (!match) throw new Error(`variables: write name=number, not '${part}'`);
      if (!NUMBER.test(match[2])) throw new Error(`variable ${match[1]}: '${match[2]}' is not a number`);
      pairs.push(`${JSON.stringify(match[1])}: ${match[2]}`);
    }
    return `{${pairs.join(", ")}}`;
  }

  function showRefusal(message, expression) {
    const box = $("expression-error");
    const input = $("expression");
    box.textContent = "";
    const text = document.createElement("p");
    text.textContent = message;
    box.append(text);
    const column = /at column (\d+)/.exec(message);
    if (column && expression !== undefined) {
      // The expression with the character at the column marked, and a caret under it.
      const at = Math.min(Number(column[1]) - 1, expression.length);
      const pre = document.createElement("pre");
      pre.className = "marked";
      pre.setAttribute("aria-label", `the error is at column ${column[1]}`);
      const mark = document.createElement("mark");
      mark.textContent = expression.slice(at, at + 1) || " ";
      pre.append(expression.slice(0, at), mark, expression.slice(at + 1),
                 "\n" + " ".repeat(at) + "^");
      box.append(pre);
      input.focus();
      input.setSelectionRange(at, Math.min(at + 1, expression.length));
    }
    input.setAttribute("aria-invalid", "true");
    box.hidden = false;
  }

  function clearRefusal() {
    $("expression-error").hidden = true;
    $("expression").removeAttribute("aria-invalid");
  }

  function loadSubmissions() {
    try { return JSON.parse(sessionStorage.getItem(STORE)) || []; } catch (e) { return []; }
  }

  function saveSubmissions(items) {
    try { sessionStorage.setItem(STORE, JSON.stringify(items.slice(0, KEEP))); } catch (e) { /* full or disabled */ }
  }

  function renderSubmission(item) {
    let li = document.querySelector(`#submissions li[data-id="${item.id}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.id = item.id;
      $("submissions").prepend(li);
    }
    li.dataset.status = item.status;
    li.textContent = "";
    const link = document.createElement("a");
    link.href = `/?task=${item.id}`;
    link.className = "task-link";
    link.dataset.id = item.id;
    link.textContent = `#${item.id}`;
    const code = document.createElement("code");
    code.textContent = item.expression + (item.variables ? `  (${item.variables})` : "");
    const outcome = document.createElement("span");
    outcome.className = "outcome " + (item.status === "done" ? "result" : item.status === "error" ? "error-text" : "muted");
    outcome.textContent = item.status === "done" ? `= ${item.result}`
      : item.status === "error" ? `error: ${item.msg}` : "calculating…";
    li.append(link, " ", code, " ", outcome);
    $("submissions-empty").hidden = true;
  }

  function updateSubmission(id, changes) {
    const items = loadSubmissions();
    const item = items.find((i) => i.id === id);
    if (!item) return;
    Object.assign(item, changes);
    saveSubmissions(items);
    renderSubmission(item);
    refreshNow();  // the overview and the list show it at once
  }

  // Long poll: the API answers as soon as the outcome is stored, or 202 after maxWait.
  async function awaitResult(id) {
    for (;;) {
      try {
        const response = await fetch(`/api/result/${id}?wait=${maxWait}`, {cache: "no-store"});
        const text = await response.text();
        const answer = JSON.parse(text);
        if (response.status === 200) {
          // The number as the API wrote it (4.0 stays 4.0, big integers stay exact).
          const written = /"result":\s*([^,}\s]+)/.exec(text);
          updateSubmission(id, answer.status === "done"
            ? {status: "done", result: written ? written[1] : JSON.stringify(answer.result)}
            : {status: "error", msg: answer.msg});
          return;
        }
        if (response.status !== 202) await sleep(1000);
      } catch (e) {
        await sleep(1000);  // the server is restarting, or the network hiccups
      }
    }
  }

  function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

  async function submit(event) {
    event.preventDefault();
    const expression = $("expression").value;
    const variablesText = $("variables").value.trim();
    let variables;
    try {
      variables = variablesJson(variablesText);
    } catch (error) {
      showRefusal(error.message);
      return;
    }
    clearRefusal();
    let response, answer;
    try {
      response = await fetch("/api/expression", {
        method: "POST",
        headers: {"Content-Type": "application/json", "Accept": "application/json"},
        body: `{"expression": ${JSON.stringify(expression)}, "variables": ${variables}}`,
      });
      answer = await response.json();
    } catch (error) {
      showRefusal("the service did not answer; try again in a moment");
      return;
    }
    if (response.status !== 202) {
      showRefusal(answer.msg || `refused (${response.status})`, expression);
      return;
    }
    const item = {id: answer.expression_id, expression, variables: variablesText, status: "pending"};
    saveSubmissions([item, ...loadSubmissions()]);
    renderSubmission(item);
    awaitResult(item.id);
  }

  // --- live fragments -------------------------------------------------------

  async function refresh(container, url) {
    const response = await fetch(url, {cache: "no-store", headers: {"Accept": "text/html"}});
    if (!response.ok) {
      let msg = `${response.status}`;
      try { msg = (await response.json()).msg; } catch (e) { /* not JSON */ }
      throw new Error(msg);
    }
    const html = await response.text();
    // Keep keyboard focus: do not replace what holds it (the next round will).
    if (container.contains(document.activeElement) && document.activeElement !== document.body) return false;
    container.innerHTML = html;
    return true;
  }

  function setState(text) { $("refresh-state").textContent = text; }

  // Results per second, from the outcome totals seen at each refresh (no
  // extra query): the sparkline covers the time this page has been open.
  const samples = [];
  const SPAN = 300;

  function sample() {
    const overview = document.querySelector("#overview .overview");
    if (!overview) return;
    const at = Number(overview.dataset.at), total = Number(overview.dataset.finishedTotal);
    const last = samples[samples.length - 1];
    if (last && at <= last.at) return;
    samples.push({at, total});
    while (samples.length > 2 && samples[samples.length - 1].at - samples[0].at > SPAN) samples.shift();
    drawSparkline();
  }

  // A step line: each interval between two refreshes at its own rate.
  function drawSparkline() {
    if (samples.length < 2) return;
    const end = samples[samples.length - 1].at;
    const x = (at) => Math.max(0, 300 - (end - at) / SPAN * 300).toFixed(1);
    const rates = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = samples[i].at - samples[i - 1].at;
      rates.push({from: samples[i - 1].at, to: samples[i].at,
                  rate: Math.max(0, (samples[i].total - samples[i - 1].total) / dt)});
    }
    const top = Math.max(1, ...rates.map((r) => r.rate));
    const y = (rate) => (46 - rate / top * 44).toFixed(1);
    const points = rates.flatMap((r) => [`${x(r.from)},${y(r.rate)}`, `${x(r.to)},${y(r.rate)}`]);
    document.querySelector("#sparkline polyline").setAttribute("points", points.join(" "));
    const now = rates[rates.length - 1].rate;
    $("rate-now").textContent = `${now.toFixed(1)} now, peak ${top.toFixed(1)}`;
  }

  function tasksUrl() {
    // The page of the listing the address names (?cursor=, from an "Older tasks" link), kept on refresh.
    const query = new URLSearchParams();
    const status = $("status").value, cursor = new URLSearchParams(location.search).get("cursor");
    if (status) query.set("status", status);
    if (cursor) query.set("cursor", cursor);
    const text = query.toString();
    return $("tasks").dataset.fragment + (text ? `?${text}` : "");
  }

  async function refreshOverview() {
    await refresh($("overview"), $("overview").dataset.fragment);
    sample();
  }

  async function refreshTasks() { await refresh($("tasks"), tasksUrl()); }

  // Run action now and then every `seconds` while the tab is visible; one at
  // a time, and one timer pending at most, however often run() is called.
  function every(seconds, action) {
    let timer = null, busy = false;
    const run = async () => {
      if (busy) return;
      busy = true;
      clearTimeout(timer);
      try {
        if (document.visibilityState === "visible") { await action(); setState(""); }
      } catch (error) {
        setState(`Refresh failed: ${error.message}`);
      } finally {
        busy = false;
        clearTimeout(timer);
        timer = setTimeout(run, seconds * 1000);
      }
    };
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") run(); });
    timer = setTimeout(run, seconds * 1000);
    return run;
  }

  // --- tasks: filter, detail, cancel ----------------------------------------

  async function showTask(id) {
    $("task-id").value = id;
    const response = await fetch(`/dashboard/task/${encodeURIComponent(id)}`, {headers: {"Accept": "text/html"}});
    const text = await response.text();
    if (response.headers.get("Content-Type").startsWith("application/json")) {
      const p = document.createElement("p");
      p.className = "refusal";
      p.setAttribute("role", "alert");
      p.textContent = JSON.parse(text).msg;
      $("task-detail").replaceChildren(p);
    } else {
      $("task-detail").innerHTML = text;
    }
    history.replaceState(null, "", `/?task=${encodeURIComponent(id)}`);
  }

  async function cancelTask(button) {
    // MERGE HOOK (cancellation): POSTs to data-cancel-url (api/dashboard.py CANCEL_URL).
    button.disabled = true;
    const response = await fetch(cancelUrl.replace("{id}", button.dataset.id), {
      method: "POST", headers: {"Content-Type": "application/json", "Accept": "application/json"}, body: "{}",
    });
    let msg = "";
    try { msg = (await response.json()).msg || ""; } catch (e) { /* no body */ }
    setState(response.ok ? `Task ${button.dataset.id} cancelled.` : `Cancel failed: ${msg || response.status}`);
    button.disabled = false;
    await refreshTasks();
    if ($("task-detail").querySelector(".detail")) await showTask(button.dataset.id);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("playground").addEventListener("submit", submit);
    for (const item of loadSubmissions().slice().reverse()) {
      renderSubmission(item);
      if (item.status === "pending") awaitResult(item.id);
    }
    sample();
    const overviewNow = every(Number(body.dataset.overviewPoll) || 2, refreshOverview);
    const tasksNow = every(Number(body.dataset.tasksPoll) || 5, refreshTasks);
    // After the server's cache of the fragments (CACHE_SECONDS) has let go of the old ones.
    const cached = (Number(body.dataset.cacheSeconds) || 0) * 1000 + 100;
    refreshNow = () => setTimeout(() => { overviewNow(); tasksNow(); }, cached);
    $("status").addEventListener("change", () => {
      const status = $("status").value;
      history.replaceState(null, "", status ? `/?status=${encodeURIComponent(status)}` : "/");
      tasksNow();
    });
    $("task-filter").addEventListener("submit", (event) => { event.preventDefault(); tasksNow(); });
    $("task-lookup").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("task-id").value.trim();
      if (id) showTask(id);
    });
    document.addEventListener("click", (event) => {
      const link = event.target.closest("a.task-link");
      if (link) { event.preventDefault(); showTask(link.dataset.id); $("task-detail").scrollIntoView(); return; }
      const button = event.target.closest("button.cancel");
      if (button && cancelUrl) cancelTask(button);
    });
  });
})();
