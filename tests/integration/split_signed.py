#!/usr/bin/env python3
"""Splits a multipart/signed message (RFC 8551 section 3.5) into the part
that was signed, as its signature covers it (the bytes between the
boundaries, with CRLF line ends), and the detached signature (DER), for
tools that read no MIME, such as gpgsm.
Usage: split_signed.py MESSAGE CONTENT_OUT SIGNATURE_OUT"""
import email
import email.policy
import sys

raw = open(sys.argv[1], "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
message = email.message_from_bytes(raw, policy=email.policy.default)
if message.get_content_type() != "multipart/signed":
    sys.exit("not multipart/signed: " + message.get_content_type())
boundary = message.get_boundary().encode()
body = raw[raw.index(b"\r\n\r\n") + 2:]
start = body.index(b"--" + boundary + b"\r\n") + len(boundary) + 4
end = body.index(b"\r\n--" + boundary, start)
with open(sys.argv[2], "wb") as content:
    content.write(body[start:end])
with open(sys.argv[3], "wb") as signature:
    signature.write(message.get_payload()[1].get_payload(decode=True))
