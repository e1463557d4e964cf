#!/usr/bin/env python3
"""A raw SMTP client for the proxy's protocol tests: what bash and swaks
cannot send (pipelined batches, bare LF, huge lines, a client that leaves
mid-DATA, data pipelined behind STARTTLS). Usage: raw_smtp.py PORT <
steps.json, where steps is a list of [bytes to send (latin-1 text), number
of replies to wait for]; a negative count closes the connection after
sending. The step ["@tls", 0] starts TLS on the connection, checking the
server's certificate against the file RAW_SMTP_CA names and its name
against RAW_SMTP_SERVER_NAME, and prints "TLS VERSION". Prints every reply
line it read, then "CLOSED" if the server closed the connection."""
import json
import os
import socket
import ssl
import sys

port = int(sys.argv[1])
steps = json.load(sys.stdin)
sock = socket.create_connection(("127.0.0.1", port), timeout=30)
stream = sock.makefile("rb")


def start_tls():
    """The TLS handshake, on the connection the server just said 220 on."""
    global sock, stream
    context = ssl.create_default_context(cafile=os.environ["RAW_SMTP_CA"])
    stream.close()  # a buffered reader would keep bytes that came in the clear
    sock = context.wrap_socket(sock, server_hostname=os.environ["RAW_SMTP_SERVER_NAME"])
    stream = sock.makefile("rb")
    print("TLS " + sock.version(), flush=True)


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
    if data == "@tls":
        try:
            start_tls()
        except (OSError, ssl.SSLError) as e:
            print("TLS FAILED " + str(e))
            sys.exit(0)
        continue
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
