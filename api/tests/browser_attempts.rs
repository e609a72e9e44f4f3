//! Fixed-form attempts on the student page, in headless Chromium against the real server:
//! every answer saved as it is chosen (and said so only once the server has it, with a
//! retry when it could not be), a reload and a second browser resuming the attempt where it
//! was, flags and the summary before submitting, a timed attempt submitting itself with no
//! click, the exam list's policies in plain words, and `review = "never"` leaving no key
//! anywhere in the page.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::{guarded, launch, screenshots, sign_in, wait_for, wait_for_at_most};
use common::{Server, ServerOptions};
use serde_json::{Value, json};
use thirtyfour::prelude::*;

/// Questions per exam.
const QUESTIONS: usize = 4;

/// The options of question `i` (0-based); the right one is option `i % 3`, so that every
/// key is a different text.
fn options(i: usize) -> [String; 3] {
    [
        format!("Amber {i}"),
        format!("Birch {i}"),
        format!("Cedar {i}"),
    ]
}

fn right(i: usize) -> String {
    options(i)[i % 3].clone()
}

fn wrong(i: usize) -> String {
    options(i)[(i + 1) % 3].clone()
}

fn write_banks(dir: &Path, exams: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for exam in exams {
        let questions: Vec<Value> = (0..QUESTIONS)
            .map(|i| {
                json!({
                    "question": format!("{exam} question {}: which tree?", i + 1),
                    "options": options(i),
                    "correct_answer": right(i),
                })
            })
            .collect();
        std::fs::write(
            dir.join(format!("{exam}.json")),
            Value::Array(questions).to_string(),
        )
        .unwrap();
    }
}

const EXAMS: &[&str] = &["quiz", "timed", "hidden", "later", "future", "past"];

const CONFIG: &str = "[exams.timed]\ntime_limit_secs = 6\ngrace_secs = 0\n\
     [exams.hidden]\nreview = \"never\"\n\
     [exams.later]\nreview = \"after_close\"\nclose_at = \"2099-01-01T00:00:00Z\"\n\
     [exams.future]\nopen_at = \"2099-01-01T00:00:00Z\"\n\
     [exams.past]\nclose_at = \"2001-01-01T00:00:00Z\"\n";

fn start_server(dir: &Path) -> Server {
    let banks = dir.join("banks");
    write_banks(&banks, EXAMS);
    let config = dir.join("examflow-test.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut options = ServerOptions::new(&dir.join("data"));
    options.banks = banks;
    options.config_file = Some(config);
    Server::start(options)
}

/// The fixed-form question on screen, read in one script (the page may re-render between
/// two WebDriver calls): None when the question view is hidden.
const QUIZ_STATE: &str = r#"
const v = document.getElementById('quiz-view');
if (v.hidden) return null;
const checked = document.querySelector('#options input:checked');
const status = document.getElementById('save-status');
return {
  attempt: v.dataset.attempt,
  index: Number(v.dataset.index),
  title: document.getElementById('question-title').textContent,
  chosen: checked ? checked.parentElement.textContent : null,
  flagged: document.getElementById('flag').checked,
  save: status.dataset.saveState,
  status: status.textContent,
  retry: !document.getElementById('retry-save').hidden,
  nav: [...document.querySelectorAll('#question-nav .qnav')]
    .map((b) => b.dataset.state + (b.dataset.flagged === 'true' ? '+flag' : '')),
};"#;

async fn quiz(driver: &WebDriver) -> WebDriverResult<Option<Value>> {
    let v = driver.execute(QUIZ_STATE, vec![]).await?;
    Ok(Some(v.json().clone()).filter(|v| !v.is_null()))
}

/// Waits until question `index` is on screen and `ok` holds of its state.
async fn wait_quiz(
    driver: &WebDriver,
    what: &str,
    index: usize,
    ok: impl Fn(&Value) -> bool,
) -> WebDriverResult<Value> {
    wait_for(what, || async {
        Ok(quiz(driver).await?.filter(|q| q["index"] == index && ok(q)))
    })
    .await
}

/// Waits until question `index` says its answer is saved.
async fn wait_saved(driver: &WebDriver, index: usize) -> WebDriverResult<Value> {
    wait_quiz(
        driver,
        &format!("question {} saved", index + 1),
        index,
        |q| q["save"] == "saved" && q["status"].as_str().unwrap_or("").starts_with("✓ Saved"),
    )
    .await
}

async fn choose(driver: &WebDriver, text: &str) -> WebDriverResult<()> {
    for label in driver.find_all(By::Css("#options label")).await? {
        if label.text().await? == text {
            label.click().await?;
            return Ok(());
        }
    }
    panic!("no option {text:?} on screen");
}

/// Jumps to question `index` with the question buttons.
async fn go_to(driver: &WebDriver, index: usize) -> WebDriverResult<Value> {
    driver
        .find(By::Css(format!(
            "#question-nav .qnav:nth-child({})",
            index + 1
        )))
        .await?
        .click()
        .await?;
    wait_quiz(driver, "the question asked for", index, |_| true).await
}

async fn click(driver: &WebDriver, id: &str) -> WebDriverResult<()> {
    driver.find(By::Id(id)).await?.click().await
}

async fn text_of(driver: &WebDriver, id: &str) -> WebDriverResult<String> {
    driver.find(By::Id(id)).await?.text().await
}

/// The indexes (0-based) listed in the summary's list `id`.
async fn listed(driver: &WebDriver, id: &str) -> WebDriverResult<Vec<usize>> {
    let v = driver
        .execute(
            "return [...document.querySelectorAll('#' + arguments[0] + ' li')].map((li) => Number(li.dataset.index));",
            vec![json!(id)],
        )
        .await?;
    Ok(serde_json::from_value(v.json().clone()).unwrap())
}

/// The result view's summary sentence, once it is shown.
async fn result_sentence(driver: &WebDriver, timeout: Duration) -> WebDriverResult<String> {
    wait_for_at_most("the result", timeout, || async {
        let v = driver
            .execute(
                "const v = document.getElementById('result-view');
                 return v.hidden ? null : document.getElementById('result-summary').textContent;",
                vec![],
            )
            .await?;
        Ok(v.json()
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string))
    })
    .await
}

