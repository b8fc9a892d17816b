"""Limits and smuggling (ARCHITECTURE.md, "Limits and their sources" and "Invariants").

raw client -> mailtap -> scripted upstream that logs every byte it receives.
"""

import socket
import threading
import time
import unittest

from harness import (ConnectionClosed, IntegrationTest, LOOPBACK, Recorder, bare_cr_lf_positions, parse_replies, dot_unstuff,
                     make_message, memory_bound_kib, normalized_message, show_json, wait_until)

# SMTP smuggling (CVE-2023-51764/5/6): every end-of-data look-alike to test.
SMUGGLING = [
    b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\r\n.\n",
    b"\r\n.\r", b"\r.\r\n", b"\r\n.\r\r\n", b"\r\r\n.\r\r\n", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n",
]
# What the smuggled "second message" looks like: a whole SMTP transaction after the fake end.
SMUGGLED_TAIL = (b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
                 b"From: ceo@example.test\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")


def smuggling_message(i, seq):
    """The message as sent on the wire (no line starts with a dot except inside `seq`)."""
    return make_message("<smuggle-%d@example.test>" % i, b"hello" + seq + SMUGGLED_TAIL)


def early_end_in(data):
    """Offsets where a receiver that ignores NUL octets would see CRLF.CRLF (an end of data)."""
    stripped = data.replace(b"\x00", b"")
    return [i for i in range(len(stripped)) if stripped.startswith(b"\r\n.\r\n", i)]


