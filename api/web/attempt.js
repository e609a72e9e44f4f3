// examflow student page, fixed-form attempts: an attempt kept on the server (every answer is
// saved as it is chosen, questions can be flagged, a summary lists what is left before
// submitting, a timed attempt counts down and submits itself; a reload or another browser
// resumes it) and its result. Loaded before app.js, which holds the shared helpers (api,
// show, $, state), the wiring and boot.
"use strict";

// The fixed-form attempt this browser shows, so that a reload resumes it: {"id", "current"}
// (the question on screen), or {"left": true} once the student left an attempt on purpose
// (then a reload shows the exam list, not the attempt). With no entry at all (a new
// browser), the student's newest open attempt is resumed.
const ATTEMPT_KEY = "examflow.attempt";

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
