#!/usr/bin/env python3
"""A next hop that misbehaves on purpose, for the proxy's tests: smtp-sink
cannot refuse a message with 5xx, drop the connection mid-DATA or offer
STARTTLS.
Usage: next_hop.py PORT MODE, MODE one of
  reset      : answers up to DATA's 354, then closes after the first bytes of the message
  refuse     : reads the whole message, then answers 554 5.7.1 with its own text
  rcpt       : refuses every recipient with 550 5.1.1
  rcpt-plain : refuses only recipients at plain.example with 550 5.1.1
  once       : takes one message a connection, then closes it unasked
  tls        : offers STARTTLS (certificate and key in the PEM files named by
               HOP_CERT and HOP_KEY) and takes the message with 250
  tls-inject : the same, but sends a forged "250" in the clear right behind
               its 220 to STARTTLS, as an attacker on the path would
Prints "listening" once it listens, then each command it is sent, after
"TLS" or "CLEAR" (how it came), the message's lines after "DATA| ",
"CONNECT" for each connection, and "TAKEN" when it took a message or
"ABANDONED" when the client left before the end of data; serves each
connection in its own thread."""
import os
import socket
import ssl
import sys
import threading

port, mode = int(sys.argv[1]), sys.argv[2]
tls_context = None
if mode.startswith("tls"):
    tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_context.load_cert_chain(os.environ["HOP_CERT"], os.environ["HOP_KEY"])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(5)
print("listening", flush=True)


def serve(conn):
    stream = conn.makefile("rb")
    secure = False
    conn.sendall(b"220 hop.test ESMTP\r\n")
    while True:
        line = stream.readline()
        if not line:
            return
        print("TLS" if secure else "CLEAR", line.decode(errors="replace").rstrip(), flush=True)
        verb = line[:4].upper()
        if verb == b"EHLO":
            offer = b"250-STARTTLS\r\n" if tls_context and not secure else b""
            conn.sendall(b"250-hop.test\r\n" + offer + b"250 8BITMIME\r\n")
        elif verb == b"STAR" and tls_context and not secure:
            forged = b"250 2.0.0 forged in the clear\r\n" if mode == "tls-inject" else b""
            conn.sendall(b"220 2.0.0 Ready to start TLS\r\n" + forged)
            conn = tls_context.wrap_socket(conn, server_side=True)
            stream = conn.makefile("rb")
            secure = True
        elif verb == b"RCPT" and (mode == "rcpt" or (mode == "rcpt-plain" and b"@plain.example>" in line)):
            conn.sendall(b"550 5.1.1 <nobody>: no such user here\r\n")
        elif verb == b"DATA":
            conn.sendall(b"354 go ahead\r\n")
            if mode == "reset":
                stream.readline()
                return
            while (data := stream.readline()) not in (b".\r\n", b""):
                print("DATA|", data.decode(errors="replace").rstrip(), flush=True)
            if not data:
                print("ABANDONED", flush=True)
                return
            if mode == "refuse":
                conn.sendall(b"554 5.7.1 hop.test does not want this message\r\n")
            else:
                print("TAKEN", flush=True)
                conn.sendall(b"250 2.0.0 Ok: taken by hop.test\r\n")
                if mode == "once":
                    return
        elif verb == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            return
        else:
            conn.sendall(b"250 ok\r\n")


def handle(conn):
    print("CONNECT", flush=True)
    try:
        serve(conn)
    except (OSError, ssl.SSLError) as error:
        print("ERROR", error, flush=True)
    conn.close()


while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
