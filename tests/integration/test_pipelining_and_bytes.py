"""Pipelining order and byte-exact relaying (issue items 3 and 4).

- A raw client pipelines MAIL FROM, two RCPT TO and DATA in ONE write: the replies come back
  in order (250, 250, 250, 354), then the body gets 250.
- Byte for byte: what the upstream stored (aiosmtpd's un-stuffed original_content, and
  smtp-sink's dump) equals what the client sent after un-stuffing, including dot-stuffed
  lines, 998-octet lines, every 8-bit octet, controls and trailing whitespace; the capture holds
  exactly the bytes of both legs.
"""

import re
import socket
import threading
import time
import unittest

from harness import (IntegrationTest, LOOPBACK, dot_stuff, dot_unstuff, make_message, scaled,
                     swaks_wire_message, wait_until)


def tricky_body():
    lines = [
        b"..leading dot already stuffed in the content",
        b".leading dot",
        b".",
        b"..",
        b" .",
        b".\t",
        b"trailing spaces   ",
        b"trailing tab\t",
        b"",
        b"x" * 998,                                   # the longest line RFC 5321 allows
        b"." + b"y" * 997,                            # 998 in the content, 999 stuffed
        bytes(b for b in range(0x80, 0x100)),        # every 8-bit octet
        b"controls \x01\x07\x08\x0b\x0c\x1b\x7f end",  # controls other than CR, LF and NUL
        "UTF-8: Grüße — δοκιμή — 日本語".encode("utf-8"),
        b"CRLF.CRLF lookalikes: <.> [.] . .. ...",
        b"",
        b"",
        b"last line",
    ]
    return b"\r\n".join(lines) + b"\r\n"


class PipeliningInOneWrite(IntegrationTest):

    def run_pipelined(self, mailtap):
        message = make_message("<pipelined@example.test>", b"Body after pipelined DATA.\r\n")
        c = self.greeted_client(mailtap.port)
        c.send(b"MAIL FROM:<sender@example.test>\r\nRCPT TO:<one@example.test>\r\n"
               b"RCPT TO:<two@example.test>\r\nDATA\r\n")
        got = c.replies(4)
        self.assertEqual([r.code for r in got], [250, 250, 250, 354], got)
        # In order: the MAIL reply first, then the two RCPT replies (by their enhanced codes
        # when the upstream gives them: X.1.0 for the sender, X.1.5 for recipients).
        if got[0].enhanced:
            self.assertEqual([r.enhanced for r in got[:3]], ["2.1.0", "2.1.5", "2.1.5"], got)
        c.send(message + b".\r\n")
        self.assertReply(c.reply(), 250)
        self.quit(c)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        t = cap.transactions
        self.assertEqual(len(t), 1)
        self.assertEqual(t[0]["outcome"], "delivered")
        self.assertEqual(t[0]["rcpt_to"], ["one@example.test", "two@example.test"])
        self.assertEqual(t[0]["rcpt_codes"], [250, 250])
        self.assertEqual(t[0]["size"], len(message))
        self.assertEqual(t[0]["message_id"], "<pipelined@example.test>")
        return message

    def test_builtin_sink(self):
        self.run_pipelined(self.start_mailtap())

    def test_smtp_sink(self):
        sink = self.start_smtp_sink()
        self.run_pipelined(self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port)))
        wait_until(lambda: sink.messages_counted() >= 1, 20, "smtp-sink counted the message")
        fields, _ = sink.dumps()[0]
        self.assertEqual(fields["X-Rcpt-Args"], [b"<one@example.test>", b"<two@example.test>"])

    def test_scripted_upstream_sees_commands_in_order(self):
        up = self.start_scripted()
        message = self.run_pipelined(self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port)))
        self.assertEqual(up.commands()[1:5], [b"MAIL FROM:<sender@example.test>", b"RCPT TO:<one@example.test>",
                                              b"RCPT TO:<two@example.test>", b"DATA"])
        self.assertEqual(up.messages(), [message])

    def test_two_transactions_back_to_back(self):
        # The second transaction's commands are pipelined right behind the first message's
        # terminator, in the same write as the body: RFC 2920 section 4's own example does
        # exactly this ("C: ." then "C: MAIL FROM:..." before the 250), and Postfix does too.
        #
        # Regression test (fixed): the replies are right, but the capture records only ONE
        # transaction, whose rcpt_to also holds the second transaction's recipient
        # (["b@example.test", "d@example.test"], rcpt_codes [250]); the second transaction is never
        # recorded. protocol/relay_fsm.cpp: the pipelined MAIL is parsed while txn_ still holds the
        # first transaction (its end-of-data reply has not arrived), so begin_transaction() returns
        # early ("MAIL inside a transaction: keep the first"), handle_command() appends the RCPT to
        # the first transaction, finish_transaction() then resets txn_, and the second end of data
        # finds no transaction to record.
        mailtap = self.start_mailtap()
        m1 = make_message("<first@example.test>")
        m2 = make_message("<second@example.test>", b"second\r\n")
        c = self.greeted_client(mailtap.port)
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.replies(3)], [250, 250, 354])
        c.send(m1 + b".\r\nMAIL FROM:<c@example.test>\r\nRCPT TO:<d@example.test>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.replies(4)], [250, 250, 250, 354])
        c.send(m2 + b".\r\nQUIT\r\n")
        self.assertEqual([r.code for r in c.replies(2)], [250, 221])
        cap = self.single_capture(mailtap)
        self.assertEqual([(t["outcome"], t["mail_from"], t["rcpt_to"], t["rcpt_codes"], t["message_id"], t["size"])
                          for t in cap.transactions],
                         [("delivered", "a@example.test", ["b@example.test"], [250], "<first@example.test>", len(m1)),
                          ("delivered", "c@example.test", ["d@example.test"], [250], "<second@example.test>", len(m2))])

    def test_rset_pipelined_after_the_dot(self):
        # ".", RSET, QUIT in one write (RFC 2920: RSET need not end a group). The upstream
        # accepts the message, so the capture must say delivered.
        #
        # Regression test (fixed): the capture records the transaction as "aborted" with final_reply
        # null although the client got the upstream's 250. protocol/relay_fsm.cpp handle_command():
        # case phase::rset calls finish_transaction(aborted) on txn_, which is still the transaction
        # whose end-of-data reply is pending; when the 250 arrives, after_reply() finds no txn_.
        mailtap = self.start_mailtap()
        m1 = make_message("<rset-after-dot@example.test>")
        c = self.greeted_client(mailtap.port)
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.replies(3)], [250, 250, 354])
        c.send(m1 + b".\r\nRSET\r\nQUIT\r\n")
        self.assertEqual([r.code for r in c.replies(3)], [250, 250, 221])
        cap = self.single_capture(mailtap)
        self.assertEqual(len(cap.transactions), 1, cap.transactions)
        t = cap.transactions[0]
        self.assertEqual((t["outcome"], t["message_id"], t["size"]),
                         ("delivered", "<rset-after-dot@example.test>", len(m1)))
        self.assertEqual(t["final_reply"]["code"], 250)


