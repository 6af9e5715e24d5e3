"""Every JSON document chokepoint writes against its schema (doc/json.md,
doc/schema/NAME.json): the decision log lines of a real chokepointd that
blocks a zombie, holds a customer and defers a bulk sender; every
`chokepoint --json` reply, refusals included; `sim --json`,
`replay --json` and `learn --json`.

Numbers are checked for one type each, on the raw text: Python's json
module hands a literal written with a fraction or an exponent to
`parse_float` and one without to `parse_int`, so a float here is a number
written "720.0" and an int one written "720". The validator's type checker
is narrowed to that: a member the schema types `number` must be written
with a fraction or exponent in every document, an `integer` member never.
`additionalProperties: false` makes an undocumented member fail.

Run: CHOKEPOINT_BUILD=$PWD/build /usr/bin/python3 -m pytest -q \
         tests/integration/test_json_schema.py
"""
import json
import os
import re
import socket
import subprocess

import jsonschema
import pytest

from cpd import CHOKEPOINT, HANG, ROOT, Daemon, PolicyClient, rcpt_request
from test_detection import CLASSES as DETECTION_CLASSES
from test_detection import message, zombie_traffic

SCHEMAS = os.path.join(ROOT, "doc", "schema")
STRBUF_H = os.path.join(ROOT, "src", "util", "strbuf.h")
FIX = os.path.join(ROOT, "tests", "fixtures", "maillog")
CONFIG = os.path.join(ROOT, "etc", "chokepoint.yaml")

MAP = ("office@acme.example acme residential "
       "domains=acme.example,acme-shop.example\n"
       "anna@acme.example   acme\n"
       "bob@acme.example    acme\n"
       "bulk@isp.example    bulkco bulk\n")

# detection as in test_detection.py, a class with a limit a bulk sender
# reaches, and notices (to a port nobody answers: they stay pending)
CLASSES = DETECTION_CLASSES + """  bulk:
    limits:
      - { metric: recipients, window: 1h, max: 40 }
notify:
  from: abuse@isp.example
  smtp: smtp://127.0.0.1:9
  abuse_to: abuse@isp.example
"""

STRICT = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
        "number": lambda _, x: isinstance(x, float),
        "integer": lambda _, x: isinstance(x, int) and
        not isinstance(x, bool)}))


def schemas():
    """{"chokepoint.NAME/N": schema} of every file in doc/schema."""
    out = {}
    for f in sorted(os.listdir(SCHEMAS)):
        with open(os.path.join(SCHEMAS, f)) as fp:
            s = json.load(fp)
        out[s["properties"]["schema"]["const"]] = s
    return out


def validate(raw, where):
    """Validate one document (its raw text) against the schema it names;
    return its name."""
    doc = json.loads(raw)
    assert isinstance(doc, dict), where
    name = next(iter(doc), None)
    assert name == "schema", "%s: the first member is %r, not schema" % (
        where, name)
    sch = schemas().get(doc["schema"])
    assert sch is not None, "%s: no schema %s in doc/schema" % (
        where, doc["schema"])
    errs = sorted(STRICT(sch).iter_errors(doc), key=lambda e: list(e.path))
    assert not errs, "%s (%s):\n%s\n%s" % (
        where, doc["schema"], "\n".join(
            "  %s: %s" % ("/".join(map(str, e.path)), e.message[:300])
            for e in errs[:10]), raw[:2000])
    return doc["schema"]


def ctl_raw(d, *args):
    r = subprocess.run([CHOKEPOINT, "-s", d.admin_sock, "--json"] +
                       list(args), capture_output=True, text=True,
                       timeout=HANG)
    assert r.stdout.strip(), (args, r.stderr)
    return r.returncode, r.stdout


