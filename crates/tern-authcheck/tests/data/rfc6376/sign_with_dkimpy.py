#!/usr/bin/env python3
"""Regenerates the dkimpy-signed vectors of this directory (see README.md).

Run from this directory: python3 sign_with_dkimpy.py. Needs dkimpy (python3-dkim).
The signing time is pinned so the output is the same at every run (RSA PKCS#1 v1.5
signatures are deterministic).
"""
import dkim

T = 1057982514  # Fri, 11 Jul 2003 21:01:54 -0700, the Received time of RFC 6376 A.2
dkim.time.time = lambda: T

KEY = open("rfc6376-appendix-c-private.pem", "rb").read()
A2 = open("rfc6376-a2-errata-4926.eml", "rb").read()
# What the A.2 signer signed: the A.1 message with the submission server's Received field.
UNSIGNED = A2[A2.index(b"Received: "):]


def sign(message, canon, headers):
    d = dkim.DKIM(message)
    # dkimpy refuses Received by default (RFC 6376 §5.4.1 advises against it); the
    # RFC's own example signs it, so this does too.
    d.should_not_sign.discard(b"received")
    sig = d.sign(
        b"brisbane",
        b"example.com",
        KEY,
        identity=b"joe@football.example.com",
        canonicalize=canon,
        include_headers=headers,
    )
    return sig + message


# The A.2 tag set: rsa-sha256, simple/simple, the same six fields.
A2_FIELDS = [b"received", b"from", b"to", b"subject", b"date", b"message-id"]
open("dkimpy-a2-tags.eml", "wb").write(sign(UNSIGNED, (b"simple", b"simple"), A2_FIELDS))

# RFC 6376 section 3.4.5's example with a From field (signers must sign From) and
# "B:" written without the space before its colon (dkimpy refuses that obsolete
# syntax), under each of the four c= combinations.
EXAMPLE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"A: X\r\n"
    b"B: Y\t\r\n"
    b"\tZ  \r\n"
    b"\r\n"
    b" C \r\n"
    b"D \t E\r\n"
    b"\r\n"
    b"\r\n"
)
for h in (b"simple", b"relaxed"):
    for b in (b"simple", b"relaxed"):
        name = "dkimpy-3.4.5-%s-%s.eml" % (h.decode(), b.decode())
        open(name, "wb").write(sign(EXAMPLE, (h, b), [b"from", b"a", b"b"]))
