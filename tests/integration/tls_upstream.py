"""TLS peers for the integration tests of issue 3 (test_tls.py).

  make_cert             a self-signed EC P-256 pair for CN=localhost, SAN DNS:localhost and
                        IP:127.0.0.1, made with the openssl CLI (one per test run)
  cert_sha256           a certificate's SHA-256 fingerprint as `openssl x509 -fingerprint
                        -sha256` prints it (upper-case hex with colons)
  TlsUpstream           aiosmtpd in this process. tls=True: STARTTLS required before mail
                        (require_starttls), AUTH required and checked (only USER / PASSWORD),
                        AUTH only inside TLS. tls=False: no STARTTLS offered, no AUTH needed,
                        every command accepted -- so a plaintext fall-back would be recorded.
                        Records each command with whether it arrived inside TLS, and each
                        message with its envelope, raw content, TLS and AUTH state.
  ScriptedTlsUpstream   a raw-socket server that offers STARTTLS and then misbehaves:
                          "close"      220 to STARTTLS, then closes (FIN) instead of a handshake
                          "garbage"    220, waits for the relay's ClientHello, answers with
                                       plaintext garbage, closes
                          "injection"  `220 Ready\\r\\n250-fake\\r\\n250 AUTH LOGIN\\r\\n` in ONE send
                        Logs every byte received, and separately every byte after STARTTLS.
                        A connection that never says STARTTLS is a plain SMTP server that
                        accepts every command and message (a plaintext fall-back lands there).

Everything binds 127.0.0.1; every wait is bounded; stop() ends every thread.
"""

import functools
import logging
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import warnings

from harness import LOOPBACK, ControllerMessages, ScriptedServer, free_port

# aiosmtpd logs every failed handshake with a traceback (the failures are the point of
# several tests), and warns about its own deprecated Session.login_data on each AUTH.
logging.getLogger("mail.log").setLevel(logging.CRITICAL)
warnings.filterwarnings("ignore", message="Session.login_data is deprecated")

USER = "u"
PASSWORD = "p4ssw0rd-XYZ"
OPENSSL = "/usr/bin/openssl"


# ---------------------------------------------------------------- certificates

def make_cert(directory, name, cn="localhost"):
    """Writes NAME.crt / NAME.key (self-signed, EC P-256, 2 days) into directory."""
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=%s" % cn,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-days", "2", "-keyout", key, "-out", cert],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=30)
    return cert, key


def make_ca_signed_cert(directory, name, cn="localhost"):
    """Writes NAME-ca.crt (a CA of its own) and NAME.crt / NAME.key, a leaf that CA signed (not
    self-signed, as a real deployment's certificate is); returns (cert, key, ca)."""
    ca_cert, ca_key = make_cert(directory, name + "-ca", cn="mailtap test CA")
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    csr = os.path.join(directory, name + ".csr")
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for argv in ([OPENSSL, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-subj", "/CN=%s" % cn, "-keyout", key, "-out", csr],
                 [OPENSSL, "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
                  "-days", "2", "-extfile", ext, "-out", cert]):
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=30)
    return cert, key, ca_cert


def cert_sha256(cert_path=None, pem=None):
    """`openssl x509 -noout -fingerprint -sha256`: 'AB:CD:...' (the part after '=')."""
    argv = [OPENSSL, "x509", "-noout", "-fingerprint", "-sha256"]
    if cert_path:
        argv += ["-in", cert_path]
    r = subprocess.run(argv, input=pem, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30, check=True)
    line = r.stdout.decode().strip()
    m = re.match(r"^(?:sha256|SHA256) Fingerprint=([0-9A-Fa-f:]+)$", line)
    if not m:
        raise AssertionError("unexpected openssl fingerprint output %r" % line)
    return m.group(1).upper()


def server_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


# ---------------------------------------------------------------- aiosmtpd upstream

class TlsUpstream(ControllerMessages):
    """aiosmtpd Controller (see the module docstring). `commands` is a list of
    (VERB, argument, inside_tls) in arrival order -- AUTH arguments cut to the mechanism, so
    nothing here holds a secret; `messages` a list of dicts; `auth_attempts` a list of
    (mechanism-less) (login, accepted) pairs."""

    label = "TLS upstream"

    def __init__(self, cert=None, key=None, tls=True, user=USER, password=PASSWORD, starttls_needs_ehlo=False):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

        self.lock = threading.Lock()
        self.commands = []
        self.messages = []
        self.auth_attempts = []
        up = self

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (isinstance(auth_data, LoginPassword) and auth_data.login == user.encode()
                  and auth_data.password == password.encode())
            with up.lock:
                up.auth_attempts.append((mechanism, getattr(auth_data, "login", None), ok))
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        class RecordingSMTP(SMTP):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                for verb, method in list(self._smtp_methods.items()):
                    self._smtp_methods[verb] = self._recording(verb, method)

            def _recording(self, verb, method):
                @functools.wraps(method)
                async def wrapper(arg):
                    shown = arg
                    if verb == "AUTH" and arg:
                        shown = arg.split(" ", 1)[0]     # the mechanism only
                    with up.lock:
                        up.commands.append((verb, shown, self._tls_protocol is not None))
                    if verb == "STARTTLS" and starttls_needs_ehlo and not self.session.extended_smtp:
                        # As Exim does: STARTTLS is announced in the EHLO reply, none was given.
                        return await self.push("503 5.5.1 STARTTLS command used when not advertised")
                    return await method(arg)
                return wrapper

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with up.lock:
                    up.messages.append({
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": list(envelope.rcpt_tos),
                        "data": bytes(envelope.original_content),
                        "tls": session.ssl is not None,
                        "authenticated": bool(session.authenticated),
                        "login": getattr(session.auth_data, "login", None),
                    })
                    n = len(up.messages)
                return "250 2.0.0 Ok: queued as TLSUP%04d" % n

        kwargs = dict(hostname=LOOPBACK, decode_data=False, enable_SMTPUTF8=True, ready_timeout=10)
        if tls:
            kwargs.update(tls_context=server_context(cert, key), require_starttls=True,
                          auth_required=True, auth_require_tls=True, authenticator=authenticator)

        class RecordingController(Controller):
            def factory(self):
                return RecordingSMTP(self.handler, **self.SMTP_kwargs)

        last = None
        for _ in range(5):
            self.port = free_port()
            self.controller = RecordingController(Handler(), port=self.port, **kwargs)
            try:
                self.controller.start()
                break
            except Exception as e:   # port taken in between: try another
                last = e
        else:
            raise AssertionError("aiosmtpd TLS upstream did not start: %r" % last)
        # Controller.start() connected once to check the server is up: forget that session.
        with self.lock:
            self.commands.clear()

    def all_commands(self):
        with self.lock:
            return list(self.commands)

    def verbs(self):
        return [c[0] for c in self.all_commands()]



