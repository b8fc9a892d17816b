"""Finding sessions through the capture index (README "Finding a session"; captures/index.hpp).

Real sessions from swaks through mailtap and its built-in sink, a fault rule refusing some
recipients: the relay adds each capture to DIR/index.sqlite3 as it ends (read here with
Python's sqlite3, before any command touches it), and `mailtap captures search --json`
finds exactly the sessions sent with a given sender, recipient, Message-ID, outcome, reply
code, client, rule and time. `reindex` rebuilds an index equal to the live one; a missing
index is rebuilt by `list`; a corrupt one is reported in one line, then replaced by reindex.
"""

import json
import os
import shutil
import sqlite3
import time
import unittest

from harness import IntegrationTest, run_mailtap, show_json, wait_until

RULES = '''
[[fault]]
name = "full-mailbox"
type = "reply"
phase = "rcpt"
recipient = "*@full.example"
code = 552
enhanced = "5.2.2"
'''

SESSIONS = 12
REFUSED = (4, 9)   # sessions whose recipient the rule refuses


def sender(i):
    return "s%d@%s.example" % (i % 3, "alpha" if i < 6 else "beta")


def recipient(i):
    return "x%d@full.example" % i if i in REFUSED else "r%d@dest.example" % i


def message_id(i):
    return "<idx-%d@test.example>" % i


