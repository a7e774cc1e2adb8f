//! `stripe-sidecar demo`: the whole story a visitor walks through, with
//! plain HTTP against the demo started in-process (sign in, refused at the
//! gate, checkout on the stand-in's hosted page, webhooks, the gated page
//! open, the portal, cancel, refused again), asserting what a user would
//! see; and the binary's `demo` subcommand and its configuration as the
//! command line takes them; and the same story clicked through in a real
//! headless Chromium.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use stripe_sidecar::demo::{self, Demo, Settings};
use stripe_sidecar::{Signal, Stopped};

use crate::support::browser::{Chromium, Page};
use crate::support::sidecar::{binary, eventually};

/// A browser without JavaScript: carries the session cookie by hand,
/// follows no redirects (the test checks each `Location`), and runs the
/// pages' `fetch` calls itself.
struct Browser {
    client: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    fn new() -> Browser {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Browser {
            client,
            cookie: None,
        }
    }

    fn with_cookie(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        }
    }

    /// A page, as a browser asks for it.
    async fn get(&self, url: &str) -> Response {
        let request = self.client.get(url).header(ACCEPT, "text/html");
        self.with_cookie(request).send().await.unwrap()
    }

    /// A form's submission.
    async fn post_form(&self, url: &str, form: &str) -> Response {
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.to_string());
        self.with_cookie(request).send().await.unwrap()
    }

    /// A page script's `fetch` of a sidecar route.
    async fn fetch(&self, method: &str, url: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), url)
            .header(ACCEPT, "*/*");
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = self.with_cookie(request).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
        (status, json)
    }
}

fn location(response: &Response) -> String {
    let value = response.headers().get(LOCATION).expect("a Location header");
    value.to_str().unwrap().to_string()
}

async fn text(response: Response) -> String {
    response.text().await.unwrap()
}