# ---------------------------------------------------------------- scripted misbehaving upstream

INJECTED_220 = b"220 Ready\r\n250-fake\r\n250 AUTH LOGIN\r\n"


class ScriptedTlsConnection:
    def __init__(self, sock):
        self.sock = sock
        self.raw = bytearray()              # every byte received
        self.after_starttls = bytearray()   # every byte received after the STARTTLS line
        self.commands = []                  # command lines before STARTTLS (bytes, no CRLF)
        self.messages = []                  # message bodies received in plaintext (still dot-stuffed)
        self.starttls_seen = threading.Event()
        self.closed = threading.Event()


class ScriptedTlsUpstream(ScriptedServer):
    """Offers STARTTLS, then misbehaves as `behaviour` says (module docstring)."""

    def __init__(self, behaviour):
        assert behaviour in ("close", "garbage", "injection"), behaviour
        self.behaviour = behaviour
        super().__init__(ScriptedTlsConnection, backlog=16, join_timeout=15)

    def _recv(self, conn, deadline):
        """One chunk (b"" on EOF/error/deadline/stop); None if nothing arrived yet."""
        if self.stopping.is_set() or time.monotonic() >= deadline:
            return b""
        try:
            chunk = conn.sock.recv(65536)
        except socket.timeout:
            return None
        except OSError:
            return b""
        conn.raw += chunk
        if conn.starttls_seen.is_set():
            conn.after_starttls += chunk
        return chunk

    def _drain(self, conn, seconds, until_first=False):
        """Records what arrives for up to `seconds` (or until EOF; or until the first chunk)."""
        deadline = time.monotonic() + seconds
        while True:
            chunk = self._recv(conn, deadline)
            if chunk is None:
                continue
            if not chunk:
                return False
            if until_first:
                return True

    def _serve(self, conn):
        sock = conn.sock
        sock.settimeout(0.2)
        try:
            sock.sendall(b"220 scripted-tls.test ESMTP\r\n")
            buf = b""
            deadline = time.monotonic() + 120
            while True:
                chunk = self._recv(conn, deadline)
                if chunk is None:
                    continue
                if not chunk:
                    return
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    conn.commands.append(line)
                    verb = line.split(b" ", 1)[0].upper()
                    if verb == b"EHLO":
                        sock.sendall(b"250-scripted-tls.test\r\n250-PIPELINING\r\n"
                                     b"250-STARTTLS\r\n250 8BITMIME\r\n")
                    elif verb == b"STARTTLS":
                        conn.starttls_seen.set()
                        if buf:                      # the relay pipelined after STARTTLS
                            conn.after_starttls += buf
                        self._misbehave(conn)
                        return
                    elif verb == b"QUIT":
                        sock.sendall(b"221 2.0.0 Bye\r\n")
                        return
                    elif verb == b"DATA":
                        sock.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        while b"\r\n.\r\n" not in b"\r\n" + buf:
                            chunk = self._recv(conn, deadline)
                            if chunk is None:
                                continue
                            if not chunk:
                                return
                            buf += chunk
                        body, buf = (b"\r\n" + buf).split(b"\r\n.\r\n", 1)
                        conn.messages.append(body[2:] + b"\r\n" if body else b"")
                        sock.sendall(b"250 2.0.0 Ok: queued on a plaintext connection\r\n")
                    else:
                        sock.sendall(b"250 2.0.0 Ok\r\n")
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            conn.closed.set()

    def _misbehave(self, conn):
        sock = conn.sock
        if self.behaviour == "injection":
            sock.sendall(INJECTED_220)                       # one send, one segment
            self._drain(conn, 10)
        elif self.behaviour == "close":
            sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
            try:
                sock.shutdown(socket.SHUT_WR)                # EOF instead of a handshake
            except OSError:
                pass
            self._drain(conn, 10)
        else:   # garbage
            sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
            if self._drain(conn, 10, until_first=True):      # the relay's ClientHello
                sock.sendall(b"this is not a TLS handshake at all\r\n" * 4)
            self._drain(conn, 3)