def admin_raw(d, line):
    """A command line sent to the admin socket as it is (the CLI refuses
    some before the daemon sees them)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(HANG)
    s.connect(d.admin_sock)
    s.sendall(line.encode() + b"\n")
    with s, s.makefile("rb") as f:
        return f.read().decode()


@pytest.fixture(scope="module")
def daemon_docs(tmp_path_factory):
    """(where, raw text, CLI exit status or None) of every admin reply,
    and the decision log, of one daemon's run."""
    d = Daemon(tmp_path_factory.mktemp("json"), classes=CLASSES,
               customer_map=MAP).start()
    out = []

    def ctl(*args):
        rc, raw = ctl_raw(d, *args)
        out.append((" ".join(args), raw, rc))
        return json.loads(raw)

    try:
        c = PolicyClient(d.policy_sock)
        for i in range(3):
            message(c, "anna@acme.example", "anna@acme.example",
                    ["mum@home.example"], "a%d" % i)
        zombie_traffic(c, "zed@isp.example", 16)
        zombie_traffic(c, "bob@acme.example", 16)
        # a bulk sender over recipients/1h: rule, metric, window, value
        for i in range(8):
            message(c, "bulk@isp.example", "bulk@isp.example",
                    ["n%d.%d@list.example" % (i, r) for r in range(6)],
                    "b%d" % i)
        ctl("block", "c:acme", "--reason", "contract ended")
        # the customer's hold, in the decision log of its logins' mail
        message(c, "anna@acme.example", "anna@acme.example",
                ["mum@home.example"], "a9")
        c.ask(rcpt_request(user="", client="198.51.100.7", instance="u1"))
        d.wait_checkpoint()
        ctl("status")
        ctl("top", "10")
        ctl("top")
        for acct in ("zed@isp.example", "bob@acme.example", "c:acme",
                     "anna@acme.example", "bulk@isp.example",
                     "198.51.100.7"):
            ctl("show", acct)
        hist = ctl("history", "zed@isp.example")["history"]
        ctl("history", "c:acme")
        ctl("incident", str(hist[0]["incident"]))
        ctl("release", "zed@isp.example", "--self-service")
        ctl("release", "c:acme", "--reason", "renewed")
        ctl("allow", "tool@isp.example", "--reason", "ticket 7", "--create")
        ctl("block", "amy@isp.example", "--reason", "ticket 8", "--create",
            "--by", "jo")
        ctl("reload")
        # refusals
        ctl("show", "nobody@isp.example")
        ctl("history", "nobody@isp.example")
        ctl("incident", "999999")
        ctl("allow", "tool@isp.example", "--reason", "again")
        ctl("block", "ghost@isp.example", "--reason", "typo")
        ctl("release", "amy@isp.example", "--self-service")
        for line in ("json frobnicate", "json incident x",
                     "json by bad/name block amy@isp.example why",
                     "json block amy@isp.example"):
            out.append((line, admin_raw(d, line), None))
        with open(d.decisions) as f:
            lines = [l for l in f if l.strip()]
    finally:
        assert d.stop() == 0
    out += [("decision log line %d" % (i + 1), l, None)
            for i, l in enumerate(lines)]
    return out


def report(*args):
    r = subprocess.run([CHOKEPOINT] + list(args), capture_output=True,
                       text=True, timeout=HANG)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
def report_docs(tmp_path_factory):
    """(where, raw text) of sim, replay and learn reports."""
    w = tmp_path_factory.mktemp("reports")
    out = []
    for s in ("small-live", "campaign"):
        scen = os.path.join(ROOT, "sim", "scenarios", s + ".yaml")
        out.append(("sim " + s, report("sim", scen, "--config", CONFIG,
                                       "--json")))
    for f in ("classic", "lifecycle", "instances", "submission"):
        out.append(("replay " + f, report(
            "replay", os.path.join(FIX, f + ".log"), "--config", CONFIG,
            "--no-map", "--year", "2026", "--json")))
    # a sim week through the mail log: learn, then replay warm
    scen = os.path.join(ROOT, "tests", "golden", "scenarios",
                        "newsletter-small.yaml")
    week, hist, mp = (str(w / "week.log"), str(w / "hist.log"),
                      str(w / "map"))
    report("sim", scen, "--maillog", week, "--history-log", hist)
    report("sim", scen, "--map-out", mp)
    state = str(w / "state.db")
    out.append(("learn", report("learn", hist, "--config", CONFIG, "--map",
                                mp, "--state", state, "--json")))
    out.append(("replay newsletter-small", report(
        "replay", week, "--config", CONFIG, "--map", mp, "--state", state,
        "--json", "--list", "300")))
    return out


