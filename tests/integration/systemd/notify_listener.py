#!/usr/bin/env python3
"""Plays systemd's side of sd_notify(3) for a test: binds NOTIFY_SOCKET (a
datagram socket) and writes each message it gets to LOG, one per line with
newlines inside shown as "|". When a message says READY=1 it first tries
PROBE (unix:PATH or tcp:HOST:PORT) and adds "probe ok" or "probe failed:
WHY": a daemon must serve by the time it says it is ready.
Usage: notify_listener.py SOCKET LOG [PROBE]   (runs until killed)"""
import os
import socket
import sys

path, log = sys.argv[1], sys.argv[2]
probe = sys.argv[3] if len(sys.argv) > 3 else None


def try_probe():
    kind, _, where = probe.partition(":")
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = where
    else:
        host, _, port = where.rpartition(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    s.settimeout(2)
    try:
        s.connect(target)
        return "probe ok"
    except OSError as e:
        return "probe failed: %s" % e
    finally:
        s.close()


if os.path.exists(path):
    os.unlink(path)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
listener.bind(path)
os.chmod(path, 0o666)
with open(log, "a", buffering=1) as out:
    while True:
        message = listener.recv(4096).decode(errors="replace").strip()
        line = message.replace("\n", "|")
        if probe and "READY=1" in message.split("\n"):
            line += " " + try_probe()
        out.write(line + "\n")
