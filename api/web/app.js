// examflow student page: sign in, pick an exam, then either take the fixed form (an
// attempt kept on the server: every answer is saved as it is chosen, questions can be
// flagged, a summary lists what is left before submitting, a timed attempt counts down and
// submits itself; a reload or another browser resumes it) or an adaptive test (one
// question at a time chosen by the server, no going back, a scale score at the end).
// Educators and admins also get the reports: every exam's headline numbers, its full score
// report shown in the page, and its tables to download.
"use strict";

// The adaptive session in progress in this tab, so that a reload resumes it.
const ADAPTIVE_KEY = "examflow.adaptive-session";
// The fixed-form attempt this browser shows, so that a reload resumes it: {"id", "current"}
// (the question on screen), or {"left": true} once the student left an attempt on purpose
// (then a reload shows the exam list, not the attempt). With no entry at all (a new
// browser), the student's newest open attempt is resumed.
const ATTEMPT_KEY = "examflow.attempt";

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

// ---- Fixed-form attempts ---------------------------------------------------------------------

function rememberAttempt(a) {
  try { localStorage.setItem(ATTEMPT_KEY, JSON.stringify({ id: a.id, current: a.current })); } catch (e) { /* no resume after reload */ }
}

function rememberLeft() {
  try { localStorage.setItem(ATTEMPT_KEY, JSON.stringify({ left: true })); } catch (e) { /* nothing to keep */ }
}

function forgetAttempt() {
  try { localStorage.removeItem(ATTEMPT_KEY); } catch (e) { /* nothing stored */ }
}

// What this browser remembers: {"id", "current"}, {"left": true}, or null (nothing).
function storedAttempt() {
  try {
    const text = localStorage.getItem(ATTEMPT_KEY);
    return text ? JSON.parse(text) : null;
  } catch (e) { return null; }
}

// The page's model of an attempt. `answers`/`flags` are what the student chose; `confirmed`
// is what the server said it saved; a question is "saved" only when the two agree.
function attemptFrom(data) {
  const n = data.questions.length;
  const answers = Array.from({ length: n }, (_, i) => (data.answers && data.answers[i]) || null);
  const flags = Array.from({ length: n }, (_, i) => Boolean(data.flags && data.flags[i]));
  return {
    id: data.attempt_id,
    exam: data.exam,
    questions: data.questions,
    answers,
    flags,
    confirmed: answers.map((answer, i) => ({ answer, flagged: flags[i] })),
    inflight: new Array(n).fill(false),
    errors: new Array(n).fill(null),
    retryTimers: new Array(n).fill(null),
    waiters: [],
    current: 0,
    // performance.now() at which the time is up; null when untimed.
    endsAt: null,
    clockTimer: null,
    lastSecs: null,
    timeUp: false,
    finishing: false,
    closing: false,
    autoSubmitted: false,
  };
}

function isDirty(a, i) {
  return a.answers[i] !== a.confirmed[i].answer || a.flags[i] !== a.confirmed[i].flagged;
}

// "saving", "error", "saved" (answered and saved) or "unanswered".
function saveState(a, i) {
  if (a.inflight[i]) return "saving";
  if (a.errors[i]) return "error";
  if (isDirty(a, i)) return "saving";
  return a.answers[i] !== null ? "saved" : "unanswered";
}

// The questions whose choice the server does not have yet (0-based).
function unsavedQuestions(a) {
  return a.answers.map((_, i) => i).filter((i) => a.inflight[i] || isDirty(a, i));
}

function allSettled(a) {
  return a.answers.every((_, i) => !a.inflight[i] && (!isDirty(a, i) || a.errors[i]));
}

function settle(a) {
  if (!allSettled(a)) return;
  const waiters = a.waiters;
  a.waiters = [];
  for (const resolve of waiters) resolve();
}

