#!/usr/bin/env python3
"""A next hop that misbehaves on purpose, for the proxy's tests: smtp-sink
cannot refuse a message with 5xx or drop the connection mid-DATA.
Usage: next_hop.py PORT MODE, MODE one of
  reset   : answers up to DATA's 354, then closes after the first bytes of the message
  refuse  : reads the whole message, then answers 554 5.7.1 with its own text
  rcpt    : refuses every recipient with 550 5.1.1
Prints "listening" once it listens; serves connections one at a time."""
import socket
import sys

port, mode = int(sys.argv[1]), sys.argv[2]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(5)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    stream = conn.makefile("rb")
    conn.sendall(b"220 hop.test ESMTP\r\n")
    try:
        while True:
            line = stream.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"EHLO":
                conn.sendall(b"250-hop.test\r\n250 8BITMIME\r\n")
            elif verb == b"RCPT" and mode == "rcpt":
                conn.sendall(b"550 5.1.1 <nobody>: no such user here\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go ahead\r\n")
                if mode == "reset":
                    stream.readline()
                    break
                while stream.readline() not in (b".\r\n", b""):
                    pass
                conn.sendall(b"554 5.7.1 hop.test does not want this message\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                break
            else:
                conn.sendall(b"250 ok\r\n")
    except OSError:
        pass
    conn.close()
