// examflow student page: sign in, pick an exam, answer one question at a time, submit.
"use strict";

const state = { token: localStorage.getItem("examflow.token"), exam: null, questions: [], answers: [], current: 0 };
const $ = (id) => document.getElementById(id);
const views = ["login-view", "exams-view", "quiz-view", "result-view"];

function show(view) {
  for (const v of views) $(v).hidden = v !== view;
  $("error").hidden = true;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) signOut();
    throw new Error((data && data.error && data.error.message) || ("HTTP " + response.status));
  }
  return data;
}

function signOut() {
  state.token = null;
  localStorage.removeItem("examflow.token");
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
    await home();
  } catch (e) { showError(e.message); }
}

async function home() {
  try {
    const me = await api("GET", "/api/me");
    $("who").textContent = "Taking exams as " + me.email;
    $("who").hidden = false;
    $("logout").hidden = false;
    const exams = await api("GET", "/api/exams");
    const list = $("exam-list");
    list.replaceChildren();
    for (const exam of exams) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.className = "exam";
      button.dataset.exam = exam.name;
      const name = document.createElement("span");
      name.textContent = exam.name;
      const count = document.createElement("span");
      count.className = "muted";
      count.textContent = exam.questions + " questions";
      button.append(name, count);
      button.addEventListener("click", () => startExam(exam.name));
      li.append(button);
      list.append(li);
    }
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
    for (const [text, cls] of [[r.exam, ""], [r.score + "/" + r.total + " (" + r.percentage + "%)", ""], [r.result, r.result], [when, "muted"]]) {
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

$("login-form").addEventListener("submit", signIn);
$("logout").addEventListener("click", signOut);
$("back").addEventListener("click", () => { if (state.current > 0) { state.current--; renderQuestion(); } });
$("next").addEventListener("click", () => { if (state.answers[state.current] !== null) { state.current++; renderQuestion(); } });
$("submit").addEventListener("click", submit);
$("close").addEventListener("click", home);

if (state.token) home(); else show("login-view");