// Saves every choice the server does not have (again for the failed ones) and waits until
// each has succeeded or failed, or `ms` have passed.
function flushSaves(a, ms) {
  for (let i = 0; i < a.answers.length; i++) {
    if (isDirty(a, i) && !a.inflight[i]) {
      a.errors[i] = null;
      saveQuestion(a, i);
    }
  }
  if (allSettled(a)) return Promise.resolve();
  return Promise.race([new Promise((resolve) => a.waiters.push(resolve)), sleep(ms)]);
}

async function startExam(name, button) {
  if (button) button.disabled = true;
  try {
    const data = await api("POST", "/api/exams/" + enc(name) + "/attempts");
    enterAttempt(data, null);
  } catch (e) {
    if (!state.token) return;
    showError(startRefusal(e));
    if (button) button.disabled = false;
  }
}

// Resumes attempt `id` (the list's open attempt of `exam`); one that ended since the list
// was loaded shows its result.
async function resumeOrStart(exam, id, button) {
  if (button) button.disabled = true;
  const shown = await resumeAttempt(id, null);
  if (!shown && state.token) {
    await home();
    showError("That attempt could not be resumed. Start the exam again if it is still open.");
  }
}

// Shows attempt `id` as the server has it: its questions where the student was, or its
// result. False when it cannot be shown (gone, not this student's, or unreachable).
async function resumeAttempt(id, where) {
  try {
    if (!state.role) await loadMe();
    const data = await api("GET", "/api/attempts/" + enc(id));
    if (data.status === "open" && Array.isArray(data.questions)) {
      enterAttempt(data, where);
      return true;
    }
    if (data.status === "submitted" && data.result) {
      showAttemptResult(data.result, null);
      return true;
    }
  } catch (e) {
    if (!state.token) return false;
    if (e.status === 403 || e.status === 404) forgetAttempt();
  }
  return false;
}

// The student's newest open attempt with time left, for a browser that remembers none.
async function newestOpenAttempt() {
  try {
    const list = await api("GET", "/api/attempts?limit=20");
    const open = (list || []).find((a) => a.status === "open" && a.seconds_left !== 0);
    return open ? open.attempt_id : null;
  } catch (e) { return null; }
}

function enterAttempt(data, where) {
  leaveAttemptView();
  if (data.status !== "open") {
    if (data.result) showAttemptResult(data.result, null); else home();
    return;
  }
  const a = attemptFrom(data);
  state.attempt = a;
  const n = a.questions.length;
  const firstOpen = a.answers.findIndex((x) => x === null);
  a.current = typeof where === "number" && where >= 0 && where < n ? where : Math.max(0, firstOpen);
  rememberAttempt(a);
  $("quiz-view").dataset.attempt = a.id;
  $("summary-view").dataset.attempt = a.id;
  $("exam-name").textContent = a.exam;
  $("summary-exam").textContent = a.exam;
  startClock(a, data.seconds_left, typeof data.time_limit_secs === "number");
  renderQuestion();
  show("quiz-view");
  $("question-title").focus();
}

// Stops the attempt's clock and retries and empties its views (so that no question or
// option stays in the page once the attempt is left or submitted).
function leaveAttemptView() {
  const a = state.attempt;
  if (a) {
    stopClock(a);
    for (const t of a.retryTimers) clearTimeout(t);
    for (const resolve of a.waiters) resolve();
    a.waiters = [];
  }
  state.attempt = null;
  $("attempt-clock").hidden = true;
  $("timer").textContent = "";
  $("timer-note").textContent = "";
  $("timer-announce").textContent = "";
  $("options").replaceChildren();
  $("question-nav").replaceChildren();
  $("question-text").textContent = "";
  $("unanswered-list").replaceChildren();
  $("flagged-list").replaceChildren();
  $("summary-counts").textContent = "";
  $("summary-unsaved").hidden = true;
}

function goTo(i) {
  const a = state.attempt;
  if (!a || i < 0 || i >= a.questions.length) return;
  a.current = i;
  rememberAttempt(a);
  renderQuestion();
  show("quiz-view");
  $("question-title").focus();
}

