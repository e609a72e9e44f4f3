//! The educators' page in headless Chromium: an educator signs in with a token, sees every
//! exam in the Reports section with its result count, opens a report (shown in a sandboxed
//! frame: summary cards, SVG charts, one item row per bank question) and downloads its CSV
//! tables and JSON; a student signed in on the same page gets no Reports section.

mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use common::browser::{Driver, screenshots, start_chromedriver, wait_for_at_most};
use common::{Server, ServerOptions, answer_key, sample_banks, wrong_answers};
use futures::FutureExt;
use serde_json::{Value, json};
use thirtyfour::prelude::*;

/// The exam the results are for; the other sample banks have none.
const EXAM: &str = "world-geography";

/// Headless Chromium driven through a chromedriver of its own, saving downloads in
/// `downloads`; both end on drop/quit.
async fn launch(downloads: &Path) -> WebDriverResult<(WebDriver, Driver, tempfile::TempDir)> {
    let (driver_process, port) = start_chromedriver().expect("chromedriver did not start");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary("/usr/bin/chromium")?;
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
    ] {
        caps.add_arg(arg)?;
    }
    caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))?;
    caps.add_experimental_option(
        "prefs",
        json!({
            "download.default_directory": downloads.display().to_string(),
            "download.prompt_for_download": false,
            "download.directory_upgrade": true,
            "safebrowsing.enabled": false,
        }),
    )?;
    let driver = WebDriver::new(format!("http://127.0.0.1:{port}"), caps).await?;
    Ok((driver, driver_process, profile))
}

/// Polls `f` until it gives Some (30 s at most: the machine may be busy with builds, and a
/// report is computed from the lake).
async fn wait_for<T, F, Fut>(what: &str, f: F) -> WebDriverResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = WebDriverResult<Option<T>>>,
{
    wait_for_at_most(what, Duration::from_secs(30), f).await
}

/// What was submitted: the number of results and students, the mean percentage and the
/// pass rate the reports should show.
struct Expected {
    /// Every result (the list of exams counts them all).
    results: usize,
    /// The first result of each student: what the report counts by default.
    first_results: usize,
    takers: usize,
    mean_percentage: f64,
    pass_rate: f64,
    questions: usize,
}

