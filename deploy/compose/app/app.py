"""The demo app behind stripe-sidecar in deploy/docker-compose.yml.

It stands in for a real app (a Next.js + Supabase one, say) and has no
billing code at all: the page's buttons call the sidecar's routes, which the
sidecar answers itself. What it does have:

- GET /        the page, with Sign in / Buy / Subscribe / Manage billing.
- GET /login   signs in a demo user: sets the `sb-access-token` cookie to an
               HS256 JWT shaped like Supabase's (sub, email, role, aud, exp),
               signed with SUPABASE_JWT_SECRET, the secret the sidecar checks.
- GET /logout  clears it.
- POST /api/stripe/webhook  receives the events the sidecar verified and
               forwarded, and verifies them again as the app's own
               stripe.webhooks.constructEvent would: the sidecar forwards the
               original bytes and Stripe-Signature, so the check passes.

Standard library only, so it runs on the stock python image. Demo only:
never sign tokens like this in production.
"""

import base64
import hashlib
import hmac
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "3000"))
JWT_SECRET = os.environ["SUPABASE_JWT_SECRET"].encode()
WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "").encode()
COOKIE = "sb-access-token"

PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>stripe-sidecar demo</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem; }
  button { font: inherit; padding: .4rem .9rem; margin: 0 .4rem .4rem 0; }
  pre { background: #f4f4f4; padding: 1rem; white-space: pre-wrap; word-break: break-all; }
</style>
<h1>stripe-sidecar demo</h1>
<p>This page is served by the app; the buttons call routes that
<b>stripe-sidecar</b> answers itself, with stripe-mock as Stripe.</p>
<p>SIGNED_IN</p>
<p>
  <button onclick="checkout('basic', 'payment')">Buy (one-time)</button>
  <button onclick="checkout('pro', 'subscription')">Subscribe</button>
  <button onclick="portal()">Manage billing</button>
</p>
<pre id="out">Click a button: the sidecar's reply shows here.</pre>
<script>
// What a ShipFast-style frontend sends. Cookies go along by themselves
// (same origin); an SPA holding the token could send
// `Authorization: Bearer <access_token>` instead.
async function call(path, body) {
  const out = document.getElementById("out");
  out.textContent = "POST " + path + " ...";
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  out.textContent = "POST " + path + "\\n" + JSON.stringify(body, null, 2) +
    "\\n\\n" + response.status + " " + text +
    (response.ok ? "\\n\\nA real Stripe URL would be opened now " +
      "(window.location.href = url); stripe-mock's is a placeholder." : "");
}
function checkout(priceId, mode) {
  call("/api/stripe/create-checkout", {
    priceId: priceId,
    successUrl: location.origin + "/?checkout=success&session_id={CHECKOUT_SESSION_ID}",
    cancelUrl: location.origin + "/?checkout=cancelled",
    mode: mode,
  });
}
function portal() {
  call("/api/stripe/create-portal", { returnUrl: location.href });
}
</script>
</html>
"""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def demo_token() -> str:
    """A Supabase-shaped session token for the demo user."""
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "sub": "demo-user-1",
        "email": "demo@example.com",
        "role": "authenticated",
        "aud": "authenticated",
        "iat": int(time.time()),
        "exp": int(time.time()) + 3600,
    }
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = hmac.new(JWT_SECRET, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def signature_ok(header: str, body: bytes) -> bool:
    """Stripe-Signature checked as Stripe's libraries do (no tolerance here)."""
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    timestamp = next((v for k, v in parts if k.strip() == "t"), None)
    if timestamp is None or not WEBHOOK_SECRET:
        return False
    expected = hmac.new(WEBHOOK_SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(k.strip() == "v1" and hmac.compare_digest(v, expected) for k, v in parts)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            signed_in = COOKIE + "=" in self.headers.get("Cookie", "")
            state = (
                'Signed in as demo@example.com. <a href="/logout">Sign out</a>'
                if signed_in
                else 'Not signed in: checkout works anonymously, the portal needs a user. '
                '<a href="/login">Sign in as the demo user</a>'
            )
            self.reply(200, "text/html; charset=utf-8", PAGE.replace("SIGNED_IN", state).encode())
        elif path == "/login":
            self.redirect(f"{COOKIE}={demo_token()}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600")
        elif path == "/logout":
            self.redirect(f"{COOKIE}=; Path=/; Max-Age=0")
        else:
            self.reply(404, "application/json", b'{"error":"Not found"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.split("?", 1)[0] != "/api/stripe/webhook":
            self.reply(404, "application/json", b'{"error":"Not found"}')
            return
        if not signature_ok(self.headers.get("Stripe-Signature", ""), body):
            self.reply(400, "application/json", b'{"error":"Invalid signature"}')
            return
        event = json.loads(body)
        print(f"webhook {event.get('type')} {event.get('id')} verified by the app too", flush=True)
        self.reply(200, "application/json", b'{"received":true}')

    def redirect(self, cookie: str):
        self.send_response(303)
        self.send_header("Location", "/")
        self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def reply(self, status: int, content_type: str, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    # 0.0.0.0 inside the compose network; only the sidecar's port is
    # published, so the browser reaches the app through the sidecar.
    print(f"demo app listening on :{PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