class Smuggling(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.up = self.start_scripted()

    def session(self, mailtap, wire_message):
        """One session: EHLO, MAIL, RCPT, DATA, message + CRLF.CRLF. Returns the reply to the
        real end of data and everything else the client got until the relay closed or QUIT."""
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(wire_message + b".\r\n")
        final = c.reply()
        try:
            c.send(b"QUIT\r\n")
        except OSError:
            pass              # the relay may already have closed after a refusal
        rest = c.read_to_eof(20)
        c.close()
        return final, rest

    def upstream_conn(self, n):
        conn = self.up.wait_for_connections(n)[n - 1]
        wait_until(conn.closed.is_set, 20, "upstream connection %d to close" % n)
        return conn

    def assert_not_smuggled(self, conn, label):
        raw = bytes(conn.raw)
        self.assertNoBareCrLf(raw, "%s: bytes received upstream" % label)
        evil = [c for c in conn.commands if b"evil@attacker.test" in c or b"victim@" in c]
        self.assertEqual(evil, [], "%s: smuggled commands reached the upstream" % label)
        self.assertLessEqual(len(conn.messages), 1, label)

    def test_strict_mode_refuses_every_sequence(self):
        # Strict (default): bare CR or LF, and NUL (never legal in DATA; protocol/data_framer.hpp
        # treats it alike), fail the transaction: 5xx at the real end of data, and the
        # upstream never sees a bare CR/LF, a NUL-hidden CRLF.CRLF or any end of data at all.
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.up.port))
        for n, seq in enumerate(SMUGGLING, start=1):
            with self.subTest(seq=seq):
                wire = smuggling_message(n, seq)
                final, _ = self.session(mailtap, wire)
                self.assertEqual(final.code // 100, 5, "%r: %r" % (seq, final))
                conn = self.upstream_conn(n)
                self.assert_not_smuggled(conn, repr(seq))
                raw = bytes(conn.raw)
                self.assertNotIn(b"\x00", raw, repr(seq))
                self.assertEqual(early_end_in(raw), [], repr(seq))
                self.assertEqual(conn.messages, [], repr(seq))
        caps = mailtap.wait_captures(len(SMUGGLING), timeout=60)
        for cap in caps:
            t = cap.transactions
            self.assertEqual(len(t), 1, cap.path)
            self.assertEqual(t[0]["outcome"], "rejected", cap.path)
            self.assertTrue(t[0]["synthesized"], cap.path)
            self.assertEqual(t[0]["final_reply"]["code"] // 100, 5, cap.path)

    def test_normalize_mode_makes_bare_line_endings_spaces(self):
        # A hostile-peer trial: normalize read a bare CR or LF as a line ending and found the end
        # of data in the normalized stream, so "\n.\n" ended the message and the tail was a
        # second, smuggled transaction, handed upstream as clean CRLF. Now each bare CR or LF
        # (and NUL) is a space and only CRLF.CRLF ends the message: for every sequence the
        # upstream reads one message, the tail inside it, with no bare CR/LF.
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.up.port),
                                     args=["--bare-line-endings", "normalize"])
        wire_of = {}
        for n, seq in enumerate(SMUGGLING, start=1):
            with self.subTest(seq=seq):
                wire = wire_of[seq] = smuggling_message(n, seq)
                final, _ = self.session(mailtap, wire)
                self.assertReply(final, 250)
                conn = self.upstream_conn(n)
                self.assertNoBareCrLf(bytes(conn.raw), "%r: bytes received upstream" % seq)
                expected, _ = normalized_message(wire + b".\r\n")
                self.assertEqual(conn.wire_messages[0], expected)
                self.assertEqual(conn.messages[0], dot_unstuff(expected))
                self.assert_not_smuggled(conn, repr(seq))
                self.assertEqual(len(conn.messages), 1, repr(seq))
                self.assertIn(SMUGGLED_TAIL.split(b"\r\n")[0], conn.messages[0])
                self.assertEqual(len(expected), len(wire), "each bare CR, LF or NUL is one space")
        caps = mailtap.wait_captures(len(SMUGGLING), timeout=60)
        for cap, seq in zip(caps, SMUGGLING):
            self.assertCaptureComplete(cap)
            t = cap.transactions
            self.assertEqual(len(t), 1, cap.path)
            self.assertEqual(t[0]["outcome"], "delivered", cap.path)
            self.assertEqual(t[0]["message_id"], "<smuggle-%d@example.test>" % (SMUGGLING.index(seq) + 1))
            self.assertEqual(t[0]["size"], len(wire_of[seq]), "each bare CR or LF counted as its space")
            if bare_cr_lf_positions(seq) or b"\x00" in seq:
                self.assertTrue(any("normaliz" in note for note in cap.notes), (seq, cap.notes))

    def test_normalize_to_postfix_smtp_sink_delivers_one_message(self):
        # The trial's body, through mailtap in normalize mode to a real Postfix component
        # (smtp-sink), in one write: "hello\n.\n" then a whole transaction. It was two delivered
        # messages; it is one, the bare LFs spaces, the would-be smuggled MAIL FROM in its body.
        sink = self.start_smtp_sink()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port),
                                     args=["--bare-line-endings", "normalize"])
        body = (b"Subject: trial\r\n\r\nhello\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.test>\r\n"
                b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(body + b".\r\nQUIT\r\n")
        replies = parse_replies(c.read_to_eof(20))
        c.close()
        self.assertEqual([r.code for r in replies], [250, 221], replies)
        wait_until(lambda: len(sink.dumps()) >= 1, 20, "smtp-sink to dump the message")
        time.sleep(0.5)   # a second message, were there one, would be dumped by now
        dumps = sink.dumps()
        self.assertEqual(len(dumps), 1, [d[1][:200] for d in dumps])
        (fields, stored), = dumps
        self.assertEqual(sink.messages_counted(), 1)
        self.assertEqual(fields.get("X-Mail-Args"), [b"<sender@example.test>"], fields)
        self.assertIn(b"hello . MAIL FROM:<evil@x.test>\n", stored)
        self.assertIn(b"smuggled body\n", stored)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.header["normalize_to"], "space")
        self.assertEqual(len(cap.transactions), 1)
        self.assertEqual(cap.transactions[0]["outcome"], "delivered")
        self.assertEqual(cap.transactions[0]["size"], len(body))
        self.assertNoBareCrLf(cap.bytes_of("upstream", "out"), "bytes sent upstream")
        self.assertFalse([r for r in cap.of_type("command") if "evil@" in r["text"]],
                         "the relay read the smuggled MAIL FROM as a command")

    def test_bdat_to_a_destination_without_chunking_smuggles_nothing(self):
        # A hostile trial: aiosmtpd offers no CHUNKING; the relay passed "BDAT n LAST" and its
        # chunk on, aiosmtpd answered 500 and ran the chunk as commands, and delivered the
        # message smuggled in it. Now the relay answers 502 and closes, forwarding nothing of it.
        rec = Recorder()
        self.addCleanup(rec.stop)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port))
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
        chunk = (b"RSET\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
                 b"Subject: smuggled\r\n\r\nwire money\r\n.\r\n")
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        self.assertReply(c.reply(), 502, "5.5.1")
        self.assertEqual(c.read_to_eof(10), b"", "the relay closes after its 502")
        cap = mailtap.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "protocol_error")
        self.assertIn(b"wire money", cap.bytes_of("client", "in"))
        self.assertNotIn(b"BDAT", cap.bytes_of("upstream", "out"))
        self.assertNotIn(b"evil@", cap.bytes_of("upstream", "out"))
        time.sleep(0.5)
        self.assertEqual(rec.count(), 0, "nothing smuggled was delivered")

    def test_strict_refusal_leaves_a_well_formed_capture(self):
        # Regression test (fixed): after a message refused for a bare LF, the capture has a "bytes"
        # record after its "end" record, so `mailtap show` rejects the file. Same cause as
        # test_failures.test_upstream_dies_mid_data: relay_fsm.cpp process_client_input() records
        # consumed client input after end_session().
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.up.port))
        final, _ = self.session(mailtap, smuggling_message(0, b"\n.\n"))
        self.assertEqual(final.code // 100, 5)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(show_json(cap.path)["transactions"][0]["outcome"], "rejected")


class CommandLimits(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.up = self.start_scripted(ehlo_extra=[b"XCLIENT NAME ADDR PROTO HELO", b"XFORWARD NAME ADDR PROTO HELO"])
        self.mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.up.port))

    def finish(self, c):
        self.quit(c)
        conn = self.up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "upstream connection to close")
        return conn

    def test_forbidden_verbs_are_refused_and_never_forwarded(self):
        c = self.connect(self.mailtap.port)
        self.assertReply(c.reply(), 220)
        ehlo = c.command("EHLO client.test")
        self.assertReply(ehlo, 250)
        advertised = [t.split(" ")[0].upper() for t in ehlo.texts[1:]]
        self.assertNotIn("XCLIENT", advertised)
        self.assertNotIn("XFORWARD", advertised)
        self.assertIn("PIPELINING", advertised)
        # HTTP verbs close the session instead (test_hostile_input, issue 14 item 5).
        probes = [b"XCLIENT ADDR=192.0.2.1 NAME=spoofed.test", b"XFORWARD ADDR=192.0.2.1",
                  b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 25", b"xclient addr=192.0.2.1"]
        for p in probes:
            with self.subTest(probe=p):
                self.assertEqual(c.command(p).code, 500, p)
        self.assertReply(c.command("NOOP"), 250)   # the session goes on
        conn = self.finish(c)
        forwarded = [cmd.split(b" ")[0].upper() for cmd in conn.commands]
        for verb in (b"XCLIENT", b"XFORWARD", b"PROXY"):
            self.assertNotIn(verb, forwarded)
        self.assertEqual(forwarded, [b"EHLO", b"NOOP", b"QUIT"])

    def test_command_with_nul_is_refused(self):
        c = self.greeted_client(self.mailtap.port)
        self.assertEqual(c.command(b"NOOP \x00hidden").code, 500)
        conn = self.finish(c)
        self.assertNotIn(b"\x00", bytes(conn.raw))

    def test_3000_byte_command_line(self):
        c = self.greeted_client(self.mailtap.port)
        long_line = b"NOOP " + b"x" * 2993          # 2998 octets + CRLF = 3000
        self.assertEqual(len(long_line) + 2, 3000)
        r = c.command(long_line)
        self.assertReply(r, 500, "5.5.2")
        # Whether or not the session goes on, the line never reached the upstream.
        try:
            c.send(b"QUIT\r\n")
            c.read_to_eof(20)
        except OSError:
            pass
        conn = self.up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "upstream connection to close")
        self.assertNotIn(b"x" * 100, bytes(conn.raw))
        self.assertTrue(all(len(cmd) <= 2048 for cmd in conn.commands))

    def test_command_without_crlf_over_hard_cap(self):
        # protocol/limits.hpp: hard cap 4 KiB -> 500 5.5.2 and close; a partial line is never forwarded.
        c = self.greeted_client(self.mailtap.port)
        c.send(b"MAIL FROM:<" + b"a" * 5000)
        r = c.reply()
        self.assertReply(r, 500, "5.5.2")
        self.assertTrue(c.closed_by_peer(20), "mailtap did not close after the over-long line")
        conn = self.up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "upstream connection to close")
        self.assertNotIn(b"MAIL", bytes(conn.raw))
        self.assertEqual([cmd.split(b" ")[0] for cmd in conn.commands], [b"EHLO"])

    def test_1001_recipients(self):
        c = self.greeted_client(self.mailtap.port)
        rcpts = [("r%04d@example.test" % i) for i in range(1001)]
        batch = b"MAIL FROM:<sender@example.test>\r\n" + b"".join(
            b"RCPT TO:<" + r.encode() + b">\r\n" for r in rcpts)
        c.send(batch)                                  # pipelined, one write
        got = c.replies(1002, timeout=60)
        self.assertReply(got[0], 250)
        self.assertEqual([r.code for r in got[1:1001]], [250] * 1000)
        self.assertReply(got[1001], 452, "4.5.3")
        self.assertReply(c.command("DATA"), 354)
        message = make_message("<many-rcpts@example.test>")
        c.send(message + b".\r\n")
        self.assertReply(c.reply(), 250)
        conn = self.finish(c)
        forwarded = [cmd for cmd in conn.commands if cmd.startswith(b"RCPT TO:")]
        self.assertEqual(len(forwarded), 1000)
        self.assertNotIn(b"r1000@example.test", bytes(conn.raw))
        self.assertEqual(conn.messages, [message])
        cap = self.single_capture(self.mailtap)
        t = cap.transactions
        self.assertEqual(len(t), 1)
        self.assertEqual(t[0]["outcome"], "delivered")
        self.assertEqual(t[0]["rcpt_codes"].count(250), 1000)
        self.assertEqual(t[0]["rcpt_codes"][-1], 452)
        self.assertCaptureComplete(cap)