function renderQuestion() {
  const a = state.attempt;
  const i = a.current, n = a.questions.length, q = a.questions[i];
  $("question-title").textContent = "Question " + (i + 1) + "/" + n;
  $("quiz-view").dataset.index = String(i);
  $("question-text").textContent = q.question;
  const options = $("options");
  options.replaceChildren();
  q.options.forEach((text, k) => {
    const label = document.createElement("label");
    label.className = "option-label";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "option";
    input.value = String(k);
    input.className = "option";
    input.checked = a.answers[i] === text;
    input.disabled = a.timeUp;
    input.addEventListener("change", () => { if (input.checked) choose(i, text); });
    const span = document.createElement("span");
    span.textContent = text;
    label.append(input, span);
    options.append(label);
  });
  $("flag").checked = a.flags[i];
  $("flag").disabled = a.timeUp;
  renderStatus();
}

// Everything that follows the answers and their saving: the save line, the question
// buttons, progress and the navigation.
function renderStatus() {
  const a = state.attempt;
  if (!a) return;
  const i = a.current, n = a.questions.length;
  const status = $("save-status");
  const s = saveState(a, i);
  status.dataset.saveState = s;
  status.className = "save-status state-" + s;
  const flagNote = a.flags[i] ? " · flagged for review" : "";
  if (s === "saving") status.textContent = "Saving…";
  else if (s === "error") status.textContent = "Not saved: " + a.errors[i];
  else if (s === "saved") status.textContent = "✓ Saved" + flagNote;
  else status.textContent = "Not answered yet" + flagNote;
  $("retry-save").hidden = s !== "error";

  const answered = a.answers.filter((x) => x !== null).length;
  $("progress-bar").style.width = (100 * answered / Math.max(n, 1)) + "%";
  const track = $("answered-track");
  track.setAttribute("aria-valuemax", String(n));
  track.setAttribute("aria-valuenow", String(answered));
  track.setAttribute("aria-valuetext", answered + " of " + n + " answered");

  const nav = $("question-nav");
  if (nav.children.length !== n) {
    nav.replaceChildren();
    for (let k = 0; k < n; k++) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "qnav";
      b.textContent = String(k + 1);
      b.addEventListener("click", () => goTo(k));
      nav.append(b);
    }
  }
  [...nav.children].forEach((b, k) => {
    const st = saveState(a, k);
    b.className = "qnav state-" + st + (a.flags[k] ? " flagged" : "") + (k === i ? " current" : "");
    b.dataset.state = st;
    b.dataset.flagged = String(a.flags[k]);
    if (k === i) b.setAttribute("aria-current", "step"); else b.removeAttribute("aria-current");
    const words = { saving: "saving", error: "not saved", saved: "answered", unanswered: "not answered" }[st];
    b.setAttribute("aria-label", "Question " + (k + 1) + ", " + words + (a.flags[k] ? ", flagged for review" : ""));
  });

  const last = i === n - 1;
  $("back").disabled = i === 0;
  $("next").hidden = last;
  $("to-summary").classList.toggle("primary", last);
  if (!$("summary-view").hidden) renderSummary();
}

// The student picked `text` for question `i`: keep it and save it.
function choose(i, text) {
  const a = state.attempt;
  if (!a || a.timeUp) return;
  a.answers[i] = text;
  a.errors[i] = null;
  saveQuestion(a, i);
  renderStatus();
}

function toggleFlag() {
  const a = state.attempt;
  if (!a || a.timeUp) return;
  const i = a.current;
  a.flags[i] = $("flag").checked;
  a.errors[i] = null;
  saveQuestion(a, i);
  renderStatus();
}

