"""Message lines that real MTAs accept (issue 14 item 7; protocol/data_framer.hpp).

- A 100 KiB single line (an HTML part) is relayed byte for byte to Postfix's smtp-sink and
  recorded, where it used to fail the message with 550 5.6.0 and 421; a 32 MiB line streams
  through without growing mailtap by its length.
- Under bare_line_endings = "normalize" each bare CR or LF is a space: a message with Unix
  line endings (what curl sends without --crlf) is stored upstream as one line, and a bare
  "\\n.\\n" does not end it; only CRLF.CRLF does (RFC 5321 4.1.1.4).
- The SMTP smuggling sequences under normalize: the upstream reads exactly the one message the
  relay read and recorded, the would-be smuggled transaction inside it, and never a bare CR or LF.
"""

import threading
import time
import unittest

from harness import (IntegrationTest, LOOPBACK, dot_unstuff, make_message, memory_bound_kib,
                     normalized_message, parse_replies, swaks_wire_message, wait_until)
from test_limits_and_smuggling import SMUGGLED_TAIL, SMUGGLING, smuggling_message

HUNDRED_KIB = 100 * 1024
RFC_LINE_MAX = 998   # protocol/limits.hpp data_line_rfc_max: octets before the CRLF


def data_section(stream):
    """The DATA bytes of a leg's stream (client in, or upstream out): from after the first
    DATA command line through the first CRLF.CRLF, the terminator included."""
    start = stream.index(b"\r\nDATA\r\n") + len(b"\r\nDATA\r\n")
    end = stream.index(b"\r\n.\r\n", start - 2) + 5
    return stream[start:end]


def html_line(length):
    return b"<p>" + b"x" * (length - 7) + b"</p>"


class LongLines(IntegrationTest):

    def test_100kib_line_relayed_byte_exact_to_smtp_sink_and_recorded(self):
        sink = self.start_smtp_sink()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port))
        line = html_line(HUNDRED_KIB)
        message = make_message("<long-line@example.test>",
                               b"<html><body>\r\n" + line + b"\r\n.a leading dot\r\n" + line + b"\r\n</body></html>\r\n",
                               extra_headers=b"Content-Type: text/html\r\n")
        path = self.write_file("long.eml", message)
        rc, out = self.swaks(mailtap.port, "--from", "sender@example.test", "--to", "rcpt@example.test",
                             "--data", "@" + path)
        self.assertEqual(rc, 0, out[-2000:])
        self.assertRegex(out, r"(?m)^<-  250 ", "swaks did not get 250 at the end of data")

        # The upstream (Postfix smtp-sink) stored the message unchanged: its dumps are
        # un-stuffed with LF line endings and one empty line appended.
        wire = swaks_wire_message(message)
        wait_until(lambda: len(sink.dumps()) == 1, 20, "smtp-sink to dump the message")
        (_, stored), = sink.dumps()
        expected = dot_unstuff(wire).replace(b"\r\n", b"\n") + b"\n"
        self.assertTrue(stored == expected, "smtp-sink stored something other than the message "
                        "(%d vs %d bytes)" % (len(stored), len(expected)))
        self.assertIn(b"\n" + line + b"\n", stored)

        # Byte exact on the wire, and recorded: the capture's upstream leg carries exactly the
        # DATA bytes the client sent, the transaction is delivered, a note names the long lines.
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        sent = data_section(cap.bytes_of("client", "in"))
        self.assertTrue(sent == wire + b".\r\n", "swaks sent other bytes than expected")
        self.assertTrue(data_section(cap.bytes_of("upstream", "out")) == sent,
                        "the DATA bytes upstream differ from the client's")
        (t,) = cap.transactions
        self.assertEqual(t["outcome"], "delivered")
        self.assertEqual(t["size"], len(wire))
        self.assertEqual(t["message_id"], "<long-line@example.test>")
        self.assertEqual(t["final_reply"]["code"], 250)
        notes = [n for n in cap.notes if "longest" in n]
        self.assertEqual(len(notes), 1, cap.notes)
        self.assertIn("2 message line(s) over %d octets" % RFC_LINE_MAX, notes[0])
        self.assertIn("longest %d" % len(line), notes[0])

    def test_32mib_line_streams_with_bounded_memory(self):
        # The framer keeps only its CR/LF/dot state: a single 32 MiB line does not grow mailtap
        # by its length (what growth there is, is the capture writer's bounded queue).
        size = 32 * 1024 * 1024
        mailtap = self.start_mailtap()    # built-in sink: its memory is mailtap's memory too
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        baseline = peak = mailtap.rss_kib()
        payload = b"Subject: one long line\r\n\r\n" + b"y" * size + b"\r\n.\r\n"
        sender = threading.Thread(target=c.sock.sendall, args=(payload,), daemon=True)
        sender.start()
        deadline = time.monotonic() + 120
        while sender.is_alive() and time.monotonic() < deadline:
            peak = max(peak, mailtap.rss_kib())
            sender.join(0.02)
        self.assertFalse(sender.is_alive(), "mailtap stopped reading the long line")
        self.assertReply(c.reply(60), 250)
        for _ in range(20):                     # whatever is still queued for the capture
            peak = max(peak, mailtap.rss_kib())
            time.sleep(0.05)
        self.quit(c)
        self.assertLess(peak - baseline, memory_bound_kib(24 * 1024),
                        "VmRSS grew by %d KiB for one %d KiB line" % (peak - baseline, size // 1024))
        cap = self.single_capture(mailtap, timeout=60)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])
        self.assertTrue(any("longest %d" % size in n for n in cap.notes), cap.notes)

    def test_line_at_rfc_limit_is_not_noted(self):
        sink = self.start_smtp_sink()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port))
        message = make_message("<rfc-line@example.test>", html_line(RFC_LINE_MAX) + b"\r\n")
        path = self.write_file("rfc.eml", message)
        rc, out = self.swaks(mailtap.port, "--to", "rcpt@example.test", "--data", "@" + path)
        self.assertEqual(rc, 0, out[-2000:])
        cap = self.single_capture(mailtap)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])
        self.assertEqual([n for n in cap.notes if "longest" in n], [])


