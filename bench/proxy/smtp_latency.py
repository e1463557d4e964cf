#!/usr/bin/env python3
"""Per-message latency through an SMTP server, for proxy_bench.sh.

Sends messages the way smtp-source does (one connection each: greeting,
EHLO, MAIL, RCPT, DATA, the message, QUIT) over SESSIONS sessions at once,
until COUNT messages are done or SECONDS have passed, and times each from
connect() until the reply to its end of data (what a client waits for: the
proxy answers it only once the next hop has the message). Any reply other
than the expected one fails the run.

Usage: smtp_latency.py HOST:PORT [--sessions N] [--count N] [--seconds S]
                       [--size BYTES] [--sender ADDR] [--recipient ADDR]
Prints one line: "SAMPLES P50_MS P99_MS MAX_MS"; exits 1 on a refusal.
"""
import argparse
import math
import socket
import sys
import threading
import time


def message(size, sender, recipient):
    """About SIZE bytes of text, CRLF lines, dot-stuffed, ending in CRLF.CRLF."""
    head = (f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: latency sample\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
    line = "La de da de da, a latency sample for mailkms-proxy's benchmark.\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return (head + body + ".\r\n").encode()


class Client:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def reply(self, want, what):
        while True:
            line = self.file.readline()
            if len(line) < 4 or not line[:3].isdigit():
                raise RuntimeError(f"{what}: no reply ({line!r})")
            if line[3:4] != b"-":
                break
        if not line.startswith(want):
            raise RuntimeError(f"{what}: {line.decode(errors='replace').strip()}")

    def command(self, text, want):
        self.sock.sendall(text.encode() + b"\r\n")
        self.reply(want, text.split(":")[0])

    def close(self):
        self.file.close()
        self.sock.close()


def one_message(args, host, port, data):
    """One message on its own connection; returns its latency in seconds."""
    start = time.perf_counter()
    client = Client(host, port, timeout=120)
    try:
        client.reply(b"220", "greeting")
        client.command("EHLO latency.example", b"250")
        client.command(f"MAIL FROM:<{args.sender}>", b"250")
        client.command(f"RCPT TO:<{args.recipient}>", b"250")
        client.command("DATA", b"354")
        client.sock.sendall(data)
        client.reply(b"250", "end of data")
        took = time.perf_counter() - start
        client.command("QUIT", b"221")
        return took
    finally:
        client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("server")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--sender", default="alice@corp.example")
    parser.add_argument("--recipient", default="bob@corp.example")
    args = parser.parse_args()
    host, _, port = args.server.rpartition(":")
    data = message(args.size, args.sender, args.recipient)
    deadline = time.monotonic() + args.seconds
    lock = threading.Lock()
    taken = [0]
    times, errors = [], []

    def session():
        while not errors and time.monotonic() < deadline:
            with lock:
                if taken[0] >= args.count:
                    return
                taken[0] += 1
            try:
                took = one_message(args, host, int(port), data)
            except (OSError, RuntimeError) as e:
                errors.append(str(e))
                return
            with lock:
                times.append(took)

    threads = [threading.Thread(target=session) for _ in range(args.sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print(f"smtp_latency: {errors[0]}", file=sys.stderr)
        return 1
    if not times:
        print("smtp_latency: no message completed", file=sys.stderr)
        return 1
    times.sort()

    def rank(p):  # nearest rank
        return 1000 * times[max(0, math.ceil(p * len(times)) - 1)]

    print(f"{len(times)} {rank(0.50):.2f} {rank(0.99):.2f} {1000 * times[-1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