// Saves question `i` as the student has it, one request at a time per question (a choice
// made while one is on its way is sent after it). Failures that may pass are retried on
// their own; the student can also retry.
async function saveQuestion(a, i) {
  if (a.inflight[i] || !isDirty(a, i) || a.closing) return;
  clearTimeout(a.retryTimers[i]);
  const body = {};
  if (a.answers[i] !== a.confirmed[i].answer) body.answer = a.answers[i];
  if (a.flags[i] !== a.confirmed[i].flagged) body.flagged = a.flags[i];
  a.inflight[i] = true;
  if (state.attempt === a) renderStatus();
  let failure = null;
  try {
    const r = await api("PUT", "/api/attempts/" + enc(a.id) + "/answers/" + i, body);
    if ("answer" in body) a.confirmed[i].answer = body.answer;
    if ("flagged" in body) a.confirmed[i].flagged = body.flagged;
    a.errors[i] = null;
    if (r && typeof r.seconds_left === "number") syncClock(a, r.seconds_left);
  } catch (e) {
    failure = e;
  }
  a.inflight[i] = false;
  if (failure) {
    if (!state.token || state.attempt !== a) { settle(a); return; }
    if (failure.status === 409 && failure.code === "attempt_closed") {
      a.errors[i] = "the attempt is closed";
      settle(a);
      attemptClosed(a);
      return;
    }
    a.errors[i] = failure.message;
    // Network trouble, a busy server or a rate limit pass: try again by itself.
    if (failure.status === 0 || failure.status >= 500 || failure.status === 429) {
      const wait = failure.retryAfter ? failure.retryAfter * 1000 : 3000;
      a.retryTimers[i] = setTimeout(() => { if (state.attempt === a) { a.errors[i] = null; saveQuestion(a, i); } }, wait);
    }
  } else if (isDirty(a, i)) {
    saveQuestion(a, i);
  }
  if (state.attempt === a) renderStatus();
  settle(a);
}

function retrySave() {
  const a = state.attempt;
  if (!a) return;
  const i = a.current;
  a.errors[i] = null;
  saveQuestion(a, i);
  renderStatus();
}

function renderSummary() {
  const a = state.attempt;
  if (!a) return;
  const n = a.questions.length;
  const unanswered = [], flagged = [];
  a.answers.forEach((x, i) => {
    if (x === null) unanswered.push(i);
    if (a.flags[i]) flagged.push(i);
  });
  $("summary-counts").textContent = "You answered " + (n - unanswered.length) + " of " + n + " questions" +
    (flagged.length ? "; " + flagged.length + " flagged for review." : ".");
  for (const [listId, noneId, items] of [["unanswered-list", "unanswered-none", unanswered], ["flagged-list", "flagged-none", flagged]]) {
    const list = $(listId);
    list.replaceChildren();
    for (const i of items) {
      const li = document.createElement("li");
      li.dataset.index = String(i);
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link jump";
      b.textContent = "Question " + (i + 1) + ": " + a.questions[i].question;
      b.addEventListener("click", () => goTo(i));
      li.append(b);
      list.append(li);
    }
    list.hidden = items.length === 0;
    $(noneId).hidden = items.length !== 0;
  }
  const unsaved = unsavedQuestions(a);
  const failed = unsaved.filter((i) => a.errors[i]);
  const note = $("summary-unsaved");
  if (failed.length) {
    note.textContent = "Not saved yet: question" + (failed.length === 1 ? " " : "s ") + failed.map((i) => i + 1).join(", ") +
      ". Submitting tries to save them again first.";
    note.hidden = false;
  } else {
    note.hidden = true;
  }
  const submit = $("submit");
  submit.disabled = a.finishing || a.timeUp;
  submit.textContent = a.finishing ? "Submitting…" : "Submit answers";
}

function openSummary() {
  const a = state.attempt;
  if (!a) return;
  renderSummary();
  show("summary-view");
  $("summary-title").focus();
}

