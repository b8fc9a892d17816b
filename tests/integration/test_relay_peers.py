"""Real SMTP peers through mailtap: swaks -> mailtap -> {built-in sink, Postfix smtp-sink},
and smtp-source -> mailtap -> smtp-sink at volume (issue items 1 and 2).

Every message must get 250 at end of data, and its capture must show the transaction
delivered with the size as on the wire (dot-stuffed, terminator excluded) and the
Message-ID from the header.
"""

import os
import re
import subprocess
import unittest

from harness import (IntegrationTest, SMTP_SOURCE, LOOPBACK, crlf, make_message, show_json,
                     swaks_wire_message, wait_until)

TWENTY_MIB = 20 * 1024 * 1024
EIGHT_BIT_BODY = ("Grüße aus Köln — ελληνικά, русский, 日本語, emoji \U0001F4EC\r\n"
                  "Latin-1 bytes follow: ").encode("utf-8") + bytes(range(0xA0, 0x100)) + b"\r\n"


def sink_printable(text):
    """smtp-sink writes its X-*-Args dump headers with every non-ASCII byte shown as '?'."""
    return re.sub(rb"[\x80-\xff]", b"?", text.encode("utf-8"))


class SwaksThroughMailtap:
    """Mixin: the swaks cases, run against the upstream set up by the concrete class."""

    upstream_kind = None

    def setUp(self):
        super().setUp()
        if self.upstream_kind == "smtp-sink":
            self.sink = self.start_smtp_sink()
            self.mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.sink.port))
        else:
            self.sink = None
            self.mailtap = self.start_mailtap(upstream="builtin")

    # -- helpers
    def send_with_swaks(self, message, *extra, frm="sender@example.test", to="rcpt@example.test"):
        path = self.write_file("message.eml", message)
        rc, out = self.swaks(self.mailtap.port, "--from", frm, "--to", to, "--data", "@" + path, *extra)
        self.assertEqual(rc, 0, out[-3000:])
        # The reply to the final '.' (the line after the data) is a 250.
        after_dot = re.search(r"^ -> (?:\.|\d+ lines sent)\n<-  (\d{3})", out, re.M)
        self.assertIsNotNone(after_dot, out[-3000:])
        self.assertEqual(after_dot.group(1), "250", out[-3000:])
        return out

    def assert_delivered_capture(self, message, message_id, frm, to, use_show=True):
        wire = swaks_wire_message(message)
        cap = self.single_capture(self.mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "client_quit")
        txns = cap.transactions
        self.assertEqual(len(txns), 1, txns)
        t = txns[0]
        self.assertEqual(t["outcome"], "delivered")
        self.assertEqual(t["final_reply"]["code"], 250)
        self.assertFalse(t["synthesized"])
        self.assertEqual(t["message_id"], message_id)
        self.assertEqual(t["size"], len(wire))
        self.assertEqual(t["mail_from"], frm)
        self.assertEqual(t["rcpt_to"], [to])
        # What the capture says the client sent in DATA is exactly what swaks put on the wire.
        client_in = cap.bytes_of("client", "in")
        self.assertIn(b"\r\n" + wire + b".\r\n", client_in)
        if use_show:
            doc = show_json(cap.path)
            self.assertTrue(doc["complete"])
            self.assertEqual(doc["outcome"], "delivered")
            self.assertEqual(doc["end_reason"], "client_quit")
            st = doc["transactions"]
            self.assertEqual(len(st), 1)
            self.assertEqual(st[0]["outcome"], "delivered")
            self.assertEqual(st[0]["size"], len(wire))
            self.assertEqual(st[0]["message_id"], message_id)
            self.assertEqual(st[0]["final_reply"]["code"], 250)
            names = [s["name"] for s in doc["stages"]]
            for stage in ("connect", "banner", "ehlo", "mail", "rcpt", "data", "body", "data_end", "quit"):
                self.assertIn(stage, names)
        return cap

    def assert_sink_got(self, message, frm, to):
        """smtp-sink counted one message, and its dump holds our message (LF line endings)."""
        if not self.sink:
            return
        wait_until(lambda: self.sink.messages_counted() >= 1, 20, "smtp-sink message counter")
        self.assertEqual(self.sink.messages_counted(), 1)
        dumps = wait_until(lambda: self.sink.dumps(), 20, "smtp-sink dump")
        self.assertEqual(len(dumps), 1)
        fields, body = dumps[0]
        self.assertEqual(fields["X-Mail-Args"][0].split(b" ")[0], sink_printable("<%s>" % frm))
        self.assertEqual(fields["X-Rcpt-Args"][0].split(b" ")[0], sink_printable("<%s>" % to))
        expected = crlf(message).replace(b"\r\n", b"\n")
        self.assertEqual(body[:len(expected)], expected)
        return fields

    # -- the cases
    def test_plain_ehlo(self):
        mid = "<plain.%s@example.test>" % self.upstream_kind
        message = make_message(mid, b"A plain message.\r\n.A line that starts with a dot.\r\n")
        out = self.send_with_swaks(message)
        self.assertIn(" -> EHLO swaks.test", out)
        self.assert_delivered_capture(message, mid, "sender@example.test", "rcpt@example.test")
        self.assert_sink_got(message, "sender@example.test", "rcpt@example.test")

    def test_pipeline(self):
        mid = "<pipeline.%s@example.test>" % self.upstream_kind
        message = make_message(mid, b"Pipelined.\r\n")
        out = self.send_with_swaks(message, "--pipeline")
        # PIPELINING passed through the relay, so swaks really pipelined MAIL, RCPT and DATA.
        self.assertRegex(out, r"<-  250[ -]PIPELINING")
        self.assertRegex(out, r" -> MAIL FROM:<[^\n]*>\n -> RCPT TO:<[^\n]*>\n -> DATA\n<-  250")
        self.assert_delivered_capture(message, mid, "sender@example.test", "rcpt@example.test")
        self.assert_sink_got(message, "sender@example.test", "rcpt@example.test")

    def test_8bit_body(self):
        mid = "<eightbit.%s@example.test>" % self.upstream_kind
        message = make_message(mid, EIGHT_BIT_BODY, extra_headers=b"MIME-Version: 1.0\r\n"
                               b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n")
        self.send_with_swaks(message)
        cap = self.assert_delivered_capture(message, mid, "sender@example.test", "rcpt@example.test")
        self.assertIn(EIGHT_BIT_BODY, cap.bytes_of("upstream", "out"))
        self.assert_sink_got(message, "sender@example.test", "rcpt@example.test")

    def test_smtputf8_address_swaks(self):
        # swaks 20201014 has no SMTPUTF8 option; it sends the UTF-8 addresses as they are.
        mid = "<utf8addr.%s@example.test>" % self.upstream_kind
        frm, to = "üser@bücher.example", "δοκιμή@example.test"
        message = make_message(mid, b"UTF-8 envelope.\r\n")
        self.send_with_swaks(message, frm=frm, to=to)
        self.assert_delivered_capture(message, mid, frm, to)
        self.assert_sink_got(message, frm, to)

    def test_smtputf8_address_raw_client(self):
        # The parameterised form: MAIL FROM:<ü@example.test> SMTPUTF8 BODY=8BITMIME.
        mid = "<utf8raw.%s@example.test>" % self.upstream_kind
        frm, to = "ü@example.test", "δοκιμή@example.test"
        message = make_message(mid, "Grüße, δοκιμή.\r\n".encode("utf-8"))
        c = self.greeted_client(self.mailtap.port)
        self.assertReply(c.command("MAIL FROM:<%s> SMTPUTF8 BODY=8BITMIME" % frm), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % to), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(message + b".\r\n")
        self.assertReply(c.reply(), 250)
        self.quit(c)
        cap = self.single_capture(self.mailtap)
        self.assertCaptureComplete(cap)
        t = cap.transactions[0]
        self.assertEqual((t["outcome"], t["mail_from"], t["rcpt_to"]), ("delivered", frm, [to]))
        self.assertEqual((t["size"], t["message_id"]), (len(message), mid))
        # The parameters reached the upstream untouched.
        self.assertIn(("MAIL FROM:<%s> SMTPUTF8 BODY=8BITMIME\r\n" % frm).encode("utf-8"),
                      cap.bytes_of("upstream", "out"))
        if self.sink:
            wait_until(lambda: self.sink.dumps(), 20, "smtp-sink dump")
            fields, _ = self.sink.dumps()[0]
            self.assertEqual(fields["X-Mail-Args"][0], sink_printable("<%s> SMTPUTF8 BODY=8BITMIME" % frm))

    def test_20mib_message(self):
        mid = "<twenty.%s@example.test>" % self.upstream_kind
        line = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/abcdefghijkl\r\n"
        body = line * (TWENTY_MIB // len(line) + 1)
        message = make_message(mid, body, extra_headers=b"X-Size: twenty MiB\r\n")
        self.assertGreater(len(message), TWENTY_MIB)
        self.send_with_swaks(message, "--suppress-data")
        # The capture of a 20 MiB session is read directly (show --json would print every byte).
        self.assert_delivered_capture(message, mid, "sender@example.test", "rcpt@example.test",
                                      use_show=False)
        if self.sink:
            wait_until(lambda: self.sink.messages_counted() >= 1, 30, "smtp-sink message counter")
            dumps = self.sink.dumps()
            self.assertEqual(len(dumps), 1)
            self.assertEqual(dumps[0][1], message.replace(b"\r\n", b"\n") + b"\n\n")


class SwaksToBuiltinSink(SwaksThroughMailtap, IntegrationTest):
    upstream_kind = "builtin"


class SwaksToSmtpSink(SwaksThroughMailtap, IntegrationTest):
    upstream_kind = "smtp-sink"


class SmtpSourceVolume(IntegrationTest):
    """smtp-source -d -s 10 -m 1000 -l 1024 -> mailtap -> smtp-sink -c: every message
    delivered, every session captured."""

    def test_1000_messages_over_10_sessions(self):
        sink = self.start_smtp_sink(dump=False)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port))
        r = subprocess.run([SMTP_SOURCE, "-d", "-s", "10", "-m", "1000", "-l", "1024",
                            "%s:%d" % (LOOPBACK, mailtap.port)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=240)
        self.assertEqual(r.returncode, 0, r.stdout.decode("utf-8", "replace")[-2000:])
        # Sink side: smtp-sink counted 1000 messages ended with '.'.
        wait_until(lambda: sink.messages_counted() >= 1000, 30, "1000 messages counted by smtp-sink")
        self.assertEqual(sink.messages_counted(), 1000)
        # Relay side: 10 complete captures whose transactions sum to 1000 delivered.
        caps = mailtap.wait_captures(10, timeout=60)
        self.assertEqual(len(caps), 10)
        delivered = 0
        for cap in caps:
            self.assertCaptureComplete(cap)
            self.assertEqual(cap.end["reason"], "client_quit", cap.path)
            for t in cap.transactions:
                self.assertEqual(t["outcome"], "delivered", (cap.path, t))
                self.assertEqual(t["final_reply"]["code"], 250)
                self.assertFalse(t["synthesized"])
                self.assertIsNotNone(t["message_id"])
                self.assertGreater(t["size"], 1024)
                delivered += 1
        self.assertEqual(delivered, 1000)

    def test_no_captures_relays_the_same_and_records_nothing(self):
        """`run --no-captures` (the bench's capture-off comparison): every message still
        delivered, and no capture directory, file or index is made."""
        sink = self.start_smtp_sink(dump=False)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), args=["--no-captures"])
        r = subprocess.run([SMTP_SOURCE, "-d", "-s", "5", "-m", "200", "-l", "1024",
                            "%s:%d" % (LOOPBACK, mailtap.port)],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=240)
        self.assertEqual(r.returncode, 0, r.stdout.decode("utf-8", "replace")[-2000:])
        wait_until(lambda: sink.messages_counted() >= 200, 30, "200 messages counted by smtp-sink")
        self.assertEqual(sink.messages_counted(), 200)
        self.assertFalse(os.path.exists(mailtap.captures), "a capture directory was made: %s" % mailtap.captures)


if __name__ == "__main__":
    unittest.main()
