//! The demo's stand-in for the app behind the sidecar: a handful of
//! server-rendered pages (home, pricing, the gated `/pro`, account,
//! checkout success) and a "sign in" that sets a Supabase-style session
//! cookie. It has no billing code and no database: who is calling and what
//! they pay for it reads only from the identity headers the sidecar sets,
//! and billing buttons call the sidecar's routes with `fetch`.
//!
//! The sign-in stands in for Supabase Auth: it writes the cookie the way
//! `@supabase/ssr` does (`sb-demo-auth-token` = `base64-` + base64url of
//! the JSON session) around an HS256 JWT signed with the run's secret.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::page::{self, escape, html, redirect};

/// The demo user's id (the JWT's `sub`).
pub const USER_ID: &str = "6f1b3c2e-8d4a-4e5b-9c7d-0a1b2c3d4e5f";
/// The demo user's email.
pub const EMAIL: &str = "demo@example.com";
/// The session cookie, as `@supabase/ssr` names it for project ref `demo`.
pub const COOKIE: &str = "sb-demo-auth-token";
/// How long a demo session lasts.
const SESSION_SECONDS: u64 = 24 * 3600;

/// The identity headers the demo configures on the sidecar, in the order
/// the account page shows them: (config key, header).
pub const IDENTITY_HEADERS: [(&str, &str); 6] = [
    ("user_id", "x-user-id"),
    ("email", "x-user-email"),
    ("customer", "x-stripe-customer-id"),
    ("subscription_status", "x-subscription-status"),
    ("plan", "x-subscription-plan"),
    ("features", "x-entitlements"),
];

/// The demo app; `secret` signs its session tokens.
pub struct DemoApp {
    secret: String,
}

impl DemoApp {
    pub fn new(secret: String) -> DemoApp {
        DemoApp { secret }
    }

    /// Answers one request (proxied by the sidecar).
    pub async fn handle(self: Arc<Self>, request: Request<Bytes>) -> Response<Full<Bytes>> {
        let who = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let email = who("x-user-email");
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/") => home(email.as_deref()),
            (&Method::GET | &Method::POST, "/sign-in") => self.sign_in(),
            (&Method::POST, "/sign-out") => sign_out(),
            (&Method::GET, "/pricing") => pricing(email.as_deref()),
            (&Method::GET, "/pro") => pro(
                who("x-subscription-plan").as_deref(),
                who("x-subscription-status").as_deref(),
            ),
            (&Method::GET, "/account") => account(&request),
            (&Method::GET, "/success") => success(who("x-subscription-status").as_deref()),
            _ => page::not_found(),
        }
    }

    /// Sets the session cookie and sends the user to the pricing page.
    fn sign_in(&self) -> Response<Full<Bytes>> {
        let value = match session_cookie(&self.secret, now()) {
            Ok(value) => value,
            Err(error) => {
                let body = format!("<p>Cannot sign the session: {}</p>", escape(&error));
                return html(StatusCode::INTERNAL_SERVER_ERROR, "Sign-in failed", &body);
            }
        };
        let mut response = redirect("/pricing");
        let cookie = format!("{COOKIE}={value}; Max-Age={SESSION_SECONDS}; Path=/; SameSite=Lax");
        if let Ok(cookie) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }
}

/// The cookie value `@supabase/ssr` writes for a session of the demo user
/// whose access token is an HS256 JWT signed with `secret`, issued at `now`.
pub fn session_cookie(secret: &str, now: u64) -> Result<String, String> {
    let exp = now + SESSION_SECONDS;
    let claims = json!({
        "sub": USER_ID,
        "email": EMAIL,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": exp,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())?;
    let session = json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": SESSION_SECONDS,
        "expires_at": exp,
        "refresh_token": "demo-refresh-token",
        "user": {"id": USER_ID, "email": EMAIL, "aud": "authenticated", "role": "authenticated"},
    });
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(session.to_string());
    Ok(format!("base64-{encoded}"))
}