// Submits the attempt: by the student from the summary, or by the page when the time is up
// (`auto`). Unsaved choices are saved first; the student is told (and nothing is submitted)
// if one cannot be; at time-up the answers saved are submitted regardless.
async function submitAttempt(auto) {
  const a = state.attempt;
  if (!a || a.finishing) return;
  a.finishing = true;
  a.autoSubmitted = a.autoSubmitted || auto;
  renderSummary();
  await flushSaves(a, auto ? 5000 : 15000);
  if (state.attempt !== a || a.closing) return;
  if (!auto && unsavedQuestions(a).length) {
    a.finishing = false;
    openSummary();
    showError("Some answers are not saved yet, so nothing was submitted. Check your connection, then submit again.");
    return;
  }
  try {
    const result = await api("POST", "/api/attempts/" + enc(a.id) + "/submit");
    if (state.attempt !== a) return;
    showAttemptResult(result, a);
  } catch (e) {
    if (!state.token || state.attempt !== a) return;
    if (e.status === 409 || e.status === 404) {
      a.finishing = false;
      attemptClosed(a);
      return;
    }
    a.finishing = false;
    renderSummary();
    if (auto || a.timeUp) {
      // The time is up: keep trying (the server submits it by itself at deadline + grace).
      $("timer-note").textContent = "Time is up. Could not reach the server; trying again…";
      setTimeout(() => { if (state.attempt === a) submitAttempt(true); }, e.retryAfter ? e.retryAfter * 1000 : 2000);
      return;
    }
    showError("Your answers were not submitted: " + e.message);
  }
}

// The server takes no more answers (time ran out, or submitted elsewhere): show the attempt
// as it has it, with its result once submitted.
async function attemptClosed(a) {
  if (a.closing) return;
  a.closing = true;
  a.timeUp = true;
  stopClock(a);
  disableAnswers();
  $("timer-note").textContent = "This attempt is closed. Getting your result…";
  for (let tries = 1; state.attempt === a; tries++) {
    try {
      const data = await api("GET", "/api/attempts/" + enc(a.id));
      if (state.attempt !== a) return;
      if (data.status === "submitted" && data.result) {
        showAttemptResult(data.result, a, true);
        return;
      }
      if (data.status === "open" && data.seconds_left !== 0) {
        // Open after all (a conflict of another kind): carry on, submitting if it was.
        a.closing = false;
        a.timeUp = false;
        startClock(a, data.seconds_left, a.timed);
        renderQuestion();
        if (a.autoSubmitted) submitAttempt(true);
        return;
      }
    } catch (e) {
      if (!state.token || state.attempt !== a) return;
      if (e.status === 404 || e.status === 403) {
        forgetAttempt();
        await home();
        showError("This attempt is no longer available.");
        return;
      }
    }
    await sleep(Math.min(5000, 1000 * tries));
  }
}

function disableAnswers() {
  for (const input of $("options").querySelectorAll("input")) input.disabled = true;
  $("flag").disabled = true;
  $("submit").disabled = true;
}

// The result of a submitted attempt (`a`: the attempt as this page had it, if any;
// `elsewhere`: submitted without this page, by another browser or at the deadline).
function showAttemptResult(result, a, elsewhere) {
  const auto = Boolean(a && (a.autoSubmitted || a.timeUp) && !elsewhere);
  const lost = a ? a.answers.filter((x, i) => x !== a.confirmed[i].answer).length : 0;
  leaveAttemptView();
  // A reload on the result shows it again; Close forgets it.
  if (result.attempt_id) {
    try { localStorage.setItem(ATTEMPT_KEY, JSON.stringify({ id: result.attempt_id, current: 0 })); } catch (e) { /* no reload */ }
  }
  renderResult(result, { auto, lost, elsewhere: Boolean(elsewhere) });
  show("result-view");
  $("result-title").focus();
}

// What the review policy lets the student see, in plain words (when details are hidden).
function reviewWords(review) {
  if (review && review.policy === "never") return "This exam does not show answers: you see your score only.";
  if (review && review.policy === "after_close") {
    return review.details_available_at
      ? "Answers are shown after " + formatWhen(review.details_available_at) + ", when the exam closes."
      : "Answers are shown after the exam closes.";
  }
  return "Answers are not shown for this exam.";
}

