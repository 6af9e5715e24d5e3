#!/usr/bin/env python3
"""Write the Postfix mail.log of a smarthost that companies' own mail
servers relay through, with its customer map and ground truth, for
`sim/replay-efficacy.py DIR` (doc/efficacy.md, "Companies' own mail
servers").

    python3 sim/mailserver-log.py DIR [--servers N] [--days D] [--seed S]
                                      [--infected K]

Writes DIR/week.log, DIR/map and DIR/truth.tsv (the format of `chokepoint
sim --truth`). `chokepoint sim` does not model these customers yet; this
generator is their model, replay-only.

Each customer is a company whose own mail server (an Exchange, a small
Postfix, a NAS) hands all its outgoing mail to the smarthost: half of
them by a SASL login (srvN@isp.example), half by a static address
(198.51.x.y/32). The map names each as its own customer of class
`business` with its domain (domains=coN.example), as an ISP's would.
What a server sends, per day (assumptions, stated to be argued with):

* staff mail: 5-40 people, 0-12 messages each on a weekday (a fifth of
  them a little on weekends), 1-6 recipients, 8 % of them new people of
  whom 3 % do not exist; in office hours;
* automatic replies (out-of-office): 0-15, null sender, to whoever wrote
  in (mostly correspondents, 3 % of them gone);
* backscatter: the server accepted spam for users who left and bounces
  it, null sender, to the spam's forged senders: 0-20 a day, one server
  in ten 50-150; 60 % of them bounce 5.1.1, 10 % are refused 5.7.1;
* forwards: 0-4 people have their mail forwarded to a freemail mailbox,
  without SRS (the original sender stays), 10-60 a day each, round the
  clock; 30 % of it is spam, which the mailbox refuses (5.7.1) a third of
  the time and defers (4.7.0) a tenth.

`--infected K` servers (default 2 % of them, at least 1) relay a zombie
as well: from a random hour of days 1-5, for 2-10 hours, an infected
office PC sends 150-300 spam messages an hour through the server, with
forged senders (half at random domains, half at the company's own), to
1-10 harvested addresses each, a quarter of which do not exist and 5 %
of which refuse it. Their account counts as a zombie from then on.
"""
import datetime
import os
import random
import sys

HOST = "smtp1"
START = datetime.datetime(2026, 11, 2, tzinfo=datetime.timezone.utc)
DAY = 86400
FREEMAIL = ["gmail.example", "hotmail.example", "yahoo.example",
            "gmx.example", "web.example"]
OFFICE_HOURS = [8, 9, 9, 10, 10, 11, 11, 12, 13, 14, 14, 15, 15, 16, 16, 17]
RELAY = {
    "sent": ("2.0.0", "sent", "250 2.0.0 Ok: queued"),
    "bounce": ("5.1.1", "bounced", "host mx.%(d)s[192.0.2.25] said: 550 "
               "5.1.1 <%(a)s>: Recipient address rejected: User unknown "
               "(in reply to RCPT TO command)"),
    "reject": ("5.7.1", "bounced", "host mx.%(d)s[192.0.2.25] said: 550 "
               "5.7.1 Message rejected as spam (in reply to end of DATA "
               "command)"),
    "defer": ("4.7.0", "deferred", "host mx.%(d)s[192.0.2.25] said: 421 "
              "4.7.0 Try again later (in reply to end of DATA command)"),
}


