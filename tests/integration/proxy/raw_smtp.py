#!/usr/bin/env python3
"""A raw SMTP client for the proxy's protocol tests: what bash and swaks
cannot send (pipelined batches, bare LF, huge lines, a client that leaves
mid-DATA). Usage: raw_smtp.py PORT < steps.json, where steps is a list of
[bytes to send (latin-1 text), number of replies to wait for]; a negative
count closes the connection after sending. Prints every reply line it
read, then "CLOSED" if the server closed the connection."""
import json
import socket
import sys

port = int(sys.argv[1])
steps = json.load(sys.stdin)
sock = socket.create_connection(("127.0.0.1", port), timeout=30)
stream = sock.makefile("rb")


def read_reply():
    """One reply (every line of it); False when the server has closed."""
    while True:
        line = stream.readline()
        if not line:
            return False
        text = line.decode("latin-1").rstrip("\r\n")
        print(text, flush=True)
        if len(text) < 4 or text[3] == " ":
            return True


if not read_reply():  # the greeting
    print("CLOSED")
    sys.exit(0)
for data, replies in steps:
    try:
        sock.sendall(data.encode("latin-1"))
    except OSError:
        print("CLOSED")
        sys.exit(0)
    if replies < 0:
        sock.close()
        sys.exit(0)
    for _ in range(replies):
        if not read_reply():
            print("CLOSED")
            sys.exit(0)