function renderResult(r, context) {
  const ctx = context || {};
  $("result-exam").textContent = r.exam || "";
  $("result-view").dataset.attempt = r.attempt_id || "";
  $("result-summary").textContent = "You scored " + r.score + "/" + r.total + ". That's " + r.percentage + "%. You " + r.result + ".";
  $("result-summary").className = "summary " + r.result;
  const note = $("result-note");
  const lost = ctx.lost ? plural(ctx.lost, "answer") + " chosen here " + (ctx.lost === 1 ? "was" : "were") + " not saved in time and " +
    (ctx.lost === 1 ? "does" : "do") + " not count." : "";
  if (r.submitted_by === "deadline" || ctx.auto) {
    note.textContent = "Your time ran out, so the answers you had saved were submitted automatically." + (lost ? " " + lost : "");
    note.hidden = false;
  } else if (ctx.elsewhere) {
    note.textContent = "This attempt had already been submitted (from another browser or tab)." + (lost ? " " + lost : "");
    note.hidden = false;
  } else {
    note.textContent = "";
    note.hidden = true;
  }
  const marks = $("marks");
  marks.replaceChildren();
  const review = $("review-note");
  if (!Array.isArray(r.details)) {
    review.textContent = reviewWords(r.review);
    review.hidden = false;
    marks.hidden = true;
    return;
  }
  review.textContent = "";
  review.hidden = true;
  marks.hidden = false;
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
    const yours = d.user_answer === null || d.user_answer === undefined || d.user_answer === "" ? "(no answer)" : d.user_answer;
    a.textContent = "Correct answer: " + d.correct_answer + (d.is_correct ? "" : " · Your answer: " + yours);
    li.append(q, a);
    marks.append(li);
  }
}

// The student leaves the attempt (its answers are kept on the server and it can be
// resumed); a timed one keeps running.
async function leaveAttempt() {
  const a = state.attempt;
  if (!a) return;
  await flushSaves(a, 10000);
  if (state.attempt !== a) return;
  const unsaved = unsavedQuestions(a);
  if (unsaved.length) {
    showError("Question" + (unsaved.length === 1 ? " " : "s ") + unsaved.map((i) => i + 1).join(", ") +
      " not saved yet: stay on this page and retry, or you lose " + (unsaved.length === 1 ? "that answer." : "those answers."));
    return;
  }
  rememberLeft();
  await home();
}

// ---- The attempt's clock ---------------------------------------------------------------------

// When to tell screen readers how much time is left (seconds).
const ANNOUNCE_AT = [1800, 600, 300, 120, 60, 30, 10];

function announce(text) {
  $("timer-announce").textContent = text;
}

// Whether the clock is worth showing: a timed attempt, or one whose exam closes within a
// day (an untimed attempt of an exam closing in months keeps its clock out of sight).
function clockShown(a) {
  if (!a || a.endsAt === null) return false;
  return a.timed || a.endsAt - performance.now() < 86400 * 1000;
}

function startClock(a, secondsLeft, timed) {
  stopClock(a);
  if (typeof secondsLeft !== "number") {
    a.endsAt = null;
    return;
  }
  a.endsAt = performance.now() + secondsLeft * 1000;
  a.timed = Boolean(timed);
  a.lastSecs = secondsLeft;
  $("timer-note").textContent = "";
  if (clockShown(a)) {
    announce((a.timed ? "This attempt is timed: " : "This exam closes soon: ") + formatDuration(secondsLeft) +
      " left. Your saved answers are submitted by themselves when the time is up.");
  }
  a.clockTimer = setInterval(() => tick(a), 250);
  tick(a);
}

function stopClock(a) {
  if (a && a.clockTimer) clearInterval(a.clockTimer);
  if (a) a.clockTimer = null;
}

