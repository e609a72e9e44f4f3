// examflow student page: sign in, pick an exam, then either take the fixed form (an
// attempt kept on the server: every answer is saved as it is chosen, questions can be
// flagged, a summary lists what is left before submitting, a timed attempt counts down and
// submits itself; a reload or another browser resumes it) or an adaptive test (one
// question at a time chosen by the server, no going back, a scale score at the end).
// Educators and admins also get the reports: every exam's headline numbers, its full score
// report shown in the page, and its tables to download.
//
// This file holds what the page shares: its state, api() and errors, the views, times in
// plain words, signing in (and the development sign-in banner), the exam list, the wiring
// and boot. The modes live in attempt.js (fixed form), adaptive.js (adaptive tests) and
// reports.js (educators' reports), loaded before this file so that every function is
// defined when boot() runs.
"use strict";

const state = {
  token: localStorage.getItem("examflow.token"),
  role: null,
  // Each exam's policy, by name, from the last exam list.
  policies: new Map(),
  // The fixed-form attempt on screen (see attemptFrom).
  attempt: null,
  adaptive: null,
  reportsLoad: 0,
  report: null,
};
const $ = (id) => document.getElementById(id);
const views = ["login-view", "exams-view", "quiz-view", "summary-view", "result-view", "adaptive-view", "adaptive-result-view", "report-view"];