class ByteForByte(IntegrationTest):

    def send_raw(self, port, content, frm="sender@example.test", to="rcpt@example.test"):
        """Sends `content` (a message, CRLF endings) dot-stuffed; returns every byte sent."""
        c = self.connect(port)
        self.assertReply(c.reply(), 220)
        sent = []

        def cmd(line):
            sent.append(line + b"\r\n")
            return c.command(line)
        self.assertReply(cmd(b"EHLO bytes.test"), 250)
        self.assertReply(cmd(b"MAIL FROM:<" + frm.encode() + b"> BODY=8BITMIME"), 250)
        self.assertReply(cmd(b"RCPT TO:<" + to.encode() + b">"), 250)
        self.assertReply(cmd(b"DATA"), 354)
        wire = dot_stuff(content) + b".\r\n"
        # Sent in uneven pieces so that stuffing and line ends straddle reads.
        for i in range(0, len(wire), 777):
            c.send(wire[i:i + 777])
        sent.append(wire)
        self.assertReply(c.reply(), 250)
        self.assertReply(cmd(b"QUIT"), 221)
        c.read_to_eof(20)
        c.close()
        return b"".join(sent)

    def test_recorder_receives_exact_bytes(self):
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port))
        content = make_message("<bytes@example.test>", tricky_body())
        sent = self.send_raw(mailtap.port, content)
        msgs = rec.wait_for(1)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]["data"], content)
        self.assertEqual(msgs[0]["mail_options"], ["BODY=8BITMIME"])
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        # The capture is byte-exact on the client leg ...
        self.assertEqual(cap.bytes_of("client", "in"), sent)
        # ... and what went upstream in DATA is the client's DATA, unchanged.
        up = cap.bytes_of("upstream", "out")
        self.assertIn(b"DATA\r\n" + dot_stuff(content) + b".\r\n", up)
        t = cap.transactions[0]
        self.assertEqual((t["outcome"], t["size"], t["message_id"]),
                         ("delivered", len(dot_stuff(content)), "<bytes@example.test>"))

    def test_scripted_upstream_receives_exact_wire(self):
        up = self.start_scripted()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        content = make_message("<wire@example.test>", tricky_body())
        self.send_raw(mailtap.port, content)
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "upstream connection closed after QUIT")
        self.assertEqual(conn.wire_messages, [dot_stuff(content)])
        self.assertEqual(conn.messages, [content])

    def test_bdat_chunks_through_builtin_sink(self):
        # CHUNKING passes through: BDAT counts frame the bytes exactly, dots are not stuffed.
        mailtap = self.start_mailtap()
        content = make_message("<bdat@example.test>", tricky_body())
        c = self.greeted_client(mailtap.port)
        cut = 1000
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
               + b"BDAT %d\r\n" % cut + content[:cut]
               + b"BDAT %d LAST\r\n" % (len(content) - cut) + content[cut:])
        got = c.replies(4)
        self.assertEqual([r.code for r in got], [250, 250, 250, 250], got)
        self.quit(c)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        t = cap.transactions
        self.assertEqual([(x["outcome"], x["size"], x["message_id"]) for x in t],
                         [("delivered", len(content), "<bdat@example.test>")])
        self.assertIn(content[cut:], cap.bytes_of("upstream", "out"))

    def test_smtp_sink_dump_matches(self):
        sink = self.start_smtp_sink()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port))
        content = make_message("<dump@example.test>", tricky_body())
        self.send_raw(mailtap.port, content)
        wait_until(lambda: sink.messages_counted() >= 1, 20, "smtp-sink counted the message")
        dumps = wait_until(lambda: sink.dumps(), 20, "smtp-sink dump")
        # smtp-sink stores the un-stuffed message with LF line endings plus one empty line.
        self.assertEqual(dumps[0][1], content.replace(b"\r\n", b"\n") + b"\n")

    def test_swaks_data_file_reaches_recorder_unchanged(self):
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port))
        content = make_message("<swaks-bytes@example.test>", tricky_body())
        path = self.write_file("tricky.eml", content)
        rc, out = self.swaks(mailtap.port, "--from", "s@example.test", "--to", "r@example.test",
                             "--data", "@" + path)
        self.assertEqual(rc, 0, out[-2000:])
        msgs = rec.wait_for(1)
        # swaks adds one CRLF before its terminator (see harness.swaks_wire_message).
        self.assertEqual(msgs[0]["data"], dot_unstuff(swaks_wire_message(content)))
        self.assertEqual(msgs[0]["data"], content + b"\r\n")
        cap = self.single_capture(mailtap)
        self.assertEqual(cap.transactions[0]["size"], len(swaks_wire_message(content)))



