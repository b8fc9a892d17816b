#!/usr/bin/python3
"""Writes the seed corpora under corpus/<target>/ (committed; run again after changing a seed).
Files named regression-* are fuzzer findings kept after their fix; they are left alone.

Each target's input format is described at the top of its .cpp file. Seeds are real SMTP
conversations, the smuggling sequences of tests/integration/test_limits_and_smuggling.py, the
golden captures of tests/golden, relay/mailtap.example.toml and policies/scenarios/*.toml.
"""
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"

# tests/integration/test_limits_and_smuggling.py
SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\r\n.\n",
             b"\r\n.\r", b"\r.\r\n", b"\r\n.\r\r\n", b"\r\r\n.\r\r\n", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]
SMUGGLED_TAIL = (b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
                 b"From: ceo@example.test\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")
MESSAGE = (b"From: alice@example.test\r\nTo: bob@example.test\r\nMessage-ID: <seed@example.test>\r\n"
           b"Subject: hello\r\n\r\nHello Bob,\r\n..dot-stuffed line\r\n\r\nAlice\r\n")
BANNER = b"220 mx.example.org ESMTP Postfix\r\n"
EHLO_REPLY = (b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n"
              b"250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
ENVELOPE = b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
XCLIENT_EHLO = b"250-mx.example.org\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR PROTO HELO PORT LOGIN\r\n250 8BITMIME\r\n"

COMMANDS = [b"EHLO client.example.test", b"HELO client", b"MAIL FROM:<alice@example.test> SIZE=1000 BODY=8BITMIME",
            b"RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.test",
            b"MAIL FROM:<>", b"DATA", b"BDAT 1000", b"BDAT 0 LAST", b"BDAT 18446744073709551616 LAST",
            b"BDAT -1", b"AUTH PLAIN AGFsaWNlAHNlY3JldA==", b"STARTTLS", b"RSET", b"NOOP \x00hidden",
            b"NOOP\rMAIL FROM:<x>", b"XCLIENT ADDR=192.0.2.1", b"GET / HTTP/1.1", b"QUIT", b"vrfy postmaster",
            b"RCPT TO:<\"quoted local\"@[192.0.2.1]>", b"NOOP " + b"x" * 2993]
REPLIES = [BANNER, EHLO_REPLY, b"250 2.1.0 Ok\r\n", b"354 End data with <CR><LF>.<CR><LF>\r\n",
           b"250 2.0.0 Ok: queued as 4Xk9\r\n", b"550-5.1.1 first\r\n451 4.3.0 mixed codes\r\n",
           b"999 out of range\r\n", b"250-a\n250 bare LF\n", b"2\r\n", b"421 4.4.2 closing\r\n" + b"220 2.0.0 go\r\n",
           b"250-" + b"x" * 5000 + b"\r\n"]


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# fuzz_relay_fsm events (see its header comment).
def client(b):
    out = b""
    for i in range(0, max(len(b), 1), 254):
        chunk = b[i:i + 254]
        out += bytes([0x00, len(chunk)]) + chunk
    return out


def upstream(b):
    out = b""
    for i in range(0, max(len(b), 1), 254):
        chunk = b[i:i + 254]
        out += bytes([0x04, len(chunk)]) + chunk
    return out


CLIENT_EOF, CLIENT_GONE, UPSTREAM_EOF = b"\x07", b"\x08", b"\x09"
TIMEOUT_CLIENT, TIMEOUT_UPSTREAM, FAULT_TIMER = b"\xea", b"\xeb", b"\x0c"
TLS_OK_CLIENT, TLS_OK_UPSTREAM, TLS_FAIL_UPSTREAM = b"\x0d\x00", b"\x0d\x01", b"\x0d\x03"
DRAIN, DRAIN_DEADLINE = b"\x0e", b"\x0f"


def relay_fsm_seeds():
    hello = upstream(BANNER) + client(b"EHLO client.example.test\r\n") + upstream(EHLO_REPLY)
    txn = client(ENVELOPE) + upstream(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n") + client(b"DATA\r\n") + \
        upstream(b"354 go\r\n")
    seeds = {
        "delivered": hello + txn + client(MESSAGE + b".\r\n") + upstream(b"250 2.0.0 Ok: queued\r\n") +
        client(b"QUIT\r\n") + upstream(b"221 2.0.0 Bye\r\n") + UPSTREAM_EOF,
        "pipelined": hello + client(ENVELOPE + b"DATA\r\n") + upstream(b"250 Ok\r\n250 Ok\r\n354 go\r\n") +
        client(MESSAGE + b".\r\nMAIL FROM:<a@b>\r\nQUIT\r\n") + upstream(b"250 Ok\r\n250 Ok\r\n221 Bye\r\n"),
        "upstream_dies_after_dot": hello + txn + client(MESSAGE + b".\r\n") + UPSTREAM_EOF,
        "upstream_5xx_in_data": hello + txn + client(MESSAGE[:40]) + upstream(b"554 5.7.1 rejected\r\n") +
        client(MESSAGE[40:] + b".\r\n"),
        "client_gone_after_dot": hello + txn + client(MESSAGE + b".\r\n") + CLIENT_GONE +
        upstream(b"250 2.0.0 Ok\r\n"),
        "client_fin_pipelined": hello + client(ENVELOPE + b"DATA\r\n") + CLIENT_EOF +
        upstream(b"250 Ok\r\n250 Ok\r\n354 go\r\n"),
        "timeouts": hello + txn + client(b"partial line") + TIMEOUT_CLIENT + TIMEOUT_UPSTREAM,
        "drain": hello + txn + DRAIN + client(MESSAGE) + DRAIN_DEADLINE,
        "bdat": hello + client(ENVELOPE + b"BDAT 10\r\n0123456789BDAT 5 LAST\r\nabcde") +
        upstream(b"250 Ok\r\n250 Ok\r\n250 chunk\r\n250 2.0.0 queued\r\n"),
        "starttls": upstream(BANNER) + client(b"EHLO c\r\n") + upstream(EHLO_REPLY) + client(b"STARTTLS\r\n") +
        upstream(b"220 2.0.0 Ready\r\n") + TLS_OK_UPSTREAM + TLS_OK_CLIENT + client(b"EHLO c\r\n") +
        upstream(EHLO_REPLY),
        "starttls_injection": upstream(BANNER) + client(b"EHLO c\r\n") + upstream(EHLO_REPLY) +
        client(b"STARTTLS\r\n") + upstream(b"220 2.0.0 Ready\r\n250 injected\r\n") + TLS_FAIL_UPSTREAM,
        "auth": hello + client(b"AUTH LOGIN\r\n") + upstream(b"334 VXNlcm5hbWU6\r\n") + client(b"YWxpY2U=\r\n") +
        upstream(b"334 UGFzc3dvcmQ6\r\n") + client(b"c2VjcmV0\r\n") + upstream(b"235 2.7.0 ok\r\n"),
        "long_reply": upstream(BANNER) + client(b"EHLO c\r\n") + upstream(b"250-" + b"x" * 5000 + b"\r\n"),
        "unsolicited": upstream(BANNER + b"250 unsolicited\r\n") + client(b"EHLO c\r\n") + upstream(EHLO_REPLY),
        "greeting_5xx": upstream(b"554 5.3.2 go away\r\n") + client(b"EHLO c\r\nQUIT\r\n"),
        # Options bit 7: a PROXY header first upstream and XCLIENT when offered (issue 13).
        "xclient": (bytes([0x84, 0x00]), upstream(BANNER) + client(b"EHLO client.example.test\r\n") +
                    upstream(XCLIENT_EHLO) + client(ENVELOPE) + upstream(b"220 mx.example.org ESMTP\r\n") +
                    upstream(XCLIENT_EHLO) + upstream(b"250 Ok\r\n250 Ok\r\n") + client(b"QUIT\r\n") +
                    upstream(b"221 Bye\r\n")),
        "xclient_refused": (bytes([0x80, 0x00]), upstream(BANNER) + client(b"EHLO c\r\n") + upstream(XCLIENT_EHLO) +
                            upstream(b"550 5.7.0 Error: insufficient authorization\r\n") + upstream(XCLIENT_EHLO) +
                            client(b"QUIT\r\n") + upstream(b"221 Bye\r\n")),
    }
    for i, seq in enumerate(SMUGGLING):
        body = MESSAGE + b"hello" + seq + SMUGGLED_TAIL + b".\r\n"
        for mode in (0, 1, 2):   # strict, normalize, raw
            seeds["smuggle_%d_mode%d" % (i, mode)] = (bytes([mode, 0]), hello + txn + client(body) +
                                                      upstream(b"250 2.0.0 Ok\r\n") * 2)
    for name, s in seeds.items():
        opts, s = s if isinstance(s, tuple) else (bytes([0x04, 0x00]), s)
        write("fuzz_relay_fsm", name, opts + s)


def writes(b):
    out = b""
    for i in range(0, len(b), 200):
        chunk = b[i:i + 200]
        out += bytes([len(chunk)]) + chunk
    return out


def relay_client_seeds():
    ehlo = b"EHLO client.example.test\r\n"
    seeds = {
        "data": ehlo + ENVELOPE + b"DATA\r\n" + MESSAGE + b".\r\nQUIT\r\n",
        "bdat": ehlo + ENVELOPE + b"BDAT 10\r\n0123456789BDAT 5 LAST\r\nabcdeQUIT\r\n",
        "bdat_zero_last": ehlo + ENVELOPE + b"BDAT 12\r\nhello\r\n.\r\nxxBDAT 0 LAST\r\nQUIT\r\n",
        "bdat_bare_lf": ehlo + ENVELOPE + b"BDAT 9 LAST\r\na\n.\nb\r\n\r\nMAIL FROM:<x@y>\r\n",
        "rejected_rcpt": ehlo + b"MAIL FROM:<a@b>\r\nRCPT TO:<reject@b>\r\nDATA\r\n" + MESSAGE + b".\r\n",
        "two_messages": ehlo + (ENVELOPE + b"DATA\r\n" + MESSAGE + b".\r\n") * 2 + b"QUIT\r\n",
    }
    for i, seq in enumerate(SMUGGLING):
        seeds["smuggle_%d" % i] = ehlo + ENVELOPE + b"DATA\r\n" + MESSAGE + b"hello" + seq + SMUGGLED_TAIL + b".\r\n"
        seeds["smuggle_bdat_%d" % i] = ehlo + ENVELOPE + b"BDAT %d LAST\r\n" % (len(seq) + 5) + b"hello" + seq + \
            SMUGGLED_TAIL
    for name, s in seeds.items():
        for mode in (0, 1, 2):
            write("fuzz_relay_client", "%s_mode%d" % (name, mode), bytes([mode]) + writes(s))


# fuzz_replay events (see its header comment): 5 = bytes (then a length byte), 1 = timer,
# 2 = TLS ready, 4 = the peer closed. The conversation is fuzz_replay.cpp's fixed recording.
REPLAY_CLIENT = [b"EHLO c\r\n", b"STARTTLS\r\n", None, b"EHLO c\r\n", b"AUTH LOGIN\r\n", b"****\r\n", b"****\r\n",
                 b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n", b"hi\r\n..\r\n.\r\n",
                 b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 3 LAST\r\nabc", b"QUIT\r\n"]
REPLAY_SERVER = [b"220 mx ESMTP\r\n", b"250-mx\r\n250-STARTTLS\r\n250-AUTH LOGIN\r\n250 CHUNKING\r\n",
                 b"220 2.0.0 go\r\n", None, b"250-mx\r\n250 AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n",
                 b"334 UGFzc3dvcmQ6\r\n", b"235 2.7.0 ok\r\n", b"250 ok\r\n250 ok\r\n354 go\r\n", b"250 queued\r\n",
                 b"250 ok\r\n250 ok\r\n250 queued\r\n", b"221 bye\r\n"]


def replay_events(pieces, timer_between):
    out = b""
    for p in pieces:
        if p is None:
            out += b"\x02"
            continue
        out += b"\x05" + bytes([len(p)]) + p
        if timer_between:
            out += b"\x01"
    return out


def replay_seeds():
    for timing in (0, 1, 2):
        write("fuzz_replay", "server_timing%d" % timing, bytes([1 | timing << 1]) + replay_events(REPLAY_CLIENT, True))
        write("fuzz_replay", "client_timing%d" % timing, bytes([timing << 1]) + replay_events(REPLAY_SERVER, True))
    write("fuzz_replay", "server_diverges", b"\x01" + replay_events([b"HELO x\r\n", b"NOOP\r\n", b"RSET\r\n"], False))
    write("fuzz_replay", "client_closed_early", b"\x00" + replay_events(REPLAY_SERVER[:2], False) + b"\x04")


# haproxy's proxy-protocol.txt examples (2.1), a v2 header of each family, LOCAL, TLVs, and
# the malformed headers of tests/unit/proxy_protocol_test.cpp.
ALL_F = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
V2_TCP4 = V2_SIG + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 10, 198, 51, 100, 1]) + b"\xdc\x04\x00\x19"
PROXY_HEADERS = [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n",
    b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
    b"PROXY TCP6 " + ALL_F + b" " + ALL_F + b" 65535 65535\r\n",
    b"PROXY TCP6 ::ffff:192.0.2.10 2001:db8::1 5000 25\r\nEHLO x\r\n",
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN " + ALL_F + b" " + ALL_F + b" 65535 65535\r\n",
    b"PROXY TCP4 192.0.2.300 198.51.100.1 56324 25\r\n",
    b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",
    V2_TCP4 + b"EHLO x\r\n",
    V2_SIG + b"\x21\x21\x00\x24" + bytes(range(32)) + b"\x00\x19\x00\x19",
    V2_SIG + b"\x20\x00\x00\x00",
    V2_SIG + b"\x21\x11\x00\x13" + V2_TCP4[16:] + b"\x01\x00\x04smtp",
    V2_SIG + b"\x21\x31\x00\xd8" + bytes(216),
    V2_SIG + b"\x21\x11\x02\x09",
    b"2001:db8::1", b"192.0.2.10", b"::ffff:192.0.2.1",
]


def main():
    for i, h in enumerate(PROXY_HEADERS):
        write("fuzz_proxy_header", "header%02d" % i, h)
    for i, c in enumerate(COMMANDS):
        write("fuzz_command", "cmd%02d" % i, c)
    for i, r in enumerate(REPLIES):
        write("fuzz_reply", "reply%02d" % i, bytes([len(r) // 2 % 256]) + r)
    for i, seq in enumerate(SMUGGLING):
        for mode in (0, 1, 2):
            write("fuzz_data_framer", "smuggle%02d_mode%d" % (i, mode),
                  bytes([mode + 3 * 7]) + MESSAGE + b"hello" + seq + SMUGGLED_TAIL + b".\r\n")
    for mode in (0, 1, 2):
        write("fuzz_data_framer", "message_mode%d" % mode, bytes([mode + 3 * 20]) + MESSAGE + b".\r\nQUIT\r\n")
        write("fuzz_data_framer", "first_dot_mode%d" % mode, bytes([mode]) + b".\r\n")
    for p in sorted((ROOT / "tests" / "golden").glob("*.jsonl")):
        write("fuzz_capture_reader", p.name, p.read_bytes())
    write("fuzz_config", "mailtap.example.toml", (ROOT / "relay" / "mailtap.example.toml").read_bytes())
    for p in sorted((ROOT / "policies" / "scenarios").glob("*.toml")):
        write("fuzz_scenario", p.name, p.read_bytes())
    relay_fsm_seeds()
    relay_client_seeds()
    replay_seeds()


if __name__ == "__main__":
    main()
