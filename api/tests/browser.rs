//! The student page in headless Chromium: sign in, take an exam by clicking, see the
//! result sentence and marks, and find the stored document through the API; and the
//! adaptive mode: one question at a time, no going back, progress, resuming after a
//! reload, and the scale score with its explanation at the end.

mod common;

use std::collections::HashMap;

use common::browser::{guarded, launch, screenshots, wait_for};
use common::{Server, ServerOptions, answer_key, sample_banks};
use serde_json::{Value, json};
use thirtyfour::prelude::*;

#[tokio::test]
async fn student_takes_an_exam_in_the_browser() -> WebDriverResult<()> {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let (driver, _driver_process, _profile) = launch().await?;
    // A failed assertion panics: keep a screenshot and quit Chromium before unwinding.
    guarded(
        vec![driver.clone()],
        &server,
        "fixed-form-failure",
        take_exam(&driver, &server),
    )
    .await
}

async fn take_exam(driver: &WebDriver, server: &Server) -> WebDriverResult<()> {
    driver.goto(server.url("/")).await?;
    driver
        .query(By::Id("login-email"))
        .first()
        .await?
        .send_keys("browser@example.com")
        .await?;
    driver.find(By::Id("login-button")).await?.click().await?;

    let exam = driver
        .query(By::Css("button.exam[data-exam='world-geography']"))
        .first()
        .await?;
    exam.wait_until().displayed().await?;
    exam.click().await?;

    let key = answer_key(&sample_banks(), "world-geography");
    let n = key.len();
    // Questions may be skipped (the summary lists them before submitting): Next works
    // before answering, and the question says it has no answer yet.
    assert!(driver.find(By::Id("next")).await?.is_enabled().await?);
    assert_eq!(
        driver.find(By::Id("save-status")).await?.text().await?,
        "Not answered yet"
    );
    // Answer each question; the first one wrongly, then go Back and fix it.
    for (i, correct) in key.iter().enumerate() {
        let title = driver.find(By::Id("question-title")).await?;
        assert_eq!(title.text().await?, format!("Question {}/{n}", i + 1));
        if i == 2 {
            driver
                .screenshot(&screenshots().join("fixed-form-question.png"))
                .await?;
        }
        let labels = driver.find_all(By::Css("#options label")).await?;
        let mut clicked = false;
        for label in labels {
            let text = label.text().await?;
            let pick = if i == 0 {
                text != *correct
            } else {
                text == *correct
            };
            if pick {
                label.click().await?;
                clicked = true;
                break;
            }
        }
        assert!(clicked, "no option to click on question {i}");
        if i + 1 < n {
            driver.find(By::Id("next")).await?.click().await?;
        }
        if i == 1 {
            // Back to question 1 (still answered wrongly), fix it, and return.
            driver.find(By::Id("back")).await?.click().await?;
            driver.find(By::Id("back")).await?.click().await?;
            assert_eq!(
                driver.find(By::Id("question-title")).await?.text().await?,
                format!("Question 1/{n}")
            );
            for label in driver.find_all(By::Css("#options label")).await? {
                if label.text().await? == key[0] {
                    label.click().await?;
                }
            }
            driver.find(By::Id("next")).await?.click().await?;
            driver.find(By::Id("next")).await?.click().await?;
        }
    }
    // Submitting goes through the summary: nothing left unanswered or flagged.
    driver.find(By::Id("to-summary")).await?.click().await?;
    let counts = driver
        .query(By::Id("summary-counts"))
        .and_displayed()
        .first()
        .await?;
    assert_eq!(
        counts.text().await?,
        format!("You answered {n} of {n} questions.")
    );
    let submit = driver.find(By::Id("submit")).await?;
    assert!(submit.is_displayed().await?);
    submit.click().await?;

    let summary = driver
        .query(By::Id("result-summary"))
        .and_displayed()
        .first()
        .await?;
    assert_eq!(
        summary.text().await?,
        format!("You scored {n}/{n}. That's 100%. You passed.")
    );
    // Kept as a test artifact for people to look at.
    driver
        .screenshot(&screenshots().join("fixed-form-result.png"))
        .await?;
    let marks = driver.find_all(By::Css("#marks li.mark.correct")).await?;
    assert_eq!(marks.len(), n);

    // The stored document, through the API.
    let educator = server.token("ed@example.com", "educator");
    let (status, results) = server
        .get("/api/results?email=browser@example.com", Some(&educator))
        .await;
    assert_eq!(status, 200);
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["score"], n);
    assert_eq!(results[0]["exam"], "world-geography");

    // Close: back to the list, with the result in "your past results".
    driver.find(By::Id("close")).await?.click().await?;
    let row = driver.query(By::Css("#history tbody tr")).first().await?;
    assert!(row.text().await?.contains("world-geography"));
    Ok(())
}