class UnixLineEndings(IntegrationTest):
    """A sender that writes a file with LF line endings straight into DATA, as curl does
    without --crlf: the file's bytes, then CRLF.CRLF (curl adds the CRLF when the data does not
    end with one)."""

    MESSAGE = (b"From: sender@example.test\nTo: rcpt@example.test\nSubject: unix\n"
               b"Message-ID: <unix@example.test>\n\nfirst line\n..stuffed\nlast line\n")

    def send(self, mailtap, data, quit=True):
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(data)
        final = c.reply()
        if quit:
            self.quit(c)
        else:
            c.close()
        return final

    def test_unix_line_endings_under_normalize_become_spaces(self):
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port),
                                     args=["--bare-line-endings", "normalize"])
        final = self.send(mailtap, self.MESSAGE + b"\r\n.\r\n")
        self.assertReply(final, 250)
        (stored,) = rec.wait_for(1)
        # Each bare LF is a space: the message is one line (its "..stuffed" mid-line, kept),
        # then curl's CRLF before the dot.
        expected = self.MESSAGE.replace(b"\n", b" ") + b"\r\n"
        self.assertEqual(stored["data"], expected)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.header["normalize_to"], "space")
        (t,) = cap.transactions
        self.assertEqual(t["outcome"], "delivered")
        self.assertEqual(t["size"], len(self.MESSAGE) + 2, "each bare LF counted as its space")
        self.assertNoBareCrLf(cap.bytes_of("upstream", "out"), "bytes sent upstream")
        self.assertTrue(any("normalized %d bare CR/LF to spaces" % self.MESSAGE.count(b"\n") in n
                            for n in cap.notes), cap.notes)

    def test_lf_dot_lf_does_not_end_the_message_under_normalize(self):
        # A sender with Unix line endings throughout, its terminator included: ".\n" is text,
        # and the message ends only at the CRLF.CRLF that follows.
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port),
                                     args=["--bare-line-endings", "normalize"])
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(self.MESSAGE + b".\n")
        with self.assertRaises(Exception, msg="a reply came: the relay ended the message at \\n.\\n"):
            c.reply(1)
        c.send(b"\r\n.\r\n")
        self.assertReply(c.reply(), 250)
        self.quit(c)
        (stored,) = rec.wait_for(1)
        self.assertEqual(stored["data"], self.MESSAGE.replace(b"\n", b" ") + b". \r\n")

    def test_unix_line_endings_refused_in_strict_mode(self):
        # The default, like Postfix with smtpd_forbid_bare_newline: refused, nothing delivered.
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port))
        final = self.send(mailtap, self.MESSAGE + b"\r\n.\r\n", quit=False)
        self.assertReply(final, 550, "5.6.0")
        cap = self.single_capture(mailtap)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["rejected"])
        self.assertEqual(rec.count(), 0)