def test_every_admin_reply_and_decision_line_matches_its_schema(
        daemon_docs):
    seen = {}
    for where, raw, rc in daemon_docs:
        name = validate(raw, where)
        seen[name] = seen.get(name, 0) + 1
        if rc is not None:  # the CLI's exit status says a refusal
            assert (rc == 1) == (name.startswith("chokepoint.error/")), (
                where, rc, raw)
    for kind in ("decision", "status", "top", "show", "history", "incident",
                 "change", "reload", "error"):
        assert any(n.startswith("chokepoint.%s/" % kind) for n in seen), (
            kind, seen)
    assert seen[next(n for n in seen if "error" in n)] >= 10, seen


def test_decision_log_exercises_its_members(daemon_docs):
    """The run above reaches the members the decision log writes only
    sometimes, so their types are checked too."""
    lines = [json.loads(raw) for where, raw, _ in daemon_docs
             if where.startswith("decision log")]
    members = set().union(*lines)
    want = set(schemas()["chokepoint.decision/1"]["properties"])
    # content-stage lines come from the milter (test_content.py)
    assert want - members == {"text_accounts"}, want - members


def test_sim_replay_and_learn_reports_match_their_schemas(report_docs):
    names = {validate(raw, where) for where, raw in report_docs}
    assert {n.split("/")[0] for n in names} == {
        "chokepoint.sim", "chokepoint.replay", "chokepoint.learn"}


def test_every_document_kind_has_a_schema():
    """One list of names (util/strbuf.h), one schema file for each, and a
    schema for no kind that is not written."""
    with open(STRBUF_H) as f:
        names = set(re.findall(r'#define CP_JSON_\w+ "([^"]+)"', f.read()))
    assert names and names == set(schemas()), (names, set(schemas()))
    for f in os.listdir(SCHEMAS):
        with open(os.path.join(SCHEMAS, f)) as fp:
            s = json.load(fp)
        name = s["properties"]["schema"]["const"]
        assert f == name.split(".")[1].split("/")[0] + ".json", (f, name)


def closed(node, path="#"):
    """Every object in a schema says what else it allows: nothing
    (additionalProperties false) or members of one schema (a map)."""
    if isinstance(node, dict):
        if node.get("type") == "object" or (
                isinstance(node.get("type"), list) and
                "object" in node["type"]):
            assert "additionalProperties" in node, path
        for k, v in node.items():
            closed(v, path + "/" + k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            closed(v, "%s/%d" % (path, i))


def test_schemas_are_valid_and_closed():
    for name, s in schemas().items():
        jsonschema.Draft202012Validator.check_schema(s)
        closed(s, name)
        assert s["required"][0] == "schema", name


def test_the_check_fails_on_a_new_member_or_another_number_type():
    """The test can fail: an undocumented member, a real written as an
    integer, a count written with a fraction."""
    ok = ('{"schema":"chokepoint.top/1","accounts":[{"key":"u:a",'
          '"state":"NORMAL","score":1.0}]}')
    validate(ok, "top")
    for bad in (ok.replace('1.0}', '1}'),
                ok.replace('"score":1.0', '"score":1.0,"extra":1'),
                ok.replace('top/1', 'top/2'),
                    ok.replace('"NORMAL"', '"normal"')):
        with pytest.raises(AssertionError):
            validate(bad, "a bad top")
    change = '{"schema":"chokepoint.reload/1","reloaded":"f",' \
        '"classes":2,"customers":0}'
    validate(change, "reload")
    with pytest.raises(AssertionError):
        validate(change.replace(":2,", ":2.0,"), "a bad reload")
