// examflow student page, reports (educators and admins): every exam's headline numbers, its
// full score report shown in the page, and its tables to download. Loaded before app.js,
// which holds the shared helpers (api, show, $, state), the wiring and boot.
"use strict";

function formatPercent(value, digits) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) + "%" : "—";
}

// The report's options as chosen on the page (which attempts count, a date range, a
// roster group, a DIF column); only
// those that differ from the server's defaults go into the query.
function reportOptionsQuery() {
  const params = new URLSearchParams();
  const attempts = $("report-attempts").value;
  if (attempts && attempts !== "first") params.set("attempts", attempts);
  if ($("report-from").value) params.set("from", $("report-from").value);
  if ($("report-to").value) params.set("to", $("report-to").value);
  if ($("report-group").value.trim()) params.set("group", $("report-group").value.trim());
  if ($("report-dif").value.trim()) params.set("dif", $("report-dif").value.trim());
  const query = params.toString();
  return query ? "&" + query : "";
}

function reportUrl(exam, format) {
  return "/api/reports/exams/" + encodeURIComponent(exam) + "?format=" + format + reportOptionsQuery();
}

// Empties and hides the reports: not staff, or signed out.
function forgetReports() {
  state.reportsLoad++;
  state.report = null;
  $("reports").hidden = true;
  $("reports-table").hidden = true;
  $("reports-table").querySelector("tbody").replaceChildren();
  $("reports-status").textContent = "";
  $("report-frame").removeAttribute("srcdoc");
  $("report-frame").hidden = true;
}

async function loadReports() {
  const load = ++state.reportsLoad;
  const section = $("reports");
  section.hidden = false;
  section.dataset.state = "loading";
  $("reports-status").textContent = "Loading the reports…";
  try {
    const data = await api("GET", "/api/reports/exams");
    // Signed out, or a newer load started, while this one was on its way.
    if (load !== state.reportsLoad) return;
    renderReports(data.exams || []);
    section.dataset.state = "ready";
  } catch (e) {
    if (load !== state.reportsLoad) return;
    section.dataset.state = "error";
    $("reports-table").hidden = true;
    $("reports-status").textContent = "Could not load the reports: " + e.message;
  }
}

function renderReports(exams) {
  const body = $("reports-table").querySelector("tbody");
  body.replaceChildren();
  exams.forEach((r, i) => {
    const tr = document.createElement("tr");
    tr.className = "report-row";
    tr.dataset.exam = r.exam;
    const name = document.createElement("th");
    name.scope = "row";
    name.className = "report-exam";
    name.id = "report-" + i + "-name";
    name.textContent = r.exam;
    if (!r.has_bank) {
      const note = document.createElement("span");
      note.className = "muted small block";
      note.textContent = "no question bank";
      name.append(note);
    }
    tr.append(name);
    for (const [text, cls] of [
      [String(r.results), "report-results"],
      [String(r.takers), "report-takers"],
      [formatPercent(r.mean_percentage, 1), "report-mean"],
      [typeof r.pass_rate === "number" ? formatPercent(100 * r.pass_rate, 0) : "—", "report-pass-rate"],
    ]) {
      const td = document.createElement("td");
      td.className = "n " + cls;
      td.textContent = text;
      tr.append(td);
    }
    const cell = document.createElement("td");
    const actions = document.createElement("div");
    actions.className = "report-actions";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open-report primary";
    open.textContent = "Open report";
    open.addEventListener("click", () => openReport(r.exam));
    const csv = downloadButton(r.exam, "csv", $("reports-status"));
    const json = downloadButton(r.exam, "json", $("reports-status"));
    for (const button of [open, csv, json]) button.setAttribute("aria-describedby", name.id);
    actions.append(open, csv, json);
    cell.append(actions);
    tr.append(cell);
    body.append(tr);
  });
  $("reports-table").hidden = exams.length === 0;
  $("reports-status").textContent = exams.length === 0 ? "No exams yet: there is no question bank and no result." : "";
}

function downloadButton(exam, format, status) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "download-" + format;
  button.textContent = format === "csv" ? "CSV (zip)" : "JSON";
  button.title = format === "csv" ? "Download every table as CSV, in one zip file" : "Download the whole report as JSON";
  button.addEventListener("click", () => downloadReport(exam, format, button, status));
  return button;
}

// A report in one format, with the token; its error as an ApiError.
async function fetchReport(exam, format) {
  const accept = { html: "text/html", json: "application/json", csv: "application/zip" }[format];
  const headers = { "Accept": accept };
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  let response;
  try {
    response = await fetch(reportUrl(exam, format), { headers });
  } catch (e) {
    throw new ApiError("Could not reach the server. Check your connection and try again.", 0, "network");
  }
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    if (response.status === 401) signOut({ keepSession: true });
    const error = data && data.error;
    throw new ApiError((error && error.message) || ("HTTP " + response.status), response.status, error && error.code);
  }
  return response;
}

// The file name the server gives (Content-Disposition), else one made from the exam's name.
function downloadName(response, exam, format) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/i.exec(disposition);
  if (match) return match[1];
  return exam.replace(/[^A-Za-z0-9._-]/g, "_") + "-report." + (format === "csv" ? "zip" : "json");
}

async function downloadReport(exam, format, button, status) {
  const label = button.textContent;
  button.disabled = true;
  button.dataset.state = "loading";
  button.textContent = "Preparing…";
  status.textContent = "Preparing the " + (format === "csv" ? "CSV tables" : "JSON") + " of " + exam + "…";
  try {
    const response = await fetchReport(exam, format);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = downloadName(response, exam, format);
    a.hidden = true;
    document.body.append(a);
    a.click();
    a.remove();
    // Revoked later: the download may still be reading it.
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    button.dataset.state = "done";
    button.dataset.file = a.download;
    button.dataset.bytes = String(blob.size);
    status.textContent = "Downloaded " + a.download + ".";
  } catch (e) {
    button.dataset.state = "error";
    if (!state.token) return;
    status.textContent = "Could not download the report of " + exam + ": " + e.message;
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

// The HTML report (a standalone page with its charts) in a sandboxed frame: no scripts run.
async function openReport(exam) {
  state.report = exam;
  const view = $("report-view");
  const frame = $("report-frame");
  view.dataset.exam = exam;
  view.dataset.state = "loading";
  $("report-exam").textContent = exam;
  $("report-status").textContent = "Loading the report of " + exam + "… (it is computed from the results, so it can take a few seconds)";
  frame.hidden = true;
  frame.removeAttribute("srcdoc");
  show("report-view");
  $("report-title").focus();
  try {
    const html = await (await fetchReport(exam, "html")).text();
    if (state.report !== exam) return;
    frame.onload = () => {
      // Not an earlier blank page's load, nor a report left behind.
      const doc = frame.contentDocument;
      if (state.report !== exam || (doc && doc.URL !== "about:srcdoc")) return;
      // Same origin (no scripts) lets the page fit the frame to the report's height.
      if (doc) frame.style.height = Math.max(400, doc.documentElement.scrollHeight + 24) + "px";
      view.dataset.state = "ready";
    };
    frame.srcdoc = html;
    frame.hidden = false;
    $("report-status").textContent = "";
  } catch (e) {
    if (state.report !== exam || !state.token) return;
    view.dataset.state = "error";
    $("report-status").textContent = "Could not load the report of " + exam + ": " + e.message;
  }
}
