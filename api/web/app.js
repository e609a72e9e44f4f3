// examflow student page: sign in, pick an exam, then either take the fixed form (every
// question, can go back before submitting) or an adaptive test (one question at a time
// chosen by the server, no going back, a scale score at the end). Educators and admins
// also get the reports: every exam's headline numbers, its full score report shown in the
// page, and its tables to download.
"use strict";

// The adaptive session in progress in this tab, so that a reload resumes it.
const ADAPTIVE_KEY = "examflow.adaptive-session";

const state = { token: localStorage.getItem("examflow.token"), role: null, exam: null, questions: [], answers: [], current: 0, adaptive: null, reportsLoad: 0, report: null };
const $ = (id) => document.getElementById(id);
const views = ["login-view", "exams-view", "quiz-view", "result-view", "adaptive-view", "adaptive-result-view", "report-view"];

function show(view) {
  for (const v of views) $(v).hidden = v !== view;
  // A report is a wide page of tables: give it the width of the window.
  const main = document.querySelector("main");
  main.classList.toggle("wide", view === "report-view");
  main.classList.toggle("roomy", view === "exams-view" && isStaff(state.role));
  hideError();
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// An API failure: the message for people, plus the HTTP status and error code.
class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError("Could not reach the server. Check your connection and try again.", 0, "network");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) signOut({ keepSession: true });
    const error = data && data.error;
    throw new ApiError((error && error.message) || ("HTTP " + response.status), response.status, error && error.code);
  }
  return data;
}

function signOut(options) {
  state.token = null;
  state.role = null;
  localStorage.removeItem("examflow.token");
  forgetReports();
  // Signing out on purpose leaves the adaptive test; an expired token keeps it to resume.
  if (!(options && options.keepSession)) forgetAdaptive();
  $("who").hidden = true;
  $("logout").hidden = true;
  show("login-view");
}

async function signIn(event) {
  event.preventDefault();
  try {
    const data = await api("POST", "/api/dev-login", { email: $("login-email").value });
    state.token = data.token;
    localStorage.setItem("examflow.token", data.token);
    await boot();
  } catch (e) { showError(e.message); }
}

// Staff sign in with a token they were given (the development sign-in makes students only).
async function signInWithToken(event) {
  event.preventDefault();
  const token = $("login-token").value.trim();
  if (!token) return;
  state.token = token;
  try {
    await api("GET", "/api/me");
  } catch (e) {
    state.token = null;
    showError(e.status === 401 ? "That token was not accepted: " + e.message : e.message);
    return;
  }
  localStorage.setItem("examflow.token", token);
  $("login-token").value = "";
  await boot();
}

function isStaff(role) {
  return role === "educator" || role === "admin";
}

async function loadMe() {
  const me = await api("GET", "/api/me");
  state.role = me.role;
  $("who").textContent = isStaff(me.role) ? "Signed in as " + me.email + " (" + me.role + ")" : "Taking exams as " + me.email;
  $("who").hidden = false;
  $("logout").hidden = false;
}

async function home() {
  try {
    await loadMe();
    // Staff see the reports above the exams; they load on their own, without holding up the
    // exam list, and report their own failures.
    if (isStaff(state.role)) loadReports(); else forgetReports();
    const exams = await api("GET", "/api/exams");
    const list = $("exam-list");
    list.replaceChildren();
    exams.forEach((exam, i) => {
      const li = document.createElement("li");
      li.className = "exam-row";
      const info = document.createElement("div");
      info.className = "exam-info";
      const name = document.createElement("span");
      name.className = "exam-name";
      name.id = "exam-" + i + "-name";
      name.textContent = exam.name;
      const count = document.createElement("span");
      count.className = "muted";
      count.textContent = exam.questions + " questions";
      info.append(name, count);
      const actions = document.createElement("div");
      actions.className = "exam-actions";
      const fixed = document.createElement("button");
      fixed.type = "button";
      fixed.className = "exam";
      fixed.dataset.exam = exam.name;
      fixed.dataset.testid = "fixed-start-" + exam.name;
      fixed.setAttribute("aria-describedby", name.id);
      fixed.textContent = "Take fixed form";
      fixed.addEventListener("click", () => startExam(exam.name));
      const adaptive = document.createElement("button");
      adaptive.type = "button";
      adaptive.className = "adaptive primary";
      adaptive.dataset.adaptiveExam = exam.name;
      adaptive.dataset.testid = "adaptive-start-" + exam.name;
      adaptive.setAttribute("aria-describedby", name.id);
      adaptive.textContent = "Take as adaptive test";
      adaptive.addEventListener("click", () => startAdaptive(exam.name, adaptive));
      actions.append(fixed, adaptive);
      li.append(info, actions);
      list.append(li);
    });
    await loadHistory();
    show("exams-view");
  } catch (e) {
    if (!state.token) return;
    showError(e.message);
  }
}

