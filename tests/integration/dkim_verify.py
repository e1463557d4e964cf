#!/usr/bin/python3
"""Verifies a message's DKIM signature against a public key record, without
DNS: the record opendkim-genkey wrote (SELECTOR.txt) answers the lookup.
Usage: dkim_verify.py KEY_TXT MESSAGE; exit 0 when the signature verifies.
Debian's python3-dkim lives in the system's Python, hence /usr/bin/python3."""
import re
import sys

import dkim

record_file, message_file = sys.argv[1], sys.argv[2]
record = "".join(re.findall(r'"([^"]*)"', open(record_file).read())).encode()
with open(message_file, "rb") as f:
    message = f.read()
ok = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
print("DKIM signature verifies" if ok else "DKIM signature does not verify")
sys.exit(0 if ok else 1)
