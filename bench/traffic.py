#!/usr/bin/env python3
"""Traffic for bench/memory.sh and bench/soak.sh, loopback only.

Plain asyncio sockets (no third-party packages), so a connection can do
what an HTTP library will not: sit idle, send half its headers, send a
malformed request. Every loop is bounded in count and in time, and every
target must be a loopback address.

  traffic.py burst  --port P --conns 2000 --rounds 5 ...   (memory.sh)
  traffic.py soak   --port P --admin A --pid PID --minutes 10 ...   (soak.sh)
  traffic.py ready  --admin A --runs 5 --log F -- CMD ARG...     (run.sh)

Both print one JSON object on the last line of stdout; progress goes to
stderr.
"""

import argparse
import asyncio
import hashlib
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"


def log(msg):
    print(f"[traffic {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loopback_only(host):
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing to send traffic to {host}: loopback only")


# --------------------------------------------------------------- /proc --


def proc_status(pid):
    """VmRSS and VmHWM of `pid` in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def mib(kib):
    return round(kib / 1024, 1)


class Sampler:
    """Samples a process's VmRSS every `period` seconds while running."""

    def __init__(self, pid, period=0.1):
        self.pid, self.period = pid, period
        self.peak_kib = 0
        self._task = None

    async def _run(self):
        while True:
            self.peak_kib = max(self.peak_kib, proc_status(self.pid)["VmRSS"])
            await asyncio.sleep(self.period)

    def start(self):
        self._task = asyncio.ensure_future(self._run())

    async def stop(self):
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.peak_kib = max(self.peak_kib, proc_status(self.pid)["VmRSS"])


# ------------------------------------------------------------ HTTP/1.1 --


class HttpError(Exception):
    pass


async def read_response(reader, head_only=False, slow=0.0):
    """Reads one response; returns (status, body length). `slow` sleeps
    between 16 KiB reads of the body (a slow reader)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if head_only or status in (204, 304) or 100 <= status < 200:
        return status, 0
    total = 0
    if "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            chunk = await reader.read(min(left, 16384))
            if not chunk:
                raise HttpError("body cut short")
            left -= len(chunk)
            total += len(chunk)
            if slow:
                await asyncio.sleep(slow)
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            await reader.readexactly(size + 2)
            total += size
            if slow:
                await asyncio.sleep(slow)
    else:  # read to close
        while True:
            chunk = await reader.read(16384)
            if not chunk:
                break
            total += len(chunk)
    return status, total


def request(method, path, headers=(), body=b"", chunked=False, close=False):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if chunked:
        out = bytearray(head)
        for i in range(0, len(body), 4096):
            piece = body[i : i + 4096]
            out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        out += b"0\r\n\r\n"
        return bytes(out)
    return head + body


_COOKIES = {}


def big_cookie(rng, size=8 * 1024):
    """About `size` bytes of cookies, as a Supabase session plus analytics
    (one of a few made once: making one per request would cost more than
    sending it)."""
    pool = _COOKIES.setdefault(size, [])
    if len(pool) < 8:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        value = "".join(rng.choice(alphabet) for _ in range(size // 2))
        other = "".join(rng.choice(alphabet) for _ in range(size // 2))
        pool.append(f"sb-abcd-auth-token.1={value}; _ga={other}")
    return rng.choice(pool)


class Counts:
    def __init__(self):
        self.status = {}
        self.errors = {}

    def ok(self, status):
        self.status[status] = self.status.get(status, 0) + 1

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def as_dict(self):
        return {
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "errors": dict(sorted(self.errors.items())),
        }


# --------------------------------------------------------------- burst --

# What each connection of a burst does, by share of the connections.
BURST_MIX = [
    ("get", 0.35),  # GET /small, keep-alive, then held open
    ("cookie", 0.20),  # GET /small with ~8 KiB of cookies
    ("post", 0.10),  # POST /small with a 16 KiB body
    ("download", 0.10),  # GET /big (256 KiB), read slowly
    ("idle", 0.15),  # connects, sends nothing
    ("slow", 0.10),  # half the request head (with a big cookie) until release
]


def burst_kinds(n, rng):
    kinds = []
    for kind, share in BURST_MIX:
        kinds += [kind] * round(n * share)
    kinds = (kinds + ["get"] * n)[:n]
    rng.shuffle(kinds)
    return kinds


async def burst_conn(kind, port, rng, counts, arrived, release, connect_gate):
    writer = None
    try:
        async with connect_gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, port, limit=1 << 20), 10
            )
        if kind in ("get", "cookie", "post", "download"):
            headers = [("Cookie", big_cookie(rng))] if kind == "cookie" else []
            if kind == "post":
                msg = request("POST", "/small", [("Content-Type", "application/octet-stream")],
                              rng.randbytes(16 * 1024))
            else:
                msg = request("GET", "/big" if kind == "download" else "/small", headers)
            writer.write(msg)
            await writer.drain()
            status, _ = await asyncio.wait_for(
                read_response(reader, slow=0.02 if kind == "download" else 0), 60
            )
            counts.ok(status)
            arrived()
            await release.wait()
        elif kind == "idle":
            arrived()
            await release.wait()
        elif kind == "slow":
            msg = request("GET", "/small", [("Cookie", big_cookie(rng))])
            half = len(msg) // 2
            writer.write(msg[:half])
            await writer.drain()
            arrived()
            await release.wait()
            writer.write(msg[half:])
            await writer.drain()
            status, _ = await asyncio.wait_for(read_response(reader), 30)
            counts.ok(status)
    except Exception as e:  # noqa: BLE001 - counted, not fatal
        counts.error(type(e).__name__)
        arrived()
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:  # noqa: BLE001
                pass


async def one_burst(port, n, rng, counts, hold):
    release = asyncio.Event()
    left = [n]

    def arrived():
        left[0] -= 1
        if left[0] <= 0:
            release.set()

    gate = asyncio.Semaphore(256)  # connects in flight; the listen backlog is 1024
    tasks = [
        asyncio.ensure_future(burst_conn(k, port, rng, counts, arrived, release, gate))
        for k in burst_kinds(n, rng)
    ]
    started = time.monotonic()
    try:
        await asyncio.wait_for(release.wait(), hold)
    except asyncio.TimeoutError:
        log(f"  {left[0]} connections not at the hold point after {hold}s; releasing")
    all_open = time.monotonic() - started
    await asyncio.sleep(1)  # all n open at once, for a moment
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return all_open


async def cmd_burst(a):
    loopback_only(HOST)
    rng = random.Random(a.seed)
    counts = Counts()
    # Warm-up: a few sequential requests, so one-time start-up allocations
    # (the upstream pool, the metrics families) count as idle.
    for _ in range(20):
        reader, writer = await asyncio.open_connection(HOST, a.port)
        writer.write(request("GET", "/small", close=True))
        await writer.drain()
        await read_response(reader)
        writer.close()
    await asyncio.sleep(a.quiet)
    idle = proc_status(a.pid)
    log(f"idle: VmRSS {mib(idle['VmRSS'])} MiB")
    sampler = Sampler(a.pid)
    sampler.start()
    after_rounds = []
    for r in range(a.rounds):
        took = await one_burst(a.port, a.conns, rng, counts, a.hold)
        await asyncio.sleep(2)
        rss = proc_status(a.pid)["VmRSS"]
        after_rounds.append(mib(rss))
        log(f"round {r + 1}/{a.rounds}: {a.conns} open after {took:.1f}s; "
            f"VmRSS 2s later {mib(rss)} MiB; peak so far {mib(sampler.peak_kib)} MiB")
    await sampler.stop()
    # The RSS as the process settles: allocators hand memory back on
    # their own schedules (jemalloc's decay, glibc's never).
    settle, after, t0 = {}, None, time.monotonic()
    for t in sorted({1, 2, 3, 5, 10, 15, 20, 30, a.quiet}):
        if t > max(a.quiet, a.settle):
            break
        await asyncio.sleep(max(0.0, t - (time.monotonic() - t0)))
        st = proc_status(a.pid)
        settle[str(t)] = mib(st["VmRSS"])
        if t == a.quiet:
            after = st
    log(f"after {a.quiet}s quiet: VmRSS {mib(after['VmRSS'])} MiB, VmHWM {mib(after['VmHWM'])} MiB; "
        f"settling (s: MiB) {settle}")
    result = {
        "idle_mib": mib(idle["VmRSS"]),
        "peak_mib": mib(max(sampler.peak_kib, after["VmHWM"])),
        "after_mib": mib(after["VmRSS"]),
        "retained_mib": mib(after["VmRSS"] - idle["VmRSS"]),
        "after_each_round_mib": after_rounds,
        "settle_mib": settle,
        "fds_after": open_fds(a.pid),
    }
    result.update(counts.as_dict())
    print(json.dumps(result))


# ---------------------------------------------------------------- soak --


def sign_nothing():
    """A Stripe-Signature header with a fresh timestamp and a wrong v1:
    parsed, fresh, so the sidecar reads the body before refusing it."""
    return f"t={int(time.time())},v1={hashlib.sha256(b'not the secret').hexdigest()}"


async def exchange(port, msg, counts, expect, head_only=False, timeout=30, slow=0.0):
    """One request on its own connection; counts the status, and counts an
    unexpected one (or a failure) as an error of `expect`'s name."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
        writer.write(msg)
        await writer.drain()
        status, size = await asyncio.wait_for(read_response(reader, head_only, slow), timeout)
        counts.ok(status)
        if status not in expect[1]:
            counts.error(f"{expect[0]}:{status}")
        return size
    except Exception as e:  # noqa: BLE001
        counts.error(f"{expect[0]}:{type(e).__name__}")
        return 0
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:  # noqa: BLE001
                pass


async def keepalive_client(port, counts, stop, rng, stats):
    """Proxied GETs and POSTs, many per connection, until `stop`."""
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            for _ in range(200):
                if stop.is_set():
                    break
                if rng.random() < 0.3:
                    body = rng.randbytes(rng.choice([100, 2048, 32 * 1024]))
                    msg = request("POST", "/small", [("Content-Type", "application/json")], body)
                else:
                    headers = [("Cookie", big_cookie(rng, 2048))] if rng.random() < 0.2 else []
                    msg = request("GET", f"/small?i={rng.randrange(1 << 30)}", headers)
                writer.write(msg)
                await writer.drain()
                status, _ = await asyncio.wait_for(read_response(reader), 30)
                counts.ok(status)
                stats["requests"] += 1
                if status != 200:
                    counts.error(f"proxied:{status}")
                await asyncio.sleep(0.002)
        except Exception as e:  # noqa: BLE001
            counts.error(f"proxied:{type(e).__name__}")
            await asyncio.sleep(0.1)
        finally:
            if writer is not None:
                writer.close()


async def misc_client(port, counts, stop, rng, stats):
    """Downloads, bad requests and webhooks, one at a time, until `stop`."""
    huge_header = request("GET", "/small", [("X-Big", "a" * (80 * 1024))])
    jobs = [
        # a streamed 8 MiB download, read at full speed
        ("download", lambda: request("GET", "/download"), (200,), False),
        # a streamed download read slowly, then dropped: only the head counts
        ("download-slow", lambda: request("GET", "/big"), (200,), "slow"),
        # malformed request line
        ("malformed", lambda: b"GET /small HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", (400,), False),
        ("malformed", lambda: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", (400,), False),
        # headers over the 64 KiB limit
        ("oversized", lambda: huge_header, (431,), False),
        # a chunked webhook with a fresh timestamp and a wrong signature
        ("webhook", lambda: request("POST", "/api/stripe/webhook",
                                    [("Stripe-Signature", sign_nothing()),
                                     ("Content-Type", "application/json")],
                                    b'{"id":"evt_1","type":"customer.deleted","data":' + b" " * 20000 + b"{}}",
                                    chunked=True), (400,), False),
        # a local route with the wrong method
        ("wrong-method", lambda: request("GET", "/api/stripe/webhook"), (405,), False),
        # checkout, not signed in, no Stripe key: refused locally
        ("checkout", lambda: request("POST", "/api/stripe/create-checkout",
                                     [("Content-Type", "application/json")], b"{}"), (401, 503), False),
    ]
    while not stop.is_set():
        name, make, ok, how = rng.choice(jobs)
        size = await exchange(port, make(), counts, (name, ok),
                              slow=0.01 if how == "slow" else 0.0, timeout=60)
        if name.startswith("download"):
            stats["downloaded"] += size
        stats["misc"] += 1
        await asyncio.sleep(0.01)


async def soak_bursts(port, counts, stop, rng, every, conns, stats):
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass
        if stop.is_set():
            break
        c = Counts()
        await one_burst(port, conns, rng, c, 20)
        stats["bursts"] += 1
        for s, n in c.status.items():
            for _ in range(n):
                counts.ok(s)
            if s != 200:
                counts.errors[f"burst:{s}"] = counts.errors.get(f"burst:{s}", 0) + n
        for k, n in c.errors.items():
            counts.errors[f"burst:{k}"] = counts.errors.get(f"burst:{k}", 0) + n


async def scrape(admin):
    """The counters soak watches, from /metrics (Prometheus text)."""
    reader, writer = await asyncio.open_connection(HOST, admin)
    writer.write(request("GET", "/metrics", close=True))
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    body = await reader.read()
    writer.close()
    if b"transfer-encoding: chunked" in head:
        out, rest = [], body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out.append(rest[:size])
            rest = rest[size + 2 :]
        body = b"".join(out)
    m = {"requests": {}, "upstream_errors": 0}
    for line in body.decode().splitlines():
        if line.startswith("stripe_sidecar_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            action = labels.split('action="')[1].split('"')[0]
            status = labels.split('status="')[1].split('"')[0]
            m["requests"][f"{action}:{status}"] = int(float(value))
        elif line.startswith("stripe_sidecar_upstream_errors_total"):
            m["upstream_errors"] += int(float(line.rsplit(" ", 1)[1]))
    return m


# Answers the soak's traffic is meant to get; any other 5xx is an error.
EXPECTED_5XX = {"checkout:503"}  # no stripe.secret_key in the soak's config


def unexpected_5xx(requests):
    return sum(v for k, v in requests.items() if k.split(":")[1].startswith("5") and k not in EXPECTED_5XX)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0


async def cmd_soak(a):
    loopback_only(HOST)
    rng = random.Random(a.seed)
    counts = Counts()
    stats = {"requests": 0, "misc": 0, "bursts": 0, "downloaded": 0}
    stop = asyncio.Event()
    # Warm-up, then the baseline: one-time start-up allocations are not growth.
    for _ in range(20):
        await exchange(a.port, request("GET", "/small"), Counts(), ("warm-up", (200,)))
    await asyncio.sleep(2)
    base = proc_status(a.pid)
    base_fds = open_fds(a.pid)
    base_metrics = await scrape(a.admin)
    log(f"baseline: rss={mib(base['VmRSS'])} MiB fds={base_fds}")
    workers = [asyncio.ensure_future(keepalive_client(a.port, counts, stop, random.Random(rng.random()), stats))
               for _ in range(a.clients)]
    workers += [asyncio.ensure_future(misc_client(a.port, counts, stop, random.Random(rng.random()), stats))
                for _ in range(2)]
    workers.append(asyncio.ensure_future(
        soak_bursts(a.port, counts, stop, random.Random(rng.random()), a.burst_every, a.burst_conns, stats)))
    samples = []
    deadline = time.monotonic() + a.minutes * 60
    t0 = time.monotonic()
    while True:
        await asyncio.sleep(max(0.0, min(a.sample, deadline - time.monotonic())))
        st = proc_status(a.pid)
        met = await scrape(a.admin)
        reqs = {k: v - base_metrics["requests"].get(k, 0) for k, v in met["requests"].items()}
        sample = {
            "t": round(time.monotonic() - t0),
            "rss_mib": mib(st["VmRSS"]),
            "fds": open_fds(a.pid),
            "requests": sum(reqs.values()),
            "non2xx": sum(v for k, v in reqs.items() if not k.split(":")[1].startswith("2")),
            "unexpected_5xx": unexpected_5xx(reqs),
            "upstream_errors": met["upstream_errors"] - base_metrics["upstream_errors"],
            "client_errors": sum(counts.errors.values()),
        }
        samples.append(sample)
        log(" ".join(f"{k}={v}" for k, v in sample.items()))
        if time.monotonic() >= deadline:
            break
    stop.set()
    await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 180)
    await asyncio.sleep(a.quiet)
    end = proc_status(a.pid)
    end_fds = open_fds(a.pid)
    end_metrics = await scrape(a.admin)
    reqs = {k: v - base_metrics["requests"].get(k, 0) for k, v in end_metrics["requests"].items()}

    # The verdict: each bound, stated, and whether it held.
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    rss_growth = median(s["rss_mib"] for s in last) - median(s["rss_mib"] for s in first)
    fd_growth = median(s["fds"] for s in last) - median(s["fds"] for s in first)
    retained = mib(end["VmRSS"] - base["VmRSS"])
    client_errors = sum(counts.errors.values())
    upstream_errors = end_metrics["upstream_errors"] - base_metrics["upstream_errors"]
    checks = [
        (f"RSS median, last third − first third ≤ {a.max_rss_growth} MiB",
         f"{rss_growth:+.1f} MiB", rss_growth <= a.max_rss_growth),
        (f"RSS {a.quiet} s after the traffic − RSS before it ≤ {a.max_retained} MiB",
         f"{retained:+.1f} MiB", retained <= a.max_retained),
        (f"open fds median, last third − first third ≤ {a.max_fd_growth}",
         f"{fd_growth:+d}", fd_growth <= a.max_fd_growth),
        (f"open fds {a.quiet} s after the traffic ≤ before + {a.max_idle_fds} (the idle upstream pool)",
         f"{base_fds} → {end_fds}", end_fds <= base_fds + a.max_idle_fds),
        (f"unexpected client outcomes (wrong status, reset, timeout) ≤ {a.max_errors}",
         str(client_errors), client_errors <= a.max_errors),
        ("stripe_sidecar_upstream_errors_total grew by 0", str(upstream_errors), upstream_errors == 0),
        ("5xx other than checkout's 503 (no Stripe key): 0", str(unexpected_5xx(reqs)), unexpected_5xx(reqs) == 0),
    ]
    result = {
        "base_rss_mib": mib(base["VmRSS"]),
        "base_fds": base_fds,
        "end_rss_mib": mib(end["VmRSS"]),
        "end_hwm_mib": mib(end["VmHWM"]),
        "end_fds": end_fds,
        "requests": reqs,
        "samples": samples,
        "stats": stats,
        "checks": [{"bound": b, "measured": m, "ok": ok} for b, m, ok in checks],
        "ok": all(ok for _, _, ok in checks),
    }
    result.update(counts.as_dict())
    print(json.dumps(result))


# --------------------------------------------------------------- ready --


def cmd_ready(a):
    """Starts CMD `runs` times; each time, the milliseconds from just before
    the exec to the first `GET /readyz` on the admin port answered 200,
    polled in a tight loop (a fresh connection every 0.5 ms), then SIGTERM."""
    loopback_only(HOST)
    probe = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    times, polls = [], []
    for _ in range(a.runs):
        with open(a.log, "ab") as logf:
            t0 = time.monotonic()
            proc = subprocess.Popen(a.command, stdout=logf, stderr=subprocess.STDOUT)
            ready_ms, n = None, 0
            try:
                while time.monotonic() - t0 < a.timeout:
                    if proc.poll() is not None:
                        raise SystemExit(f"{a.command[0]} exited with {proc.returncode} before /readyz answered")
                    n += 1
                    try:
                        with socket.create_connection((HOST, a.admin), timeout=1) as s:
                            s.sendall(probe)
                            head = s.recv(16)
                    except OSError:
                        head = b""
                    if head.startswith(b"HTTP/1.1 200"):
                        ready_ms = (time.monotonic() - t0) * 1000
                        break
                    time.sleep(0.0005)
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if ready_ms is None:
            raise SystemExit(f"/readyz on :{a.admin} not 200 within {a.timeout}s")
        times.append(round(ready_ms, 2))
        polls.append(n)
        time.sleep(0.2)
    log(f"ready after (ms): {times}; polls: {polls}")
    print(json.dumps({"ready_ms": times, "median_ms": median(times), "max_ms": max(times)}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("burst")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--pid", type=int, required=True)
    b.add_argument("--conns", type=int, default=2000)
    b.add_argument("--rounds", type=int, default=5)
    b.add_argument("--hold", type=float, default=20, help="max seconds to wait for all to open")
    b.add_argument("--quiet", type=int, default=5, help="seconds of quiet before the idle and after samples")
    b.add_argument("--settle", type=int, default=20, help="seconds to keep sampling RSS after the bursts")
    b.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("soak")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--admin", type=int, required=True)
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--minutes", type=float, default=10)
    s.add_argument("--sample", type=float, default=10)
    s.add_argument("--clients", type=int, default=16, help="keep-alive clients")
    s.add_argument("--burst-every", type=float, default=60)
    s.add_argument("--burst-conns", type=int, default=2000)
    s.add_argument("--quiet", type=int, default=20, help="seconds of quiet before the end samples")
    s.add_argument("--max-rss-growth", type=float, default=16)
    s.add_argument("--max-retained", type=float, default=32)
    s.add_argument("--max-fd-growth", type=int, default=32)
    s.add_argument("--max-idle-fds", type=int, default=144)
    s.add_argument("--max-errors", type=int, default=0)
    s.add_argument("--seed", type=int, default=1)
    r = sub.add_parser("ready")
    r.add_argument("--admin", type=int, required=True, help="the admin port CMD listens on")
    r.add_argument("--runs", type=int, default=5)
    r.add_argument("--timeout", type=float, default=10)
    r.add_argument("--log", required=True, help="CMD's stdout and stderr, appended")
    r.add_argument("command", nargs="+", help="the sidecar and its arguments (after --)")
    a = p.parse_args()
    if a.cmd == "ready":
        cmd_ready(a)
    else:
        asyncio.run(cmd_burst(a) if a.cmd == "burst" else cmd_soak(a))


if __name__ == "__main__":
    main()