class SmugglingUnderNormalize(IntegrationTest):

    def test_upstream_reads_what_the_relay_read_and_recorded(self):
        # Each smuggling sequence (test_limits_and_smuggling.SMUGGLING) inside a message, then
        # the real CRLF.CRLF and QUIT, all in one write. Under normalize each bare CR or LF is
        # a space and only CRLF.CRLF ends the message, so the would-be smuggled transaction is
        # message text. The upstream must read exactly what the relay read and recorded: one
        # message, the same commands, no bare CR or LF, nothing the relay did not record.
        up = self.start_scripted()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port),
                                     args=["--bare-line-endings", "normalize"])
        for n, seq in enumerate(SMUGGLING, start=1):
            with self.subTest(seq=seq):
                wire = smuggling_message(n, seq)
                c = self.greeted_client(mailtap.port)
                self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
                self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
                self.assertReply(c.command("DATA"), 354)
                c.send(wire + b".\r\nQUIT\r\n")
                replies = parse_replies(c.read_to_eof(20))
                c.close()
                conn = up.wait_for_connections(n)[n - 1]
                wait_until(conn.closed.is_set, 20, "upstream connection %d to close" % n)
                raw = bytes(conn.raw)
                self.assertNoBareCrLf(raw, "%r: bytes received upstream" % seq)

                first, rest = normalized_message(wire + b".\r\n")
                self.assertEqual(conn.wire_messages[0], first, "the upstream read another first message")
                self.assertEqual(replies[0].code, 250, replies)
                self.assertEqual(replies[-1].code, 221, replies)
                self.assertEqual(rest, b"")   # nothing after the real terminator but QUIT
                # The sequence is message text: one message, the tail inside it.
                self.assertIn(SMUGGLED_TAIL.split(b"\r\n")[0], first)
                self.assertEqual(len(conn.messages), 1)
                self.assertFalse(any(b"evil@" in cmd for cmd in conn.commands))
                self.assertEqual([r.code for r in replies], [250, 221], replies)

        caps = mailtap.wait_captures(len(SMUGGLING), timeout=60)
        self.assertEqual(len(caps), len(SMUGGLING))
        by_id = {}
        for cap in caps:
            self.assertCaptureComplete(cap)
            by_id[cap.transactions[0]["message_id"]] = cap
        for n, seq in enumerate(SMUGGLING, start=1):
            with self.subTest(seq=seq):
                cap = by_id["<smuggle-%d@example.test>" % n]
                conn = up.all_connections()[n - 1]
                # The upstream received exactly the bytes the relay recorded sending it.
                self.assertTrue(cap.bytes_of("upstream", "out") == bytes(conn.raw),
                                "the upstream received bytes the capture does not show")
                # One recorded transaction per message the upstream read, of the same size,
                # and every command the upstream read is one the relay recorded from the client.
                t = cap.transactions
                self.assertEqual(len(t), 1)
                self.assertEqual([x["outcome"] for x in t], ["delivered"] * len(conn.messages))
                self.assertEqual([x["size"] for x in t], [len(m) for m in conn.wire_messages])
                recorded = [r["text"].encode() for r in cap.of_type("command")]
                for cmd in conn.commands:
                    if cmd.startswith(b"EHLO"):
                        continue   # the relay's own EHLO upstream may differ from the client's
                    self.assertIn(cmd, recorded, "the upstream read a command the relay did not record")
                self.assertTrue(any("normaliz" in note for note in cap.notes), cap.notes)


if __name__ == "__main__":
    unittest.main()
