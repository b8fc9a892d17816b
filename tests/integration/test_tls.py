"""TLS on both legs, AUTH passed through and redacted (issue 3, "Tests that prove it" and
"Done when").

Peers: swaks (--tls, --tlsc, --auth PLAIN/LOGIN), openssl s_client, raw-socket probes, an
aiosmtpd upstream that requires STARTTLS and checks credentials, and scripted upstreams that
misbehave after STARTTLS (tls_upstream.py). Certificates are made per test run with the
openssl CLI; every mailtap runs with XDG_STATE_HOME in its work directory, so its generated
self-signed pair never touches the real home.

Assertions are on what the client saw (replies, certificates), what the upstream received
(commands and whether they arrived inside TLS, raw bytes after STARTTLS), and on captures
(`mailtap show --json` events, stages, end reason; every file of the capture directory).
"""

import base64
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (IntegrationTest, LOOPBACK, free_port, parse_replies, record_bytes,
                     run_mailtap, show_json, wait_until)
from test_export import tshark_smtp
from tls_upstream import (OPENSSL, PASSWORD, USER, ScriptedTlsUpstream, TlsUpstream,
                          cert_sha256, make_ca_signed_cert, make_cert)

CERTS = {}   # name -> (cert, key, sha256); made once per run in setUpModule
_CERT_DIR = None

FROM = "sender@example.test"
TO = "rcpt@example.test"
PLAIN_B64 = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
PASSWORD_B64 = base64.b64encode(PASSWORD.encode())


def setUpModule():
    global _CERT_DIR
    _CERT_DIR = tempfile.mkdtemp(prefix="mailtap-it-tls-certs-")
    for name in ("upstream", "untrusted", "configured"):
        cert, key = make_cert(_CERT_DIR, name)
        CERTS[name] = (cert, key, cert_sha256(cert))


def tearDownModule():
    if _CERT_DIR:
        shutil.rmtree(_CERT_DIR, True)


