//! Headless Chromium for the console's browser tests, driven over the W3C WebDriver
//! protocol by Debian's `chromedriver` (both from `.ci/run`'s apt-get). A small client
//! on reqwest: sessions, navigation, elements, scripts, screenshots. Every wait has a
//! deadline; nothing sleeps and hopes.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One chromedriver process; each [`Browser`] is a session of its own (own profile,
/// own cookies).
pub struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    _profiles: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Browser {
    url: String,
    http: reqwest::Client,
    /// The phone's device metrics, restored after a full-page screenshot.
    metrics: Option<Value>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Driver {
    /// Starts chromedriver on a free loopback port. Panics with what to install when
    /// Chromium is missing: a browser test must never pass by skipping.
    pub async fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the console's browser tests need Debian's chromium and chromium-driver \
                 (`apt-get install -y chromium chromium-driver`; .ci/run installs them)"
            );
        }
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver { child, url, http, _profiles: tempfile::tempdir().unwrap() }
    }

    /// A new browser window of `width` × `height` CSS pixels.
    pub async fn browser(&self, width: u32, height: u32) -> Browser {
        self.session(width, height, None).await
    }

    /// A phone: a 390 × 844 viewport at pixel ratio 2 with a phone's viewport rules
    /// (Chromium's window cannot be narrower than 500 px; DevTools' device metrics
    /// override sets the viewport, and clicks still land where they aim).
    pub async fn phone(&self) -> Browser {
        let mut b = self.session(500, 900, None).await;
        let metrics = json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true });
        b.cdp("Emulation.setDeviceMetricsOverride", metrics.clone()).await;
        b.metrics = Some(metrics);
        b
    }

    async fn session(&self, width: u32, height: u32, mobile: Option<Value>) -> Browser {
        let profile = tempfile::tempdir_in(self._profiles.path()).unwrap().keep();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // The machine's closed network: no background connections, no updates.
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"), format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let mut caps = caps;
        if let Some(m) = mobile {
            caps["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["mobileEmulation"] = m;
        }
        let r: Value = self.http.post(format!("{}/session", self.url)).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("chromedriver refused a session: {r}")).to_string();
        Browser { url: format!("{}/session/{id}", self.url), http: self.http.clone(), metrics: None }
    }
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(err) = v["value"].get("error") {
            panic!("webdriver {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(reqwest::Method::POST, "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    /// Runs `body` as a function body in the page; `arguments[i]` are `args`.
    pub async fn js(&self, body: &str, args: Vec<Value>) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": body, "args": args }))).await
    }

    /// Runs async code: the last argument is the callback that returns its value.
    pub async fn js_async(&self, body: &str, args: Vec<Value>) -> Value {
        self.call(reqwest::Method::POST, "/execute/async", Some(json!({ "script": body, "args": args }))).await
    }

    /// Waits (deadline) until `expr` (a JavaScript expression) is truthy; returns its value.
    pub async fn wait_for(&self, expr: &str, limit: Duration, what: &str) -> Value {
        let deadline = Instant::now() + limit;
        let script = format!("try {{ return ({expr}) || null; }} catch (e) {{ return null; }}");
        loop {
            let v = self.js(&script, vec![]).await;
            if !v.is_null() && v != false {
                return v;
            }
            if Instant::now() >= deadline {
                let text = self.text("body").await.unwrap_or_default();
                panic!("timed out after {limit:?} waiting for {what} ({expr}); the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn find(&self, css: &str) -> Option<String> {
        let r: Value = self
            .http
            .post(format!("{}/element", self.url))
            .json(&json!({ "using": "css selector", "value": css }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["value"][ELEMENT].as_str().map(str::to_string)
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Option<String> {
        let id = self.find(css).await?;
        Some(self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None).await.as_str().unwrap_or("").to_string())
    }

    /// Clicks the element; a live page may replace it between finding and clicking
    /// (a stream update), so a stale element is found again, within a deadline.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let id = self.find(css).await.unwrap_or_else(|| panic!("no element {css}"));
            // Centred first, so the click lands on it and not on what scrolled over it.
            let el = json!({ ELEMENT: id });
            let scrolled: Value = self
                .raw(
                    reqwest::Method::POST,
                    "/execute/sync",
                    json!({ "script": "arguments[0].scrollIntoView({ block: 'center' })", "args": [el] }),
                )
                .await;
            let clicked = if scrolled["value"].get("error").is_some() {
                scrolled
            } else {
                self.raw(reqwest::Method::POST, &format!("/element/{id}/click"), json!({})).await
            };
            match clicked["value"].get("error").and_then(|e| e.as_str()) {
                None => return,
                Some("stale element reference") if Instant::now() < deadline => continue,
                Some(e) => panic!("webdriver click {css}: {e}: {}", clicked["value"]["message"]),
            }
        }
    }

    async fn raw(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.http.request(method, format!("{}{path}", self.url)).json(&body).send().await.unwrap().json().await.unwrap()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.unwrap_or_else(|| panic!("no element {css}"));
        self.call(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    pub async fn html(&self) -> String {
        self.js("return document.documentElement.outerHTML", vec![]).await.as_str().unwrap_or("").to_string()
    }

    /// A PNG of the window, written to `target/console-screenshots/NAME.png` with the
    /// page's HTML beside it (`NAME.html`, for the secrets scan).
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(reqwest::Method::POST, "/goog/cdp/execute", Some(json!({ "cmd": cmd, "params": params }))).await
    }

    /// The whole page, not only the window, up to `max_height` CSS pixels: the viewport
    /// is made as tall as the page for the capture, then put back (DevTools'
    /// `captureBeyondViewport` leaves it changed, and later clicks miss).
    pub async fn screenshot(&self, name: &str, max_height: u32) -> PathBuf {
        let size = self
            .js(
                "window.scrollTo(0, 0); return [window.innerWidth, Math.min(arguments[0], document.documentElement.scrollHeight)]",
                vec![json!(max_height)],
            )
            .await;
        let (scale, mobile) = match &self.metrics {
            Some(m) => (m["deviceScaleFactor"].clone(), true),
            None => (json!(1), false),
        };
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": size[0], "height": size[1], "deviceScaleFactor": scale, "mobile": mobile }),
        )
        .await;
        let shot = self.cdp("Page.captureScreenshot", json!({ "format": "png" })).await;
        match &self.metrics {
            Some(m) => self.cdp("Emulation.setDeviceMetricsOverride", m.clone()).await,
            None => self.cdp("Emulation.clearDeviceMetricsOverride", json!({})).await,
        };
        let png = base64_decode(shot["data"].as_str().expect("screenshot is base64"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        std::fs::write(dir.join(format!("{name}.html")), self.html().await).unwrap();
        path
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

/// Standard base64 (what WebDriver's screenshot answers).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let Some(v) = val(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