/// Submits results for `EXAM` as three students (one of them twice), with different
/// numbers of correct answers.
async fn submit_results(server: &Server) -> Expected {
    let key = answer_key(&sample_banks(), EXAM);
    let wrong = wrong_answers(&sample_banks(), EXAM);
    let n = key.len();
    let answers = |correct: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                if i < correct {
                    key[i].clone()
                } else {
                    wrong[i].clone()
                }
            })
            .collect()
    };
    let plan = [
        ("amy@example.com", n),
        ("ben@example.com", 0),
        ("cat@example.com", n / 2),
        ("amy@example.com", n - 1),
    ];
    let mut percentages = Vec::new();
    let mut passed = 0;
    for (email, correct) in plan {
        let token = server.token(email, "student");
        let (status, doc) = server
            .post(
                &format!("/api/exams/{EXAM}/submissions"),
                Some(&token),
                &json!({"answers": answers(correct)}),
            )
            .await;
        assert_eq!(status, 201, "submitting as {email}: {doc}");
        assert_eq!(doc["score"], correct, "{doc}");
        percentages.push(doc["percentage"].as_f64().unwrap());
        if doc["result"] == "passed" {
            passed += 1;
        }
    }
    // Both outcomes are there, so the pass rate is neither 0 nor 1.
    assert!(0 < passed && passed < plan.len(), "{passed} passed");
    Expected {
        results: plan.len(),
        first_results: 3,
        takers: 3,
        mean_percentage: percentages.iter().sum::<f64>() / percentages.len() as f64,
        pass_rate: passed as f64 / plan.len() as f64,
        questions: n,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn educator_opens_a_score_report_and_students_see_no_reports() -> WebDriverResult<()> {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(&dir.path().join("data")));
    let expected = submit_results(&server).await;
    let educator = server.token("teacher@example.com", "educator");
    // Results reach the lake's `scores` through the store's change feed within seconds.
    let listed = common::eventually(Duration::from_secs(30), || async {
        let (status, body) = server.get("/api/reports/exams", Some(&educator)).await;
        assert_eq!(status, 200, "{body}");
        let row = body["exams"]
            .as_array()?
            .iter()
            .find(|e| e["exam"] == EXAM)?
            .clone();
        (row["results"] == expected.results).then_some(row)
    })
    .await;
    assert!(
        listed.is_some(),
        "the results never reached the reports\n{}",
        server.log()
    );

    let downloads = tempfile::tempdir().unwrap();
    let (driver, _driver_process, _profile) = launch(downloads.path()).await?;
    // A failed assertion panics: keep a screenshot and quit Chromium before unwinding.
    let outcome = AssertUnwindSafe(async {
        educator_flow(&driver, &server, &educator, &expected, downloads.path()).await?;
        student_flow(&driver).await
    })
    .catch_unwind()
    .await;
    if !matches!(outcome, Ok(Ok(()))) {
        let _ = driver.enter_default_frame().await;
        let _ = driver
            .screenshot(&screenshots().join("report-page-failure.png"))
            .await;
        eprintln!("server log:\n{}", server.log());
    }
    driver.quit().await?;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The number in a cell such as "56.3%" or "75%".
fn percent_cell(text: &str) -> f64 {
    text.strip_suffix('%')
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{text:?} is not a percentage"))
}

async fn row_cell(row: &WebElement, class: &str) -> WebDriverResult<String> {
    row.find(By::ClassName(class)).await?.text().await
}

async fn educator_flow(
    driver: &WebDriver,
    server: &Server,
    token: &str,
    expected: &Expected,
    downloads: &Path,
) -> WebDriverResult<()> {
    driver.goto(server.url("/")).await?;
    // The development sign-in makes students; staff paste a token.
    driver
        .query(By::Css("#token-login summary"))
        .first()
        .await?
        .click()
        .await?;
    let field = driver.query(By::Id("login-token")).first().await?;
    field.wait_until().displayed().await?;
    field.send_keys(token).await?;
    driver.find(By::Id("token-button")).await?.click().await?;

    let row = driver
        .query(By::Css(format!(".report-row[data-exam='{EXAM}']")))
        .first()
        .await?;
    row.wait_until().displayed().await?;
    assert!(driver.find(By::Id("reports")).await?.is_displayed().await?);
    let who = driver.find(By::Id("who")).await?.text().await?;
    assert_eq!(who, "Signed in as teacher@example.com (educator)");

    // Every sample bank is listed; only EXAM has results.
    let rows = driver.find_all(By::Css("#reports .report-row")).await?;
    let mut names = Vec::new();
    for r in &rows {
        names.push(r.attr("data-exam").await?.unwrap_or_default());
    }
    names.sort();
    assert_eq!(
        names,
        ["intro-statistics", "rust-basics", "world-geography"],
        "{names:?}"
    );
    for r in &rows {
        let name = r.attr("data-exam").await?.unwrap_or_default();
        if name != EXAM {
            assert_eq!(row_cell(r, "report-results").await?, "0", "{name}");
            assert_eq!(row_cell(r, "report-mean").await?, "—", "{name}");
        }
    }
    assert_eq!(
        row_cell(&row, "report-exam").await?,
        EXAM,
        "the exam's name heads its row"
    );
    assert_eq!(
        row_cell(&row, "report-results").await?,
        expected.results.to_string()
    );
    assert_eq!(
        row_cell(&row, "report-takers").await?,
        expected.takers.to_string()
    );
    let mean = percent_cell(&row_cell(&row, "report-mean").await?);
    assert!(
        (mean - expected.mean_percentage).abs() <= 0.051,
        "mean shown {mean}, expected {}",
        expected.mean_percentage
    );
    let pass_rate = percent_cell(&row_cell(&row, "report-pass-rate").await?);
    assert!(
        (pass_rate - 100.0 * expected.pass_rate).abs() <= 0.51,
        "pass rate shown {pass_rate}%, expected {}",
        expected.pass_rate
    );
    // Staff can still take exams on the same page.
    assert!(
        driver
            .find(By::Css(format!("button.exam[data-exam='{EXAM}']")))
            .await?
            .is_displayed()
            .await?
    );

    // Open the report: the HTML page, fetched with the token, in a sandboxed frame.
    row.find(By::ClassName("open-report"))
        .await?
        .click()
        .await?;
    let state = wait_for("the report to load", || async {
        let state = driver
            .execute(
                "const v = document.getElementById('report-view');
                 return v.hidden ? null : (v.dataset.state === 'loading' ? null : v.dataset.state);",
                vec![],
            )
            .await?;
        Ok(state.json().as_str().map(str::to_string))
    })
    .await?;
    assert_eq!(
        state,
        "ready",
        "report status: {}",
        driver.find(By::Id("report-status")).await?.text().await?
    );
    assert!(!driver.find(By::Id("reports")).await?.is_displayed().await?);
    assert_eq!(
        driver.find(By::Id("report-exam")).await?.text().await?,
        EXAM
    );
    let frame = driver.find(By::Id("report-frame")).await?;
    assert!(frame.is_displayed().await?);
    let sandbox = frame
        .attr("sandbox")
        .await?
        .expect("the frame is sandboxed");
    assert!(!sandbox.contains("allow-scripts"), "sandbox={sandbox:?}");
    let height: f64 = frame
        .css_value("height")
        .await?
        .trim_end_matches("px")
        .parse()
        .unwrap();
    assert!(height >= 400.0, "the frame is {height}px high");

    frame.clone().enter_frame().await?;
    let heading = driver.find(By::Tag("h1")).await?.text().await?;
    assert_eq!(heading, format!("Score report: {EXAM}"));
    // The summary cards: value in <b>, label after it.
    let cards = driver
        .execute(
            "return Array.from(document.querySelectorAll('#summary .card')).map(
               (c) => [c.lastChild.textContent.trim(), c.querySelector('b').textContent.trim()]);",
            vec![],
        )
        .await?;
    let cards: Vec<(String, String)> = serde_json::from_value(cards.json().clone()).unwrap();
    let card = |label: &str| -> String {
        cards
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no {label:?} card in {cards:?}"))
            .1
            .clone()
    };
    // By default each student's first result counts (amy's second is left out).
    assert_eq!(
        card("results"),
        expected.first_results.to_string(),
        "{cards:?}"
    );
    assert_eq!(card("students"), expected.takers.to_string(), "{cards:?}");
    let charts = driver.find_all(By::Css("svg.chart")).await?;
    assert!(!charts.is_empty(), "no svg.chart in the report");
    assert!(charts[0].is_displayed().await?);
    // One row per bank question, each answered in every counted result.
    let items = driver.find_all(By::Css("table#items tbody tr")).await?;
    assert_eq!(items.len(), expected.questions);
    for item in &items {
        let responses = item.find(By::Css("td:nth-child(2)")).await?.text().await?;
        assert_eq!(responses, expected.first_results.to_string());
    }
    let students = driver.find_all(By::Css("table#students tbody tr")).await?;
    assert_eq!(students.len(), expected.first_results);
    // Moodle's statistics, one row per question.
    let moodle = driver
        .find_all(By::Css("table#moodle-questions tbody tr"))
        .await?;
    assert_eq!(moodle.len(), expected.questions);
    driver.enter_default_frame().await?;

    // Count every attempt instead: the options above the report, applied.
    driver
        .find(By::Css("#report-attempts option[value='all']"))
        .await?
        .click()
        .await?;
    driver.find(By::Id("report-apply")).await?.click().await?;
    let all_results = wait_for("the report of every attempt", || async {
        let shown = driver
            .execute(
                "const v = document.getElementById('report-view');
                 const f = document.getElementById('report-frame');
                 if (v.dataset.state !== 'ready' || !f.contentDocument) return null;
                 const card = Array.from(f.contentDocument.querySelectorAll('#summary .card'))
                   .find((c) => c.lastChild.textContent.trim() === 'results');
                 const options = f.contentDocument.getElementById('options');
                 return card && options && options.textContent.includes('every result')
                   ? card.querySelector('b').textContent.trim() : null;",
                vec![],
            )
            .await?;
        Ok(shown.json().as_str().map(str::to_string))
    })
    .await?;
    assert_eq!(all_results, expected.results.to_string());
    // Kept as a test artifact for people to look at.
    driver
        .screenshot(&screenshots().join("report-page.png"))
        .await?;

    // Downloads: fetched with the token, saved by the browser.
    driver.find(By::Id("report-csv")).await?.click().await?;
    let zip = downloaded(
        driver,
        "report-csv",
        downloads,
        &format!("{EXAM}-report.zip"),
    )
    .await?;
    assert!(zip.starts_with(b"PK\x03\x04"), "not a zip archive");
    assert!(
        zip.windows(4).any(|w| w == b"PK\x05\x06"),
        "the zip has no end of central directory"
    );
    for table in [
        "summary",
        "histogram",
        "items",
        "distractors",
        "trend",
        "students",
    ] {
        let name = format!("{table}.csv");
        assert!(
            zip.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} is not in the zip"
        );
    }
    driver.find(By::Id("report-json")).await?.click().await?;
    let json = downloaded(
        driver,
        "report-json",
        downloads,
        &format!("{EXAM}-report.json"),
    )
    .await?;
    let report: Value = serde_json::from_slice(&json).expect("the JSON download parses");
    assert_eq!(report["exam"], EXAM);
    assert_eq!(report["summary"]["results"], expected.results);
    assert_eq!(
        report["items"].as_array().unwrap().len(),
        expected.questions
    );

    // Back to the list. The list is fetched again and its rows replaced, so this waits in
    // the page (no element handles that the re-render could leave stale).
    driver.find(By::Id("report-back")).await?.click().await?;
    let script = format!(
        "const reports = document.getElementById('reports');
         const button = document.querySelector(\".report-row[data-exam='{EXAM}'] .open-report\");
         return document.getElementById('report-view').hidden && !reports.hidden
           && reports.dataset.state === 'ready' && button !== null && button.offsetParent !== null;"
    );
    wait_for("the list of reports to come back", || async {
        let shown = driver.execute(&script, vec![]).await?;
        Ok(shown.json().as_bool().filter(|shown| *shown))
    })
    .await?;
    Ok(())
}