// The server's seconds left (from a save): adopted when the page's clock drifted from it.
function syncClock(a, secondsLeft) {
  if (a.endsAt === null || a.timeUp) return;
  const local = (a.endsAt - performance.now()) / 1000;
  if (Math.abs(local - secondsLeft) > 1.5) a.endsAt = performance.now() + secondsLeft * 1000;
}

function tick(a) {
  if (state.attempt !== a || a.endsAt === null) return;
  const left = Math.max(0, (a.endsAt - performance.now()) / 1000);
  const secs = Math.ceil(left);
  $("timer").textContent = formatClock(secs);
  const onQuiz = !$("quiz-view").hidden || !$("summary-view").hidden;
  $("attempt-clock").hidden = !(onQuiz && clockShown(a));
  $("attempt-clock").classList.toggle("low", secs <= 60);
  for (const t of ANNOUNCE_AT) {
    if (a.lastSecs > t && secs <= t) announce(formatDuration(t) + " left.");
  }
  a.lastSecs = secs;
  if (left <= 0 && !a.timeUp) timeUp(a);
}

function timeUp(a) {
  a.timeUp = true;
  stopClock(a);
  $("timer").textContent = formatClock(0);
  $("timer-note").textContent = "Time is up: submitting your answers…";
  announce("Time is up. Your answers are being submitted.");
  disableAnswers();
  submitAttempt(true);
}

// ---- Adaptive mode -------------------------------------------------------------------

// Why an adaptive test ended, in plain words.
const STOP_REASONS = {
  se_reached: "Your score was precise enough, so the test ended early.",
  max_length: "You reached the maximum number of questions.",
  bank_exhausted: "There were no more suitable questions left in this exam.",
  classified: "It was already clear whether you reached the passing level.",
  time_limit: "Your time ran out, so the test ended with the answers you had given.",
};

// How the pass/fail decision was made (exams with a cut score).
const DECISION_BASES = {
  confidence_interval: "With 95% confidence: the whole likely range of your ability is on one side of the passing level.",
  final_estimate: "From your final estimate: the test ended before the decision was that certain.",
};

function stopReasonText(reason) {
  return STOP_REASONS[reason] || ("The test ended (" + reason + ").");
}

function rememberAdaptive(session) {
  try { sessionStorage.setItem(ADAPTIVE_KEY, session); } catch (e) { /* storage off: no resume */ }
}

function forgetAdaptive() {
  stopAdaptiveClock();
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
    startAdaptiveClock(s.seconds_left);
    show("adaptive-view");
    focusAdaptiveQuestion();
  } catch (e) {
    if (!state.token) return;
    showError(["attempts_exhausted", "exam_not_open", "exam_closed", "rate_limited"].includes(e.code)
      ? startRefusal(e)
      : "Could not start the adaptive test: " + e.message);
  } finally {
    if (button) button.disabled = false;
  }
}

