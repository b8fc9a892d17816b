"""Real Postfix instances for integration tests (issue 13: mailtap in a real mail path).

Each PostfixInstance is a private Postfix in a directory of its own: main.cf and master.cf
there (`postfix -c DIR`), its queue and data directories inside it, an smtpd on
127.0.0.1:PORT, and its log written by postlogd to DIR/maillog (no syslog needed). Two or
more can run side by side; each has its own myhostname and syslog_name.

  PostfixInstance(name, hostname, main_cf={...})   in a fresh /tmp/mtpf-NAME-XXXX
      .start() / .stop()       `postfix -c DIR start|stop`; stop waits for the master to exit
      .cleanup()               stop, then remove DIR (register it with addCleanup)
      .port                    its smtpd's port
      .maillog()               the log so far (text)
      .wait_for_log(regex, count=1, timeout=...)
      .queue_files()           messages still queued (incoming, active, deferred, hold, maildrop)
  receiving_instance(...)      a destination: STARTTLS offered with a self-signed certificate
                               (smtpd_tls_security_level = may), example.test delivered to the
                               maildir DIR/mail/inbox/ (maildir_messages() reads it)
  sending_instance(...)        a sender: relayhost = [127.0.0.1]:PORT, smtp_tls_security_level
                               = may; mail is injected over SMTP to its own smtpd (inject())
  self_signed_cert(dir, cn)    an EC P-256 self-signed pair made with the openssl CLI

Each instance lives in a short path of its own under /tmp, mode 0755: the postfix user must
reach its queue, and the postlog socket path must fit 108 bytes (a test's work directory is
too long). Tests run as root (Postfix's master must); every wait is bounded.
"""

import os
import pwd
import re
import shutil
import smtplib
import subprocess
import tempfile
import time

from harness import LOOPBACK, free_port, port_accepts, wait_until

POSTFIX = "/usr/sbin/postfix"
OPENSSL = "/usr/bin/openssl"
DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"