class CapturesIndex(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.scenario = self.write_file("rules.toml", RULES.encode())
        self.before = time.time()
        self.mailtap = self.start_mailtap(args=["--scenario", self.scenario])
        self.dir = self.mailtap.captures
        for i in range(SESSIONS):
            code, transcript = self.swaks(self.mailtap.port, "--from", sender(i), "--to", recipient(i),
                                          "--header", "Message-Id: " + message_id(i))
            self.assertEqual(code, 0 if i not in REFUSED else 24, transcript)
        caps = self.mailtap.wait_captures(SESSIONS)
        # session number i -> its id, by the recipient each capture records
        by_rcpt = {c.transactions[0]["rcpt_to"][0]: c.header["session"] for c in caps}
        self.ids = [by_rcpt[recipient(i)] for i in range(SESSIONS)]

    def index_rows(self):
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.dir, "index.sqlite3"), uri=True)
        try:
            return db.execute("SELECT count(*) FROM sessions").fetchone()[0]
        finally:
            db.close()

    def captures(self, *args):
        r = run_mailtap(["captures", *args, "--dir", self.dir])
        return r

    def search(self, *args):
        r = self.captures("search", "--json", "--limit", "1000", *args)
        self.assertEqual(r.returncode, 0, r)
        found = [json.loads(line) for line in r.stdout.decode().splitlines()]
        # `id` as the admin API and show --json name a session (a newcomer's trial: only `session`)
        self.assertEqual([s["id"] for s in found], [s["session"] for s in found])
        return found

    def found(self, *args):
        return sorted(s["session"] for s in self.search(*args))

    def ids_of(self, numbers):
        return sorted(self.ids[i] for i in numbers)

    def test_the_relay_indexes_each_capture_as_it_ends(self):
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")

    def test_search_finds_the_right_sessions(self):
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        everything = range(SESSIONS)
        self.assertEqual(self.found("--from", "S1@ALPHA.example"), self.ids_of(i for i in everything if i < 6 and i % 3 == 1))
        self.assertEqual(self.found("--from", "@beta.example"), self.ids_of(i for i in everything if i >= 6))
        self.assertEqual(self.found("--to", recipient(7)), self.ids_of([7]))
        self.assertEqual(self.found("--to", "@full.example"), self.ids_of(REFUSED))
        self.assertEqual(self.found("--to", "r1*@dest.example"), self.ids_of([1, 10, 11]))
        self.assertEqual(self.found("--message-id", message_id(5)), self.ids_of([5]))
        self.assertEqual(self.found("--message-id", message_id(5).strip("<>")), self.ids_of([5]))
        self.assertEqual(self.found("--outcome", "rejected"), self.ids_of(REFUSED))
        self.assertEqual(self.found("--outcome", "delivered"), self.ids_of(i for i in everything if i not in REFUSED))
        self.assertEqual(self.found("--code", "552"), self.ids_of(REFUSED))
        self.assertEqual(self.found("--code", "5.2.2"), self.ids_of(REFUSED))
        self.assertEqual(self.found("--code", "5xx"), self.ids_of(REFUSED))
        self.assertEqual(self.found("--rule", "full-mailbox"), self.ids_of(REFUSED))
        self.assertEqual(self.found("--client", "127.0.0.1"), self.ids_of(everything))
        self.assertEqual(self.found("--client", "192.0.2.1"), [])
        self.assertEqual(self.found("--since", "1h"), self.ids_of(everything))
        self.assertEqual(self.found("--until", "1h"), [])
        self.assertEqual(self.found("--from", "@beta.example", "--outcome", "rejected"), self.ids_of([9]))
        # what a result says of the session
        (s,) = self.search("--to", recipient(9))   # refused at RCPT: no message, no Message-ID
        self.assertEqual(s["path"], os.path.join(self.dir, self.ids[9] + ".jsonl"))
        self.assertEqual(s["client"].split(":")[0], "127.0.0.1")
        self.assertEqual(s["transactions"][0]["mail_from"], sender(9))
        self.assertEqual(s["transactions"][0]["rcpt_codes"], [552])
        self.assertEqual(s["rules"], ["full-mailbox"])
        self.assertIsNone(s["transactions"][0]["message_id"])
        (d,) = self.search("--message-id", message_id(8))
        self.assertEqual((d["outcome"], d["transactions"][0]["final_code"], d["rules"]), ("delivered", 250, []))
        self.assertGreaterEqual(s["started_at"], time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.before - 1)))

    def test_list_is_newest_first_in_pages(self):
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        newest_first = list(reversed(self.ids))
        r = self.captures("list", "--json", "--limit", "5", "--offset", "3")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([json.loads(line)["session"] for line in r.stdout.decode().splitlines()], newest_first[3:8])
        text = self.captures("list", "--limit", "2")
        self.assertEqual(text.returncode, 0, text)
        lines = text.stdout.decode().splitlines()
        self.assertEqual(len(lines), 3, lines)   # two sessions and the next page's offset
        self.assertIn(newest_first[0], lines[0])
        self.assertEqual(lines[2], "(more: --offset 2)")   # worded as `mailtap sessions list` words it
        # The last page says no "more": it had said so for a page that ended exactly at the last.
        last = self.captures("list", "--limit", "2", "--offset", str(SESSIONS - 2)).stdout.decode().splitlines()
        self.assertEqual(len(last), 2, last)
        self.assertIn(newest_first[-1], last[1])
        # A session whose every recipient was refused (no DATA, no final reply) shows the
        # refusal's code, not "-" (a newcomer's trial: the commonest refusal showed no code).
        (refused,) = [l for l in self.captures("search", "--to", recipient(9)).stdout.decode().splitlines()
                      if self.ids[9] in l]
        self.assertRegex(refused, r"\brejected\s+552\s+<")

    def test_list_shows_the_recipients_refusal_when_data_followed_it(self):
        # A pipelining client (Postfix) sends DATA whatever its RCPT replies say, and gets
        # "no valid recipients": the outcome comes from the refusals, and so does the code shown.
        c = self.greeted_client(self.mailtap.port)
        c.send(b"MAIL FROM:<p@pipelining.example>\r\nRCPT TO:<y@full.example>\r\nDATA\r\n")
        self.assertEqual([r.code for r in c.replies(3, timeout=10)], [250, 552, 503])
        self.quit(c)
        wait_until(lambda: self.index_rows() == SESSIONS + 1, 10, "the pipelined session in the index")
        (s,) = self.search("--from", "p@pipelining.example")
        self.assertEqual((s["outcome"], s["transactions"][0]["final_code"]), ("rejected", 503))
        r = self.captures("search", "--from", "p@pipelining.example")
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout.decode().splitlines()[0], r"\brejected\s+552\s+<p@pipelining.example>")

    def test_reindex_rebuilds_an_index_equal_to_the_live_one(self):
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        live = self.search()
        self.assertEqual(len(live), SESSIONS)
        self.mailtap.stop()
        r = self.captures("reindex")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.search(), live)
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(self.dir, "index.sqlite3" + suffix)
            if os.path.exists(path):
                os.remove(path)
        self.assertEqual(self.search(), live)   # a missing index is built from the files first

    def test_reindex_names_a_copy_that_shares_a_session_id(self):
        # Copies of a capture have its session id, and the index one row per session: reindex
        # collapsed them silently (a hostile trial). It names each copy and keeps the file
        # named after the session.
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        live = self.search()
        self.mailtap.stop()
        original = os.path.join(self.dir, self.ids[0] + ".jsonl")
        shutil.copyfile(original, os.path.join(self.dir, "a-copy.jsonl"))
        shutil.copyfile(original, os.path.join(self.dir, "zz-copy.jsonl"))
        r = self.captures("reindex")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn(b"indexed %d capture(s), removed 0 stale row(s), 2 copy(ies)" % SESSIONS, r.stdout)
        lines = r.stderr.decode().splitlines()
        self.assertEqual(sorted(l.split(":")[1].strip() for l in lines), ["a-copy.jsonl", "zz-copy.jsonl"], lines)
        self.assertTrue(all("the index holds %s.jsonl" % self.ids[0] in l for l in lines), lines)
        self.assertEqual(self.search(), live)
        # Copies are not captures "not in the index yet" (a newcomer's trial: list said so after
        # every reindex, which never adds them).
        r = self.captures("list", "--limit", "1")
        self.assertEqual(r.stderr, b"", r)
        # With the original gone, a copy is still not indexed: its row named a session that
        # `show ID` could not open.
        os.remove(original)
        r = self.captures("reindex")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn(b"indexed %d capture(s), removed 1 stale row(s), 2 copy(ies)" % (SESSIONS - 1), r.stdout)
        self.assertTrue(all("whose file %s.jsonl is not here" % self.ids[0] in l for l in r.stderr.decode().splitlines()))
        self.assertNotIn(self.ids[0], [row["session"] for row in self.search()])
        # An unreadable file had no row: nothing is said to be removed for it, run after run.
        with open(os.path.join(self.dir, "broken.jsonl"), "w") as f:
            f.write('{"bad json\n')
        for _ in range(2):
            r = self.captures("reindex")
            self.assertIn(b"indexed %d capture(s), removed 0 stale row(s)" % (SESSIONS - 1), r.stdout)

    def test_a_corrupt_index_is_reported_in_one_line_and_replaced_by_reindex(self):
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        self.mailtap.stop()
        for suffix in ("-wal", "-shm"):
            path = os.path.join(self.dir, "index.sqlite3" + suffix)
            if os.path.exists(path):
                os.remove(path)
        with open(os.path.join(self.dir, "index.sqlite3"), "wb") as f:
            f.write(b"this is not an SQLite database" * 200)
        r = self.captures("list")
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(r.stdout, b"")
        lines = r.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("index.sqlite3", lines[0])
        self.assertIn("mailtap captures reindex", lines[0])
        r = self.captures("reindex")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(self.search()), SESSIONS)

    def test_an_index_of_an_earlier_version_is_made_anew_after_an_upgrade(self):
        # Version 2 of the index added a column. An upgraded mailtap found version 1's index:
        # list and search refused it and the relay failed every batch until someone ran reindex.
        # It is a cache of the files: whoever opens it first makes it anew, and list fills it.
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        self.mailtap.stop()
        db = sqlite3.connect(os.path.join(self.dir, "index.sqlite3"))
        db.execute("ALTER TABLE transactions DROP COLUMN without_mail")   # version 1's shape
        db.execute("PRAGMA user_version=1")
        db.commit()
        db.close()
        self.mailtap = self.start_mailtap(args=["--scenario", self.scenario], captures=self.dir)
        code, transcript = self.swaks(self.mailtap.port, "--from", sender(0), "--to", "after@dest.example")
        self.assertEqual(code, 0, transcript)
        self.mailtap.wait_captures(SESSIONS + 1)
        # The relay made it anew and indexed its new session; list and search fill in the rest.
        wait_until(lambda: self.index_rows() == 1, 10, "the relay indexing into the new index")
        self.assertEqual(len(self.search()), SESSIONS + 1)
        self.assertEqual(len(self.found("--to", "after@dest.example")), 1)

    def test_bad_search_values_are_one_line_errors(self):
        for args in (["--outcome", "lost"], ["--code", "6xx"], ["--since", "last tuesday"],
                     ["--since", "2026-01-02", "--until", "2026-01-01"],
                     # A hostile trial: "--limit -5" listed everything, a huge offset printed nothing.
                     ["--limit", "-5"], ["--offset", "99999999999999999999"], ["--limit", "ten"]):
            r = self.captures("search", *args)
            self.assertEqual(r.returncode, 2, (args, r))
            self.assertEqual(len(r.stderr.decode().splitlines()), 1, (args, r))
            self.assertEqual(r.stdout, b"")
        # A missing directory is said to be missing (a newcomer's trial: "not a directory").
        absent = os.path.join(self.workdir, "absent")
        for sub in ("list", "reindex", "prune"):
            r = run_mailtap(["captures", sub, "--dir", absent] + (["--max-age", "1h"] if sub == "prune" else []))
            self.assertNotEqual(r.returncode, 0, r)
            self.assertIn("%s: no such directory" % absent, r.stderr.decode(), sub)

    def test_two_relays_sharing_the_directory_are_no_killed_relay(self):
        # A newcomer's trial: a second relay on the same directory found the first's single
        # "relay running" flag, took it for a killed relay, and every list after both stopped
        # rebuilt the index from the files ("indexed N capture(s)"). Each leaves its own marker now.
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        second = self.start_mailtap(captures=self.dir)
        code, transcript = self.swaks(second.port, "--to", "late@dest.example")
        self.assertEqual(code, 0, transcript)
        wait_until(lambda: self.index_rows() == SESSIONS + 1, 10, "the second relay's capture in the index")
        self.mailtap.stop()
        second.stop()
        r = self.captures("list", "--limit", "1000")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(r.stdout.decode().splitlines()), SESSIONS + 1)
        self.assertNotIn("indexed", r.stderr.decode())
        self.assertNotIn("not in the index", r.stderr.decode())

    def test_a_killed_relay_is_found_by_the_next_and_list_rebuilds(self):
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        c = self.connect(self.mailtap.port)           # a session the killed relay never closes
        self.assertEqual(c.reply().code, 220)
        self.assertEqual(c.command("EHLO client.test").code, 250)
        written = lambda: len([n for n in os.listdir(self.dir)
                               if n.endswith(".jsonl") and os.path.getsize(os.path.join(self.dir, n)) > 0])
        wait_until(lambda: written() == SESSIONS + 1, 10, "the open session's capture, written so far")
        self.mailtap.proc.kill()
        self.mailtap.proc.wait(10)
        c.close()
        after = self.start_mailtap(captures=self.dir)
        after.stop()
        r = self.captures("list", "--limit", "1000")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("indexed %d capture(s)" % (SESSIONS + 1), r.stderr.decode())
        self.assertEqual(len(r.stdout.decode().splitlines()), SESSIONS + 1)

    def test_list_says_how_many_captures_the_index_does_not_list_yet(self):
        # A newcomer's trial: a session the relay never closed (it was killed) was missing from
        # list with no word why; one in progress is not listed either, for the same reason.
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        c = self.connect(self.mailtap.port)
        self.assertEqual(c.reply().code, 220)
        self.assertEqual(c.command("EHLO client.test").code, 250)
        files = lambda: len([n for n in os.listdir(self.dir) if n.endswith(".jsonl")])
        wait_until(lambda: files() == SESSIONS + 1, 10, "the open session's capture file")
        r = self.captures("list", "--limit", "1000")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(r.stdout.decode().splitlines()), SESSIONS)
        self.assertIn("1 capture file(s) in %s are not in the index" % self.dir, r.stderr.decode())
        self.assertIn("mailtap captures reindex adds those", r.stderr.decode())

    def test_list_names_an_unreadable_capture_rather_than_promise_reindex_adds_it(self):
        # A tester's trial: right after reindex named a corrupt capture (exit 1), list said it
        # was a session in progress or left by a stopped relay, "mailtap captures reindex adds
        # those". And a capture whose started_at was "9999999-99-99" was indexed and listed as
        # 1970-01-01: the reader refuses it now, naming the field.
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        self.mailtap.stop()
        with open(os.path.join(self.dir, self.ids[0] + ".jsonl"), encoding="utf-8") as f:
            original = f.read().splitlines(True)
        stem = self.ids[0].rsplit("-", 1)[0]
        corrupt, bad_time = stem + "-900001", stem + "-900002"
        header = dict(json.loads(original[0]), session=corrupt)
        with open(os.path.join(self.dir, corrupt + ".jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps(header) + "\n" + "".join(original[1:4]) + '{"type":"bytes",\n' + "".join(original[4:]))
        header = dict(json.loads(original[0]), session=bad_time, started_at="9999999-99-99")
        with open(os.path.join(self.dir, bad_time + ".jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps(header) + "\n" + "".join(original[1:]))
        r = self.captures("reindex")
        self.assertEqual(r.returncode, 1, r)
        err = r.stderr.decode()
        self.assertIn("%s.jsonl:5: not a JSON object" % corrupt, err)
        self.assertIn('%s.jsonl:1: header record: field "started_at" is not an RFC 3339 time' % bad_time, err)
        self.assertIn(b"indexed %d capture(s)" % SESSIONS, r.stdout)
        for command in (["list"], ["search", "--outcome", "delivered"]):
            r = self.captures(*command, "--limit", "1000")
            self.assertEqual(r.returncode, 0, r)
            self.assertNotIn("1970-01-01", r.stdout.decode())
            lines = r.stderr.decode().splitlines()
            self.assertEqual(len(lines), 2, lines)
            self.assertTrue(lines[0].startswith("mailtap captures %s: unreadable, not in the index: " % command[0]), lines)
            self.assertIn("%s.jsonl:5: not a JSON object" % corrupt, lines[0])
            self.assertIn('%s.jsonl:1: header record: field "started_at"' % bad_time, lines[1])
            self.assertNotIn("reindex adds", r.stderr.decode())
            self.assertNotIn("in progress", r.stderr.decode())
        # A file changed since reindex read it is no longer known to be unreadable: counted
        # among those reindex has not read, which it adds if it can.
        repaired = dict(json.loads(original[0]), session=corrupt)
        with open(os.path.join(self.dir, corrupt + ".jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps(repaired) + "\n" + "".join(original[1:]))
        r = self.captures("list", "--limit", "1000")
        err = r.stderr.decode().splitlines()
        self.assertEqual(len(err), 2, err)
        self.assertIn(bad_time, err[0])
        self.assertIn("1 capture file(s) in %s are not in the index" % self.dir, err[1])
        self.assertIn("mailtap captures reindex adds those it can read", err[1])
        r = self.captures("reindex")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(b"indexed %d capture(s)" % (SESSIONS + 1), r.stdout)

    def test_an_unreadable_capture_is_named_by_a_path_from_where_list_runs(self):
        # A reviewer's trial: after `captures reindex --dir ix`, `cd ix; captures list --dir .`
        # said "unreadable, not in the index: ix/FILE:1: ...", a path that is not there from ix.
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        self.mailtap.stop()
        stem = self.ids[0].rsplit("-", 1)[0]
        broken = stem + "-900003.jsonl"
        with open(os.path.join(self.dir, broken), "w", encoding="utf-8") as f:
            f.write('{"type": "header",\n')
        parent, name = os.path.split(os.path.normpath(self.dir))
        r = run_mailtap(["captures", "reindex", "--dir", name], cwd=parent)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("%s:1: " % os.path.join(name, broken), r.stderr.decode())   # the path it was given
        for cwd, flag in ((self.dir, "."), (parent, name), ("/", self.dir)):
            r = run_mailtap(["captures", "list", "--dir", flag, "--limit", "1000"], cwd=cwd)
            self.assertEqual(r.returncode, 0, r)
            lines = [l for l in r.stderr.decode().splitlines() if "unreadable, not in the index: " in l]
            self.assertEqual(len(lines), 1, r.stderr)
            named = lines[0].split("unreadable, not in the index: ", 1)[1].split(":1: ", 1)[0]
            self.assertEqual(os.path.normpath(named), os.path.normpath(os.path.join(flag, broken)), lines)
            self.assertTrue(os.path.isfile(os.path.join(cwd, named)), (cwd, lines))

    def test_prune_removes_the_index_rows_of_what_it_removes(self):
        wait_until(lambda: self.index_rows() == SESSIONS, 10, "every capture in the index")
        self.mailtap.stop()
        old = time.time() - 7200
        for i in range(4):
            os.utime(os.path.join(self.dir, self.ids[i] + ".jsonl"), (old, old))
        r = self.captures("prune", "--max-age", "1h")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(self.found(), self.ids_of(range(4, SESSIONS)))


class RefusedMail(IntegrationTest):

    def test_the_recipient_pipelined_after_an_injected_mail_refusal_is_found(self):
        # A newcomer's trial: after the relay's own MAIL refusal the list said "-> (none)" and
        # `search --to` missed the recipient swaks had pipelined (the refusal went out first).
        scenario = self.write_file("block.toml", b'[[fault]]\nname = "block"\ntype = "reply"\nphase = "mail"\n'
                                                 b'code = 550\nenhanced = "5.7.1"\n')
        m = self.start_mailtap(args=["--scenario", scenario])
        code, transcript = self.swaks(m.port, "--pipeline", "--from", "a@example.org", "--to", "bob@example.com")
        self.assertNotEqual(code, 0, transcript)
        self.assertIn("550 5.7.1", transcript)
        (cap,) = m.wait_captures(1)
        (t,) = cap.transactions
        self.assertEqual((t["mail_from"], t["rcpt_to"], t["outcome"]), ("a@example.org", ["bob@example.com"], "rejected"))
        self.assertEqual(t["final_reply"]["code"], 550)
        self.assertEqual(t["rcpt_codes"], [])   # the sink's 503 "need MAIL" is MAIL's consequence

        def found():
            r = run_mailtap(["captures", "search", "--json", "--to", "bob@example.com", "--dir", m.captures])
            self.assertEqual(r.returncode, 0, r)
            return [json.loads(line)["session"] for line in r.stdout.decode().splitlines()]
        wait_until(lambda: found() == [cap.header["session"]], 10, "the session found by its recipient")


class BdatWithoutMail(IntegrationTest):

    def test_list_and_search_print_a_clients_control_characters_escaped(self):
        # A hostile trial: a sender address holding an ESC sequence (retitle, clear screen) went
        # raw to the operator's terminal from `captures list` and `captures search`.
        m = self.start_mailtap()
        c = self.greeted_client(m.port)
        self.assertReply(c.command(b"MAIL FROM:<a\x1b]0;PWNED\x07\x1b[2J@x.test>"), 250)
        self.assertReply(c.command("RCPT TO:<b@example.com>"), 250)
        self.quit(c)
        m.wait_captures(1)
        wait_until(lambda: b"PWNED" in run_mailtap(["captures", "list", "--dir", m.captures]).stdout, 10, "indexed")
        for args in (["list"], ["search", "--from", "*PWNED*"]):
            r = run_mailtap(["captures", *args, "--dir", m.captures])
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"PWNED", r.stdout, args)
            self.assertNotIn(b"\x1b", r.stdout, args)
            self.assertNotIn(b"\x07", r.stdout, args)
            self.assertIn(b"\\x1b]0;PWNED\\x07\\x1b[2J", r.stdout, args)

    def test_a_bdat_without_mail_is_no_null_sender(self):
        # A QA trial: a BDAT sent without MAIL (the destination refuses it) was recorded with
        # mail_from "", as MAIL FROM:<> (a bounce) is: show printed "from <>" and
        # `search --from '<>'` found it. Beside it, a real bounce through the same relay.
        m = self.start_mailtap()   # the built-in sink offers CHUNKING
        c = self.greeted_client(m.port)
        c.send(b"BDAT 5 LAST\r\nhello")
        self.assertReply(c.reply(), 503, "5.5.1")   # the sink's: send MAIL and RCPT first
        self.quit(c)
        (cap,) = m.wait_captures(1)
        no_mail = cap.header["session"]
        b = self.greeted_client(m.port)
        self.assertReply(b.command("MAIL FROM:<>"), 250)
        self.assertReply(b.command("RCPT TO:<postmaster@example.com>"), 250)
        b.send(b"BDAT 5 LAST\r\nhello")
        self.assertReply(b.reply(), 250)
        self.quit(b)
        bounce = [c.header["session"] for c in m.wait_captures(2) if c.header["session"] != no_mail][0]

        doc = show_json(cap.path)
        (t,) = doc["transactions"]
        self.assertEqual((t["mail_from"], t["without_mail"], t["outcome"], t["final_reply"]["code"]),
                         ("", True, "rejected", 503))
        (rec,) = cap.transactions
        self.assertIs(rec["without_mail"], True)
        text = run_mailtap(["show", cap.path])
        self.assertEqual(text.returncode, 0, text)
        from_rows = [line.split() for line in text.stdout.decode().splitlines() if line.strip().startswith("from ")]
        self.assertEqual(from_rows, [["from", "(no", "MAIL)"]])
        (bt,) = [d for d in m.wait_captures(2) if d.header["session"] == bounce][0].transactions
        self.assertEqual((bt["mail_from"], bt["without_mail"], bt["outcome"]), ("", False, "delivered"))

        def search(*args):
            r = run_mailtap(["captures", "search", "--json", *args, "--dir", m.captures])
            self.assertEqual(r.returncode, 0, r)
            return [json.loads(line) for line in r.stdout.decode().splitlines()]
        wait_until(lambda: len(search("--to", "postmaster@example.com")) == 1, 10, "the bounce indexed")
        self.assertEqual([s["session"] for s in search("--from", "<>")], [bounce])
        (listed,) = [s for s in search() if s["session"] == no_mail]
        (lt,) = listed["transactions"]
        self.assertEqual((lt["mail_from"], lt["without_mail"], lt["final_code"]), ("", True, 503))
        line = [l for l in run_mailtap(["captures", "list", "--dir", m.captures]).stdout.decode().splitlines()
                if no_mail in l]
        self.assertEqual(len(line), 1, line)
        self.assertIn("(no MAIL) -> (none)", line[0])
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(m.captures, "index.sqlite3"), uri=True)
        try:
            rows = db.execute("SELECT s.session, t.mail_from, t.without_mail FROM transactions t "
                              "JOIN sessions s ON s.id = t.session_id ORDER BY s.session").fetchall()
        finally:
            db.close()
        self.assertEqual(sorted(rows), sorted([(no_mail, "", 1), (bounce, "", 0)]))


class ShutdownSummary(IntegrationTest):

    def test_the_summary_counts_the_last_index_batch(self):
        # A newcomer's trial: a delivered session and an idle one that the drain closes; the
        # summary said "1 indexed, 0 left out" (logged before the last batch), the index had 2.
        m = self.start_mailtap()
        code, transcript = self.swaks(m.port, "--to", "a@example.com")
        self.assertEqual(code, 0, transcript)
        m.wait_captures(1)
        idle = self.connect(m.port)
        self.assertEqual(idle.reply().code, 220)
        counters = m.stop_with_counters()
        self.assertEqual((counters["captures_complete"], counters["captures_incomplete"]), (2, 0))
        self.assertEqual((counters["indexed"], counters["index_failures"], counters["index_left_out"]), (2, 0, 0))
        db = sqlite3.connect(os.path.join(m.captures, "index.sqlite3"))
        try:
            self.assertEqual(db.execute("SELECT count(*) FROM sessions").fetchone()[0], 2)
        finally:
            db.close()


if __name__ == "__main__":
    unittest.main()
