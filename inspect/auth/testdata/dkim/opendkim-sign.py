#!/usr/bin/python3
# Signs a message with libopendkim (OpenDKIM's library, the one
# opendkim-testmsg is built on), choosing what opendkim-testmsg cannot:
# the algorithm and both canonicalizations. Written for moat's tests.
#
#   opendkim-sign.py DOMAIN SELECTOR KEYFILE HDRCANON BODYCANON ALGORITHM < msg > signed
#
# KEYFILE is a PEM private key, RSA or Ed25519. The constants are those
# of OpenDKIM 2.11's dkim.h.
import ctypes
import sys

CANON = {"simple": 0, "relaxed": 1}
ALG = {"rsa-sha1": 0, "rsa-sha256": 1, "ed25519-sha256": 2}

lib = ctypes.CDLL("libopendkim.so.11")
lib.dkim_init.restype = ctypes.c_void_p
lib.dkim_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
lib.dkim_sign.restype = ctypes.c_void_p
lib.dkim_sign.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_char_p,
                          ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_ssize_t, ctypes.POINTER(ctypes.c_int)]
lib.dkim_chunk.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
lib.dkim_eom.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
lib.dkim_getsighdr_d.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
lib.dkim_geterror.restype = ctypes.c_char_p
lib.dkim_geterror.argtypes = [ctypes.c_void_p]
lib.dkim_free.argtypes = [ctypes.c_void_p]
lib.dkim_close.argtypes = [ctypes.c_void_p]

domain, selector, keyfile, hcanon, bcanon, alg = sys.argv[1:7]
key = open(keyfile, "rb").read()
msg = sys.stdin.buffer.read()

handle = lib.dkim_init(None, None)
status = ctypes.c_int(0)
d = lib.dkim_sign(handle, b"moat-test", None, key, selector.encode(), domain.encode(),
                  CANON[hcanon], CANON[bcanon], ALG[alg], -1, ctypes.byref(status))
if not d:
    sys.exit("dkim_sign: status %d" % status.value)
for step, rc in (("chunk", lib.dkim_chunk(d, msg, len(msg))),
                 ("chunk (end)", lib.dkim_chunk(d, None, 0)),
                 ("eom", lib.dkim_eom(d, None))):
    if rc != 0:
        sys.exit("dkim_%s: status %d: %s" % (step, rc, lib.dkim_geterror(d)))
prefix = b"DKIM-Signature: "
buf, n = ctypes.c_char_p(), ctypes.c_size_t()
rc = lib.dkim_getsighdr_d(d, len(prefix), ctypes.byref(buf), ctypes.byref(n))
if rc != 0:
    sys.exit("dkim_getsighdr_d: status %d" % rc)
value = ctypes.string_at(buf, n.value).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
sys.stdout.buffer.write(prefix + value + b"\r\n" + msg)
lib.dkim_free(d)
lib.dkim_close(handle)
