"""Defects found by trying the relay as its users would (issue 14, items 1, 2, 8, 9, 10, 11).

Each case drives the real binary with a real or scripted peer and asserts on what each side
received and on the capture: the upstream's reply during DATA is final for the message; a
client's FIN ends its input, not the session; slow senders are timed out per command line and
by a minimum data rate; the upstream's reply after the client left is still recorded; the
drain deadline answers 421 and records what came; the end of a BDAT message is held like the
dot.
"""

import signal
import socket
import threading
import time
import unittest

from harness import (IntegrationTest, LOOPBACK, ScriptedConnection, ScriptedServer, make_message,
                     parse_replies)

FROM = "sender@example.test"
TO = "rcpt@example.test"


class ScriptedMta(ScriptedServer):
    """A minimal MTA on a raw socket whose DATA handling a test chooses.

    in_data(conn, chunk) is called with each chunk received inside DATA and returns (bytes to
    send, whether the message is over). After the message, lines are commands again."""

    def __init__(self, in_data, chunking=False):
        self.in_data = in_data
        self.chunking = chunking
        super().__init__(ScriptedConnection)

    def _serve(self, conn):
        sock = conn.sock
        try:
            sock.sendall(b"220 scripted-mta.test ESMTP\r\n")
            buf = b""
            in_data = False
            for chunk in self.received(conn, 120):
                if in_data:
                    out, over = self.in_data(conn, chunk)
                    if out:
                        sock.sendall(out)
                    if not over:
                        continue
                    in_data = False
                    buf = b""
                    continue
                buf += chunk
                out = b""
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    conn.commands.append(line)
                    verb = line.split(b" ", 1)[0].upper()
                    if verb == b"EHLO":
                        out += b"250-scripted-mta.test\r\n250 PIPELINING\r\n"
                    elif verb == b"DATA":
                        out += b"354 go ahead\r\n"
                        in_data = True
                        rest, buf = buf, b""
                        if rest:
                            more, over = self.in_data(conn, rest)
                            out += more
                            in_data = not over
                        break
                    elif verb == b"QUIT":
                        sock.sendall(out + b"221 2.0.0 Bye\r\n")
                        return
                    else:
                        out += b"250 2.0.0 Ok\r\n"
                if out:
                    sock.sendall(out)
        except OSError:
            pass
        finally:
            sock.close()
            conn.closed.set()


