// bench/run.sh's Node peer of the sidecar's checkout route: POST
// /api/stripe/create-checkout written the way a ShipFast / 8space Next.js
// route is (stripe-node for Stripe, jose for the Supabase session), on
// plain node:http so no framework cost is counted against it.
//
// Per request, as those routes do: read the JSON body and answer their 400s;
// verify the Supabase HS256 access token (jose jwtVerify: HS256, aud
// "authenticated", role "authenticated"); build a Stripe client
// (ShipFast's createCheckout makes one per call; stripe-node's keep-alive
// agent is module-wide, so connections are still pooled); find the
// customer; create the Checkout Session; answer {url, sessionId}.
// No cache anywhere: those routes keep none.
//
// CUSTOMER_MODE (environment):
//   search (default): customers.search on metadata['user_id'], and
//     customers.create (email, metadata.user_id) when there is none, so the
//     session names the customer (what the sidecar does, minus its cache);
//   email: the 8space route as published: no lookup, customer_email from
//     the session (one Stripe call per checkout).
//
// Environment: PORT, STRIPE_PORT (the fake Stripe on 127.0.0.1, plain
// HTTP), JWT_SECRET, PRICES (JSON {alias: price id}; price ids pass as
// they are), WORKERS (node:cluster workers; 1 = one process, as `next
// start` runs). Loopback only. GET /healthz answers 200.

import cluster from "node:cluster";
import http from "node:http";
import { jwtVerify } from "jose";
import Stripe from "stripe";

const PORT = Number(process.env.PORT);
const STRIPE_PORT = Number(process.env.STRIPE_PORT);
const SECRET = new TextEncoder().encode(process.env.JWT_SECRET ?? "");
const PRICES = JSON.parse(process.env.PRICES ?? "{}");
const MODE = process.env.CUSTOMER_MODE ?? "search";
const WORKERS = Number(process.env.WORKERS ?? "1");
const STRIPE_KEY = process.env.STRIPE_SECRET_KEY ?? "sk_test_bench_not_a_real_key";
if (!PORT || !STRIPE_PORT || !SECRET.length) {
  console.error("PORT, STRIPE_PORT and JWT_SECRET are required");
  process.exit(2);
}
if (MODE !== "search" && MODE !== "email") {
  console.error(`CUSTOMER_MODE must be search or email, not ${MODE}`);
  process.exit(2);
}

function stripeClient() {
  return new Stripe(STRIPE_KEY, {
    host: "127.0.0.1",
    port: STRIPE_PORT,
    protocol: "http",
    maxNetworkRetries: 0,
    telemetry: false,
  });
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

async function readJson(req, limit = 65536) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw Object.assign(new Error("Body too large"), { status: 413 });
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw Object.assign(new Error("Invalid JSON body"), { status: 400 });
  }
}

async function currentUser(req) {
  const auth = req.headers.authorization ?? "";
  if (!auth.startsWith("Bearer ")) return null;
  try {
    const { payload } = await jwtVerify(auth.slice(7), SECRET, {
      algorithms: ["HS256"],
      audience: "authenticated",
    });
    if (payload.role !== "authenticated" || typeof payload.sub !== "string") throw new Error("role");
    return { id: payload.sub, email: typeof payload.email === "string" ? payload.email : undefined };
  } catch {
    throw Object.assign(new Error("Session is invalid or expired"), { status: 401 });
  }
}

async function findOrCreateCustomer(stripe, user) {
  const found = await stripe.customers.search({
    query: `metadata['user_id']:'${user.id.replace(/'/g, "\\'")}'`,
    limit: 1,
  });
  if (found.data.length) return found.data[0].id;
  const created = await stripe.customers.create({
    email: user.email,
    metadata: { user_id: user.id },
  });
  return created.id;
}

async function createCheckout(req, res) {
  const body = await readJson(req);
  if (!body.priceId) return json(res, 400, { error: "Price ID is required" });
  if (!body.successUrl || !body.cancelUrl) {
    return json(res, 400, { error: "Success and cancel URLs are required" });
  }
  if (!body.mode) {
    return json(res, 400, {
      error:
        "Mode is required (either 'payment' for one-time payments or 'subscription' for recurring subscription)",
    });
  }
  const user = await currentUser(req);
  if (!user) return json(res, 401, { error: "Not signed in" });
  const stripe = stripeClient();
  const params = {
    mode: body.mode,
    line_items: [{ price: PRICES[body.priceId] ?? body.priceId, quantity: 1 }],
    success_url: body.successUrl,
    cancel_url: body.cancelUrl,
    client_reference_id: user.id,
    metadata: { user_id: user.id },
  };
  if (body.mode === "subscription") params.subscription_data = { metadata: { user_id: user.id } };
  if (MODE === "search") {
    params.customer = await findOrCreateCustomer(stripe, user);
  } else if (user.email) {
    params.customer_email = user.email;
    if (body.mode === "payment") params.customer_creation = "always";
  }
  const session = await stripe.checkout.sessions.create(params);
  return json(res, 200, { url: session.url, sessionId: session.id });
}

function serve() {
  const server = http.createServer(async (req, res) => {
    const path = req.url.split("?")[0];
    try {
      if (path === "/healthz" && req.method === "GET") return json(res, 200, { ok: true });
      if (path === "/api/stripe/create-checkout" && req.method === "POST") {
        return await createCheckout(req, res);
      }
      return json(res, 404, { error: "Not found" });
    } catch (e) {
      if (!e.status) console.error(e);
      return json(res, e.status ?? 500, { error: e?.message });
    }
  });
  server.keepAliveTimeout = 65_000;
  server.listen(PORT, "127.0.0.1");
}

if (WORKERS > 1 && cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on("exit", (worker, code) => {
    console.error(`worker ${worker.process.pid} exited with ${code}`);
    process.exit(1);
  });
  for (const sig of ["SIGTERM", "SIGINT"]) {
    process.on(sig, () => {
      for (const w of Object.values(cluster.workers)) w.kill("SIGTERM");
      process.exit(0);
    });
  }
} else {
  serve();
  for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
}
