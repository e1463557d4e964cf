#!/usr/bin/env python3
"""Stops the proxy in the middle of its sessions and says what each client
saw. Usage: drain.py PORT PROXY_PID [cut].

Session A is in DATA, half its message sent; session B has greeted and
waits between commands. Then SIGTERM. Prints, each on a line of its own:
  B: the reply B got (or CLOSED)
  C: REFUSED when a new connection is refused, else what it was told
and, unless "cut":
  A: the reply to A's end of data once A sends the rest, then the reply
     that follows it (or CLOSED)
With "cut", A sends nothing more, and prints what it gets when the proxy
gives up on it (or CLOSED)."""
import os
import signal
import socket
import sys

port, proxy_pid = int(sys.argv[1]), int(sys.argv[2])
cut = len(sys.argv) > 3 and sys.argv[3] == "cut"


class Client:
    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.stream = self.sock.makefile("rb")
        self.reply()  # the greeting

    def reply(self):
        """The last line of one reply, or CLOSED."""
        while True:
            line = self.stream.readline()
            if not line:
                return "CLOSED"
            text = line.decode("latin-1").rstrip("\r\n")
            if len(text) < 4 or text[3] == " ":
                return text

    def send(self, data, replies=1):
        self.sock.sendall(data.encode("latin-1"))
        return [self.reply() for _ in range(replies)]


a = Client()
a.send("EHLO a.test\r\n")
a.send("MAIL FROM:<alice@corp.example>\r\nRCPT TO:<partner@plain.example>\r\nDATA\r\n", 3)
a.sock.sendall(b"Subject: drained\r\n\r\nThe first half of the message,\r\n")
b = Client()
b.send("EHLO b.test\r\n")

os.kill(proxy_pid, signal.SIGTERM)
print("B:", b.reply(), flush=True)
try:
    c = Client()
    print("C: accepted", flush=True)
except OSError:
    print("C: REFUSED", flush=True)
if cut:
    print("A:", a.reply(), flush=True)
else:
    a.sock.sendall(b"and the second half.\r\n.\r\n")
    print("A:", a.reply(), flush=True)
    print("A:", a.reply(), flush=True)
