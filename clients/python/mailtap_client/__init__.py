"""Client and pytest plugin for mailtap's admin API (admin/README.md in the mailtap repository).

    from mailtap_client import Mailtap
    m = Mailtap("http://127.0.0.1:8025")
    m.next_rcpt("x@y.example", 452)          # the next RCPT to x@y.example gets 452
    ...                                      # the application sends mail through the relay
    s = m.wait_for_session(lambda s: "x@y.example" in s.recipients)
    assert s.rcpt_codes == [452]

MailtapProcess starts a `mailtap run` on free ports; the pytest plugin (mailtap_client.pytest_plugin)
gives both as fixtures.
"""

from mailtap_client.client import Mailtap, MailtapError, MailtapTimeout, Session
from mailtap_client.events import EventStream
from mailtap_client.process import MailtapProcess, find_binary

__all__ = ["EventStream", "Mailtap", "MailtapError", "MailtapTimeout", "MailtapProcess", "Session", "find_binary"]
