// examflow student page, adaptive tests: one question at a time chosen by the server, no
// going back, a scale score at the end; a timed exam's clock. Loaded before app.js, which
// holds the shared helpers (api, show, $, state), the wiring and boot.
"use strict";

// The adaptive session in progress in this tab, so that a reload resumes it.
const ADAPTIVE_KEY = "examflow.adaptive-session";

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