/// Waits for the exam list to be shown: then it is the list as rebuilt for this visit (an
/// older one stays in the hidden view while the new one loads, and is replaced).
async fn exam_list(driver: &WebDriver) -> WebDriverResult<()> {
    wait_for("the exam list", || async {
        let shown = driver
            .execute(
                "return !document.getElementById('exams-view').hidden;",
                vec![],
            )
            .await?;
        Ok(shown.json().as_bool().filter(|shown| *shown).map(|_| ()))
    })
    .await
}

async fn start_exam(driver: &WebDriver, exam: &str) -> WebDriverResult<Value> {
    exam_list(driver).await?;
    driver
        .find(By::Css(format!("button.exam[data-exam='{exam}']")))
        .await?
        .click()
        .await?;
    wait_quiz(driver, "the first question", 0, |_| true).await
}

#[tokio::test]
async fn reloading_mid_exam_keeps_the_saved_answers_and_flags() -> WebDriverResult<()> {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let (driver, _process, _profile) = launch().await?;
    guarded(
        vec![driver.clone()],
        &server,
        "attempt-reload-failure",
        reload_mid_exam(&driver, &server),
    )
    .await
}

async fn reload_mid_exam(driver: &WebDriver, server: &Server) -> WebDriverResult<()> {
    const EMAIL: &str = "ann@example.com";
    let token = server.token(EMAIL, "student");
    sign_in(driver, server, EMAIL).await?;

    // The exam list says each exam's policy in plain words and offers no start outside
    // the window.
    exam_list(driver).await?;
    let policy = driver.find(By::Css("[data-testid='policy-timed']")).await?;
    let text = policy.text().await?;
    assert!(text.contains("Time limit: 6 seconds"), "{text}");
    let text = text_of_css(driver, "[data-testid='policy-quiz']").await?;
    assert!(text.contains("No time limit"), "{text}");
    assert!(text.contains("answers shown after you submit"), "{text}");
    let text = text_of_css(driver, "[data-testid='policy-hidden']").await?;
    assert!(text.contains("answers are not shown"), "{text}");
    let text = text_of_css(driver, "[data-testid='window-future']").await?;
    assert!(text.starts_with("Opens at "), "{text}");
    let text = text_of_css(driver, "[data-testid='window-past']").await?;
    assert!(text.starts_with("Closed"), "{text}");
    for exam in ["future", "past"] {
        for css in [
            format!("button.exam[data-exam='{exam}']"),
            format!("button.adaptive[data-adaptive-exam='{exam}']"),
        ] {
            let button = driver.find(By::Css(css.as_str())).await?;
            assert!(!button.is_enabled().await?, "{css} can be clicked");
        }
    }
    assert!(
        driver
            .find(By::Css("button.exam[data-exam='quiz']"))
            .await?
            .is_enabled()
            .await?
    );
    // A server on loopback: no development sign-in warning.
    assert!(
        !driver
            .find(By::Id("dev-banner"))
            .await?
            .is_displayed()
            .await?
    );
    driver
        .screenshot(&screenshots().join("attempt-exam-list.png"))
        .await?;

    let first = start_exam(driver, "quiz").await?;
    let attempt = first["attempt"].as_str().unwrap().to_string();
    assert_eq!(first["title"], format!("Question 1/{QUESTIONS}"));
    assert_eq!(first["status"], "Not answered yet");
    // Untimed: no clock.
    assert!(
        !driver
            .find(By::Id("attempt-clock"))
            .await?
            .is_displayed()
            .await?
    );

    // Question 1 right, question 2 wrong and flagged, 3 skipped, 4 flagged only.
    choose(driver, &right(0)).await?;
    wait_saved(driver, 0).await?;
    click(driver, "next").await?;
    wait_quiz(driver, "question 2", 1, |_| true).await?;
    choose(driver, &wrong(1)).await?;
    click(driver, "flag").await?;
    let q2 = wait_quiz(driver, "question 2 saved and flagged", 1, |q| {
        q["save"] == "saved" && q["status"] == "✓ Saved · flagged for review"
    })
    .await?;
    assert_eq!(q2["chosen"], wrong(1));
    driver
        .screenshot(&screenshots().join("attempt-question-saved.png"))
        .await?;
    click(driver, "next").await?;
    wait_quiz(driver, "question 3", 2, |_| true).await?;
    click(driver, "next").await?;
    wait_quiz(driver, "question 4", 3, |_| true).await?;
    click(driver, "flag").await?;
    wait_quiz(driver, "question 4's flag saved", 3, |q| {
        q["status"] == "Not answered yet · flagged for review"
    })
    .await?;

    // The server has exactly that.
    let (status, saved) = server
        .get(&format!("/api/attempts/{attempt}"), Some(&token))
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["answers"], json!([right(0), wrong(1), null, null]));
    assert_eq!(saved["flags"], json!([false, true, false, true]));

    // Reload: the same attempt, on the same question, with the same answers and flags.
    driver.refresh().await?;
    let q4 = wait_quiz(driver, "the attempt after the reload", 3, |_| true).await?;
    assert_eq!(q4["attempt"], attempt.as_str());
    assert_eq!(q4["chosen"], Value::Null);
    assert_eq!(q4["flagged"], true);
    assert_eq!(
        q4["nav"],
        json!(["saved", "saved+flag", "unanswered", "unanswered+flag"])
    );
    let q1 = go_to(driver, 0).await?;
    assert_eq!(
        (&q1["chosen"], &q1["save"]),
        (&json!(right(0)), &json!("saved"))
    );
    assert_eq!(q1["flagged"], false);
    let q2 = go_to(driver, 1).await?;
    assert_eq!(q2["chosen"], wrong(1));
    assert_eq!(q2["flagged"], true);
    assert_eq!(q2["status"], "✓ Saved · flagged for review");

    // A save that fails is said so (not "saved"), keeps the choice, and is retried.
    driver
        .execute(
            "window.realFetch = window.fetch;
             window.fetch = (url, options) => options && options.method === 'PUT'
               ? Promise.reject(new TypeError('offline'))
               : window.realFetch(url, options);",
            vec![],
        )
        .await?;
    go_to(driver, 2).await?;
    choose(driver, &right(2)).await?;
    let failed = wait_quiz(driver, "question 3's save to fail", 2, |q| {
        q["save"] == "error"
    })
    .await?;
    assert_eq!(failed["chosen"], right(2));
    assert_eq!(failed["retry"], true);
    let status = failed["status"].as_str().unwrap();
    assert!(
        status.starts_with("Not saved: Could not reach the server"),
        "{status}"
    );
    assert_eq!(
        quiz(driver).await?.unwrap()["nav"][2],
        "error",
        "the question button shows it too"
    );
    driver
        .screenshot(&screenshots().join("attempt-save-failed.png"))
        .await?;
    let (_, saved) = server
        .get(&format!("/api/attempts/{attempt}"), Some(&token))
        .await;
    assert_eq!(saved["answers"][2], Value::Null);
    driver
        .execute("window.fetch = window.realFetch;", vec![])
        .await?;
    // Retry by hand (unless the page's own retry got there first).
    let retry = driver.find(By::Id("retry-save")).await?;
    if retry.is_displayed().await? {
        let _ = retry.click().await;
    }
    wait_saved(driver, 2).await?;
    let (_, saved) = server
        .get(&format!("/api/attempts/{attempt}"), Some(&token))
        .await;
    assert_eq!(saved["answers"][2], right(2));

    // The summary lists what is unanswered and what is flagged, and leads to them.
    click(driver, "to-summary").await?;
    let counts = driver
        .query(By::Id("summary-counts"))
        .and_displayed()
        .first()
        .await?;
    assert_eq!(
        counts.text().await?,
        format!("You answered 3 of {QUESTIONS} questions; 2 flagged for review.")
    );
    assert_eq!(listed(driver, "unanswered-list").await?, vec![3]);
    assert_eq!(listed(driver, "flagged-list").await?, vec![1, 3]);
    let item = text_of_css(driver, "#unanswered-list li button").await?;
    assert_eq!(item, "Question 4: quiz question 4: which tree?");
    driver
        .screenshot(&screenshots().join("attempt-summary.png"))
        .await?;
    driver
        .find(By::Css("#unanswered-list li button"))
        .await?
        .click()
        .await?;
    wait_quiz(driver, "question 4 from the summary", 3, |_| true).await?;
    choose(driver, &right(3)).await?;
    wait_saved(driver, 3).await?;
    click(driver, "to-summary").await?;
    driver
        .query(By::Id("unanswered-none"))
        .and_displayed()
        .first()
        .await?;
    assert_eq!(
        listed(driver, "unanswered-list").await?,
        Vec::<usize>::new()
    );
    assert_eq!(listed(driver, "flagged-list").await?, vec![1, 3]);
    click(driver, "submit").await?;

    // The result, with the marks (this exam's review shows them at once).
    let sentence = result_sentence(driver, Duration::from_secs(20)).await?;
    assert!(
        sentence.starts_with(&format!("You scored 3/{QUESTIONS}. That's 75%.")),
        "{sentence}"
    );
    assert_eq!(
        driver
            .find_all(By::Css("#marks li.mark.incorrect"))
            .await?
            .len(),
        1
    );
    let marks = text_of(driver, "marks").await?;
    assert!(
        marks.contains(&format!(
            "Correct answer: {} · Your answer: {}",
            right(1),
            wrong(1)
        )),
        "{marks}"
    );
    assert!(
        !driver
            .find(By::Id("review-note"))
            .await?
            .is_displayed()
            .await?
    );
    driver
        .screenshot(&screenshots().join("attempt-result.png"))
        .await?;
    let (_, saved) = server
        .get(&format!("/api/attempts/{attempt}"), Some(&token))
        .await;
    assert_eq!(saved["status"], "submitted");
    assert_eq!(saved["submitted_by"], "student");

    // A reload on the result shows it again; Close goes back to the list and its history.
    driver.refresh().await?;
    let again = result_sentence(driver, Duration::from_secs(20)).await?;
    assert_eq!(again, sentence);
    click(driver, "close").await?;
    exam_list(driver).await?;
    let row = driver.find(By::Css("#history tbody tr")).await?;
    assert!(row.text().await?.contains("quiz"));
    assert_eq!(
        driver
            .find(By::Css("button.exam[data-exam='quiz']"))
            .await?
            .text()
            .await?,
        "Take fixed form"
    );
    Ok(())
}