async function loadHistory() {
  const results = await api("GET", "/api/results?limit=20");
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  for (const r of results) {
    const tr = document.createElement("tr");
    const when = new Date(r.submitted_at).toLocaleString();
    const score = r.adaptive
      ? "Scale score " + Math.round(r.adaptive.scale_score) + " (adaptive, " + r.total + " questions)"
      : r.score + "/" + r.total + " (" + r.percentage + "%)";
    for (const [text, cls] of [[r.exam, ""], [score, ""], [r.result, r.result], [when, "muted"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    body.append(tr);
  }
  $("history").hidden = results.length === 0;
  $("history-empty").hidden = results.length !== 0;
}

async function startExam(name) {
  try {
    const exam = await api("GET", "/api/exams/" + encodeURIComponent(name));
    state.exam = exam.name;
    state.questions = exam.questions;
    state.answers = new Array(exam.questions.length).fill(null);
    state.current = 0;
    $("exam-name").textContent = exam.name;
    renderQuestion();
    show("quiz-view");
  } catch (e) { showError(e.message); }
}

function renderQuestion() {
  const i = state.current, n = state.questions.length, q = state.questions[i];
  $("question-title").textContent = "Question " + (i + 1) + "/" + n;
  $("progress-bar").style.width = (100 * i / n) + "%";
  $("question-text").textContent = q.question;
  const options = $("options");
  options.replaceChildren();
  q.options.forEach((text, k) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "option";
    input.value = String(k);
    input.className = "option";
    input.checked = state.answers[i] === k;
    input.addEventListener("change", () => { state.answers[i] = k; updateNav(); });
    const span = document.createElement("span");
    span.textContent = text;
    label.append(input, span);
    options.append(label);
  });
  updateNav();
}

function updateNav() {
  const i = state.current, last = i === state.questions.length - 1, answered = state.answers[i] !== null;
  $("back").disabled = i === 0;
  $("next").hidden = last;
  $("next").disabled = !answered;
  $("submit").hidden = !last;
  $("submit").disabled = !(last && state.answers.every((a) => a !== null));
}

async function submit() {
  $("submit").disabled = true;
  try {
    const result = await api("POST", "/api/exams/" + encodeURIComponent(state.exam) + "/submissions", { answers: state.answers });
    renderResult(result);
    show("result-view");
  } catch (e) { showError(e.message); updateNav(); }
}

function renderResult(r) {
  $("result-summary").textContent = "You scored " + r.score + "/" + r.total + ". That's " + r.percentage + "%. You " + r.result + ".";
  $("result-summary").className = "summary " + r.result;
  const marks = $("marks");
  marks.replaceChildren();
  for (const d of r.details) {
    const li = document.createElement("li");
    li.className = "mark " + (d.is_correct ? "correct" : "incorrect");
    const q = document.createElement("div");
    q.textContent = d.question + " ";
    const verdict = document.createElement("span");
    verdict.className = "verdict";
    verdict.textContent = d.is_correct ? "✓ correct" : "✗ incorrect";
    q.append(verdict);
    const a = document.createElement("div");
    a.className = "muted";
    a.textContent = "Correct answer: " + d.correct_answer + (d.is_correct ? "" : " · Your answer: " + d.user_answer);
    li.append(q, a);
    marks.append(li);
  }
}

// ---- Adaptive mode -------------------------------------------------------------------

// Why an adaptive test ended, in plain words.
const STOP_REASONS = {
  se_reached: "Your score was precise enough, so the test ended early.",
  max_length: "You reached the maximum number of questions.",
  bank_exhausted: "There were no more suitable questions left in this exam.",
  classified: "It was already clear whether you reached the passing level.",
};

function stopReasonText(reason) {
  return STOP_REASONS[reason] || ("The test ended (" + reason + ").");
}

function rememberAdaptive(session) {
  try { sessionStorage.setItem(ADAPTIVE_KEY, session); } catch (e) { /* storage off: no resume */ }
}

function forgetAdaptive() {
  state.adaptive = null;
  try { sessionStorage.removeItem(ADAPTIVE_KEY); } catch (e) { /* nothing stored */ }
}

function storedAdaptive() {
  try { return sessionStorage.getItem(ADAPTIVE_KEY); } catch (e) { return null; }
}

async function startAdaptive(name, button) {
  if (button) button.disabled = true;
  try {
    const s = await api("POST", "/api/adaptive/" + encodeURIComponent(name) + "/sessions");
    rememberAdaptive(s.session);
    state.adaptive = { session: s.session, exam: s.exam, question: null, busy: false };
    renderAdaptiveQuestion(s.question, s.progress);
    show("adaptive-view");
    focusAdaptiveQuestion();
  } catch (e) {
    showError("Could not start the adaptive test: " + e.message);
  } finally {
    if (button) button.disabled = false;
  }
}

// Shows session `id` as it is on the server: its current question or its result.
async function resumeAdaptive(id) {
  try {
    await loadMe();
    const s = await api("GET", "/api/adaptive/sessions/" + encodeURIComponent(id));
    state.adaptive = { session: s.session, exam: s.exam, question: null, busy: false };
    if (s.status === "finished" && s.result) {
      renderAdaptiveResult(s.result);
      show("adaptive-result-view");
      return true;
    }
    if (s.question) {
      renderAdaptiveQuestion(s.question, s.progress);
      show("adaptive-view");
      focusAdaptiveQuestion();
      return true;
    }
    forgetAdaptive();
  } catch (e) {
    if (!state.token) return false;
    // A session that is gone or someone else's cannot be resumed; other failures may pass.
    if (e.status === 403 || e.status === 404) forgetAdaptive();
    await home();
    // 403: the tab's session is another student's (someone else signed in here): not theirs
    // to hear about.
    if (e.status !== 403) showError("Could not resume your adaptive test: " + e.message);
    return false;
  }
  await home();
  return false;
}

function renderAdaptiveQuestion(question, progress) {
  const a = state.adaptive;
  a.question = question;
  const max = Math.max(progress.max_items, 1);
  const view = $("adaptive-view");
  view.dataset.session = a.session;
  view.dataset.questionId = question.id;
  view.dataset.number = String(question.number);
  $("adaptive-exam-name").textContent = a.exam;
  const text = "Question " + question.number + " of at most " + progress.max_items;
  $("adaptive-progress").textContent = text;
  const track = $("adaptive-progress-track");
  track.setAttribute("aria-valuemax", String(max));
  track.setAttribute("aria-valuenow", String(progress.answered));
  track.setAttribute("aria-valuetext", text + " (" + progress.answered + " answered)");
  $("adaptive-progress-bar").style.width = Math.min(100, 100 * progress.answered / max) + "%";
  $("adaptive-question").textContent = question.question;
  const options = $("adaptive-options");
  options.replaceChildren();
  (question.options || []).forEach((optionText, k) => {
    const label = document.createElement("label");
    label.className = "option-label";
    label.dataset.testid = "adaptive-option";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "adaptive-option";
    input.id = "adaptive-option-" + k;
    input.value = optionText;
    input.addEventListener("change", updateAdaptiveNav);
    const span = document.createElement("span");
    span.textContent = optionText;
    label.append(input, span);
    options.append(label);
  });
  setAdaptiveBusy(false);
}

function chosenAdaptiveOption() {
  const checked = $("adaptive-options").querySelector("input[name=adaptive-option]:checked");
  return checked ? checked.value : null;
}

function updateAdaptiveNav() {
  const busy = Boolean(state.adaptive && state.adaptive.busy);
  $("adaptive-submit").disabled = busy || chosenAdaptiveOption() === null;
}

function setAdaptiveBusy(busy) {
  if (state.adaptive) state.adaptive.busy = busy;
  $("adaptive-form").setAttribute("aria-busy", busy ? "true" : "false");
  for (const input of $("adaptive-options").querySelectorAll("input")) input.disabled = busy;
  $("adaptive-submit").textContent = busy ? "Sending…" : "Submit answer";
  updateAdaptiveNav();
}

function focusAdaptiveQuestion() {
  $("adaptive-question").focus();
}

async function submitAdaptive(event) {
  event.preventDefault();
  const a = state.adaptive;
  if (!a || a.busy || !a.question) return;
  const answer = chosenAdaptiveOption();
  if (answer === null) {
    showError("Choose an answer first.");
    return;
  }
  setAdaptiveBusy(true);
  try {
    const r = await api("POST", "/api/adaptive/sessions/" + encodeURIComponent(a.session) + "/answers", { item: a.question.id, answer });
    hideError();
    if (r.status === "finished") {
      renderAdaptiveResult(r);
      show("adaptive-result-view");
      $("adaptive-result-title").focus();
    } else {
      renderAdaptiveQuestion(r.question, r.progress);
      focusAdaptiveQuestion();
    }
  } catch (e) {
    if (!state.token) return;
    if (e.status === 409) {
      // The session moved on without this page (another tab, a retried request): show it as
      // the server has it.
      const resumed = await resumeAdaptive(a.session);
      if (resumed) showError("This test had already moved on, so here is where it stands now. (" + e.message + ")");
      return;
    }
    setAdaptiveBusy(false);
    showError("Your answer was not recorded: " + e.message);
  }
}

function renderAdaptiveResult(r) {
  const view = $("adaptive-result-view");
  view.dataset.session = r.session || (state.adaptive && state.adaptive.session) || "";
  view.dataset.resultId = r.result_id || "";
  $("adaptive-result-exam").textContent = state.adaptive ? state.adaptive.exam : "";
  $("scale-score").textContent = String(Math.round(r.scale_score));
  const verdict = $("adaptive-verdict");
  if (r.passed === true || r.passed === false) {
    verdict.textContent = r.passed ? "You passed: you reached the passing level." : "You did not pass: you did not reach the passing level.";
    verdict.className = "summary " + (r.passed ? "passed" : "failed");
    verdict.hidden = false;
  } else {
    verdict.textContent = "";
    verdict.hidden = true;
  }
  $("adaptive-explanation").textContent = r.explanation;
  $("adaptive-items-used").textContent = r.items_used + (r.items_used === 1 ? " question" : " questions") + ", " + r.correct + " answered correctly";
  $("adaptive-stop-reason").textContent = stopReasonText(r.stop_reason);
}

// ---- Reports (educators and admins) ------------------------------------------------------

function formatPercent(value, digits) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) + "%" : "—";
}