class ClientSlowToRead(IntegrationTest):
    """A client that pipelines far more than it reads: the relay's replies fill the client's
    tiny receive buffer, so its writes to the client are partial or refused (would block) and
    what is left waits in the outbox for the leg's writer (relay/leg_stream.cpp write_now). Every
    reply still arrives, once, in order, and the capture holds exactly the bytes the client
    received."""

    # EHLO: a 100-byte reply for an 18-byte command, so that the replies outgrow the relay's
    # socket buffer (4 MB at most with Linux's default tcp_wmem) and its writes would block.
    COMMANDS = 45_000
    COMMAND = b"EHLO again.test\r\n"

    def test_every_reply_arrives_once_in_order(self):
        sink = self.start_smtp_sink()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: a small window
        sock.settimeout(scaled(60.0))
        sock.connect((LOOPBACK, mailtap.port))
        received = bytearray()
        lines = 0   # every line the relay sends ends in CRLF: one LF each, counted chunk by chunk

        def read_until(done):
            nonlocal lines
            deadline = time.monotonic() + scaled(60.0)
            while not done() and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)
                lines += chunk.count(b"\n")

        def read_lines(count):
            read_until(lambda: lines >= count)

        read_lines(1)                                   # the banner
        sock.sendall(b"EHLO client.test\r\n")
        read_until(lambda: re.search(rb"(^|\r\n)250 [^\r\n]*\r\n$", bytes(received)) is not None)
        before = lines
        lines_per_reply = before - 1                    # the EHLO reply's lines, after the banner
        # Another thread sends, because the relay stops reading once its outbox to us is full
        # (as it should): a blocked sendall here would wait for a read that never comes.
        sender = threading.Thread(target=sock.sendall, args=(self.COMMAND * self.COMMANDS,), daemon=True)
        sender.start()
        time.sleep(1.0)                                 # replies pile up: the relay's writes would block
        read_lines(before + self.COMMANDS * lines_per_reply)
        sender.join(scaled(60.0))
        self.assertFalse(sender.is_alive(), "the relay stopped reading the client for good")
        first_ehlo_reply = bytes(received).split(b"\r\n")[1:before]
        replies = bytes(received).split(b"\r\n")[before:before + self.COMMANDS * lines_per_reply]
        self.assertEqual(replies, first_ehlo_reply * self.COMMANDS)
        sock.sendall(b"QUIT\r\n")
        read_lines(before + self.COMMANDS * lines_per_reply + 1)
        self.assertTrue(bytes(received).endswith(b"\r\n") and bytes(received).split(b"\r\n")[-2].startswith(b"221"),
                        bytes(received[-80:]))
        sock.close()
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.bytes_of("client", "out"), bytes(received))
        self.assertEqual(cap.bytes_of("client", "in"), b"EHLO client.test\r\n" + self.COMMAND * self.COMMANDS + b"QUIT\r\n")


if __name__ == "__main__":
    unittest.main()
