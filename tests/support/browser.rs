//! A headless Chromium driven over WebDriver (`chromedriver`), for the tests that check the UI
//! as people see it.

use std::{process::Command, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{Proc, free_port, wait_for};

const LIMIT: Duration = Duration::from_secs(20);
const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium behind its own chromedriver, both ended when dropped.
pub struct Browser {
    pub client: Client,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMIUM).exists()
                && Command::new(CHROMEDRIVER).arg("--version").output().is_ok(),
            "the UI tests need Debian's chromium and chromium-driver \
             (apt-get install -y chromium chromium-driver; scripts/test installs them)"
        );
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Proc {
            child,
            name: "chromedriver".into(),
        };
        wait_for("chromedriver to listen", LIMIT, || async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .await;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with headless chromium");
        Self {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .expect("element text")
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .len()
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Waits until the element's text satisfies `check`, reloading the page between looks.
    pub async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let check = &check;
        wait_for(what, LIMIT, || async move {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if check(&text) {
                Some(text)
            } else {
                let _ = self.client.refresh().await;
                None
            }
        })
        .await
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