/// The `value` of the first `name="NAME"` input on a page.
fn input_value(page: &str, name: &str) -> String {
    let start = page.find(&format!("name=\"{name}\" value=\"")).unwrap() + name.len() + 15;
    page[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn a_visitor_subscribes_opens_the_gated_page_and_cancels() {
    let demo = Demo::start(0).await.expect("the demo starts");
    let base = format!("http://{}", demo.addr());
    let stripe = format!("http://{}", demo.stripe_addr());
    assert_eq!(demo.url(), format!("{base}/"));
    let (stop, signals) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn(demo.run(signals));
    let mut browser = Browser::new();

    // Home, signed out: the sign-in button; the gate refuses a stranger.
    let home = browser.get(&format!("{base}/")).await;
    assert_eq!(home.status(), StatusCode::OK);
    assert!(text(home).await.contains("Sign in as the demo user"));
    let refused = browser.get(&format!("{base}/pro")).await;
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&refused), "/pricing");

    // Sign in: an @supabase/ssr session cookie, then the pricing page.
    let signed_in = browser.post_form(&format!("{base}/sign-in"), "").await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&signed_in), "/pricing");
    let set_cookie = signed_in
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        set_cookie.starts_with("sb-demo-auth-token=base64-"),
        "{set_cookie}"
    );
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    browser.cookie = Some(set_cookie.split(';').next().unwrap().to_string());
    let account = text(browser.get(&format!("{base}/account")).await).await;
    assert!(account.contains(demo::app::EMAIL), "{account}");
    assert!(account.contains(demo::app::USER_ID), "{account}");
    assert!(account.contains("<td>none</td>"), "status none: {account}");
    let pricing = text(browser.get(&format!("{base}/pricing")).await).await;
    assert!(pricing.contains("Subscribe") && !pricing.contains("Sign in first"));

    // Signed in but not subscribed: still refused (402 for a script).
    let refused = browser.get(&format!("{base}/pro")).await;
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&refused), "/pricing");
    let (status, body) = browser.fetch("GET", &format!("{base}/pro"), None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(body["error"], "An active subscription is required");

    // Subscribe: the sidecar's checkout sends the browser to the stand-in.
    let checkout = json!({
        "priceId": "pro",
        "mode": "subscription",
        "successUrl": format!("{base}/success?session_id={{CHECKOUT_SESSION_ID}}"),
        "cancelUrl": format!("{base}/pricing"),
    });
    let url = format!("{base}/api/stripe/create-checkout");
    let (status, body) = browser.fetch("POST", &url, Some(checkout)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pay_url = body["url"].as_str().unwrap().to_string();
    let session = body["sessionId"].as_str().unwrap().to_string();
    assert_eq!(pay_url, format!("{stripe}/pay/{session}"));
    let pay_page = text(browser.get(&pay_url).await).await;
    for seen in ["Pro", "$20.00 per month", demo::app::EMAIL, ">Pay</button>"] {
        assert!(pay_page.contains(seen), "{seen} in {pay_page}");
    }

    // Pay: webhooks reach the sidecar before the browser is sent back.
    let paid = browser.post_form(&pay_url, "").await;
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    let success_url = location(&paid);
    assert_eq!(success_url, format!("{base}/success?session_id={session}"));
    let success = browser.get(&success_url).await;
    assert_eq!(success.status(), StatusCode::OK);
    let success = text(success).await;
    assert!(success.contains("<b id=\"status\">active</b>"), "{success}");
    assert!(success.contains("href=\"/pro\""));
    let url = format!("{base}/api/stripe/subscription?refresh=true");
    let (status, state) = browser.fetch("GET", &url, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["status"], "active", "{state}");
    assert_eq!(state["plan"], "pro");
    assert_eq!(state["priceId"], demo::PRICE);
    assert_eq!(state["subscribed"], true);

    // The gated page opens and shows the plan the sidecar told the app.
    let pro = browser.get(&format!("{base}/pro")).await;
    assert_eq!(pro.status(), StatusCode::OK);
    let pro = text(pro).await;
    assert!(pro.contains("<b id=\"plan\">pro</b>"), "{pro}");
    assert!(pro.contains("<b id=\"status\">active</b>"), "{pro}");
    let account = text(browser.get(&format!("{base}/account")).await).await;
    assert!(account.contains("<td>pro</td>"), "{account}");
    assert!(account.contains("<td>cus_"), "{account}");

    // Billing: the portal shows the subscription; cancel it.
    let url = format!("{base}/api/stripe/create-portal");
    let portal = json!({ "returnUrl": format!("{base}/account") });
    let (status, body) = browser.fetch("POST", &url, Some(portal)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let portal_url = body["url"].as_str().unwrap().to_string();
    assert!(portal_url.starts_with(&format!("{stripe}/portal/")));
    let portal_page = text(browser.get(&portal_url).await).await;
    assert!(
        portal_page.contains("Status: <b>active</b>"),
        "{portal_page}"
    );
    assert!(portal_page.contains("Cancel subscription"));
    let subscription = input_value(&portal_page, "subscription");
    assert!(subscription.starts_with("sub_"), "{subscription}");
    let canceled = browser
        .post_form(
            &format!("{portal_url}/cancel"),
            &format!("subscription={subscription}"),
        )
        .await;
    assert_eq!(canceled.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&canceled), format!("{base}/account"));
    let portal_page = text(browser.get(&portal_url).await).await;
    assert!(portal_page.contains("No subscription."), "{portal_page}");

    // Refused again, at once: the deleted event synced the state.
    let refused = browser.get(&format!("{base}/pro")).await;
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&refused), "/pricing");
    let url = format!("{base}/api/stripe/subscription");
    let (_, state) = browser.fetch("GET", &url, None).await;
    assert_eq!(state["status"], "none", "{state}");
    assert_eq!(state["subscribed"], false);

    // Sign out: the cookie is cleared.
    let out = browser.post_form(&format!("{base}/sign-out"), "").await;
    assert_eq!(location(&out), "/");
    let cleared = out.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cleared.starts_with("sb-demo-auth-token=;"), "{cleared}");

    stop.send(Signal::Interrupt).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
    assert_eq!(stopped.unwrap().unwrap(), Stopped::Clean);
}

#[test]
fn the_demo_configuration_passes_check() {
    let any = "127.0.0.1:1".parse().unwrap();
    let settings = Settings::new(8080, any, any);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.toml");
    std::fs::write(&path, demo::config_toml(&settings)).unwrap();
    let output = Command::new(binary())
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // Redacted: the run's secrets never show.
    assert!(!stdout.contains(&settings.hs256_secret), "{stdout}");
    assert!(!stdout.contains(&settings.webhook_secret), "{stdout}");
}

#[tokio::test]
async fn the_demo_command_prints_the_url_and_stops_on_sigint() {
    let mut child = Command::new(binary())
        .args(["demo", "--port", "0"])
        // No Stripe key, no config: the demo reads neither.
        .env_clear()
        .env("STRIPE_SECRET_KEY", "sk_live_must_not_be_read")
        .env("STRIPE_SIDECAR_CONFIG", "/nonexistent/config.toml")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("stripe-sidecar demo: open ")
        .unwrap_or_else(|| panic!("the URL line: {first}"));
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with('/'));
    let home = reqwest::get(url).await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home
        .text()
        .await
        .unwrap()
        .contains("Sign in as the demo user"));

    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    std::thread::spawn(move || for _ in lines {});
    eventually(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(child.try_wait().unwrap().unwrap().success());
}