# master.cf: the services a relaying and virtually-delivering Postfix needs, none chrooted
# (the chroot would need copies of /etc files), plus postlogd for maillog_file.
MASTER_CF = """\
{port}      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def self_signed_cert(directory, name, cn):
    """NAME.crt / NAME.key: self-signed EC P-256 for CN=cn (SAN DNS:cn), 2 days."""
    cert = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-subj", "/CN=%s" % cn, "-addext", "subjectAltName=DNS:%s" % cn,
                    "-days", "2", "-keyout", key, "-out", cert],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=30)
    os.chmod(key, 0o600)
    return cert, key


def cert_sha256_hex(cert):
    """The certificate's SHA-256 fingerprint as lower-case hex without colons."""
    r = subprocess.run([OPENSSL, "x509", "-in", cert, "-noout", "-fingerprint", "-sha256"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=True)
    return r.stdout.decode().strip().split("=", 1)[1].replace(":", "").lower()


class PostfixInstance:
    """One Postfix in a directory of its own (see the module docstring)."""

    def __init__(self, name, hostname, main_cf=None, port=None, base=None):
        self.name = name
        self.hostname = hostname
        # A short path of its own: the postlog socket (DIR/queue/public/postlog) must fit
        # sun_path's 108 bytes, and the postfix user must reach the queue (0755).
        self.dir = base or make_base(name)
        self.port = port or free_port()
        self.started = False
        for sub in ("queue", "data"):
            os.makedirs(os.path.join(self.dir, sub))
        owner = pwd.getpwnam("postfix")
        os.chown(os.path.join(self.dir, "data"), owner.pw_uid, owner.pw_gid)
        self.maillog_path = os.path.join(self.dir, "maillog")
        settings = {
            "compatibility_level": "3.6",
            "config_directory": self.dir,
            "queue_directory": os.path.join(self.dir, "queue"),
            "data_directory": os.path.join(self.dir, "data"),
            "daemon_directory": DAEMON_DIRECTORY,
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": hostname,
            "mydomain": hostname.split(".", 1)[1] if "." in hostname else hostname,
            "myorigin": "$myhostname",
            "syslog_name": "postfix-" + name,
            "maillog_file": self.maillog_path,
            "maillog_file_prefixes": self.dir,
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP",
            "smtpd_peername_lookup": "no",
            "smtp_host_lookup": "native",
            # A deferred message is retried within seconds, not minutes.
            "queue_run_delay": "2s",
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "4s",
            "smtp_connect_timeout": "10s",
        }
        settings.update(main_cf or {})
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            for key, value in settings.items():
                f.write("%s = %s\n" % (key, value))
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port="%s:%d" % (LOOPBACK, self.port)))

    def _postfix(self, *args, check=True, timeout=60):
        r = subprocess.run([POSTFIX, "-c", self.dir, *args], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("postfix -c %s %s exited %d: %s\nmaillog: %s"
                                 % (self.dir, " ".join(args), r.returncode,
                                    r.stdout.decode("utf-8", "replace"), self.maillog()[-3000:]))
        return r

    def start(self, timeout=30):
        self._postfix("check")   # creates the queue's directories with their owners
        self._postfix("start")
        self.started = True
        wait_until(lambda: port_accepts(self.port), timeout, "postfix %s to listen on %d" % (self.name, self.port))
        return self

    def stop(self):
        if not self.started:
            return
        self.started = False
        master = self.master_pid()
        self._postfix("stop", check=False)
        # The master leaves queue/pid/master.pid behind when it exits (the file's lock, not its
        # presence, says it runs), so the wait is for the process itself.
        deadline = time.monotonic() + 20
        while master and process_exists(master) and time.monotonic() < deadline:
            time.sleep(0.05)

    def master_pid(self):
        """The master process's pid from queue/pid/master.pid, or None."""
        try:
            with open(os.path.join(self.dir, "queue", "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cleanup(self):
        """stop(), then the instance's directory is removed (kept with MAILTAP_IT_KEEP set)."""
        self.stop()
        if not os.environ.get("MAILTAP_IT_KEEP"):
            shutil.rmtree(self.dir, True)

    def maillog(self):
        try:
            with open(self.maillog_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_matches(self, pattern):
        return re.findall(pattern, self.maillog(), re.M)

    def wait_for_log(self, pattern, count=1, timeout=60.0):
        """The log's matches of pattern once there are at least count (AssertionError after timeout)."""
        try:
            return wait_until(lambda: len(self.log_matches(pattern)) >= count and self.log_matches(pattern),
                              timeout, "%d x /%s/ in %s's maillog" % (count, pattern, self.name))
        except AssertionError as e:
            raise AssertionError("%s\nmaillog:\n%s" % (e, self.maillog()[-5000:]))

    def queue_files(self):
        out = []
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for root, _, names in os.walk(os.path.join(self.dir, "queue", sub)):
                out += [os.path.join(root, n) for n in names]
        return out


class ReceivingPostfix(PostfixInstance):
    """The destination: STARTTLS with a self-signed certificate, example.test to a maildir."""

    def __init__(self, name="b", hostname="b.mail.test", domain="example.test", main_cf=None):
        base = make_base(name)
        self.cert_dir = os.path.join(base, "tls")
        os.makedirs(self.cert_dir)
        self.cert, self.key = self_signed_cert(self.cert_dir, name, hostname)
        owner = pwd.getpwnam("postfix")
        self.mail_base = os.path.join(base, "mail")
        os.makedirs(self.mail_base)
        os.chmod(self.mail_base, 0o755)
        os.chown(self.mail_base, owner.pw_uid, owner.pw_gid)
        settings = {
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": self.cert,
            "smtpd_tls_key_file": self.key,
            "smtpd_tls_loglevel": "1",
            "virtual_mailbox_domains": domain,
            "virtual_mailbox_base": self.mail_base,
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": "static:%d" % owner.pw_uid,
            "virtual_gid_maps": "static:%d" % owner.pw_gid,
        }
        settings.update(main_cf or {})
        super().__init__(name, hostname, settings, base=base)

    def maildir_messages(self):
        """Delivered messages (bytes), oldest first by file name."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.mail_base, "inbox", sub)
            if os.path.isdir(d):
                for n in sorted(os.listdir(d)):
                    with open(os.path.join(d, n), "rb") as f:
                        out.append(f.read())
        return out


class SendingPostfix(PostfixInstance):
    """The sender: everything to relayhost [127.0.0.1]:relay_port with opportunistic TLS."""

    def __init__(self, relay_port, name="a", hostname="a.mail.test", main_cf=None):
        settings = {
            "relayhost": "[%s]:%d" % (LOOPBACK, relay_port),
            "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
        }
        settings.update(main_cf or {})
        super().__init__(name, hostname, settings)

    def inject(self, mail_from, rcpt_to, message, timeout=30):
        """Submits one message over SMTP to this instance's own smtpd."""
        with smtplib.SMTP(LOOPBACK, self.port, local_hostname="injector.test", timeout=timeout) as s:
            s.sendmail(mail_from, [rcpt_to], message)


def process_exists(pid):
    """Whether process `pid` still runs (a zombie waiting to be reaped does not)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def make_base(name):
    """A fresh directory /tmp/mtpf-NAME-XXXX, 0755 (the postfix user must traverse it)."""
    base = tempfile.mkdtemp(prefix="mtpf-%s-" % name, dir="/tmp")
    os.chmod(base, 0o755)
    return base