/// Waits for the download button `id` to finish and for the browser to have saved `name`
/// in `dir`; returns the file's bytes.
async fn downloaded(
    driver: &WebDriver,
    id: &str,
    dir: &Path,
    name: &str,
) -> WebDriverResult<Vec<u8>> {
    let button = driver.find(By::Id(id)).await?;
    let state = wait_for(&format!("{id} to finish"), || async {
        let state = button.attr("data-state").await?;
        Ok(state.filter(|s| s != "loading"))
    })
    .await?;
    assert_eq!(
        state,
        "done",
        "{id}: {}",
        driver.find(By::Id("report-status")).await?.text().await?
    );
    assert_eq!(button.attr("data-file").await?.as_deref(), Some(name));
    let path = dir.join(name);
    wait_for(&format!("{} to be saved", path.display()), || async {
        // Chromium writes `<name>.crdownload` and renames it when done.
        Ok(std::fs::read(&path).ok().filter(|bytes| !bytes.is_empty()))
    })
    .await
}

async fn student_flow(driver: &WebDriver) -> WebDriverResult<()> {
    driver.find(By::Id("logout")).await?.click().await?;
    let email = driver.query(By::Id("login-email")).first().await?;
    email.wait_until().displayed().await?;
    // Signing out empties the reports.
    assert!(driver.find_all(By::Css(".report-row")).await?.is_empty());
    email.send_keys("student@example.com").await?;
    driver.find(By::Id("login-button")).await?.click().await?;
    // The exam list is rendered again for the student: wait in the page, holding no
    // element handle that the re-render could leave stale.
    let script = format!(
        "const b = document.querySelector(\"button.exam[data-exam='{EXAM}']\");
         return b !== null && b.offsetParent !== null
           && document.getElementById('who').textContent.startsWith('Taking exams as');"
    );
    wait_for("the student's exam list", || async {
        let shown = driver.execute(&script, vec![]).await?;
        Ok(shown.json().as_bool().filter(|shown| *shown))
    })
    .await?;
    assert_eq!(
        driver.find(By::Id("who")).await?.text().await?,
        "Taking exams as student@example.com"
    );
    // Give a late reports load a chance to show itself: it must not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !driver.find(By::Id("reports")).await?.is_displayed().await?,
        "a student sees the Reports section"
    );
    assert!(
        driver
            .find_all(By::Css(".report-row, .open-report"))
            .await?
            .is_empty(),
        "a student's page lists reports"
    );
    assert!(
        !driver.find(By::Id("error")).await?.is_displayed().await?,
        "{}",
        driver.find(By::Id("error")).await?.text().await?
    );
    Ok(())
}