/// The story again, in a real headless Chromium: what a visitor clicks
/// and what each page then shows, with a screenshot of each step (into
/// `DEMO_SCREENSHOTS` when set, as `docs/demo/` is made; else a temporary
/// folder). Skipped without a `chromium`, except in CI.
#[tokio::test]
async fn a_browser_walks_the_demo() {
    let Some((_chromium, endpoint)) = Chromium::start("a_browser_walks_the_demo") else {
        return;
    };
    let demo = Demo::start(0).await.expect("the demo starts");
    let base = format!("http://{}", demo.addr());
    let stripe = format!("http://{}", demo.stripe_addr());
    let (stop, signals) = tokio::sync::mpsc::unbounded_channel();
    let running = tokio::spawn(demo.run(signals));
    let temp = tempfile::tempdir().unwrap();
    let shots = std::env::var_os("DEMO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&shots).unwrap();
    let mut page = Page::open(&endpoint).await;
    let shot = async |page: &mut Page, name: &str| {
        let png = page.screenshot(&shots.join(format!("{name}.png"))).await;
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000,
            "{name}"
        );
    };
    let at = |path: &str| format!("{base}{path}");

    page.go(&at("/")).await;
    page.wait_until("home", |_, text| text.contains("Not signed in."))
        .await;
    shot(&mut page, "1-home").await;

    page.click("button", "Sign in as the demo user").await;
    page.wait_until("signed in, on the pricing page", |url, text| {
        url == at("/pricing")
            && text.contains("$20.00 per month")
            && !text.contains("Sign in first")
    })
    .await;
    shot(&mut page, "2-pricing").await;

    // The gate sends a signed-in visitor without a subscription back.
    page.go(&at("/pro")).await;
    page.wait_until("refused at the gate", |url, _| url == at("/pricing"))
        .await;

    page.click("button", "Subscribe").await;
    page.wait_until("the stand-in's hosted checkout", |url, text| {
        url.starts_with(&format!("{stripe}/pay/cs_"))
            && text.contains("$20.00 per month")
            && text.contains(demo::app::EMAIL)
    })
    .await;
    shot(&mut page, "3-checkout").await;

    page.click("button", "Pay").await;
    page.wait_until("back in the app, subscribed", |url, text| {
        url.starts_with(&at("/success?session_id=cs_"))
            && text.contains("Subscription status: active (pro)")
    })
    .await;
    shot(&mut page, "4-subscribed").await;

    page.click("a", "Go to Pro").await;
    page.wait_until("the gated page, open", |url, text| {
        url == at("/pro") && text.contains("Your plan: pro") && text.contains("Status: active")
    })
    .await;
    shot(&mut page, "5-pro").await;

    page.click("nav a", "Account").await;
    let account = page
        .wait_until("the account page", |url, text| {
            url == at("/account") && text.contains("x-subscription-plan")
        })
        .await;
    for (header, value) in [
        ("x-user-id", demo::app::USER_ID),
        ("x-user-email", demo::app::EMAIL),
        ("x-subscription-status", "active"),
        ("x-subscription-plan", "pro"),
    ] {
        assert!(account.contains(&format!("{header}\t{value}")), "{account}");
    }
    assert!(account.contains("x-stripe-customer-id\tcus_"), "{account}");
    shot(&mut page, "6-account").await;

    page.click("button", "Billing").await;
    page.wait_until("the stand-in's portal", |url, text| {
        url.starts_with(&format!("{stripe}/portal/")) && text.contains("Status: active")
    })
    .await;
    shot(&mut page, "7-portal").await;

    page.click("button", "Cancel subscription").await;
    let account = page
        .wait_until("back on the account page", |url, text| {
            url == at("/account") && text.contains("x-subscription-status")
        })
        .await;
    assert!(account.contains("x-subscription-status\tnone"), "{account}");
    assert!(
        account.contains("x-subscription-plan\t(not sent)"),
        "{account}"
    );

    page.click("nav a", "Pro").await;
    page.wait_until("refused at the gate again", |url, text| {
        url == at("/pricing") && text.contains("Subscribe")
    })
    .await;
    shot(&mut page, "8-gate-closed").await;

    stop.send(Signal::Interrupt).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
    assert_eq!(stopped.unwrap().unwrap(), Stopped::Clean);
}