function reportUrl(exam, format) {
  return "/api/reports/exams/" + encodeURIComponent(exam) + "?format=" + format;
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
  $("report-status").textContent = "Loading the report of " + exam + "… (it is computed from every result, so it can take a few seconds)";
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

// ---- Wiring ---------------------------------------------------------------------------

$("login-form").addEventListener("submit", signIn);
$("token-form").addEventListener("submit", signInWithToken);
$("report-back").addEventListener("click", () => { state.report = null; home(); });
$("report-csv").addEventListener("click", () => { if (state.report) downloadReport(state.report, "csv", $("report-csv"), $("report-status")); });
$("report-json").addEventListener("click", () => { if (state.report) downloadReport(state.report, "json", $("report-json"), $("report-status")); });
$("logout").addEventListener("click", () => signOut());
$("back").addEventListener("click", () => { if (state.current > 0) { state.current--; renderQuestion(); } });
$("next").addEventListener("click", () => { if (state.answers[state.current] !== null) { state.current++; renderQuestion(); } });
$("submit").addEventListener("click", submit);
$("close").addEventListener("click", home);
$("adaptive-form").addEventListener("submit", submitAdaptive);
$("adaptive-close").addEventListener("click", () => { forgetAdaptive(); home(); });

// Signed in: resume this tab's adaptive test if there is one, else the exam list.
async function boot() {
  if (!state.token) { show("login-view"); return; }
  const session = storedAdaptive();
  if (session) await resumeAdaptive(session); else await home();
}

boot();