class PipeliningFlood(IntegrationTest):
    """1,000,000 pipelined NOOPs without reading a reply must not grow mailtap's memory, and
    the built-in sink ends a NOOP flood as Postfix does."""

    FLOOD_COMMANDS = 1_000_000
    SEND_LIMIT_S = 20.0
    STALL_S = 3.0
    GROWTH_LIMIT_KIB = 48 * 1024    # over the resident size before the flood

    def test_noop_flood_keeps_memory_bounded(self):
        # Regression test (fixed; pipelining floods, bounded memory): the flood stalls as
        # it should (client input capped, ~5 MB accepted before TCP back-pressure), yet VmRSS climbs
        # from ~6 MiB to 125-370 MiB within two seconds, growing in step with the capture file, and
        # stays there. Likely cause: captures/writer.cpp -- the queue cap (queued_bytes_cap, 16 MiB)
        # weighs only the payload of "bytes" records (6-14 octets per NOOP), not
        # command/reply/stage/note records nor each queued_record's own size (a std::variant of the
        # largest record type plus a shared_ptr, and each reply's heap-allocated lines), so several
        # records per NOOP (command, upstream-out bytes, reply, stage, ...) pile up without bound
        # while the single writer thread serialises them.
        # smtp-sink answers NOOPs for ever (the built-in sink ends a flood: test below), so
        # what is measured is the relay's own holding of a flood.
        sink = self.start_smtp_sink(dump=False)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port))
        c = self.greeted_client(mailtap.port)
        baseline = mailtap.rss_kib()
        payload = b"NOOP\r\n" * self.FLOOD_COMMANDS
        progress = {"sent": 0, "error": None, "stalled": False}
        stop = threading.Event()

        def flood():
            sock = c.sock
            sock.settimeout(0.5)
            view = memoryview(payload)
            deadline = time.monotonic() + self.SEND_LIMIT_S
            last_progress = time.monotonic()
            try:
                while progress["sent"] < len(payload) and not stop.is_set() and time.monotonic() < deadline:
                    try:
                        progress["sent"] += sock.send(view[progress["sent"]:progress["sent"] + 65536])
                        last_progress = time.monotonic()
                    except socket.timeout:
                        # mailtap stopped reading (that is the point); once it has accepted
                        # nothing for STALL_S the flood is over.
                        if time.monotonic() - last_progress > self.STALL_S:
                            progress["stalled"] = True
                            return
            except OSError as e:
                progress["error"] = e

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        self.addCleanup(stop.set)
        peak = baseline
        deadline = time.monotonic() + self.SEND_LIMIT_S + 5
        while t.is_alive() and time.monotonic() < deadline:
            peak = max(peak, mailtap.rss_kib())
            t.join(0.05)
        stop.set()
        t.join(5)
        settle = time.monotonic() + 2.0          # whatever mailtap still has queued
        while time.monotonic() < settle:
            peak = max(peak, mailtap.rss_kib())
            time.sleep(0.05)
        self.assertTrue(mailtap.alive(), "mailtap died under the flood: %s" % mailtap.stderr_text()[-2000:])
        self.assertIsNone(progress["error"], "the flood connection failed: %r" % progress["error"])
        self.assertLess(peak - baseline, memory_bound_kib(self.GROWTH_LIMIT_KIB),
                        "VmRSS grew to %d KiB (baseline %d KiB) after %d bytes of NOOPs"
                        % (peak, baseline, progress["sent"]))
        # mailtap still serves other clients while the flood is pending.
        other = self.greeted_client(mailtap.port)
        self.assertReply(other.command("NOOP"), 250)
        self.quit(other)
        # And the flooded session itself is still coherent: its replies, read now, are in
        # order and all 250 (read a bounded number of them).
        first = c.replies(1000, timeout=30)
        self.assertEqual({r.code for r in first}, {250})

    def test_builtin_sink_ends_a_noop_flood_like_postfix(self):
        # Postfix's smtpd_junk_command_limit (100) and smtpd_hard_error_limit (20): each NOOP
        # from the 102nd counts as an error (Postfix's junk_cmds++ > 100), and the 20th error gets
        # 421 4.7.0 and the close. So a client cannot make the capture grow without bound by NOOPs.
        mailtap = self.start_mailtap()
        c = self.greeted_client(mailtap.port)
        c.send(b"NOOP\r\n" * 1000)
        replies = []
        with self.assertRaises(ConnectionClosed):
            for _ in range(1001):
                replies.append(c.reply(10))
        # The sink's 421, then the relay's own for a NOOP still owed a reply when the sink closed.
        self.assertEqual([r.code for r in replies[:122]], [250] * 121 + [421])
        self.assertIn("too many errors", replies[121].text)
        self.assertLessEqual(len(replies), 123)
        self.assertEqual({r.code for r in replies[121:]}, {421})
        [cap] = mailtap.wait_captures(1)
        self.assertEqual(cap.problems(), [])
        self.assertEqual(parse_replies(cap.bytes_of("upstream", "in"))[-1].code, 421)
        recorded = [r.code for r in parse_replies(cap.bytes_of("client", "out"))]
        self.assertEqual(recorded[-len(replies):], [r.code for r in replies])


if __name__ == "__main__":
    unittest.main()
