"""Hostile input against scripted peers (issue 14, items 3 to 6).

raw client -> mailtap -> scripted upstream that logs every byte it receives. Each case
asserts on the bytes the client receives, the bytes the upstream receives and the capture's
end reason and notes (captures/FORMAT.md).

  3  an upstream reply ending in a bare LF: never passed on; 421 4.4.2, upstream aborted
  4  a bare LF inside a command line: the whole line to its CRLF refused, nothing forwarded
  5  HTTP spoken to the SMTP port: 221 2.7.0 and close, nothing more read or forwarded
  6  STARTTLS with a parameter: 501 5.5.4, no handshake, the session stays plaintext
"""

import base64
import json
import os
import socket
import time
import unittest

from harness import (Capture, IntegrationTest, LOOPBACK, ScriptedAnswers, ScriptedConnection, ScriptedServer,
                     capture_paths, parse_replies, run_mailtap, show_json, wait_until)


class BadReplyUpstream(ScriptedServer):
    """Answers like a small MTA, except that the command whose verb is `trigger` gets
    `bad_reply` verbatim (a reply with a bare LF in it)."""

    def __init__(self, bad_reply, trigger=b"MAIL"):
        self.bad_reply = bad_reply
        self.trigger = trigger
        super().__init__(ScriptedConnection)

    def _serve(self, conn):
        sock = conn.sock
        try:
            sock.sendall(b"220 scripted.test ESMTP\r\n")
            buf = b""
            for chunk in self.received(conn, 120):
                buf += chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    conn.commands.append(line)
                    verb = line.split(b" ", 1)[0].upper()
                    if verb == b"EHLO":
                        sock.sendall(b"250-scripted.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
                    elif verb == self.trigger:
                        sock.sendall(self.bad_reply)
                    elif verb == b"QUIT":
                        sock.sendall(b"221 2.0.0 Bye\r\n")
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


class HostileInput(IntegrationTest):

    def relay_to(self, up, **kw):
        return self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port), **kw)

    def upstream_conn(self, up):
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "the upstream connection to close")
        return conn

    # ------------------------------------------------------------ item 3

    def test_item3_upstream_reply_ending_in_bare_lf(self):
        for bad in (b"250 ok\n", b"250 ok\n550 5.0.0 smuggled\r\n"):
            with self.subTest(reply=bad):
                up = BadReplyUpstream(bad)
                self.addCleanup(up.stop)
                name = "mailtap-%d" % len(bad)          # a captures directory per case
                mailtap = self.relay_to(up, name=name)
                c = self.greeted_client(mailtap.port)
                c.send(b"MAIL FROM:<a@x.test>\r\n")
                got = c.read_to_eof(20)                 # the relay gives up on the session
                # Never a bare LF, never the upstream's 250 or the smuggled 550.
                self.assertNoBareCrLf(got, "what the client received")
                self.assertNotIn(b"250 ok", got)
                self.assertNotIn(b"smuggled", got)
                replies = parse_replies(got)
                self.assertTrue(replies, got)
                for r in replies:
                    self.assertReply(r, 421, "4.4.2")
                # The upstream received the MAIL and nothing after it.
                conn = self.upstream_conn(up)
                self.assertEqual(conn.commands, [b"EHLO client.test", b"MAIL FROM:<a@x.test>"])
                cap = self.single_capture(mailtap)
                self.assertCaptureComplete(cap)
                self.assertEqual(cap.end["reason"], "upstream_protocol_error")
                self.assertIn("bare LF", cap.end["detail"])
                self.assertTrue(any("bare LF" in n for n in cap.notes), cap.notes)
                # What the upstream sent is recorded as received; the client leg has none of it.
                self.assertIn(bad, cap.bytes_of("upstream", "in"))
                self.assertNotIn(b"250 ok", cap.bytes_of("client", "out"))
                self.assertEqual([t["outcome"] for t in cap.transactions], ["tempfailed"])

    # ------------------------------------------------------------ item 4

    def test_item4_bare_lf_inside_a_command_line(self):
        up = self.start_scripted()
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        c.send(b"EHLO x\nMAIL FROM:<y@x>\r\n")
        self.assertReply(c.reply(), 500, "5.5.2")
        # No second reply for that line: the next reply is HELP's (the scripted upstream
        # answers an unknown verb with 502, a MAIL with 250).
        self.assertReply(c.command("HELP"), 502)
        self.quit(c)
        conn = self.upstream_conn(up)
        self.assertEqual(conn.commands, [b"EHLO client.test", b"HELP", b"QUIT"])
        self.assertNotIn(b"MAIL", bytes(conn.raw))
        self.assertNotIn(b"EHLO x", bytes(conn.raw))
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "client_quit")
        self.assertIn("command refused: bare LF", cap.notes)
        self.assertEqual(cap.transactions, [])

    # ------------------------------------------------------------ item 5

    GOODBYE = b"221 2.7.0 mailtap Error: I can break rules, too. Goodbye.\r\n"

    def test_item5_http_post_to_the_smtp_port(self):
        # A browser form posting SMTP commands as its body.
        up = self.start_scripted()
        mailtap = self.relay_to(up)
        body = (b"MAIL FROM:<form@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
                b"Subject: from a web form\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        request = (b"POST /contact HTTP/1.1\r\nHost: 127.0.0.1:25\r\n"
                   b"Content-Type: application/x-www-form-urlencoded\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body)) + body
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        c.send(request)
        self.assertEqual(c.read_to_eof(20), self.GOODBYE)
        conn = self.upstream_conn(up)
        self.assertEqual(conn.commands, [])
        self.assertEqual(bytes(conn.raw), b"")
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "http_command")
        self.assertEqual(cap.end["detail"], "HTTP request (POST)")
        self.assertTrue(any("HTTP request (POST)" in n for n in cap.notes), cap.notes)
        self.assertEqual(cap.bytes_of("upstream", "out"), b"")
        self.assertEqual(cap.transactions, [])
        self.assertEqual(show_json(cap.path)["end_reason"], "http_command")

    def test_item5_every_http_verb_closes_the_session(self):
        up = self.start_scripted()
        mailtap = self.relay_to(up)
        verbs = ("GET", "POST", "PUT", "HEAD", "CONNECT", "OPTIONS", "DELETE", "PATCH", "TRACE")
        for verb in verbs:
            with self.subTest(verb=verb):
                c = self.greeted_client(mailtap.port)
                c.send(verb.encode() + b" / HTTP/1.1\r\nHost: relay.test\r\n\r\n")
                self.assertEqual(c.read_to_eof(20), self.GOODBYE)
                c.close()
        caps = mailtap.wait_captures(len(verbs))
        self.assertEqual([cap.end["reason"] for cap in caps], ["http_command"] * len(verbs))
        for conn in up.wait_for_connections(len(verbs)):
            wait_until(conn.closed.is_set, 20, "the upstream connection to close")
            self.assertEqual(conn.commands, [b"EHLO client.test"])

    def test_item5_header_shaped_line_closes_the_session(self):
        up = self.start_scripted()
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        c.send(b"Host: relay.test\r\nMAIL FROM:<a@x.test>\r\n")
        self.assertEqual(c.read_to_eof(20), self.GOODBYE)
        conn = self.upstream_conn(up)
        self.assertEqual(conn.commands, [b"EHLO client.test"])
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "http_command")
        self.assertEqual(cap.end["detail"], "HTTP header line")

    # ------------------------------------------------------------ item 6

    def test_item6_starttls_with_a_parameter(self):
        # The built-in upstream, and a self-signed pair generated in the work directory: the
        # relay offers STARTTLS, so a plain STARTTLS would start a handshake.
        state_home = os.path.join(self.workdir, "state")
        os.makedirs(state_home)
        mailtap = self.start_mailtap(env=dict(os.environ, XDG_STATE_HOME=state_home))
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        ehlo = c.command("EHLO client.test")
        self.assertReply(ehlo, 250)
        self.assertIn("STARTTLS", [t.upper() for t in ehlo.texts])
        r = c.command("STARTTLS x")
        self.assertReply(r, 501, "5.5.4")
        self.assertEqual(r.text, "5.5.4 Syntax error (no parameters allowed)")
        # Still plaintext: a command in the clear is answered in the clear.
        self.assertReply(c.command("NOOP"), 250)
        self.quit(c)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "client_quit")
        self.assertEqual(cap.of_type("tls"), [])
        self.assertNotIn(b"STARTTLS", cap.bytes_of("upstream", "out"))
        self.assertTrue(any("STARTTLS with a parameter" in n for n in cap.notes), cap.notes)

    def test_a_flood_of_lines_the_relay_refuses_ends_at_its_error_limit(self):
        # A hostile trial: 10,000 pipelined "XCLIENT A" lines, each refused by the relay and
        # recorded, never reached the destination and its error limit: a gigabyte of capture in
        # seconds. The 20th refusal gets 421 4.7.0 and the session closes (smtpd_hard_error_limit).
        mailtap = self.start_mailtap()
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        c.send(b"XCLIENT A\r\n" * 10000)
        got = c.read_to_eof(20)
        replies = [(r.code, r.enhanced) for r in parse_replies(got)]
        self.assertEqual(replies, [(500, "5.5.1")] * 19 + [(421, "4.7.0")], got[-300:])
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual((cap.end["reason"], cap.end["detail"]), ("protocol_error", "too many commands refused by the relay"))
        self.assertNotIn(b"XCLIENT", cap.bytes_of("upstream", "out"))

    # ------------------------------------------------------------ a tab between the words

    def test_a_tab_separated_auth_is_read_as_auth_and_its_secret_masked(self):
        # Postfix's smtpd splits a command at any white space, so "AUTH<TAB>PLAIN x" logs in
        # there. The relay reads it the same way (it passed it on unrecognised, with the
        # secret recorded in clear, and an AUTH<TAB>LOGIN's 334 was called a protocol error).
        # The built-in upstream parses as the relay does; the capture is what is checked.
        password = b"T4bSeparatedSecret"
        plain = base64.b64encode(b"\0user\0" + password)
        caps = []
        for login in (False, True):
            mailtap = self.start_mailtap(name="tab-login" if login else "tab-plain")
            c = self.connect(mailtap.port)
            self.assertReply(c.reply(), 220)
            self.assertReply(c.command("EHLO client.test"), 250)
            if login:
                self.assertReply(c.command("AUTH\tLOGIN"), 334)
                self.assertReply(c.command(base64.b64encode(b"user").decode()), 334)
                self.assertReply(c.command(base64.b64encode(password).decode()), 235)
            else:
                self.assertReply(c.command("AUTH\tPLAIN " + plain.decode()), 235)
            self.quit(c)
            cap = self.single_capture(mailtap)
            self.assertEqual(cap.end["reason"], "client_quit", cap.end)
            with open(cap.path, "rb") as f:
                raw = f.read()
            for secret in (password, plain, base64.b64encode(password)):
                self.assertNotIn(secret, raw)
            caps.append(cap)
        commands = [r["text"] for r in caps[0].of_type("command")]
        self.assertIn("AUTH\tPLAIN [initial response redacted, %d bytes]" % len(plain), commands)

    def test_an_auth_cancelled_by_the_client_is_recorded_and_diagnosed_as_the_clients(self):
        # "*" cancels an AUTH exchange and the server must answer 501 (RFC 4954 4). It was
        # recorded redacted, and diagnose blamed the smart host's login ("smarthost_auth").
        mailtap = self.start_mailtap(name="auth-cancel")
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        self.assertReply(c.command("AUTH LOGIN"), 334)
        self.assertReply(c.command("*"), 501)
        self.assertReply(c.command("NOOP"), 250)
        self.quit(c)
        cap = self.single_capture(mailtap)
        self.assertEqual(cap.end["reason"], "client_quit", cap.end)
        self.assertIn("*", [r["text"] for r in cap.of_type("command")])
        r = run_mailtap(["diagnose", cap.path, "--json"], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        found = {f["id"]: f for f in json.loads(r.stdout)["findings"]}
        self.assertNotIn("smarthost_auth", found)
        self.assertEqual((found["auth_cancelled"]["stage"], found["auth_cancelled"]["severity"]), ("auth", "warning"))

    def test_the_built_in_sink_holds_to_the_size_it_advertises(self):
        # RFC 1870: it advertised SIZE 104857600 and answered 250 to any declaration (a
        # hostile trial queued 107 MB).
        mailtap = self.start_mailtap(name="sink-size")
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        ehlo = c.command("EHLO client.test")
        self.assertIn("SIZE 104857600", ehlo.texts)
        self.assertReply(c.command("MAIL FROM:<a@example.test> SIZE=104857601"), 552, "5.3.4")
        self.assertReply(c.command("MAIL FROM:<a@example.test> SIZE=abc"), 501, "5.5.4")
        self.assertReply(c.command("MAIL FROM:<a@example.test> SIZE=104857600"), 250)
        self.quit(c)
        cap = self.single_capture(mailtap)
        self.assertEqual([t["outcome"] for t in cap.transactions][:2], ["rejected", "rejected"])

    def test_a_line_the_end_cut_off_is_in_the_capture(self):
        # Every byte of both legs is recorded: a trailing line without its CRLF was dropped
        # when the session ended (a hostile trial: "QUIT" then a FIN, a TLS ClientHello sent
        # to the plain port, a password cut off). AUTH material in it stays masked.
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32))
        secret = b"AHVzZXIAVDRpbFNlY3JldA=="
        for name, tail, recorded in (("quit", b"QUIT", b"QUIT"), ("tls", hello, hello),
                                     ("auth", b"AUTH PLAIN " + secret, b"AUTH PLAIN " + b"*" * len(secret))):
            with self.subTest(tail=name):
                mailtap = self.start_mailtap(name="cut-" + name)
                c = self.connect(mailtap.port)
                self.assertReply(c.reply(), 220)
                self.assertReply(c.command("EHLO client.test"), 250)
                c.send(tail)
                c.sock.shutdown(socket.SHUT_WR)
                c.read_to_eof(20)
                cap = self.single_capture(mailtap)
                self.assertCaptureComplete(cap)
                self.assertEqual(cap.bytes_of("client", "in"), b"EHLO client.test\r\n" + recorded)
                with open(cap.path, "rb") as f:
                    self.assertNotIn(secret, f.read())

    def test_the_relays_own_cancel_of_a_malformed_auth_response_is_diagnosed_as_the_clients(self):
        # A response with a bare LF is never forwarded: the relay sends "*" in its place and
        # the server's 501 answers it. diagnose read that 501 as the smart host refusing the
        # login ("smarthost_auth").
        mailtap = self.start_mailtap(name="auth-bare-lf")
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        self.assertReply(c.command("AUTH LOGIN"), 334)
        c.send(b"dXNl\ncg==\r\n")
        self.assertReply(c.reply(), 501)
        self.assertReply(c.command("NOOP"), 250)
        self.quit(c)
        cap = self.single_capture(mailtap)
        self.assertEqual(cap.end["reason"], "client_quit", cap.end)
        self.assertIn(b"*\r\n", cap.bytes_of("upstream", "out"))
        r = run_mailtap(["diagnose", cap.path, "--json"], timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        found = {f["id"]: f for f in json.loads(r.stdout)["findings"]}
        self.assertNotIn("smarthost_auth", found)
        self.assertNotIn("auth_cancelled", found)
        self.assertEqual((found["auth_response_refused"]["stage"], found["auth_response_refused"]["severity"]),
                         ("auth", "error"))

    # ------------------------------------------------------------ 8-bit envelopes

    def test_8bit_addresses_leave_every_capture_line_and_listing_valid_json(self):
        # Bytes that are not UTF-8 in an address were written raw into the command and
        # transaction records, and so into the index: a strict JSON reader (Python's, jq)
        # refused the capture's lines and `captures list --json`. An SMTPUTF8 address, which
        # is UTF-8, stays itself.
        caps = os.path.join(self.workdir, "caps")
        mailtap = self.start_mailtap(captures=caps)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        c.send(b"MAIL FROM:<caf\xe9@example.test>\r\n")
        self.assertReply(c.reply(), 250)
        c.send(b"RCPT TO:<\xff\xfe@example.test>\r\n")
        self.assertReply(c.reply(), 250)
        c.send("RCPT TO:<jürgen@example.test>\r\n".encode())
        self.assertReply(c.reply(), 250)
        self.assertReply(c.command("RSET"), 250)
        self.quit(c)
        cap = self.single_capture(mailtap)
        with open(cap.path, "rb") as f:
            lines = f.read().decode("utf-8").splitlines()   # strict: fails on a byte that is not UTF-8
        records = [json.loads(line) for line in lines]
        [t] = [r for r in records if r["type"] == "transaction"]
        self.assertEqual((t["mail_from"], t["rcpt_to"]),
                         ("caf\\xe9@example.test", ["\\xff\\xfe@example.test", "jürgen@example.test"]))
        # The exact bytes are in the bytes records.
        self.assertIn(b"MAIL FROM:<caf\xe9@example.test>\r\n", cap.bytes_of("client", "in"))
        mailtap.stop()
        r = run_mailtap(["captures", "list", "--json", "--dir", caps])
        self.assertEqual(r.returncode, 0, r.stderr)
        [listed] = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]
        self.assertEqual(listed["transactions"][0]["mail_from"], "caf\\xe9@example.test")


    # ------------------------------------------------------------ after QUIT

    def test_nothing_pipelined_after_quit_reaches_the_upstream(self):
        # QUIT ends the session (RFC 5321 4.1.1.10) and a pipelined group (RFC 2920 3.1). A
        # hostile trial found MAIL and RCPT after it relayed, and a transaction recorded that
        # never happened.
        up = ScriptedAnswers()
        self.addCleanup(up.stop)
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        c.send(b"QUIT\r\nMAIL FROM:<ghost@example.test>\r\nRCPT TO:<nobody@example.test>\r\n")
        self.assertReply(c.reply(), 221)
        cap = self.single_capture(mailtap)
        conn = self.upstream_conn(up)
        self.assertEqual(conn.commands, [b"EHLO client.test", b"QUIT"])
        self.assertEqual(cap.transactions, [])
        self.assertEqual(cap.end["reason"], "client_quit")
        self.assertIn(b"MAIL FROM:<ghost@example.test>", cap.bytes_of("client", "in"))   # recorded as it came
        self.assertTrue(any("after QUIT" in n for n in cap.notes), cap.notes)

    def test_a_closing_protocol_error_after_the_dot_still_gets_the_messages_reply(self):
        # A line that closes the session (a bad BDAT size, a line too long, an HTTP line),
        # pipelined right after a message's dot, used to close both legs at once: the real
        # smtp-sink delivered the message and the client got no reply, so it would send it
        # again (a fifth trial). The message's reply comes first, then the error's, then EOF.
        sink = self.start_smtp_sink(dump=False)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port))
        for tail, last in ((b"BDAT zz\r\n", b"501 5.5.4 "), (b"NOOP " + b"a" * 5000, b"500 5.5.2 "),
                           (b"GET / HTTP/1.0\r\n\r\n", b"221 2.7.0 ")):
            c = self.connect(mailtap.port)
            self.assertReply(c.reply(), 220)
            self.assertReply(c.command("EHLO client.test"), 250)
            c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
            self.assertEqual([r.code for r in c.replies(3)], [250, 250, 354])
            c.send(b"Subject: pipelined\r\n\r\nhello\r\n.\r\n" + tail)
            rest = c.read_to_eof(20)
            self.assertTrue(rest.startswith(b"250 "), rest)
            self.assertIn(b"\r\n" + last, rest)
        wait_until(lambda: sink.messages_counted() == 3, 10, "three messages at smtp-sink")
        caps = mailtap.wait_captures(3, 30)
        self.assertEqual(sorted(cap.end["reason"] for cap in caps), ["http_command", "protocol_error", "protocol_error"])
        for cap in caps:
            self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"], cap.path)