function show(view) {
  for (const v of views) $(v).hidden = v !== view;
  // A report is a wide page of tables: give it the width of the window.
  const main = document.querySelector("main");
  main.classList.toggle("wide", view === "report-view");
  main.classList.toggle("roomy", view === "exams-view" && isStaff(state.role));
  $("attempt-clock").hidden = !((view === "quiz-view" || view === "summary-view") && clockShown(state.attempt));
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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const enc = encodeURIComponent;

// An API failure: the message for people, plus the HTTP status, error code and (429) the
// seconds to wait.
class ApiError extends Error {
  constructor(message, status, code, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
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
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    throw new ApiError((error && error.message) || ("HTTP " + response.status), response.status, error && error.code, retryAfter);
  }
  return data;
}

// ---- Times in plain words -------------------------------------------------------------

function formatWhen(text) {
  const d = new Date(text);
  if (isNaN(d.getTime())) return String(text);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function plural(n, word) {
  return n + " " + word + (n === 1 ? "" : "s");
}

// A length of time for sentences: "30 minutes", "1 hour 30 minutes", "45 seconds".
function formatDuration(secs) {
  secs = Math.max(0, Math.round(secs));
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  const parts = [];
  if (h) parts.push(plural(h, "hour"));
  if (m) parts.push(plural(m, "minute"));
  if (s || parts.length === 0) parts.push(plural(s, "second"));
  return parts.join(" ");
}

// A countdown: "4:05", "1:02:03", or "2 d 3 h" when days away.
function formatClock(secs) {
  secs = Math.max(0, Math.ceil(secs));
  if (secs >= 86400) return Math.floor(secs / 86400) + " d " + Math.floor((secs % 86400) / 3600) + " h";
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  const two = (v) => String(v).padStart(2, "0");
  return h ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
}

// ---- Signing in ---------------------------------------------------------------------------

function signOut(options) {
  const expired = Boolean(options && options.keepSession);
  state.token = null;
  state.role = null;
  localStorage.removeItem("examflow.token");
  forgetReports();
  leaveAttemptView();
  // Signing out on purpose leaves the adaptive test and the attempt (they stay on the
  // server); an expired token keeps them to resume after signing in again.
  if (!expired) {
    forgetAdaptive();
    forgetAttempt();
  }
  stopAdaptiveClock();
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

// Whether the development sign-in is on, and whether to warn about it. A server without
// the status route (404) or that cannot be reached keeps the form as it is, with no banner.
async function loadDevLogin() {
  let status;
  try {
    const response = await fetch("/api/dev-login", { headers: { "Accept": "application/json" } });
    if (!response.ok) return;
    status = await response.json();
  } catch (e) { return; }
  if (!status || typeof status !== "object") return;
  $("dev-banner").hidden = status.warning !== true;
  const enabled = status.enabled !== false;
  $("login-form").hidden = !enabled;
  $("login-dev-note").hidden = !enabled;
  $("login-token-note").hidden = enabled;
  if (!enabled) {
    $("token-login").open = true;
    $("token-login").querySelector("summary").textContent = "Sign in with an access token";
  }
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

// ---- The exam list ------------------------------------------------------------------------

// An exam's policy in plain words: [the rules, the window (or "")].
function policyWords(p) {
  if (!p) return ["", ""];
  const rules = [];
  rules.push(p.time_limit_secs ? "Time limit: " + formatDuration(p.time_limit_secs) : "No time limit");
  if (p.max_attempts) rules.push(p.max_attempts === 1 ? "one attempt only" : "at most " + p.max_attempts + " attempts");
  if (p.review === "never") rules.push("answers are not shown");
  else if (p.review === "after_close") rules.push(p.close_at ? "answers shown after it closes" : "answers are not shown");
  else rules.push("answers shown after you submit");
  let window = "";
  const now = Date.now();
  const opens = p.open_at ? Date.parse(p.open_at) : NaN;
  const closes = p.close_at ? Date.parse(p.close_at) : NaN;
  if (p.open_now === false) {
    if (!isNaN(opens) && opens > now) window = "Opens at " + formatWhen(p.open_at);
    else window = "Closed" + (p.close_at ? " since " + formatWhen(p.close_at) : "");
  } else if (!isNaN(closes)) {
    window = "Open until " + formatWhen(p.close_at);
  }
  return [rules.join(" · "), window];
}

// The student's open attempts by exam (newest first from the server), or an empty map when
// they cannot be listed.
async function openAttempts() {
  const open = new Map();
  try {
    const list = await api("GET", "/api/attempts?limit=100");
    for (const a of list || []) {
      if (a.status === "open" && !open.has(a.exam)) open.set(a.exam, a);
    }
  } catch (e) {
    if (!state.token) throw e;
  }
  return open;
}

async function home() {
  leaveAttemptView();
  try {
    await loadMe();
    // Staff see the reports above the exams; they load on their own, without holding up the
    // exam list, and report their own failures.
    if (isStaff(state.role)) loadReports(); else forgetReports();
    const [exams, open] = await Promise.all([api("GET", "/api/exams"), openAttempts()]);
    const list = $("exam-list");
    list.replaceChildren();
    state.policies = new Map();
    exams.forEach((exam, i) => {
      const policy = exam.policy || null;
      state.policies.set(exam.name, policy);
      const resumable = open.get(exam.name);
      const closed = Boolean(policy && policy.open_now === false);
      const li = document.createElement("li");
      li.className = "exam-row";
      li.dataset.exam = exam.name;
      const info = document.createElement("div");
      info.className = "exam-info";
      const name = document.createElement("span");
      name.className = "exam-name";
      name.id = "exam-" + i + "-name";
      name.textContent = exam.name;
      const [rules, window] = policyWords(policy);
      const count = document.createElement("span");
      count.className = "muted exam-policy";
      count.id = "exam-" + i + "-policy";
      count.dataset.testid = "policy-" + exam.name;
      count.textContent = plural(exam.questions, "question") + (rules ? " · " + rules : "");
      info.append(name, count);
      if (window) {
        const when = document.createElement("span");
        when.className = "exam-window small" + (closed ? " closed" : "");
        when.dataset.testid = "window-" + exam.name;
        when.textContent = window;
        info.append(when);
      }
      if (resumable) {
        const note = document.createElement("span");
        note.className = "exam-open small";
        note.dataset.testid = "open-attempt-" + exam.name;
        note.textContent = "Attempt in progress: " + resumable.answered + " of " + exam.questions + " answered" +
          (typeof resumable.seconds_left === "number" ? ", " + formatDuration(resumable.seconds_left) + " left" : "");
        info.append(note);
      }
      const actions = document.createElement("div");
      actions.className = "exam-actions";
      const fixed = document.createElement("button");
      fixed.type = "button";
      fixed.className = "exam";
      fixed.dataset.exam = exam.name;
      fixed.dataset.testid = "fixed-start-" + exam.name;
      fixed.setAttribute("aria-describedby", name.id + " " + count.id);
      if (resumable) {
        fixed.textContent = "Resume attempt";
        fixed.classList.add("primary");
        fixed.addEventListener("click", () => resumeOrStart(exam.name, resumable.attempt_id, fixed));
      } else {
        fixed.textContent = "Take fixed form";
        fixed.disabled = closed;
        fixed.addEventListener("click", () => startExam(exam.name, fixed));
      }
      const adaptive = document.createElement("button");
      adaptive.type = "button";
      adaptive.className = "adaptive" + (resumable ? "" : " primary");
      adaptive.dataset.adaptiveExam = exam.name;
      adaptive.dataset.testid = "adaptive-start-" + exam.name;
      adaptive.setAttribute("aria-describedby", name.id + " " + count.id);
      adaptive.textContent = "Take as adaptive test";
      adaptive.disabled = closed;
      adaptive.addEventListener("click", () => startAdaptive(exam.name, adaptive));
      if (closed) {
        const why = window || "This exam is not open now.";
        fixed.title = why;
        adaptive.title = why;
      }
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

// Why an attempt could not start, in plain words.
function startRefusal(e) {
  switch (e.code) {
    case "attempts_exhausted": return "You have no attempts left at this exam. (" + e.message + ")";
    case "exam_not_open": return "This exam is not open yet. (" + e.message + ")";
    case "exam_closed": return "This exam is closed. (" + e.message + ")";
    case "rate_limited": return "Too many starts in a short time: wait " + (e.retryAfter ? formatDuration(e.retryAfter) : "a moment") + " and try again.";
    default: return "Could not start the exam: " + e.message;
  }
}

// ---- Wiring ---------------------------------------------------------------------------

$("login-form").addEventListener("submit", signIn);
$("token-form").addEventListener("submit", signInWithToken);
$("report-back").addEventListener("click", () => { state.report = null; home(); });
$("report-csv").addEventListener("click", () => { if (state.report) downloadReport(state.report, "csv", $("report-csv"), $("report-status")); });
$("report-options").addEventListener("submit", (e) => { e.preventDefault(); if (state.report) openReport(state.report); });
$("report-json").addEventListener("click", () => { if (state.report) downloadReport(state.report, "json", $("report-json"), $("report-status")); });
$("logout").addEventListener("click", () => signOut());
$("back").addEventListener("click", () => { const a = state.attempt; if (a && a.current > 0) goTo(a.current - 1); });
$("next").addEventListener("click", () => { const a = state.attempt; if (a && a.current < a.questions.length - 1) goTo(a.current + 1); });
$("to-summary").addEventListener("click", openSummary);
$("summary-back").addEventListener("click", () => { const a = state.attempt; if (a) goTo(a.current); });
$("flag").addEventListener("change", toggleFlag);
$("retry-save").addEventListener("click", retrySave);
$("leave").addEventListener("click", leaveAttempt);
$("submit").addEventListener("click", () => submitAttempt(false));
$("close").addEventListener("click", () => { forgetAttempt(); home(); });
$("adaptive-form").addEventListener("submit", submitAdaptive);
$("adaptive-close").addEventListener("click", () => { forgetAdaptive(); home(); });

// Leaving the page with a choice the server does not have yet: the browser asks first.
window.addEventListener("beforeunload", (event) => {
  const a = state.attempt;
  if (a && !a.timeUp && unsavedQuestions(a).length) {
    event.preventDefault();
    event.returnValue = "";
  }
});

// Signed in: resume this tab's adaptive test, or this browser's attempt (or, in a browser
// that has none, the student's newest open attempt), else the exam list.
async function boot() {
  if (!state.token) { show("login-view"); return; }
  const session = storedAdaptive();
  if (session) { await resumeAdaptive(session); return; }
  const stored = storedAttempt();
  if (stored && stored.id) {
    if (await resumeAttempt(stored.id, stored.current)) return;
  } else if (!stored || !stored.left) {
    try { await loadMe(); } catch (e) { if (!state.token) return; }
    const open = await newestOpenAttempt();
    if (open && await resumeAttempt(open, null)) return;
  }
  if (state.token) await home();
}

loadDevLogin();
boot();