/// The correct option of each question of a sample bank, by question text (an adaptive
/// test gives the questions in its own order).
fn key_by_question(exam: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(sample_banks().join(format!("{exam}.json"))).unwrap();
    let bank: Vec<Value> = serde_json::from_str(&text).unwrap();
    bank.iter()
        .map(|q| {
            (
                q["question"].as_str().unwrap().to_string(),
                q["correct_answer"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The question the adaptive view shows: (id, number), once it is displayed. Read in one
/// script so that the id and the number always belong to the same question (the page may
/// render the next one between two WebDriver calls).
async fn shown_question(driver: &WebDriver) -> WebDriverResult<Option<(String, usize)>> {
    let shown = driver
        .execute(
            "const v = document.getElementById('adaptive-view');
             return v.hidden || !v.dataset.questionId ? null : [v.dataset.questionId, v.dataset.number];",
            vec![],
        )
        .await?;
    Ok(shown.json().as_array().map(|pair| {
        (
            pair[0].as_str().unwrap().to_string(),
            pair[1].as_str().unwrap().parse().unwrap(),
        )
    }))
}

async fn session_storage(driver: &WebDriver, key: &str) -> WebDriverResult<Option<String>> {
    let v = driver
        .execute(
            "return window.sessionStorage.getItem(arguments[0]);",
            vec![json!(key)],
        )
        .await?;
    Ok(v.json().as_str().map(str::to_string))
}

/// What the page says about why a test ended.
fn stop_reason_words(reason: &str) -> &'static str {
    match reason {
        "se_reached" => "Your score was precise enough, so the test ended early.",
        "max_length" => "You reached the maximum number of questions.",
        "bank_exhausted" => "There were no more suitable questions left in this exam.",
        "classified" => "It was already clear whether you reached the passing level.",
        other => panic!("unexpected stop reason {other}"),
    }
}

#[tokio::test]
async fn student_takes_an_adaptive_test_in_the_browser() -> WebDriverResult<()> {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let (driver, _driver_process, _profile) = launch().await?;
    // A failed assertion panics: keep a screenshot and quit Chromium before unwinding.
    guarded(
        vec![driver.clone()],
        &server,
        "adaptive-failure",
        take_adaptive_test(&driver, &server),
    )
    .await
}

async fn take_adaptive_test(driver: &WebDriver, server: &Server) -> WebDriverResult<()> {
    const EXAM: &str = "intro-statistics";
    let key = key_by_question(EXAM);
    driver.goto(server.url("/")).await?;
    driver
        .query(By::Id("login-email"))
        .first()
        .await?
        .send_keys("adaptive@example.com")
        .await?;
    driver.find(By::Id("login-button")).await?.click().await?;

    // Each exam offers both modes.
    let start = driver
        .query(By::Css(format!(
            "button.adaptive[data-adaptive-exam='{EXAM}']"
        )))
        .first()
        .await?;
    start.wait_until().displayed().await?;
    assert_eq!(start.text().await?, "Take as adaptive test");
    assert!(
        driver
            .find(By::Css(format!("button.exam[data-exam='{EXAM}']")))
            .await?
            .is_displayed()
            .await?
    );
    start.click().await?;

    let (mut question_id, first) =
        wait_for("the first adaptive question", || shown_question(driver)).await?;
    assert_eq!(first, 1);
    assert_eq!(
        driver
            .find(By::Id("adaptive-exam-name"))
            .await?
            .text()
            .await?,
        EXAM
    );
    let session = session_storage(driver, "examflow.adaptive-session")
        .await?
        .expect("the session id is kept in sessionStorage");
    let token = driver
        .execute("return localStorage.getItem('examflow.token');", vec![])
        .await?
        .json()
        .as_str()
        .unwrap()
        .to_string();
    let progress_text = driver
        .find(By::Id("adaptive-progress"))
        .await?
        .text()
        .await?;
    let max_items: usize = progress_text
        .strip_prefix("Question 1 of at most ")
        .unwrap_or_else(|| panic!("progress reads {progress_text:?}"))
        .parse()
        .unwrap();
    assert!(
        (1..=key.len()).contains(&max_items),
        "{max_items} is not a possible test length for a bank of {}",
        key.len()
    );
    // The page says the test may end early and that answers are final.
    let note = driver.find(By::Id("adaptive-note")).await?.text().await?;
    assert!(note.contains("may end before the maximum"), "{note}");
    assert!(note.contains("no going back"), "{note}");

    let mut answered: Vec<String> = Vec::new();
    let mut number = 1;
    let mut reloaded = false;
    loop {
        let view = driver.find(By::Id("adaptive-view")).await?;
        // Progress: "Question k of at most N", the bar at (k - 1) / N.
        assert_eq!(
            driver
                .find(By::Id("adaptive-progress"))
                .await?
                .text()
                .await?,
            format!("Question {number} of at most {max_items}")
        );
        let track = driver.find(By::Id("adaptive-progress-track")).await?;
        assert_eq!(track.attr("role").await?.as_deref(), Some("progressbar"));
        assert_eq!(
            track.attr("aria-valuenow").await?,
            Some((number - 1).to_string())
        );
        assert_eq!(
            track.attr("aria-valuemax").await?,
            Some(max_items.to_string())
        );
        let width = driver
            .execute(
                "return document.getElementById('adaptive-progress-bar').style.width;",
                vec![],
            )
            .await?;
        let width: f64 = width
            .json()
            .as_str()
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap();
        let expected = 100.0 * (number - 1) as f64 / max_items as f64;
        assert!(
            (width - expected).abs() < 0.01,
            "bar at {width}%, expected {expected}%"
        );
        // No going back: the only control is the submit button, and the fixed form's Back
        // is nowhere to be seen.
        let buttons = view.find_all(By::Tag("button")).await?;
        assert_eq!(buttons.len(), 1, "the adaptive view has extra buttons");
        assert_eq!(buttons[0].id().await?.as_deref(), Some("adaptive-submit"));
        assert!(!driver.find(By::Id("back")).await?.is_displayed().await?);
        let submit = driver.find(By::Id("adaptive-submit")).await?;
        assert!(!submit.is_enabled().await?, "submit before choosing");

        // A previous question cannot be answered again (what a back button would need).
        if let Some(previous) = answered.last() {
            let (status, body) = server
                .post(
                    &format!("/api/adaptive/sessions/{session}/answers"),
                    Some(&token),
                    &json!({"item": previous, "answer": "anything"}),
                )
                .await;
            assert_eq!(status, 409, "{body}");
            assert_eq!(body["error"]["code"], "already_answered");
        }

        let text = driver
            .find(By::Id("adaptive-question"))
            .await?
            .text()
            .await?;
        // The options are a labelled radio group.
        let legend = driver.find(By::Css("#adaptive-fieldset > legend")).await?;
        assert_eq!(legend.text().await?, text);

        if number == 3 && !reloaded {
            // Reload mid-test: the page resumes the same question of the same session.
            driver
                .screenshot(&screenshots().join("adaptive-question.png"))
                .await?;
            driver.refresh().await?;
            let (id, n) = wait_for("the resumed question", || shown_question(driver)).await?;
            assert_eq!((id.as_str(), n), (question_id.as_str(), number));
            assert_eq!(
                driver
                    .find(By::Id("adaptive-question"))
                    .await?
                    .text()
                    .await?,
                text
            );
            assert_eq!(
                session_storage(driver, "examflow.adaptive-session").await?,
                Some(session.clone())
            );
            reloaded = true;
            continue;
        }

        let correct = key
            .get(&text)
            .unwrap_or_else(|| panic!("question {text:?} is not in the {EXAM} bank"));
        let mut chosen = false;
        for label in driver.find_all(By::Css("#adaptive-options label")).await? {
            if label.text().await? == *correct {
                if number == 2 {
                    // By keyboard: space selects the radio, Enter on the button submits.
                    let radio = label.find(By::Tag("input")).await?;
                    radio.send_keys(" ").await?;
                    assert!(radio.is_selected().await?);
                } else {
                    label.click().await?;
                }
                chosen = true;
                break;
            }
        }
        assert!(chosen, "no option {correct:?} on question {number}");
        let submit = driver.find(By::Id("adaptive-submit")).await?;
        assert!(submit.is_enabled().await?);
        if number == 2 {
            submit.send_keys(Key::Enter).await?;
        } else {
            submit.click().await?;
        }
        answered.push(question_id.clone());

        // Either the next question or the result.
        let next = wait_for("the next question or the result", || async {
            if driver
                .find(By::Id("adaptive-result-view"))
                .await?
                .is_displayed()
                .await?
            {
                return Ok(Some(None));
            }
            Ok(shown_question(driver)
                .await?
                .filter(|(_, n)| *n == number + 1)
                .map(Some))
        })
        .await?;
        match next {
            Some((id, n)) => {
                if answered.contains(&id) {
                    let staff = server.token("ed@example.com", "educator");
                    let (_, trace) = server
                        .get(&format!("/api/adaptive/sessions/{session}"), Some(&staff))
                        .await;
                    panic!("item {id} was given twice; answered {answered:?}; session {trace}");
                }
                question_id = id;
                number = n;
                assert!(number <= max_items, "more questions than the maximum");
            }
            None => break,
        }
    }
    assert!(reloaded, "the test ended before the reload check");

    // The result: scale score, explanation, items used and why it ended, as the API has it.
    let scale = driver.find(By::Id("scale-score")).await?;
    assert!(scale.is_displayed().await?);
    let (status, stored) = server
        .get(&format!("/api/adaptive/sessions/{session}"), Some(&token))
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["status"], "finished");
    let result = &stored["result"];
    assert_eq!(result["items_used"], answered.len());
    assert_eq!(result["correct"], answered.len());
    assert_eq!(stored["progress"]["max_items"], max_items);
    let score = result["scale_score"].as_f64().unwrap().round() as i64;
    assert_eq!(scale.text().await?, score.to_string());
    let explanation = result["explanation"].as_str().unwrap();
    assert!(!explanation.is_empty());
    assert_eq!(
        driver
            .find(By::Id("adaptive-explanation"))
            .await?
            .text()
            .await?,
        explanation
    );
    assert_eq!(
        driver
            .find(By::Id("adaptive-items-used"))
            .await?
            .text()
            .await?,
        format!("{n} questions, {n} answered correctly", n = answered.len())
    );
    assert_eq!(
        driver
            .find(By::Id("adaptive-stop-reason"))
            .await?
            .text()
            .await?,
        stop_reason_words(result["stop_reason"].as_str().unwrap())
    );
    // No cut score for the sample exams: no pass/fail line.
    assert!(result.get("passed").is_none(), "{result}");
    assert!(
        !driver
            .find(By::Id("adaptive-verdict"))
            .await?
            .is_displayed()
            .await?
    );
    assert_eq!(
        driver
            .find(By::Id("adaptive-result-view"))
            .await?
            .attr("data-result-id")
            .await?
            .as_deref(),
        result["result_id"].as_str()
    );
    // Kept as a test artifact for people to look at.
    driver
        .screenshot(&screenshots().join("adaptive-result.png"))
        .await?;

    // A reload on the result page shows the result again.
    driver.refresh().await?;
    let scale = driver
        .query(By::Id("scale-score"))
        .and_displayed()
        .first()
        .await?;
    assert_eq!(scale.text().await?, score.to_string());

    // Back to the list: the session is forgotten and the result is in the history.
    driver.find(By::Id("adaptive-close")).await?.click().await?;
    let row = driver.query(By::Css("#history tbody tr")).first().await?;
    row.wait_until().displayed().await?;
    let row = row.text().await?;
    assert!(row.contains(EXAM), "{row}");
    assert!(row.contains(&format!("Scale score {score}")), "{row}");
    driver
        .screenshot(&screenshots().join("exams-with-adaptive-result.png"))
        .await?;
    assert_eq!(
        session_storage(driver, "examflow.adaptive-session").await?,
        None
    );
    Ok(())
}