class Log:
    def __init__(self):
        self.lines = []
        self.n = 0
        self.spam = []  # (queue id, zombie index)

    @staticmethod
    def ts(t):
        return (START + datetime.timedelta(seconds=t)).strftime(
            "%Y-%m-%dT%H:%M:%S.%f") + "+00:00"

    def message(self, t, ip, sasl, sender, rcpts, size, zombie=None):
        """One submission and its deliveries: rcpts is a list of
        (address, outcome), outcome a key of RELAY."""
        self.n += 1
        q = "%010X" % (0x100000 + self.n)
        pid = 10000 + self.n % 5000
        svc = "postfix/submission/smtpd" if sasl else "postfix/smtpd"
        ts, L = self.ts(t), self.lines
        L.append((t, "%s %s %s[%d]: connect from unknown[%s]" %
                  (ts, HOST, svc, pid, ip)))
        auth = (", sasl_method=PLAIN, sasl_username=%s" % sasl
                if sasl else "")
        L.append((t, "%s %s %s[%d]: %s: client=unknown[%s]%s" %
                  (ts, HOST, svc, pid, q, ip, auth)))
        L.append((t, "%s %s postfix/cleanup[%d]: %s: message-id=<%s@%s>" %
                  (ts, HOST, pid + 1, q, q, HOST)))
        L.append((t, "%s %s postfix/qmgr[999]: %s: from=<%s>, size=%d, "
                  "nrcpt=%d (queue active)" %
                  (ts, HOST, q, sender, size, len(rcpts))))
        L.append((t, "%s %s %s[%d]: disconnect from unknown[%s]" %
                  (ts, HOST, svc, pid, ip)))
        t2 = t + 2
        ts2 = self.ts(t2)
        for a, o in rcpts:
            d = a.split("@")[1]
            dsn, status, text = RELAY[o]
            L.append((t2, "%s %s postfix/smtp[%d]: %s: to=<%s>, "
                      "relay=mx.%s[192.0.2.25]:25, delay=2.1, "
                      "delays=0.1/0/1/1, dsn=%s, status=%s (%s)" %
                      (ts2, HOST, pid + 2, q, a, d, dsn, status,
                       text % {"d": d, "a": a})))
        if all(o != "defer" for _, o in rcpts):
            L.append((t2, "%s %s postfix/qmgr[999]: %s: removed" %
                      (ts2, HOST, q)))
        if zombie is not None:
            self.spam.append((q, zombie))