def unverified_context():
    """A client context that takes the relay's own certificate, which is not what is tested."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def events_of(shown, kind, leg=None):
    return [e for e in shown["events"] if e["kind"] == kind and (leg is None or e["leg"] == leg)]


def index_of(shown, predicate, what):
    for i, e in enumerate(shown["events"]):
        if predicate(e):
            return i
    raise AssertionError("no event for %s in %s" % (what, json.dumps(shown["events"])[:3000]))


def secret_needles(password=PASSWORD, user=USER):
    """The secret as it could leak: plain, base64 alone, base64 of a PLAIN response."""
    pw = password.encode()
    return [pw, base64.b64encode(pw), base64.b64encode(b"\0" + user.encode() + b"\0" + pw)]


class TlsTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.state_home = os.path.join(self.workdir, "state")
        os.makedirs(self.state_home)
        self.env = dict(os.environ, XDG_STATE_HOME=self.state_home)

    # -- peers
    def start_tls_mailtap(self, upstream="builtin", args=(), **kw):
        return self.start_mailtap(upstream=upstream, args=list(args), env=self.env, **kw)

    def relay_to(self, up, args=(), ca="upstream", **kw):
        """mailtap relaying to `up` (anything with a .port), verifying against CERTS[ca]."""
        return self.start_tls_mailtap("%s:%d" % (LOOPBACK, up.port),
                                      ["--upstream-ca", CERTS[ca][0], *args], **kw)

    def start_tls_upstream(self, cert="upstream", tls=True, **kw):
        up = TlsUpstream(CERTS[cert][0], CERTS[cert][1], tls=tls, **kw)
        self.addCleanup(up.stop)
        return up

    def start_scripted_tls(self, behaviour):
        s = ScriptedTlsUpstream(behaviour)
        self.addCleanup(s.stop)
        return s

    def swaks_mail(self, port, *args, expect_ok=True):
        rc, out = self.swaks(port, "--from", FROM, "--to", TO, *args)
        if expect_ok:
            self.assertEqual(rc, 0, out[-3000:])
            # The reply to the final '.' (inside TLS: "~>" / "<~") is a 250.
            after_dot = re.search(r"^ [~-]> \.\n<[~-]  (\d{3})", out, re.M)
            self.assertIsNotNone(after_dot, out[-3000:])
            self.assertEqual(after_dot.group(1), "250", out[-3000:])
        return rc, out

    def s_client(self, port, *extra, starttls=True):
        """openssl s_client against the relay; returns (exit code, stdout text)."""
        argv = [OPENSSL, "s_client", "-connect", "%s:%d" % (LOOPBACK, port), "-showcerts", "-crlf",
                *(["-starttls", "smtp"] if starttls else []), *extra]
        r = subprocess.run(argv, input=b"QUIT\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        return r.returncode, r.stdout.decode("utf-8", "replace")

    def served_fingerprint(self, port, starttls=True):
        rc, out = self.s_client(port, starttls=starttls)
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
        self.assertIsNotNone(m, "s_client saw no certificate (exit %d): %s" % (rc, out[-2000:]))
        return cert_sha256(pem=m.group(0).encode())

    # -- assertions
    def assertNoSecretsInCaptures(self, directory, needles):
        """No needle in any file under `directory` (raw bytes), nor in the decoded bytes of
        any capture's bytes record, nor in `mailtap show` (text and JSON) of any capture."""
        files = []
        for root, _, names in os.walk(directory):
            files += [os.path.join(root, n) for n in names]
        self.assertTrue(files, "no files in %s" % directory)
        for path in files:
            with open(path, "rb") as f:
                raw = f.read()
            views = [("raw bytes", raw)]
            for line in raw.splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("type") == "bytes":
                    views.append(("the bytes of a bytes record", record_bytes(record)))
            if path.endswith(".jsonl"):
                for argv in (["show", path], ["show", path, "--json"]):
                    r = run_mailtap(argv)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    views.append(("mailtap " + " ".join(argv[:1] + argv[2:]), r.stdout))
            for what, data in views:
                for needle in needles:
                    self.assertNotIn(needle, data, "%r found in %s of %s" % (needle, what, path))

    def assertUpstreamTlsEvent(self, shown, cert="upstream", verified=True, insecure=False):
        ups = events_of(shown, "tls", "upstream")
        self.assertEqual(len(ups), 1, ups)
        u = ups[0]
        self.assertIn(u["version"], ("TLSv1.2", "TLSv1.3"), u)
        self.assertTrue(u["cipher"], u)
        self.assertIn("localhost", u["peer_subject"], u)
        self.assertEqual(u["peer_sha256"].upper(), CERTS[cert][2], u)
        self.assertIs(u["verified"], verified, u)
        self.assertIs(u["insecure"], insecure, u)
        if verified:
            self.assertEqual(u["verification"], "verified", u)
        return u

    def assertClientTlsEvent(self, shown):
        cl = events_of(shown, "tls", "client")
        self.assertEqual(len(cl), 1, cl)
        self.assertIn(cl[0]["version"], ("TLSv1.2", "TLSv1.3"), cl[0])
        self.assertTrue(cl[0]["cipher"], cl[0])
        return cl[0]

    def assertNothingPlainAfterStarttls(self, after):
        """What the relay sent an upstream after its STARTTLS: nothing, or TLS records only."""
        after = bytes(after)
        if after:
            self.assertEqual(after[:1], b"\x16", "not a TLS handshake record: %r" % after[:80])
        for word in (b"EHLO", b"HELO", b"AUTH", b"MAIL FROM", b"RCPT TO", b"DATA", b"QUIT"):
            self.assertNotIn(word, after, "plaintext %r after STARTTLS: %r" % (word, after[:200]))

    # ------------------------------------------------------------ swaks, STARTTLS, AUTH

    def starttls_auth_through_relay(self, mechanism):
        up = self.start_tls_upstream()
        mailtap = self.relay_to(up)
        self.swaks_mail(mailtap.port, "--tls", "--auth", mechanism, "--auth-user", USER,
                        "--auth-password", PASSWORD)

        # The upstream got the message inside TLS, authenticated as USER.
        msgs = up.wait_for(1)
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertEqual((m["mail_from"], m["rcpt_tos"]), (FROM, [TO]))
        self.assertTrue(m["tls"], "message reached the upstream outside TLS")
        self.assertTrue(m["authenticated"])
        self.assertEqual(m["login"], USER.encode())
        self.assertEqual(up.auth_attempts, [(mechanism, USER.encode(), True)])
        cmds = up.all_commands()
        self.assertIn(("AUTH", mechanism, True), cmds)
        plain = [c for c in cmds if not c[2]]
        self.assertEqual([c[0] for c in plain], ["EHLO", "STARTTLS"], cmds)

        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(shown["outcome"], "delivered")
        self.assertEqual(shown["end_reason"], "client_quit")
        cl = self.assertClientTlsEvent(shown)
        u = self.assertUpstreamTlsEvent(shown)
        # The SMTP inside TLS is recorded as plaintext events, after both handshakes.
        i_mail = index_of(shown, lambda e: e["kind"] == "command" and e["text"].startswith("MAIL FROM:"),
                          "the MAIL FROM command")
        self.assertEqual(shown["events"][i_mail]["text"], "MAIL FROM:<%s>" % FROM)
        self.assertGreater(i_mail, shown["events"].index(cl))
        self.assertGreater(i_mail, shown["events"].index(u))
        self.assertTrue(any(e["kind"] == "bytes" and e["leg"] == "upstream" and e["dir"] == "out"
                            and e["text"].startswith("MAIL FROM:<%s>" % FROM) for e in shown["events"]))
        self.assertIn("tls", [s["name"] for s in shown["stages"]])
        # The mechanism and the result are kept, the secret is not.
        auth = [e["text"] for e in events_of(shown, "command") if e["text"].upper().startswith("AUTH")]
        self.assertEqual(len(auth), 1, auth)
        self.assertTrue(auth[0].startswith("AUTH " + mechanism), auth)
        self.assertIn(235, [e["code"] for e in events_of(shown, "reply", "upstream")])
        self.assertNoSecretsInCaptures(mailtap.captures, secret_needles())
        # A secret-leak check (not an assertion on log wording): the log never holds it either.
        for needle in secret_needles():
            self.assertNotIn(needle.decode(), mailtap.stderr_text())

    def test_swaks_starttls_auth_plain(self):
        self.starttls_auth_through_relay("PLAIN")

    def test_swaks_starttls_auth_login(self):
        self.starttls_auth_through_relay("LOGIN")

    def test_swaks_implicit_tls_mirror_secures_upstream_first(self):
        up = self.start_tls_upstream()
        mailtap = self.relay_to(up, ["--listen-tls", "%s:0" % LOOPBACK])
        self.assertIsNotNone(mailtap.tls_port)
        self.swaks_mail(mailtap.tls_port, "--tlsc", "--auth", "PLAIN", "--auth-user", USER,
                        "--auth-password", PASSWORD)
        msgs = up.wait_for(1)
        self.assertTrue(msgs[0]["tls"] and msgs[0]["authenticated"], msgs[0])

        # The upstream: the relay's own EHLO and STARTTLS in plaintext, then the client's
        # EHLO -- only ever inside TLS.
        cmds = up.all_commands()
        self.assertGreaterEqual(len(cmds), 3, cmds)
        self.assertEqual([c[0] for c in cmds[:3]], ["EHLO", "STARTTLS", "EHLO"], cmds)
        self.assertNotEqual(cmds[0][1], "swaks.test", "the client's EHLO went upstream in plaintext")
        self.assertEqual([c[2] for c in cmds[:3]], [False, False, True], cmds)
        self.assertEqual(cmds[2][1], "swaks.test")
        self.assertEqual([c for c in cmds if not c[2]], cmds[:2])

        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(shown["outcome"], "delivered")
        cl = self.assertClientTlsEvent(shown)
        u = self.assertUpstreamTlsEvent(shown)
        ev = shown["events"]
        i_client_ehlo = index_of(shown, lambda e: e["kind"] == "command" and e["text"] == "EHLO swaks.test",
                                 "the client's EHLO")
        i_up_starttls = index_of(shown, lambda e: e["kind"] == "bytes" and e["leg"] == "upstream"
                                 and e["dir"] == "out" and e["text"] == "STARTTLS\\r\\n",
                                 "the relay's STARTTLS upstream")
        i_up_ehlo = index_of(shown, lambda e: e["kind"] == "bytes" and e["leg"] == "upstream"
                             and e["dir"] == "out" and e["text"].startswith("EHLO "), "the relay's EHLO")
        self.assertNotIn("swaks.test", ev[i_up_ehlo]["text"])
        self.assertLess(ev.index(cl), i_client_ehlo)
        self.assertLess(i_up_ehlo, i_up_starttls)
        self.assertLess(i_up_starttls, ev.index(u))
        self.assertLess(ev.index(u), i_client_ehlo)
        # The client's EHLO is forwarded upstream only after the upstream handshake.
        i_fwd = index_of(shown, lambda e: e["kind"] == "bytes" and e["leg"] == "upstream"
                         and e["dir"] == "out" and e["text"] == "EHLO swaks.test\\r\\n",
                         "the client's EHLO forwarded upstream")
        self.assertGreater(i_fwd, ev.index(u))
        self.assertNoSecretsInCaptures(mailtap.captures, secret_needles())

    # ------------------------------------------------------------ certificates

    def test_s_client_sees_generated_certificate(self):
        mailtap = self.start_tls_mailtap(args=["--listen-tls", "%s:0" % LOOPBACK])
        state = os.path.join(self.state_home, "mailtap")
        crt = os.path.join(state, "mailtap-selfsigned.crt")
        key = os.path.join(state, "mailtap-selfsigned.key")
        for path in (crt, key):
            self.assertTrue(os.path.isfile(path), path)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600, path)
        expected = cert_sha256(crt)
        self.assertEqual(self.served_fingerprint(mailtap.port), expected)
        self.assertEqual(self.served_fingerprint(mailtap.tls_port, starttls=False), expected)

    def test_s_client_sees_configured_certificate(self):
        cert, key, fp = CERTS["configured"]
        mailtap = self.start_tls_mailtap(args=["--tls-cert", cert, "--tls-key", key,
                                               "--listen-tls", "%s:0" % LOOPBACK])
        self.assertEqual(self.served_fingerprint(mailtap.port), fp)
        self.assertEqual(self.served_fingerprint(mailtap.tls_port, starttls=False), fp)

    def test_a_ca_signed_certificate_works_with_the_built_in_sink(self):
        # A newcomer's trial: with its own certificate (signed by a CA, not self-signed) every
        # STARTTLS got 454 "unable to get local issuer certificate" and every SMTPS session 421:
        # the relay's leg to the built-in sink trusted the certificate but not its issuer.
        cert, key, _ = make_ca_signed_cert(self.workdir, "signed")
        mailtap = self.start_tls_mailtap(args=["--tls-cert", cert, "--tls-key", key, "--listen-tls", "%s:0" % LOOPBACK])
        self.swaks_mail(mailtap.port, "--tls")
        self.swaks_mail(mailtap.tls_port, "--tls-on-connect")

    def test_tls_below_1_2_is_refused(self):
        mailtap = self.start_tls_mailtap()
        # SECLEVEL=0 so that it is the relay, not this client, that refuses TLS 1.1.
        rc, out = self.s_client(mailtap.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        self.assertNotEqual(rc, 0, out[-2000:])
        self.assertNotIn("BEGIN CERTIFICATE", out)
        # ... while TLS 1.2 works.
        rc, out = self.s_client(mailtap.port, "-tls1_2")
        self.assertIn("BEGIN CERTIFICATE", out, out[-2000:])

    def test_a_client_that_refuses_the_relays_certificate_is_diagnosed(self):
        """The client checks the relay's certificate (here the generated, self-signed one) and
        gives up: diagnose names the failed handshake, the client's side, and whose
        certificate it was."""
        mailtap = self.start_tls_mailtap()
        rc, out = self.s_client(mailtap.port, "-verify_return_error")
        self.assertNotEqual(rc, 0, out[-2000:])
        cap = self.single_capture(mailtap)
        self.assertEqual(cap.end["reason"], "client_tls_failed", cap.end)
        r = run_mailtap(["diagnose", cap.path, "--json"], timeout=60)
        doc = json.loads(r.stdout)
        found = [f for f in doc["findings"] if f["id"] == "client_tls_failed"]
        self.assertEqual(len(found), 1, doc["findings"])
        self.assertEqual((found[0]["severity"], found[0]["source"]), ("error", "client"), found[0])
        self.assertIn("relay's certificate", found[0]["explanation"])

    def test_a_refused_renegotiation_is_named_in_the_capture(self):
        """The relay refuses TLS renegotiation (a no_renegotiation alert): a client that asks
        for it (openssl s_client's R, TLS 1.2) fails, and the capture says why, before the
        loss of the client."""
        mailtap = self.start_tls_mailtap()
        p = subprocess.Popen([OPENSSL, "s_client", "-connect", "%s:%d" % (LOOPBACK, mailtap.port), "-tls1_2",
                              "-starttls", "smtp", "-crlf"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        try:
            p.stdin.write(b"EHLO client.test\n")
            p.stdin.flush()
            time.sleep(0.5)
            p.stdin.write(b"R\n")   # s_client: renegotiate
            p.stdin.flush()
            out, _ = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertIn(b"RENEGOTIATING", out, out[-2000:])
        cap = self.single_capture(mailtap)
        asked = [n for n in cap.notes if "asked to renegotiate TLS" in n]
        self.assertEqual(asked, ["the client asked to renegotiate TLS; the relay refuses renegotiation "
                                 "(no_renegotiation alert)"], cap.notes)
        self.assertEqual(cap.end["reason"], "client_closed", cap.end)
        [f] = [f for f in self.diagnosis(cap.path)["findings"] if f["id"] == "tls_renegotiation_refused"]
        self.assertEqual((f["source"], f["severity"]), ("client", "error"), f)

    def test_an_upstream_that_asks_to_renegotiate_is_refused_and_diagnosed(self):
        """The upstream leg refuses renegotiation as the client's does: an implicit-TLS upstream
        (openssl s_server, TLS 1.2) asks for it after its greeting (s_server's r), gets the
        no_renegotiation alert and gives up. The client hears 421 4.4.2, the capture names the
        upstream as the one who asked, and diagnose names the refusal as the cause of the end."""
        port = free_port()
        cert, key, _ = CERTS["upstream"]
        srv = subprocess.Popen([OPENSSL, "s_server", "-accept", "%s:%d" % (LOOPBACK, port), "-tls1_2",
                                "-cert", cert, "-key", key, "-crlf"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: (srv.kill(), srv.wait()))
        printed = bytearray()
        reader = threading.Thread(target=lambda: [printed.extend(b) for b in iter(lambda: srv.stdout.read1(4096), b"")],
                                  daemon=True)
        reader.start()
        wait_until(lambda: b"ACCEPT" in printed, 20, "s_server to listen")
        mailtap = self.start_tls_mailtap("%s:%d" % (LOOPBACK, port), ["--upstream-ca", cert, "--upstream-implicit-tls"])
        c = self.connect(mailtap.port)
        wait_until(lambda: b"CIPHER is" in printed, 20, "the relay's handshake with s_server")
        srv.stdin.write(b"220 s_server.test ESMTP\n")   # -crlf: sent as CRLF
        srv.stdin.flush()
        self.assertReply(c.reply(), 220)
        srv.stdin.write(b"r\n")                          # s_server: renegotiate (HelloRequest)
        srv.stdin.flush()
        self.assertReply(c.reply(), 421)
        cap = self.single_capture(mailtap)
        asked = [n for n in cap.notes if "asked to renegotiate TLS" in n]
        self.assertEqual(asked, ["the upstream asked to renegotiate TLS; the relay refuses renegotiation "
                                 "(no_renegotiation alert)"], cap.notes)
        # s_server gives up with a fatal alert: a TLS protocol error, not a hang-up.
        self.assertEqual(cap.end["reason"], "upstream_protocol_error", cap.end)
        self.assertTrue(cap.end["detail"].startswith("upstream broke TLS after the handshake: "), cap.end)
        findings = self.diagnosis(cap.path)["findings"]
        [f] = [f for f in findings if f["id"] == "tls_renegotiation_refused"]
        self.assertEqual((f["source"], f["severity"]), ("server", "error"), f)
        ids = [f["id"] for f in findings]
        self.assertNotIn("destination_closed", ids)
        self.assertNotIn("upstream_protocol_error", ids, "the refused renegotiation is the cause named")

    def test_plaintext_from_the_upstream_after_its_handshake_is_a_protocol_error(self):
        """A hostile trial: an implicit-TLS upstream completes its handshake and greets inside
        TLS, then writes '250 plaintext after tls' raw on the TCP socket. The client got 421
        4.4.2, but the end was upstream_closed ("upstream connection lost: wrong version
        number") and diagnose said the destination hung up (destination_closed). It is the
        destination breaking TLS: upstream_protocol_error, and diagnose says so."""
        import socket as socket_module
        import ssl
        cert, key, _ = CERTS["upstream"]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        listener = socket_module.create_server((LOOPBACK, 0))
        self.addCleanup(listener.close)
        got = bytearray()

        def serve():
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"220 tls-upstream.test ESMTP\r\n")
                while b"\r\n" not in got:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return
                    got.extend(chunk)
                # Not through TLS: on the TCP socket under it.
                with socket_module.socket(fileno=os.dup(tls.fileno())) as raw:
                    raw.sendall(b"250 plaintext after tls\r\n")
                    raw.settimeout(15)
                    try:
                        while raw.recv(4096):
                            pass
                    except OSError:
                        pass

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        mailtap = self.start_tls_mailtap("%s:%d" % listener.getsockname()[:2],
                                         ["--upstream-ca", cert, "--upstream-implicit-tls"])
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        r = c.command("EHLO client.test")
        self.assertReply(r, 421, "4.4.2")
        self.assertIn("upstream broke TLS", r.text)
        server.join(20)
        self.assertTrue(got.startswith(b"EHLO client.test"), got)
        cap = self.single_capture(mailtap)
        self.assertEqual(cap.end["reason"], "upstream_protocol_error", cap.end)
        # OpenSSL's reason, with its library as this OpenSSL names it: "... (SSL routines)".
        self.assertTrue(cap.end["detail"].startswith("upstream broke TLS after the handshake: wrong version number"),
                        cap.end)
        findings = self.diagnosis(cap.path)["findings"]
        ids = [f["id"] for f in findings]
        self.assertNotIn("destination_closed", ids)
        [f] = [f for f in findings if f["id"] == "upstream_protocol_error"]
        self.assertEqual((f["source"], f["severity"], f["title"]),
                         ("server", "error", "the destination broke TLS after the handshake"), f)
        self.assertIn("wrong version number", f["explanation"])
        self.assertNotIn("hung up without a reply", json.dumps(findings))

    def diagnosis(self, path):
        r = run_mailtap(["diagnose", path, "--json"], timeout=60)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        return json.loads(r.stdout)

    # ------------------------------------------------------------ injection (RFC 3207 5: nothing read as protected across STARTTLS)

    def test_client_starttls_injection(self):
        mailtap = self.start_tls_mailtap()
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        r = c.command("EHLO x")
        self.assertReply(r, 250)
        self.assertIn("STARTTLS", [t.upper() for t in r.texts])
        c.send(b"STARTTLS\r\nEHLO inj\r\n")          # one write
        got = c.read_to_eof(15)                       # the relay closes the connection
        codes = [x.code for x in parse_replies(got)]
        self.assertNotIn(250, codes, "a reply to the injected EHLO arrived: %r" % got)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(shown["end_reason"], "starttls_injection")
        self.assertTrue(any("injection" in n.lower() for n in cap.notes), cap.notes)
        self.assertNotIn(b"EHLO inj", cap.bytes_of("upstream", "out"))
        self.assertEqual(events_of(shown, "tls"), [])

    def test_client_plaintext_after_starttls_once_the_handshake_began_is_injection(self):
        # A hostile trial: plaintext the client wrote after its STARTTLS, a write of its own that
        # came once the relay's handshake was reading, failed the handshake ("wrong version
        # number", client_tls_failed, diagnose blaming the relay's certificate) and was lost.
        mailtap = self.start_tls_mailtap()
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO x"), 250)
        self.assertReply(c.command("STARTTLS"), 220)
        time.sleep(0.5)                               # the relay's handshake is reading by now
        c.send(b"MAIL FROM:<injected@x.test>\r\n")
        got = c.read_to_eof(15)
        self.assertNotIn(250, [x.code for x in parse_replies(got)], got)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(show_json(cap.path)["end_reason"], "starttls_injection")
        self.assertIn(b"MAIL FROM:<injected@x.test>\r\n", cap.bytes_of("client", "in"))
        self.assertNotIn(b"injected", cap.bytes_of("upstream", "out"))
        self.assertEqual(cap.end["reason"], "starttls_injection", cap.end)

    def test_upstream_starttls_response_injection(self):
        up = self.start_scripted_tls("injection")
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        r = c.command("EHLO client.test")
        self.assertReply(r, 250)
        self.assertIn("STARTTLS", [t.upper() for t in r.texts])
        r = c.command("STARTTLS")
        self.assertIn(r.code, (454, 421), r)
        rest = c.read_to_eof(15)
        self.assertNotIn(b"fake", rest)
        self.assertNotIn(b"AUTH LOGIN", rest)
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "the relay to close the upstream connection")
        self.assertNothingPlainAfterStarttls(conn.after_starttls)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(shown["end_reason"], "upstream_starttls_injection")
        self.assertTrue(any("injection" in n.lower() for n in cap.notes), cap.notes)
        self.assertEqual(events_of(shown, "tls"), [])

    # ------------------------------------------------------------ upstream TLS failures

    def test_mirror_upstream_without_starttls(self):
        """A client STARTTLS the upstream cannot match gets 454 4.7.0 (mirror mode)."""
        up = self.start_tls_upstream(tls=False)
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        r = c.command("EHLO client.test")
        self.assertReply(r, 250)
        self.assertNotIn("STARTTLS", [t.upper() for t in r.texts], "relay offers TLS it cannot match")
        self.assertReply(c.command("STARTTLS"), 454, "4.7.0")
        self.quit(c)
        self.assertEqual(up.verbs(), ["EHLO", "QUIT"])
        # swaks --tls gives up; nothing reaches the upstream in plaintext.
        rc, out = self.swaks_mail(mailtap.port, "--tls", "--auth", "PLAIN", "--auth-user", USER,
                                  "--auth-password", PASSWORD, expect_ok=False)
        self.assertNotEqual(rc, 0, out[-2000:])
        self.assertEqual(up.count(), 0)
        self.assertFalse({"MAIL", "RCPT", "DATA", "AUTH", "STARTTLS"} & set(up.verbs()), up.all_commands())

    def test_starttls_before_ehlo_is_put_to_the_destination(self):
        """A hostile trial: STARTTLS before EHLO got "454 4.7.0 TLS not available: the upstream
        does not offer STARTTLS" from a relay whose upstream offers it (it had seen no EHLO reply
        yet). f6ac0eb answered "503 5.5.1 Send EHLO first" instead, where the destination itself
        answers 220. With no EHLO reply to judge by, the relay asks the destination: its
        STARTTLS goes upstream, the client gets the destination's answer, and both legs are
        secured before the client's EHLO, which goes upstream inside TLS."""
        up = self.start_tls_upstream()
        c = self.connect(up.port)
        self.assertReply(c.reply(), 220)
        direct = c.command("STARTTLS")
        c.close()
        self.assertReply(direct, 220)
        for mode in ("mirror", "opportunistic"):
            with self.subTest(mode=mode):
                mailtap = self.relay_to(up, ["--upstream-tls", mode], name="mailtap-" + mode)
                c = self.connect(mailtap.port)
                self.assertReply(c.reply(), 220)
                r = c.command("STARTTLS")
                self.assertEqual(r.code, direct.code, r)
                c.sock = unverified_context().wrap_socket(c.sock, server_hostname="mailtap.test")
                r = c.command("EHLO client.test")
                self.assertReply(r, 250)
                self.assertNotIn("STARTTLS", [t.upper() for t in r.texts])
                self.quit(c)
                cap = self.single_capture(mailtap)
                self.assertCaptureComplete(cap)
                self.assertFalse([n for n in cap.notes if n.startswith("STARTTLS refused")], cap.notes)
                shown = show_json(cap.path)
                self.assertEqual(sorted(e["leg"] for e in shown["events"] if e["kind"] == "tls"),
                                 ["client", "upstream"])
                # The relay's STARTTLS went upstream before any EHLO of the client's; the EHLO
                # after the handshakes.
                self.assertEqual(cap.bytes_of("upstream", "out"), b"STARTTLS\r\nEHLO client.test\r\nQUIT\r\n")

    def test_a_destination_that_wants_ehlo_before_starttls_is_answered_as_it_would(self):
        """A trial: a destination that refuses STARTTLS before EHLO (Exim: 503 "STARTTLS command
        used when not advertised") got the client "454 4.7.0 ... refused STARTTLS with 503" in
        mirror, and in opportunistic TLS to the client alone over a plaintext upstream leg. The
        relay asked it with no EHLO reply to go by: its refusal reaches the client as it is; the
        client's EHLO then shows STARTTLS offered, and asked again it secures both legs."""
        up = self.start_tls_upstream(starttls_needs_ehlo=True)
        c = self.connect(up.port)
        self.assertReply(c.reply(), 220)
        direct = c.command("STARTTLS")
        c.close()
        self.assertReply(direct, 503)
        for mode in ("mirror", "opportunistic"):
            with self.subTest(mode=mode):
                mailtap = self.relay_to(up, ["--upstream-tls", mode], name="mailtap-" + mode)
                c = self.connect(mailtap.port)
                self.assertReply(c.reply(), 220)
                self.assertEqual(c.command("STARTTLS").lines, direct.lines)
                r = c.command("EHLO client.test")
                self.assertReply(r, 250)
                self.assertIn("STARTTLS", [t.upper() for t in r.texts])
                self.assertReply(c.command("STARTTLS"), 220)
                c.sock = unverified_context().wrap_socket(c.sock, server_hostname="mailtap.test")
                self.assertReply(c.command("EHLO client.test"), 250)
                self.quit(c)
                cap = self.single_capture(mailtap)
                self.assertCaptureComplete(cap)
                shown = show_json(cap.path)
                self.assertEqual(sorted(e["leg"] for e in shown["events"] if e["kind"] == "tls"),
                                 ["client", "upstream"])
                self.assertTrue(any("its reply goes to the client as it is" in n for n in cap.notes), cap.notes)

    def required_mode_refuses(self, up, name="mailtap"):
        """--upstream-tls required: the relay secures the upstream right after the banner; when
        that fails, the client gets 421 4.7.0 before any command of its own is relayed."""
        mailtap = self.relay_to(up, ["--upstream-tls", "required"], name=name)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        # No command needed: the relay says so unprompted (protocol/starttls_sequencer.cpp, upstream_tls_failed).
        r = c.reply(15)
        self.assertReply(r, 421, "4.7.0")
        self.assertTrue(c.closed_by_peer(15))
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(shown["end_reason"], "upstream_tls_failed")
        self.assertEqual(events_of(shown, "tls"), [])
        self.assertEqual(shown["transactions"], [])
        return mailtap

    def mirror_mode_refuses_starttls(self, up, name="mailtap", args=("--upstream-verify", "require")):
        """Default mode (mirror) with verification required: the client's STARTTLS gets 454
        4.7.0 when the upstream leg fails, then 421 (issue 13: without `require` a failed
        handshake falls back to plaintext, see mirror_mode_falls_back_to_plaintext)."""
        mailtap = self.relay_to(up, list(args), name=name)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        self.assertReply(c.command("STARTTLS"), 454, "4.7.0")
        rest = c.read_to_eof(15)   # the upstream leg is gone: the relay closes (421) after the 454
        self.assertTrue(all(x.code == 421 for x in parse_replies(rest)), rest)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(show_json(cap.path)["end_reason"], "upstream_tls_failed")
        return mailtap

    def test_required_upstream_without_starttls(self):
        up = self.start_tls_upstream(tls=False)
        mailtap = self.required_mode_refuses(up)
        # Only the relay's own EHLO reached the upstream: no client command, nothing in plaintext.
        cmds = up.all_commands()
        self.assertEqual([c[0] for c in cmds], ["EHLO"], cmds)
        self.assertNotEqual(cmds[0][1], "client.test")
        self.assertEqual(up.count(), 0)
        # Counted as an upstream TLS failure, as a failed handshake is (a newcomer's trial: every
        # message failed, and the summary and /metrics said 0).
        counters = mailtap.stop_with_counters()
        self.assertEqual(counters["upstream_tls_failed"], 1, counters)

    def test_required_upstream_untrusted_certificate(self):
        up = self.start_tls_upstream(cert="untrusted")
        self.required_mode_refuses(up)
        wait_until(lambda: "STARTTLS" in up.verbs(), 10, "the relay's STARTTLS")
        cmds = up.all_commands()
        self.assertEqual([(c[0], c[2]) for c in cmds], [("EHLO", False), ("STARTTLS", False)], cmds)
        self.assertEqual(up.count(), 0)

    def test_mirror_upstream_untrusted_certificate_is_recorded_and_delivered(self):
        """Issue 13: by default the certificate is checked and the result recorded, and the
        session goes on (RFC 7435, Postfix smtp_tls_security_level = may)."""
        up = self.start_tls_upstream(cert="untrusted")
        mailtap = self.relay_to(up)
        self.swaks_mail(mailtap.port, "--tls", "--auth", "PLAIN", "--auth-user", USER,
                        "--auth-password", PASSWORD)
        self.assertTrue(up.wait_for(1)[0]["tls"], "the message reached the upstream outside TLS")
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(shown["outcome"], "delivered")
        u = self.assertUpstreamTlsEvent(shown, cert="untrusted", verified=False)
        self.assertEqual(u["verification"], "untrusted: self-signed certificate", u)
        self.assertRegex(u["text"], r"not verified \(untrusted: self-signed certificate\)")

    def test_mirror_upstream_untrusted_certificate_with_verification_required(self):
        up = self.start_tls_upstream(cert="untrusted")
        self.mirror_mode_refuses_starttls(up)
        self.assertEqual(up.all_commands(), [("EHLO", "client.test", False), ("STARTTLS", None, False)])
        self.assertEqual(up.count(), 0)

    def test_required_upstream_handshake_refused(self):
        for behaviour in ("close", "garbage"):
            with self.subTest(behaviour=behaviour):
                up = self.start_scripted_tls(behaviour)
                self.required_mode_refuses(up, name="mailtap-" + behaviour)   # own captures dir
                conn = up.wait_for_connections(1)[0]
                wait_until(conn.closed.is_set, 20, "the upstream connection to end")
                self.assertEqual(len(conn.commands), 2, conn.commands)
                self.assertTrue(conn.commands[0].startswith(b"EHLO "), conn.commands)
                self.assertNotEqual(conn.commands[0], b"EHLO client.test")
                self.assertEqual(conn.commands[1], b"STARTTLS")
                self.assertNothingPlainAfterStarttls(conn.after_starttls)

    def test_mirror_upstream_handshake_refused_with_verification_required(self):
        for behaviour in ("close", "garbage"):
            with self.subTest(behaviour=behaviour):
                up = self.start_scripted_tls(behaviour)
                self.mirror_mode_refuses_starttls(up, name="mailtap-" + behaviour)   # own captures dir
                conn = up.wait_for_connections(1)[0]
                wait_until(conn.closed.is_set, 20, "the upstream connection to end")
                self.assertEqual(conn.commands, [b"EHLO client.test", b"STARTTLS"])
                self.assertNothingPlainAfterStarttls(conn.after_starttls)
                self.assertEqual(len(up.all_connections()), 1, "no second, plaintext connection")

    def test_mirror_upstream_handshake_refused_falls_back_to_plaintext(self):
        """Issue 13: the upstream's handshake fails -> 454 to the client, a NEW plaintext
        upstream connection with the client's EHLO replayed, and the client's plaintext
        transaction delivered on it. The broken connection never carries plaintext."""
        for behaviour in ("close", "garbage"):
            with self.subTest(behaviour=behaviour):
                up = self.start_scripted_tls(behaviour)
                mailtap = self.relay_to(up, name="mailtap-" + behaviour)
                c = self.connect(mailtap.port)
                self.assertReply(c.reply(), 220)
                self.assertReply(c.command("EHLO client.test"), 250)
                self.assertReply(c.command("STARTTLS"), 454, "4.7.0")
                self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
                self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
                self.assertReply(c.command("DATA"), 354)
                self.assertReply(c.command("Subject: fallback\r\n\r\nplaintext body\r\n."), 250)
                self.quit(c)
                first, second = up.wait_for_connections(2)
                wait_until(first.closed.is_set, 20, "the broken connection to end")
                self.assertEqual(first.commands, [b"EHLO client.test", b"STARTTLS"])
                self.assertNothingPlainAfterStarttls(first.after_starttls)
                self.assertEqual(second.commands[:4], [b"EHLO client.test", b"MAIL FROM:<%s>" % FROM.encode(),
                                                       b"RCPT TO:<%s>" % TO.encode(), b"DATA"], second.commands)
                self.assertEqual(len(second.messages), 1)
                self.assertIn(b"plaintext body", second.messages[0])
                cap = self.single_capture(mailtap)
                self.assertCaptureComplete(cap)
                shown = show_json(cap.path)
                self.assertEqual(shown["outcome"], "delivered")
                self.assertEqual(shown["end_reason"], "client_quit")
                self.assertEqual(events_of(shown, "tls"), [])
                self.assertTrue(any("falling back to plaintext on a new upstream connection" in n
                                    for n in cap.notes), cap.notes)
                # The replayed hello is the relay's command on the new connection (show's U>).
                relay_commands = [e["text"] for e in events_of(shown, "command", "upstream")]
                self.assertEqual(relay_commands, ["EHLO client.test"], relay_commands)
                # Plaintext where the handshake should be is the upstream's, kept (a hostile
                # trial: it was lost from the capture).
                if behaviour == "garbage":
                    self.assertIn(b"this is not a TLS handshake at all", cap.bytes_of("upstream", "in"))
                    self.assertTrue(any("plaintext where its TLS handshake should be" in n for n in cap.notes), cap.notes)
                # Exported, the two upstream connections are two TCP streams (mailtap's side of
                # the upstream leg is port 49152, then 49153: captures/pcap_frames.cpp).
                pcap = os.path.join(self.workdir, "fallback-%s.pcap" % behaviour)
                r = run_mailtap(["export", "pcap", cap.path, "-o", pcap])
                self.assertEqual(r.returncode, 0, r.stderr)
                by_port = {}
                for port, command in tshark_smtp(pcap, "tcp.srcport", "smtp.req.command"):
                    if command:   # not a reply
                        by_port.setdefault(port, []).append(command[:4])   # tshark 4.0 gives "STAR"
                self.assertEqual(by_port.get("49152"), ["EHLO", "STAR"], by_port)
                self.assertEqual(by_port.get("49153"), ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"], by_port)

    def test_upstream_insecure_is_explicit_and_recorded(self):
        up = self.start_tls_upstream(cert="untrusted")
        mailtap = self.relay_to(up, ["--upstream-insecure"])
        self.swaks_mail(mailtap.port, "--tls", "--auth", "PLAIN", "--auth-user", USER,
                        "--auth-password", PASSWORD)
        self.assertTrue(up.wait_for(1)[0]["tls"])
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(shown["outcome"], "delivered")
        u = self.assertUpstreamTlsEvent(shown, cert="untrusted", verified=False, insecure=True)
        self.assertEqual(u["verification"], "not checked: verification off by configuration")
        records = cap.of_type("tls")
        self.assertEqual([r["insecure"] for r in records if r["leg"] == "upstream"], [True])

    # ------------------------------------------------------------ the default setup

    def test_default_setup_done_when(self):
        """Issue 3 "Done when": only --listen and --captures; swaks --tls --auth PLAIN to the
        built-in sink; `mailtap show` has both legs' TLS details and no password."""
        mailtap = self.start_tls_mailtap(minimal=True)
        self.assertEqual(mailtap.upstream_label, "builtin")
        self.swaks_mail(mailtap.port, "--tls", "--auth", "PLAIN", "--auth-user", "u",
                        "--auth-password", "p")
        other_pw = "Zq7-default-setup-secret"
        self.swaks_mail(mailtap.port, "--tls", "--auth", "LOGIN", "--auth-user", "u",
                        "--auth-password", other_pw)
        caps = mailtap.wait_captures(2)
        for cap in caps:
            self.assertCaptureComplete(cap)
            r = run_mailtap(["show", cap.path])
            self.assertEqual(r.returncode, 0, r.stderr)
            text = r.stdout.decode("utf-8", "replace")
            self.assertRegex(text, r"(?m)TLS client: TLSv1\.[23] ")
            self.assertRegex(text, r"(?m)TLS upstream: TLSv1\.[23] ")
            self.assertIn("MAIL FROM:<%s>" % FROM, text)
            self.assertEqual(show_json(cap.path)["outcome"], "delivered")
        # AUTH PLAIN with "p" is base64 of b"\0u\0p" (AHUAcA==); "p" alone is too short to
        # search for, hence the second session with a distinctive password.
        self.assertNoSecretsInCaptures(mailtap.captures, [base64.b64encode(b"\0u\0p")]
                                       + secret_needles(password=other_pw, user="u"))

    def test_builtin_sink_checks_configured_credentials(self):
        config = self.write_file("mailtap.toml", ('[sink]\nauth_user = "%s"\nauth_password = "%s"\n'
                                                  % (USER, PASSWORD)).encode())
        mailtap = self.start_tls_mailtap(args=["--config", config])
        rc, out = self.swaks_mail(mailtap.port, "--tls", "--auth", "PLAIN", "--auth-user", USER,
                                  "--auth-password", "wrong-password", expect_ok=False)
        self.assertNotEqual(rc, 0, out[-2000:])
        self.assertRegex(out, r"<~\*? +535 5\.7\.8")
        self.swaks_mail(mailtap.port, "--tls", "--auth", "LOGIN", "--auth-user", USER,
                        "--auth-password", PASSWORD)
        self.assertNoSecretsInCaptures(mailtap.captures, secret_needles()
                                       + secret_needles(password="wrong-password"))


if __name__ == "__main__":
    unittest.main()