fn sign_out() -> Response<Full<Bytes>> {
    let mut response = redirect("/");
    let cookie = format!("{COOKIE}=; Max-Age=0; Path=/; SameSite=Lax");
    if let Ok(cookie) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

const NAV: &str = "<nav><a href=\"/\">Home</a><a href=\"/pricing\">Pricing</a>\
<a href=\"/pro\">Pro</a><a href=\"/account\">Account</a></nav>";

/// POSTs JSON to a sidecar route and goes to the `url` it answers, or
/// shows its `error`.
const SCRIPT: &str = "<p id=\"message\"></p><script>\
async function go(path, body) {\
  const message = document.getElementById('message');\
  message.textContent = '';\
  const reply = await fetch(path, {method: 'POST', headers: {'content-type': 'application/json'}, body: JSON.stringify(body)});\
  const json = await reply.json().catch(() => ({}));\
  if (reply.ok && json.url) { location = json.url; } else { message.textContent = json.error || ('HTTP ' + reply.status); }\
}</script>";

const SIGN_IN: &str =
    "<form method=\"post\" action=\"/sign-in\"><button>Sign in as the demo user</button></form>";

fn home(email: Option<&str>) -> Response<Full<Bytes>> {
    let who = match email {
        Some(email) => format!(
            "<p>Signed in as <b>{}</b>.</p><form method=\"post\" action=\"/sign-out\"><button>Sign out</button></form>",
            escape(email)
        ),
        None => format!("<p>Not signed in.</p>{SIGN_IN}"),
    };
    let body = format!(
        "{NAV}<p>A demo app behind <b>stripe-sidecar</b>. The app has no billing code: \
         the sidecar answers <code>/api/stripe/*</code>, gates <code>/pro</code> and tells the \
         app who is calling in request headers. Stripe here is a stand-in: nothing leaves this machine.</p>{who}\
         <ol><li>Sign in as the demo user.</li><li>Subscribe on the <a href=\"/pricing\">pricing page</a> \
         (the stand-in Checkout has a Pay button).</li><li>Open <a href=\"/pro\">/pro</a>, behind a subscription gate.</li>\
         <li>Cancel from the <a href=\"/account\">account page</a> and see <code>/pro</code> close again.</li></ol>"
    );
    html(StatusCode::OK, "stripe-sidecar demo", &body)
}

fn pricing(email: Option<&str>) -> Response<Full<Bytes>> {
    let hint = match email {
        Some(_) => String::new(),
        None => format!("<p>Sign in first.</p>{SIGN_IN}"),
    };
    let body = format!(
        "{NAV}<div class=\"card\"><h2>Pro</h2><p class=\"price\">$20.00 per month</p>\
         <p>Everything behind <code>/pro</code>.</p>\
         <button id=\"subscribe\" onclick=\"go('/api/stripe/create-checkout', {{priceId: 'pro', mode: 'subscription', \
         successUrl: location.origin + '/success?session_id={{CHECKOUT_SESSION_ID}}', cancelUrl: location.origin + '/pricing'}})\">Subscribe</button>\
         </div>{hint}{SCRIPT}"
    );
    html(StatusCode::OK, "Pricing", &body)
}

fn pro(plan: Option<&str>, status: Option<&str>) -> Response<Full<Bytes>> {
    let body = format!(
        "{NAV}<p>Only subscribers see this page: the sidecar's gate on <code>/pro/**</code> \
         sent everyone else to the pricing page.</p>\
         <div class=\"card\"><p>Your plan: <b id=\"plan\">{}</b></p><p>Status: <b id=\"status\">{}</b></p></div>",
        escape(plan.unwrap_or("(none)")),
        escape(status.unwrap_or("(unknown)")),
    );
    html(StatusCode::OK, "Pro", &body)
}

fn account(request: &Request<Bytes>) -> Response<Full<Bytes>> {
    let signed_in = request.headers().contains_key("x-user-id");
    let mut rows = String::new();
    for (_, name) in IDENTITY_HEADERS {
        let value = request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(not sent)");
        rows.push_str(&format!(
            "<tr><th><code>{name}</code></th><td>{}</td></tr>",
            escape(value)
        ));
    }
    let actions = match signed_in {
        true => "<button id=\"billing\" onclick=\"go('/api/stripe/create-portal', {returnUrl: location.origin + '/account'})\">Billing</button>\
                 <form method=\"post\" action=\"/sign-out\"><p><button>Sign out</button></p></form>"
            .to_string(),
        false => format!("<p>Not signed in.</p>{SIGN_IN}"),
    };
    let body = format!(
        "{NAV}<p>The headers the sidecar set on this request (the app reads identity from nothing else):</p>\
         <table>{rows}</table><p></p>{actions}{SCRIPT}"
    );
    html(StatusCode::OK, "Account", &body)
}

fn success(status: Option<&str>) -> Response<Full<Bytes>> {
    let body = format!(
        "{NAV}<p>Thank you! Subscription status: <b id=\"status\">{}</b></p>\
         <p><a href=\"/pro\">Go to Pro</a></p>\
         <script>fetch('/api/stripe/subscription?refresh=true').then(r => r.json()).then(s => {{\
         if (s.status) document.getElementById('status').textContent = s.status + (s.plan ? ' (' + s.plan + ')' : '');\
         }});</script>",
        escape(status.unwrap_or("(unknown)")),
    );
    html(StatusCode::OK, "Subscribed", &body)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