async fn text_of_css(driver: &WebDriver, css: &str) -> WebDriverResult<String> {
    driver.find(By::Css(css)).await?.text().await
}

#[tokio::test]
async fn a_second_browser_resumes_the_same_attempt() -> WebDriverResult<()> {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let (laptop, _process, _profile) = launch().await?;
    let (phone, _process2, _profile2) = launch().await?;
    guarded(
        vec![laptop.clone(), phone.clone()],
        &server,
        "attempt-second-browser-failure",
        second_browser(&laptop, &phone, &server),
    )
    .await
}

async fn second_browser(
    laptop: &WebDriver,
    phone: &WebDriver,
    server: &Server,
) -> WebDriverResult<()> {
    const EMAIL: &str = "bea@example.com";
    sign_in(laptop, server, EMAIL).await?;
    let first = start_exam(laptop, "quiz").await?;
    let attempt = first["attempt"].as_str().unwrap().to_string();
    choose(laptop, &right(0)).await?;
    wait_saved(laptop, 0).await?;
    click(laptop, "next").await?;
    wait_quiz(laptop, "question 2", 1, |_| true).await?;
    choose(laptop, &right(1)).await?;
    wait_saved(laptop, 1).await?;

    // Another browser (its own profile: nothing shared but the server), signed in as the
    // same student, opens the same attempt at its first unanswered question.
    sign_in(phone, server, EMAIL).await?;
    let resumed = wait_quiz(phone, "the attempt in the second browser", 2, |_| true).await?;
    assert_eq!(resumed["attempt"], attempt.as_str());
    assert_eq!(
        resumed["nav"],
        json!(["saved", "saved", "unanswered", "unanswered"])
    );
    let q1 = go_to(phone, 0).await?;
    assert_eq!(
        (&q1["chosen"], &q1["save"]),
        (&json!(right(0)), &json!("saved"))
    );
    let q2 = go_to(phone, 1).await?;
    assert_eq!(q2["chosen"], right(1));
    go_to(phone, 2).await?;
    choose(phone, &right(2)).await?;
    click(phone, "flag").await?;
    wait_quiz(phone, "question 3 saved and flagged", 2, |q| {
        q["status"] == "✓ Saved · flagged for review"
    })
    .await?;
    phone
        .screenshot(&screenshots().join("attempt-second-browser.png"))
        .await?;

    // The first browser, reloaded, has the second one's answer too, where it was.
    laptop.refresh().await?;
    let back = wait_quiz(laptop, "the laptop after its reload", 1, |_| true).await?;
    assert_eq!(back["attempt"], attempt.as_str());
    assert_eq!(
        back["nav"],
        json!(["saved", "saved", "saved+flag", "unanswered"])
    );
    let q3 = go_to(laptop, 2).await?;
    assert_eq!(q3["chosen"], right(2));
    assert_eq!(q3["flagged"], true);

    // Submitted on the phone...
    click(phone, "to-summary").await?;
    assert_eq!(listed(phone, "unanswered-list").await?, vec![3]);
    click(phone, "submit").await?;
    let sentence = result_sentence(phone, Duration::from_secs(20)).await?;
    assert!(
        sentence.starts_with(&format!("You scored 3/{QUESTIONS}.")),
        "{sentence}"
    );

    // ...the laptop's next answer is refused (409 attempt_closed) and it shows the result
    // as submitted, without that answer.
    go_to(laptop, 3).await?;
    choose(laptop, &right(3)).await?;
    let seen = result_sentence(laptop, Duration::from_secs(20)).await?;
    assert_eq!(seen, sentence);
    let note = text_of(laptop, "result-note").await?;
    assert_eq!(
        note,
        "This attempt had already been submitted (from another browser or tab). \
         1 answer chosen here was not saved in time and does not count."
    );
    laptop
        .screenshot(&screenshots().join("attempt-submitted-elsewhere.png"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_timed_attempt_submits_itself_when_the_time_is_up() -> WebDriverResult<()> {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let (driver, _process, _profile) = launch().await?;
    guarded(
        vec![driver.clone()],
        &server,
        "attempt-timed-failure",
        timed_attempt(&driver, &server),
    )
    .await
}

/// "m:ss" in seconds.
fn clock_seconds(text: &str) -> u64 {
    let (m, s) = text
        .split_once(':')
        .unwrap_or_else(|| panic!("the clock reads {text:?}"));
    m.parse::<u64>().unwrap() * 60 + s.parse::<u64>().unwrap()
}

async fn timed_attempt(driver: &WebDriver, server: &Server) -> WebDriverResult<()> {
    const EMAIL: &str = "tim@example.com";
    sign_in(driver, server, EMAIL).await?;
    exam_list(driver).await?;
    let button = driver
        .find(By::Css("button.exam[data-exam='timed']"))
        .await?;
    let started = Instant::now();
    button.click().await?;
    wait_quiz(driver, "the timed exam's first question", 0, |_| true).await?;

    // The clock: visible, counting down from the time limit, a timer for screen readers
    // with the time left announced politely (not every second).
    let clock = driver.find(By::Id("attempt-clock")).await?;
    assert!(clock.is_displayed().await?);
    let timer = driver.find(By::Id("timer")).await?;
    assert_eq!(timer.attr("role").await?.as_deref(), Some("timer"));
    let first = clock_seconds(&timer.text().await?);
    assert!((1..=6).contains(&first), "the clock starts at {first} s");
    let announce = driver.find(By::Id("timer-announce")).await?;
    assert_eq!(announce.attr("aria-live").await?.as_deref(), Some("polite"));
    let said = announce.text().await?;
    assert!(said.contains("timed"), "{said}");
    choose(driver, &right(0)).await?;
    wait_saved(driver, 0).await?;
    let later = wait_for("the clock to move", || async {
        let t = clock_seconds(&timer.text().await?);
        Ok((t < first).then_some(t))
    })
    .await?;
    assert!(later < first);
    driver
        .screenshot(&screenshots().join("timed-attempt.png"))
        .await?;

    // No click: the page submits when the time is up and shows the result.
    let sentence = result_sentence(driver, Duration::from_secs(30)).await?;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(4500),
        "submitted after {elapsed:?}, before the time limit of 6 s"
    );
    assert!(
        sentence.starts_with(&format!("You scored 1/{QUESTIONS}.")),
        "{sentence}"
    );
    let note = text_of(driver, "result-note").await?;
    assert!(note.contains("time ran out"), "{note}");
    assert!(
        !driver
            .find(By::Id("attempt-clock"))
            .await?
            .is_displayed()
            .await?
    );
    driver
        .screenshot(&screenshots().join("timed-result.png"))
        .await?;

    let token = server.token(EMAIL, "student");
    let (status, attempts) = server.get("/api/attempts?exam=timed", Some(&token)).await;
    assert_eq!(status, 200, "{attempts}");
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["status"], "submitted");
    assert_eq!(attempts[0]["answers"][0], right(0));
    let (status, _) = server
        .get(
            &format!(
                "/api/results/{}",
                attempts[0]["result_id"].as_str().unwrap()
            ),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);

    // A timed adaptive test counts down too, and ends by itself when the time is up.
    click(driver, "close").await?;
    exam_list(driver).await?;
    driver
        .find(By::Css("button.adaptive[data-adaptive-exam='timed']"))
        .await?
        .click()
        .await?;
    let clock = driver
        .query(By::Id("adaptive-clock"))
        .and_displayed()
        .first()
        .await?;
    let left = clock_seconds(&text_of(driver, "adaptive-timer").await?);
    assert!(
        (1..=6).contains(&left),
        "the adaptive clock starts at {left} s"
    );
    assert!(clock.text().await?.starts_with("Time left"));
    driver
        .screenshot(&screenshots().join("timed-adaptive.png"))
        .await?;
    let reason = wait_for_at_most("the adaptive result", Duration::from_secs(30), || async {
        let v = driver
            .execute(
                "return document.getElementById('adaptive-result-view').hidden
                   ? null : document.getElementById('adaptive-stop-reason').textContent;",
                vec![],
            )
            .await?;
        Ok(v.json().as_str().map(str::to_string))
    })
    .await?;
    assert_eq!(
        reason,
        "Your time ran out, so the test ended with the answers you had given."
    );
    driver
        .screenshot(&screenshots().join("timed-adaptive-result.png"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn review_never_leaves_no_key_anywhere_in_the_page() -> WebDriverResult<()> {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let (driver, _process, _profile) = launch().await?;
    guarded(
        vec![driver.clone()],
        &server,
        "attempt-review-never-failure",
        review_never(&driver, &server),
    )
    .await
}

/// The page as text (what is shown) and as source (every element, hidden or not).
async fn page_text(driver: &WebDriver) -> WebDriverResult<(String, String)> {
    let text = driver
        .execute("return document.body.innerText;", vec![])
        .await?
        .json()
        .as_str()
        .unwrap()
        .to_string();
    Ok((text, driver.source().await?))
}

async fn review_never(driver: &WebDriver, server: &Server) -> WebDriverResult<()> {
    sign_in(driver, server, "hal@example.com").await?;
    start_exam(driver, "hidden").await?;
    // While answering, the options (the keys among them) are in the page: the check below
    // does see them when they are there.
    let (_, source) = page_text(driver).await?;
    assert!(
        source.contains(&right(0)),
        "the options are not in the page source"
    );
    for i in 0..QUESTIONS {
        if i > 0 {
            click(driver, "next").await?;
            wait_quiz(driver, "the next question", i, |_| true).await?;
        }
        choose(driver, &wrong(i)).await?;
        wait_saved(driver, i).await?;
    }
    click(driver, "to-summary").await?;
    driver
        .query(By::Id("summary-counts"))
        .and_displayed()
        .first()
        .await?;
    click(driver, "submit").await?;
    let sentence = result_sentence(driver, Duration::from_secs(20)).await?;
    assert_eq!(
        sentence,
        format!("You scored 0/{QUESTIONS}. That's 0%. You failed.")
    );
    let note = driver.find(By::Id("review-note")).await?;
    assert!(note.is_displayed().await?);
    assert_eq!(
        note.text().await?,
        "This exam does not show answers: you see your score only."
    );
    assert!(driver.find_all(By::Css("#marks li")).await?.is_empty());
    let (text, source) = page_text(driver).await?;
    for i in 0..QUESTIONS {
        let key = right(i);
        assert!(!text.contains(&key), "{key:?} shown on the page:\n{text}");
        assert!(
            !source.contains(&key),
            "{key:?} in the page source:\n{source}"
        );
    }
    for words in ["Correct answer", "correct_answer"] {
        assert!(!text.contains(words), "{words:?} shown:\n{text}");
        assert!(
            !source.contains(words),
            "{words:?} in the source:\n{source}"
        );
    }
    driver
        .screenshot(&screenshots().join("review-never-result.png"))
        .await?;

    // `after_close` before the close: the score now, the answers after the close time.
    click(driver, "close").await?;
    start_exam(driver, "later").await?;
    choose(driver, &wrong(0)).await?;
    wait_saved(driver, 0).await?;
    click(driver, "to-summary").await?;
    driver
        .query(By::Id("summary-counts"))
        .and_displayed()
        .first()
        .await?;
    click(driver, "submit").await?;
    let sentence = result_sentence(driver, Duration::from_secs(20)).await?;
    assert!(
        sentence.starts_with(&format!("You scored 0/{QUESTIONS}.")),
        "{sentence}"
    );
    let note = text_of(driver, "review-note").await?;
    assert!(note.starts_with("Answers are shown after "), "{note}");
    assert!(note.contains("2099") || note.contains("2098"), "{note}");
    let (text, source) = page_text(driver).await?;
    assert!(!text.contains(&right(0)) && !source.contains(&right(0)));
    assert!(!source.contains("Correct answer"));
    driver
        .screenshot(&screenshots().join("review-after-close-result.png"))
        .await?;

    // A server with the development sign-in turned off: no email form, the token form
    // open, with a sentence saying how to sign in.
    let off_dir = tempfile::tempdir().unwrap();
    let config = off_dir.path().join("examflow-test.toml");
    std::fs::write(&config, "[auth]\ndev_login = false\n").unwrap();
    let mut options = ServerOptions::new(&off_dir.path().join("data"));
    options.banks = server.data_dir.join("../banks");
    options.config_file = Some(config);
    let off = Server::start(options);
    driver.goto(off.url("/")).await?;
    let note = driver
        .query(By::Id("login-token-note"))
        .and_displayed()
        .first()
        .await?;
    assert!(note.text().await?.contains("access tokens"));
    assert!(
        !driver
            .find(By::Id("login-form"))
            .await?
            .is_displayed()
            .await?
    );
    assert!(
        driver
            .find(By::Id("login-token"))
            .await?
            .is_displayed()
            .await?
    );
    assert!(
        !driver
            .find(By::Id("dev-banner"))
            .await?
            .is_displayed()
            .await?
    );
    driver
        .screenshot(&screenshots().join("sign-in-without-dev-login.png"))
        .await?;
    Ok(())
}