class ClientThatNeverReads(IntegrationTest):
    """A client that pipelines commands and reads none of the replies (issue 10's trial): the
    relay's outbox to it fills, so it stops reading the upstream, whose replies wait unread.
    The client is the one timed out, after client_idle, not the upstream."""

    def test_the_client_is_timed_out_not_the_upstream(self):
        # Each NOOP's reply is 5 KB, so a few thousand fill every buffer on the way back.
        big = b"".join(b"250-%s\r\n" % (b"x" * 96) for _ in range(50)) + b"250 2.0.0 Ok\r\n"
        up = ScriptedAnswers({b"NOOP": big})
        self.addCleanup(up.stop)
        config = os.path.join(self.workdir, "timeouts.toml")
        with open(config, "w") as f:
            f.write('[timeouts]\nclient_idle = "2s"\nupstream_reply = "2s"\n')
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port), args=("--config", config))
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((LOOPBACK, mailtap.port))
        self.addCleanup(s.close)
        s.settimeout(5.0)
        sent = 0
        try:
            for _ in range(3):   # 3,000 NOOPs: 15 MB of replies
                sent += s.send(b"NOOP\r\n" * 1000)
        except OSError:
            pass                 # the relay stopped reading, or already reset us
        self.assertGreater(sent, 0)
        wait_until(lambda: capture_paths(mailtap.captures) and Capture(capture_paths(mailtap.captures)[-1]).end, 30,
                   "the session's end record")
        cap = Capture(capture_paths(mailtap.captures)[-1])
        self.assertEqual(cap.end["reason"], "client_timeout", (cap.end, cap.notes))
        self.assertEqual(cap.end["detail"], "the client took no data for 2 s")
        self.assertNotIn("upstream_timeout", " ".join(cap.notes))


if __name__ == "__main__":
    unittest.main()
