//! Headless Chromium for the page's tests: a chromedriver and a browser profile of its own
//! per browser, screenshots kept for people to look at, polling, signing in, and a guard
//! that keeps a screenshot and the server log of a failed test and always quits Chromium.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::FutureExt;
use thirtyfour::error::WebDriverErrorInner;
use thirtyfour::prelude::*;

use super::Server;

/// A chromedriver process, killed on drop.
pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_chromedriver() -> Option<(Driver, u16)> {
    let Some(path) = which("chromedriver") else {
        panic!(
            "chromedriver is not installed: run scripts/test-all (it installs chromium and chromium-driver)"
        );
    };
    // A free port can be taken by a parallel test between our probe and chromedriver's
    // bind; then chromedriver exits and the port answers for someone else. Try again on
    // a new port until the listener is our own, still running, process.
    for _ in 0..5 {
        let port = super::kafka::free_port();
        let mut child = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
                if matches!(child.try_wait(), Ok(None)) {
                    return Some((Driver(child), port));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Where screenshots are kept for people to look at.
pub fn screenshots() -> PathBuf {
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).ok();
    shots
}

/// Headless Chromium driven through a chromedriver of its own, with a fresh profile (a
/// second call is a second browser: no storage shared); both end on drop/quit.
pub async fn launch() -> WebDriverResult<(WebDriver, Driver, tempfile::TempDir)> {
    // A busy machine sometimes drops the first session request (the driver was up but
    // the connection failed); a new driver and profile is the honest retry.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match launch_once().await {
            Err(error)
                if attempt < 3 && matches!(error.as_inner(), WebDriverErrorInner::HttpError(_)) =>
            {
                eprintln!("chromedriver session request failed ({error}); starting another");
            }
            other => return other,
        }
    }
}

async fn launch_once() -> WebDriverResult<(WebDriver, Driver, tempfile::TempDir)> {
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
        "--window-size=1200,900",
    ] {
        caps.add_arg(arg)?;
    }
    caps.add_arg(&format!("--user-data-dir={}", profile.path().display()))?;
    let driver = WebDriver::new(format!("http://127.0.0.1:{port}"), caps).await?;
    Ok((driver, driver_process, profile))
}

/// Polls `f` until it gives Some (20 s at most: the machine may be busy with builds).
pub async fn wait_for<T, F, Fut>(what: &str, f: F) -> WebDriverResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = WebDriverResult<Option<T>>>,
{
    wait_for_at_most(what, Duration::from_secs(20), f).await
}

/// Polls `f` until it gives Some, for `timeout` at most.
pub async fn wait_for_at_most<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut f: F,
) -> WebDriverResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = WebDriverResult<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Signs in through the page's development sign-in form as `email`.
pub async fn sign_in(driver: &WebDriver, server: &Server, email: &str) -> WebDriverResult<()> {
    driver.goto(server.url("/")).await?;
    let field = driver.query(By::Id("login-email")).first().await?;
    field.wait_until().displayed().await?;
    field.send_keys(email).await?;
    driver.find(By::Id("login-button")).await?.click().await?;
    Ok(())
}

/// Runs a test's `body`; when it fails (error or panic), keeps a screenshot of every
/// browser (`failure_shot`-1.png, -2.png, …) and prints the server log. Quits every browser
/// (clones of the test's drivers) either way, then passes the failure on.
pub async fn guarded<Fut>(
    drivers: Vec<WebDriver>,
    server: &Server,
    failure_shot: &str,
    body: Fut,
) -> WebDriverResult<()>
where
    Fut: Future<Output = WebDriverResult<()>>,
{
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    if !matches!(outcome, Ok(Ok(()))) {
        for (n, driver) in drivers.iter().enumerate() {
            let _ = driver
                .screenshot(&screenshots().join(format!("{failure_shot}-{}.png", n + 1)))
                .await;
        }
        eprintln!("server log:\n{}", server.log());
    }
    for driver in drivers {
        let _ = driver.quit().await;
    }
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