// Shows session `id` as it is on the server: its current question or its result.
async function resumeAdaptive(id) {
  try {
    await loadMe();
    const s = await api("GET", "/api/adaptive/sessions/" + encodeURIComponent(id));
    stopAdaptiveClock();
    state.adaptive = { session: s.session, exam: s.exam, question: null, busy: false };
    if (s.status === "finished" && s.result) {
      renderAdaptiveResult(s.result);
      show("adaptive-result-view");
      return true;
    }
    if (s.question) {
      renderAdaptiveQuestion(s.question, s.progress);
      startAdaptiveClock(await adaptiveSecondsLeft(s));
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
  $("adaptive-hint").textContent = "Choose an answer, then submit it.";
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
      stopAdaptiveClock();
      renderAdaptiveResult(r);
      show("adaptive-result-view");
      $("adaptive-result-title").focus();
    } else {
      renderAdaptiveQuestion(r.question, r.progress);
      if (typeof r.seconds_left === "number") syncAdaptiveClock(r.seconds_left);
      focusAdaptiveQuestion();
    }
  } catch (e) {
    if (!state.token) return;
    if (e.status === 409 && e.code === "attempt_closed") {
      // The time ran out: the server finished the test; show its result.
      const resumed = await resumeAdaptive(a.session);
      if (resumed) showError("Your time ran out before that answer arrived, so the test ended without it.");
      return;
    }
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
  const basis = r.decision_basis ? (DECISION_BASES[r.decision_basis] || r.decision_basis) : "";
  $("adaptive-decision").textContent = basis;
  $("adaptive-decision").hidden = !basis;
  $("adaptive-decision-label").hidden = !basis;
}

// ---- The adaptive test's clock (timed exams) ---------------------------------------------

// Seconds left of a session read back (resume): as the server gives them, else from its
// deadline, else from its start and the exam's time limit; null when untimed.
async function adaptiveSecondsLeft(s) {
  if (typeof s.seconds_left === "number") return s.seconds_left;
  if (s.deadline) return Math.max(0, (Date.parse(s.deadline) - Date.now()) / 1000);
  try {
    const exam = await api("GET", "/api/exams/" + enc(s.exam));
    const p = exam.policy;
    if (!p || !p.time_limit_secs || !s.created_at) return null;
    let end = Date.parse(s.created_at) + p.time_limit_secs * 1000;
    if (p.close_at) end = Math.min(end, Date.parse(p.close_at));
    return isNaN(end) ? null : Math.max(0, (end - Date.now()) / 1000);
  } catch (e) { return null; }
}

function startAdaptiveClock(secondsLeft) {
  stopAdaptiveClock();
  const a = state.adaptive;
  $("adaptive-clock").hidden = true;
  if (!a || typeof secondsLeft !== "number") return;
  a.endsAt = performance.now() + secondsLeft * 1000;
  a.clockTimer = setInterval(adaptiveTick, 250);
  $("adaptive-clock").hidden = false;
  adaptiveTick();
}

function stopAdaptiveClock() {
  const a = state.adaptive;
  if (a && a.clockTimer) clearInterval(a.clockTimer);
  if (a) a.clockTimer = null;
  $("adaptive-clock").hidden = true;
}

function syncAdaptiveClock(secondsLeft) {
  const a = state.adaptive;
  if (!a || !a.clockTimer) return;
  const local = (a.endsAt - performance.now()) / 1000;
  if (Math.abs(local - secondsLeft) > 1.5) a.endsAt = performance.now() + secondsLeft * 1000;
}

function adaptiveTick() {
  const a = state.adaptive;
  if (!a || !a.clockTimer) return;
  const left = Math.max(0, (a.endsAt - performance.now()) / 1000);
  $("adaptive-timer").textContent = formatClock(left);
  $("adaptive-clock").classList.toggle("low", left <= 60);
  if (left <= 0) adaptiveTimeUp(a);
}

// The time is up: no more answers; the server ends the test (at once, or after the
// exam's grace) and the page shows the result as soon as it has one.
async function adaptiveTimeUp(a) {
  clearInterval(a.clockTimer);
  a.clockTimer = null;
  $("adaptive-timer").textContent = formatClock(0);
  setAdaptiveBusy(true);
  $("adaptive-submit").textContent = "Time is up";
  $("adaptive-hint").textContent = "Time is up: finishing your test…";
  const policy = state.policies.get(a.exam);
  const grace = policy && typeof policy.grace_secs === "number" ? policy.grace_secs : 60;
  const until = Date.now() + (grace + 30) * 1000;
  while (state.adaptive === a && Date.now() < until) {
    await sleep(1500);
    try {
      const s = await api("GET", "/api/adaptive/sessions/" + enc(a.session));
      if (state.adaptive !== a) return;
      if (s.status === "finished" && s.result) {
        renderAdaptiveResult(s.result);
        show("adaptive-result-view");
        $("adaptive-result-title").focus();
        return;
      }
    } catch (e) {
      if (!state.token) return;
    }
  }
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
