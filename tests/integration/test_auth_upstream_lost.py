"""An AUTH the upstream's loss leaves without a go-ahead (protocol/relay_fsm.cpp
abandon_auth_exchange): the client gets the relay's 421 and the session ends, and the AUTH
response it pipelined behind AUTH is recorded masked, never in the clear (README "AUTH": every
client line while an AUTH exchange is open is masked).

Peers: ScriptedAnswers (a destination that hangs up on EHLO or on AUTH); SmtpClient.
"""

import base64
import unittest

from harness import IntegrationTest, LOOPBACK, ScriptedAnswers

SECRET = b"not-in-any-capture"
PLAIN_RESPONSE = base64.b64encode(b"\0alice\0" + SECRET)


class AuthWhoseUpstreamIsLost(IntegrationTest):

    def session(self, answers, first, then=None):
        up = ScriptedAnswers(answers)
        self.addCleanup(up.stop)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        c.send(first)
        if then is not None:
            self.assertReply(c.reply(), 250)
            c.send(then)
        self.assertReply(c.reply(), 421, "4.4.2")
        self.assertTrue(c.closed_by_peer(15), "the relay did not end the session")
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        with open(cap.path, "rb") as f:
            recorded = f.read()
        for needle in (PLAIN_RESPONSE, SECRET):
            self.assertFalse(needle in recorded, "the AUTH response is in the capture %s" % cap.path)
        self.assertTrue(cap.bytes_of("client", "in").endswith(b"AUTH PLAIN\r\n" + b"*" * len(PLAIN_RESPONSE) + b"\r\n"),
                        cap.bytes_of("client", "in"))
        self.assertEqual(cap.end["reason"], "upstream_closed", cap.end)

    def test_a_response_behind_an_auth_dropped_behind_ehlo_is_masked(self):
        # b19b514's path: EHLO gets the relay's 421, AUTH's slot is dropped unanswered.
        self.session({b"EHLO": ScriptedAnswers.CLOSE}, b"EHLO client.test\r\nAUTH PLAIN\r\n" + PLAIN_RESPONSE + b"\r\n")

    def test_a_response_behind_an_auth_answered_421_is_masked(self):
        self.session({b"AUTH": ScriptedAnswers.CLOSE}, b"EHLO client.test\r\n",
                     b"AUTH PLAIN\r\n" + PLAIN_RESPONSE + b"\r\n")


if __name__ == "__main__":
    unittest.main()
