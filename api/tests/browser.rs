//! The student page in headless Chromium: sign in, take an exam by clicking, see the
//! result sentence and marks, and find the stored document through the API.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, ServerOptions, answer_key, sample_banks};
use thirtyfour::prelude::*;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_chromedriver() -> Option<(Driver, u16)> {
    let Ok(path) = which("chromedriver") else {
        panic!(
            "chromedriver is not installed: run scripts/test-all (it installs chromium and chromium-driver)"
        );
    };
    let port = common::kafka::free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((Driver(child), port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[tokio::test]
async fn student_takes_an_exam_in_the_browser() -> WebDriverResult<()> {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions::new(dir.path()));
    let (_driver_process, port) = start_chromedriver().expect("chromedriver did not start");
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
        "--window-size=1200,900",
    ] {
        caps.add_arg(arg)?;
    }
    caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))?;
    let driver = WebDriver::new(format!("http://127.0.0.1:{port}"), caps).await?;
    let result = take_exam(&driver, &server).await;
    if result.is_err() {
        let _ = driver.screenshot(&dir.path().join("failure.png")).await;
    }
    driver.quit().await?;
    result
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
    let next = driver.find(By::Id("next")).await?;
    // Next is disabled until the question is answered.
    assert!(!next.is_enabled().await?);
    // Answer each question; the first one wrongly, then go Back and fix it.
    for (i, correct) in key.iter().enumerate() {
        let title = driver.find(By::Id("question-title")).await?;
        assert_eq!(title.text().await?, format!("Question {}/{n}", i + 1));
        if i == 2 {
            let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
            std::fs::create_dir_all(&shots).ok();
            driver
                .screenshot(&shots.join("fixed-form-question.png"))
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
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).ok();
    driver
        .screenshot(&shots.join("fixed-form-result.png"))
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