def server(R, log, c, days, infected, zombies, legit_days):
    dom = "co%d.example" % c
    ip = "198.51.%d.%d" % (100 + c // 250, 1 + c % 250)
    sasl = "srv%d@isp.example" % c if c % 2 == 0 else None
    who = sasl or ip
    staff = ["p%d" % i for i in range(R.randint(5, 40))]
    book = ["k%d.%d@%s" % (c, i, R.choice(FREEMAIL + ["biz%d.example" %
                                                      R.randint(0, 300)]))
            for i in range(300)]
    forwarders = [(p, "%s.co%d@%s" % (p, c, R.choice(FREEMAIL[:2])))
                  for p in R.sample(staff, R.randint(0, 4))]
    backscatter = (R.randint(50, 150) if R.random() < 0.1
                   else R.randint(0, 20))
    z = None
    if infected:
        start = (R.randint(0, min(days, 5) - 1) * DAY +
                 R.randint(0, 23) * 3600)
        end = min(days * DAY, start + R.randint(2, 10) * 3600)
        z = len(zombies)
        zombies.append((z, who, start, end))
    active = set()
    for d in range(days):
        base, weekend = d * DAY, (START.weekday() + d) % 7 >= 5
        for p in staff:
            if weekend and R.random() >= 0.2:
                continue
            for _ in range(R.randint(0, 3 if weekend else 12)):
                t = base + R.choice(OFFICE_HOURS) * 3600 + R.randint(0, 3599)
                rc = []
                for _ in range(1 + (R.random() < 0.3) * R.randint(1, 5)):
                    if R.random() < 0.08:
                        a = "new%d@%s" % (R.randint(0, 10**7),
                                          R.choice(FREEMAIL))
                        rc.append((a, "bounce" if R.random() < 0.03
                                   else "sent"))
                    else:
                        rc.append((R.choice(book), "sent"))
                log.message(t, ip, sasl, "%s@%s" % (p, dom), rc,
                            R.randint(3000, 200000))
                active.add(d)
        for _ in range(R.randint(0, 15)):
            t = base + R.randint(0, DAY - 1)
            a = (R.choice(book) if R.random() < 0.5 else
                 "someone%d@%s" % (R.randint(0, 10**6), R.choice(FREEMAIL)))
            log.message(t, ip, sasl, "", [(a, "sent" if R.random() < 0.97
                                           else "bounce")],
                        R.randint(1500, 4000))
            active.add(d)
        for _ in range(backscatter):
            t = base + R.randint(0, DAY - 1)
            a = "%s%d@spamsrc%d.example" % (
                R.choice(["info", "xk", "admin", "qwe"]),
                R.randint(0, 10**6), R.randint(0, 10**4))
            o = R.choices(["sent", "bounce", "reject"], [0.3, 0.6, 0.1])[0]
            log.message(t, ip, sasl, "", [(a, o)], R.randint(3000, 8000))
            active.add(d)
        for p, dest in forwarders:
            for _ in range(R.randint(10, 60)):
                t = base + R.randint(0, DAY - 1)
                spam = R.random() < 0.3
                s = ("n%d@sender%d.example" % (R.randint(0, 10**6),
                                               R.randint(0, 10**5))
                     if spam or R.random() < 0.5 else R.choice(book))
                o = (R.choices(["sent", "reject", "defer"],
                               [0.6, 0.3, 0.1])[0] if spam else "sent")
                log.message(t, ip, sasl, s, [(dest, o)],
                            R.randint(2000, 60000))
                active.add(d)
    if z is not None:
        _, _, start, end = zombies[z]
        for h in range(start, end, 3600):
            for _ in range(R.randint(150, 300)):
                t = h + R.randint(0, 3599)
                if t >= end:
                    continue
                s = ("%s%d@%s" % (R.choice(["sale", "info", "x"]),
                                  R.randint(0, 10**6),
                                  R.choice(["promo%d.example" %
                                            R.randint(0, 999), dom])))
                rc = [("h%d@%s" % (R.randint(0, 10**8), R.choice(FREEMAIL)),
                       R.choices(["sent", "bounce", "reject"],
                                 [0.7, 0.25, 0.05])[0])
                      for _ in range(R.randint(1, 10))]
                log.message(t, ip, sasl, s, rc, R.randint(4000, 9000),
                            zombie=z)
        # a zombie login's days from its infection on are not legit days
        active = {d for d in active if d < start // DAY}
    legit_days[0] += len(active)
    line = ("%s %s business domains=%s" %
            (sasl if sasl else ip + "/32", "co%d" % c, dom))
    return who, z is not None, line


def main(argv):
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    out, opts = argv[0], {"--servers": 200, "--days": 7, "--seed": 1,
                          "--infected": None}
    i = 1
    while i < len(argv):
        if argv[i] not in opts or i + 1 >= len(argv):
            print("unknown or incomplete option: %s" % argv[i],
                  file=sys.stderr)
            return 2
        opts[argv[i]] = int(argv[i + 1])
        i += 2
    n, days = opts["--servers"], opts["--days"]
    k = opts["--infected"]
    if k is None:
        k = max(1, n // 50)
    if n < 1 or days < 1 or not 0 <= k <= n:
        print("--servers and --days must be >= 1, --infected 0..servers",
              file=sys.stderr)
        return 2
    R = random.Random(opts["--seed"])
    infected = set(R.sample(range(n), k))
    log, zombies, legit_days, logins, mp = Log(), [], [0], [], []
    for c in range(n):
        who, z, line = server(R, log, c, days, c in infected, zombies,
                              legit_days)
        logins.append((who, "zombie" if z else "legit"))
        mp.append(line)
    os.makedirs(out, exist_ok=True)
    log.lines.sort(key=lambda x: x[0])
    with open(os.path.join(out, "week.log"), "w") as f:
        f.writelines(l + "\n" for _, l in log.lines)
    with open(os.path.join(out, "map"), "w") as f:
        f.write("# sim/mailserver-log.py: companies' own mail servers\n")
        f.writelines(l + "\n" for l in mp)
    ms = int(START.timestamp() * 1000)
    with open(os.path.join(out, "truth.tsv"), "w") as f:
        f.write("# chokepoint sim truth\tmailserver-log.py\tseed %d\n" %
                opts["--seed"])
        for z, who, start, end in zombies:
            f.write("zombie\t%d\tmail_server_relay\t%s\t%d\t%d\n" %
                    (z, who, ms + start * 1000, ms + end * 1000))
        for q, z in log.spam:
            f.write("spam\t%s\t%d\n" % (q, z))
        for who, what in logins:
            f.write("login\t%s\t%s\n" % (who, what))
        f.write("legit_login_days\t%d\n" % legit_days[0])
    print("%s: %d servers (%d relaying a zombie), %d days, %d messages, "
          "%d lines" % (out, n, k, days, log.n, len(log.lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