class RelayDefects(IntegrationTest):

    def relay(self, upstream=None, config=None, args=()):
        argv = list(args)
        if config is not None:
            argv += ["--config", self.write_file("mailtap.toml", config.encode("utf-8"))]
        up = "builtin" if upstream is None else "%s:%d" % (LOOPBACK, upstream.port)
        return self.start_mailtap(upstream=up, args=argv)

    def scripted(self, in_data):
        s = ScriptedMta(in_data)
        self.addCleanup(s.stop)
        return s

    def trickle(self, c, pieces):
        """Sends `pieces` one every 0.25 s until the relay answers; that reply, or None if it
        never did (or closed without one)."""
        for piece in pieces:
            try:
                c.send(piece)
                return c.reply(0.25)
            except TimeoutError:
                continue
            except Exception:
                return None
        return None

    def envelope(self, c):
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)

    # ------------------------------------------------------------ item 1

    def test_upstream_reply_during_data_is_final_and_nothing_more_is_forwarded(self):
        """The upstream gives up after its 354 and then reads lines as commands: mailtap must
        stop forwarding, answer the client with that reply at its dot, and record it."""
        refused = threading.Event()

        def refuse_early(conn, chunk):
            conn.data_bytes += chunk
            if not refused.is_set():
                refused.set()
                return b"554 5.6.0 Message content rejected\r\n", False
            # A real server now takes every line as a command and would say 250 to MAIL.
            return b"250 2.1.0 Ok\r\n" * chunk.count(b"\r\n"), False

        mta = self.scripted(refuse_early)
        m = self.relay(mta)
        c = self.greeted_client(m.port)
        self.envelope(c)
        self.assertReply(c.command("DATA"), 354)
        c.send(b"Subject: early refusal\r\n\r\nfirst line\r\n")
        self.assertTrue(refused.wait(10), "the upstream never saw the body")
        time.sleep(0.3)   # the 554 reaches the relay before the rest of the body
        c.send(b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.test>\r\n.\r\n")
        r = c.reply(10)
        self.assertReply(r, 554, "5.6.0")
        rest = c.read_to_eof(10)
        self.assertNotIn(b"250", rest, "no 250 may follow for a refused message")

        cap = self.single_capture(m)
        self.assertCaptureComplete(cap)
        upstream_got = cap.bytes_of("upstream", "out")
        self.assertNotIn(b"evil", upstream_got)
        self.assertNotIn(b"evil", bytes(mta.all_connections()[0].raw))
        [t] = cap.transactions
        self.assertEqual(t["outcome"], "rejected")
        self.assertEqual(t["final_reply"]["code"], 554)
        self.assertFalse(t.get("synthesized", False))

    # ------------------------------------------------------------ item 2

    def pipelined_then_half_close(self, port, block):
        s = socket.create_connection((LOOPBACK, port), timeout=20)
        self.addCleanup(s.close)
        s.settimeout(20)
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(4096)
        self.assertTrue(buf.startswith(b"220"), buf)
        s.sendall(b"EHLO halfclose.test\r\n")
        buf = b""
        while not any(line.startswith(b"250 ") for line in buf.split(b"\r\n")):
            buf += s.recv(4096)
        s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        got = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return [r.code for r in parse_replies(got)]

    def test_half_close_after_pipelined_bdat_last_and_quit_gets_every_reply(self):
        m = self.relay()   # the built-in sink offers CHUNKING
        body = b"Subject: hi\r\n\r\nhey!\r\n"
        self.assertEqual(len(body), 21)
        block = (b"MAIL FROM:<a@x.test>\r\nRCPT TO:<r1@example.test>\r\nBDAT 21 LAST\r\n" + body +
                 b"QUIT\r\n")
        self.assertEqual(self.pipelined_then_half_close(m.port, block), [250, 250, 250, 221])
        cap = self.single_capture(m)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "client_quit")
        [t] = cap.transactions
        self.assertEqual(t["outcome"], "delivered")

    def test_half_close_after_dot_and_quit_delivers_once(self):
        rec = self.start_recorder()
        m = self.relay(rec)
        message = make_message("<half-close@example.test>")
        c = self.greeted_client(m.port)
        self.envelope(c)
        self.assertReply(c.command("DATA"), 354)
        c.send(message + b".\r\nQUIT\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        self.assertEqual([r.code for r in parse_replies(c.read_to_eof(20))], [250, 221])
        self.assertEqual([msg["data"] for msg in rec.wait_for(1)], [message])
        time.sleep(0.5)
        self.assertEqual(rec.count(), 1, "delivered more than once")

    # ------------------------------------------------------------ item 8

    def test_slow_command_line_is_timed_out(self):
        m = self.relay(config="[timeouts]\nclient_command = 1\n")
        c = self.connect(m.port)
        self.assertReply(c.reply(), 220)
        started = time.monotonic()
        # One byte every 0.25 s, bounded: 45 bytes.
        reply = self.trickle(c, [bytes([ch]) for ch in b"NOOP and then some more bytes, one at a time"])
        self.assertIsNotNone(reply, "a client trickling one byte at a time was never timed out")
        self.assertReply(reply, 421, "4.4.2")
        self.assertLess(time.monotonic() - started, 6)
        cap = self.single_capture(m)
        self.assertEqual(cap.end["reason"], "client_timeout")
        self.assertNotIn(b"NOOP", cap.bytes_of("upstream", "out"))

    def test_data_below_the_minimum_rate_is_timed_out(self):
        rec = self.start_recorder()
        m = self.relay(rec, config="[timeouts]\nclient_idle = 2\nmin_data_rate = 1000\n")
        c = self.greeted_client(m.port)
        self.envelope(c)
        self.assertReply(c.command("DATA"), 354)
        c.send(b"Subject: slow\r\n\r\n")
        reply = self.trickle(c, [b"slow\r\n"] * 40)   # at most 40 x 0.25 s, 20 bytes/s: far below 1000
        self.assertIsNotNone(reply, "a sender far below min_data_rate was never timed out")
        self.assertReply(reply, 421, "4.4.2")
        cap = self.single_capture(m)
        self.assertEqual(cap.end["reason"], "client_timeout")
        [t] = cap.transactions
        self.assertEqual(t["outcome"], "aborted")
        self.assertGreater(t["size"], 0)
        time.sleep(0.3)
        self.assertEqual(rec.count(), 0, "an unfinished message was delivered")

    def test_fast_data_is_not_timed_out_by_the_rate(self):
        rec = self.start_recorder()
        m = self.relay(rec, config="[timeouts]\nclient_idle = 2\nmin_data_rate = 1000\n")
        c = self.greeted_client(m.port)
        self.envelope(c)
        self.assertReply(c.command("DATA"), 354)
        message = make_message("<steady@example.test>", b"x" * 998 + b"\r\n")
        for i in range(0, len(message), 1500):   # ~1500 bytes every 0.5 s: 3000 bytes/s
            c.send(message[i:i + 1500])
            time.sleep(0.5)
        c.send(b".\r\n")
        self.assertReply(c.reply(10), 250)
        self.quit(c)

    # ------------------------------------------------------------ item 9

    def test_reply_after_the_client_left_is_recorded(self):
        """The client closes right after its dot; the upstream's 250 comes 2.5 s later."""
        def slow_end(conn, chunk):
            conn.data_bytes += chunk
            if bytes(conn.data_bytes).endswith(b"\r\n.\r\n"):
                time.sleep(2.5)
                return b"250 2.0.0 Ok: queued as LATE42\r\n", True
            return b"", False

        mta = self.scripted(slow_end)
        m = self.relay(mta)
        c = self.greeted_client(m.port)
        self.envelope(c)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<left-early@example.test>") + b".\r\n")
        c.close()
        cap = self.single_capture(m, timeout=20)
        [t] = cap.transactions
        self.assertEqual(t["outcome"], "delivered")
        self.assertEqual(t["final_reply"]["code"], 250)
        self.assertIn("LATE42", t["final_reply"]["text"])

    # ------------------------------------------------------------ item 10

    def test_drain_deadline_in_data_says_421_and_records_the_size(self):
        rec = self.start_recorder()
        m = self.relay(rec, config="[timeouts]\ndrain = 1\n")
        c = self.greeted_client(m.port)
        self.envelope(c)
        self.assertReply(c.command("DATA"), 354)
        part = b"Subject: never finished\r\n\r\n" + b"line\r\n" * 100
        c.send(part)
        time.sleep(0.3)
        m.signal(signal.SIGTERM)
        r = c.reply(15)
        self.assertReply(r, 421, "4.3.2")
        self.assertEqual(m.wait(20), 0)
        cap = self.single_capture(m, released=False)
        self.assertEqual(cap.end["reason"], "drain")
        [t] = cap.transactions
        self.assertEqual(t["size"], len(part))
        self.assertEqual(rec.count(), 0)

    # ------------------------------------------------------------ item 11

    def test_bdat_last_waits_for_a_data_end_delay(self):
        scenario = self.write_file("delay.toml", b'''
[[fault]]
name = "scan"
type = "delay"
phase = "data_end"
when = "command"
delay = "1500ms"
''')
        m = self.relay(args=["--scenario", scenario])
        c = self.greeted_client(m.port)
        self.envelope(c)
        body = make_message("<bdat-delay@example.test>")
        started = time.monotonic()
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        self.assertReply(c.reply(10), 250)
        self.assertGreaterEqual(time.monotonic() - started, 1.4)
        self.quit(c)
        cap = self.single_capture(m)
        delays = [f for f in cap.of_type("fault") if f.get("decision") == "delay"]
        self.assertEqual(len(delays), 1, cap.of_type("fault"))
        self.assertEqual(cap.transactions[0]["outcome"], "delivered")

    def test_bdat_message_id_fault_withholds_the_last_byte(self):
        scenario = self.write_file("ftp.toml", b'''
[[fault]]
name = "retry-once"
type = "fail_then_pass"
key = "message_id"
failures = 1
''')
        m = self.relay(args=["--scenario", scenario])
        body = make_message("<bdat-retry@example.test>")
        codes = []
        for _ in range(2):
            c = self.greeted_client(m.port)
            self.envelope(c)
            c.send(b"BDAT %d LAST\r\n" % len(body) + body)
            r = c.reply(10)
            codes.append(r.code)
            if r.code == 250:
                self.quit(c)
            c.close()
        self.assertEqual(codes, [451, 250])
        caps = m.wait_captures(2)
        outcomes = sorted(t["outcome"] for cap in caps for t in cap.transactions)
        self.assertEqual(outcomes, ["delivered", "tempfailed"])
        failed = [cap for cap in caps if cap.transactions[0]["outcome"] == "tempfailed"][0]
        # The last byte of the chunk never went upstream: nothing was delivered.
        self.assertFalse(failed.bytes_of("upstream", "out").endswith(body))


if __name__ == "__main__":
    unittest.main()
