"""chokepoint sim: the simulator's report on the shipped scenarios.

These tests check that the simulation is sane and honest (the baseline
reaches the configured spam share, ground-truth counts add up, a seed gives
the same report, the protocol path decides exactly as the in-process
engine), and hold the shipped configuration to the efficacy targets of
BRIEF.md where it meets them (doc/efficacy.md: distributed campaigns are
the known gap, reported separately).

The whole simulated weeks (the default 100,000-customer week, the 7-day
scenarios of doc/efficacy.md) carry the `week` marker (conftest.py): the
sanitizer pass of scripts/run-tests.sh deselects them, as one of them
takes minutes under ASan. Each has a small twin that runs in both passes:
the default week's consistency checks run on every other scenario here,
the 7-day scenarios have tenth-size versions in tests/integration/scenarios
and tests/golden/scenarios, checked with the same assertions.
"""
import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from cpd import CHOKEPOINT, HANG, ROOT, Daemon

SCEN = os.path.join(ROOT, "sim", "scenarios")
# the small twins of the 7-day scenarios (a tenth of the customers)
SMALL = os.path.join(ROOT, "tests", "integration", "scenarios")
GOLDEN = os.path.join(ROOT, "tests", "golden", "scenarios")
CONFIG = os.path.join(ROOT, "etc", "chokepoint.yaml")
KEYS = ["spam_share_before", "spam_share_after", "zombie_accounts",
        "zombie_accounts_caught", "spam_accepted_per_zombie_median",
        "spam_accepted_per_zombie_p90", "detect_minutes_median",
        "legit_login_days", "legit_login_days_deferred",
        "legit_messages_deferred", "legit_accounts_blocked", "logins",
        "legit_logins", "legit_logins_throttled", "legit_logins_blocked",
        "zombie_logins",
        "account_flag_precision", "account_flag_recall", "by_kind"]


def sim(scenario, *args, check=True):
    r = subprocess.run([CHOKEPOINT, "sim", os.path.join(SCEN, scenario),
                        "--config", CONFIG] + list(args),
                       capture_output=True, text=True, timeout=HANG)
    if check and r.returncode != 0:
        raise AssertionError("sim failed (%d): %s" % (r.returncode, r.stderr))
    return r


def sim_json(scenario, *args):
    return json.loads(sim(scenario, "--json", *args).stdout)


def assert_consistent(rep):
    for k in KEYS:
        assert k in rep, k
    assert rep["ham_delivered"] <= rep["ham_messages"]
    assert rep["spam_delivered"] <= rep["spam_messages"]
    total = rep["ham_messages"] + rep["spam_messages"]
    assert rep["spam_share_before"] == pytest.approx(
        rep["spam_messages"] / total, rel=1e-4)
    sent = rep["ham_delivered"] + rep["spam_delivered"]
    assert rep["spam_share_after"] == pytest.approx(
        rep["spam_delivered"] / sent, rel=1e-4)
    kinds = rep["by_kind"].values()
    assert sum(k["spam_messages"] for k in kinds) == rep["spam_messages"]
    assert sum(k["spam_accepted"] for k in kinds) == rep["spam_delivered"]
    assert sum(k["zombie_accounts"] for k in kinds) == rep["zombie_accounts"]
    assert sum(k["zombie_accounts_caught"] for k in kinds) == \
        rep["zombie_accounts_caught"]
    assert rep["zombie_accounts_caught"] <= rep["zombie_accounts"]
    assert rep["legit_login_days_deferred"] <= rep["legit_login_days"]
    assert rep["legit_messages_deferred"] <= rep["ham_messages"]
    assert rep["legit_logins_blocked"] <= rep["legit_logins_throttled"] <= \
        rep["legit_logins_watched"] <= rep["legit_logins"] <= rep["logins"]
    # every message took at least one attempt, each at least 3 requests
    assert rep["attempts"] >= total
    assert rep["policy_requests"] >= rep["attempts"]


def week(scenario, *more):
    """A parameter that runs a whole week (the `week` marker)."""
    return pytest.param(scenario, *more, marks=pytest.mark.week,
                        id=scenario)


def small(path, *more):
    """A small twin (a scenario outside sim/scenarios): runs everywhere."""
    return pytest.param(path, *more, id=os.path.basename(path))


def assert_precision(rep):
    """The targets for legitimate logins (issue 11, BRIEF.md): none
    blocked, at most 0.05 % throttled, at most 0.1 % of login-days with
    any deferral."""
    assert rep["legit_logins_blocked"] == 0
    assert rep["legit_logins_throttled"] <= 0.0005 * rep["legit_logins"]
    assert rep["legit_login_days_deferred"] <= \
        0.001 * rep["legit_login_days"]


# The default week (3.7 M messages) takes ~50 s optimised and many
# minutes under ASan: `week` tests. Their twins: every other scenario
# below goes through the same assert_consistent() and target checks.
@pytest.fixture(scope="module")
def default_week():
    """The default week on the day of deployment (no history: the harder
    case; isp-week.yaml, warm, is in doc/efficacy.md)."""
    return sim_json("isp-week-cold.yaml")


@pytest.mark.week
def test_default_week_baseline_and_counts(default_week):
    week = default_week
    assert_consistent(week)
    assert week["customers"] == 100000
    assert week["spam_share_before"] == pytest.approx(0.30, abs=0.015)
    assert set(week["by_kind"]) == {"blaster", "low_and_slow", "campaign",
                                    "stolen_credentials", "unauth_relay"}


@pytest.mark.week
def test_default_week_targets(default_week):
    """BRIEF.md targets, with content fingerprints (the shipped config has
    the milter): distributed campaigns included."""
    week = default_week
    assert week["legit_accounts_blocked"] == 0
    assert_precision(week)
    assert week["logins"] > week["customers"]  # businesses' staff logins
    assert week["spam_share_after"] <= 0.005
    for kind, k in week["by_kind"].items():
        assert k["zombie_accounts_caught"] >= 0.99 * k["zombie_accounts"]
        assert k["spam_accepted_per_zombie_median"] <= 10, kind
    assert week["outcomes_bad_recipient"] > 0


@pytest.mark.week
def test_default_week_without_content_misses_campaigns():
    """Without the milter (--no-content) the envelope and delivery
    evidence alone: met except for distributed campaigns, whose five
    messages per zombie are too few for per-account evidence. (Twin:
    test_quiet_template_zombies_are_caught_by_their_template and
    test_reputation_pool_carries_the_suspects_mail run --no-content.)"""
    week = sim_json("isp-week-cold.yaml", "--no-content")
    assert week["legit_accounts_blocked"] == 0
    assert week["spam_share_after_without_campaigns"] <= 0.005
    camp = week["by_kind"]["campaign"]
    assert camp["zombie_accounts_caught"] >= 0.5 * camp["zombie_accounts"]
    assert camp["spam_accepted"] >= 0.5 * camp["spam_messages"]
    assert week["spam_share_after"] > 0.005


@pytest.mark.parametrize("scenario,kind", [
    ("blaster.yaml", "blaster"),
    ("low-and-slow.yaml", "low_and_slow"),
    ("campaign.yaml", "campaign"),
    ("stolen-credentials.yaml", "stolen_credentials"),
    ("unauth-relay.yaml", "unauth_relay"),
])
def test_infection_kind_scenarios(scenario, kind):
    rep = sim_json(scenario)
    assert_consistent(rep)
    assert set(rep["by_kind"]) == {kind}
    assert rep["zombie_accounts"] >= 1
    assert rep["spam_share_before"] == pytest.approx(0.30, abs=0.03)
    assert rep["legit_accounts_blocked"] == 0
    k = rep["by_kind"][kind]
    if kind == "campaign":
        # a handful per zombie: the campaign table catches every zombie,
        # but the first copies go out before the text is known (5.7 %)
        assert k["zombie_accounts_caught"] == k["zombie_accounts"]
        assert k["spam_accepted_per_zombie_median"] <= 2
        assert k["spam_accepted"] <= 0.25 * k["spam_messages"]
    else:
        assert k["zombie_accounts_caught"] == k["zombie_accounts"]
        assert k["spam_accepted_per_zombie_median"] <= 10
        assert rep["spam_share_after"] <= 0.005
    if kind in ("blaster", "unauth_relay", "stolen_credentials"):
        assert k["detect_minutes_median"] < 10


def test_same_seed_same_report():
    a = sim_json("small-live.yaml")
    b = sim_json("small-live.yaml")
    a.pop("wall_seconds")
    b.pop("wall_seconds")
    assert a == b


def test_live_protocol_path_agrees(tmp_path):
    mapfile = tmp_path / "sim.map"
    sim("small-live.yaml", "--map-out", str(mapfile))
    with open(CONFIG) as f:
        classes = f.read().split("\nclasses:\n", 1)[1]
    d = Daemon(tmp_path / "d", classes="classes:\n" + classes,
               customer_map=mapfile.read_text(),
               extra={"daemon": "log_level: info",
                      "accounting": "reservation_timeout: 10m"})
    d.start(args=["--sim-clock"])
    try:
        r = subprocess.run([CHOKEPOINT, "sim",
                            os.path.join(SCEN, "small-live.yaml"),
                            "--config", d.config, "--json", "--live",
                            d.policy_sock],
                           capture_output=True, text=True, timeout=HANG)
        assert r.returncode == 0, r.stderr
        live = json.loads(r.stdout)
    finally:
        assert d.stop() == 0
    inproc = json.loads(subprocess.run(
        [CHOKEPOINT, "sim", os.path.join(SCEN, "small-live.yaml"),
         "--config", d.config, "--json"],
        capture_output=True, text=True, timeout=HANG, check=True).stdout)
    for rep in (live, inproc):
        rep.pop("wall_seconds")
    for k in ("legit_logins", "legit_logins_watched",
              "legit_logins_throttled", "legit_logins_blocked"):
        inproc.pop(k)  # the states of logins: in-process only
    # what deferred: the rule or state is in-process only (a reply does
    # not name it); the counts agree
    assert sum(live.pop("legit_deferred_by").values()) == \
        sum(inproc.pop("legit_deferred_by").values())
    assert live["policy_requests"] > 10000
    assert live == inproc


def test_cgnat_and_roaming_do_not_matter():
    rep = sim_json("cgnat-roaming.yaml")
    assert_consistent(rep)
    assert rep["spam_messages"] == 0 and rep["zombie_accounts"] == 0
    assert rep["legit_login_days"] > 10000
    assert rep["legit_login_days_deferred"] == 0


def test_quiet_template_zombies_are_caught_by_their_template(tmp_path):
    """The quietest zombie (the owner's mail client, address, HELO and TLS
    stack, a dozen an hour) sends one text from 27 accounts: the campaign
    table catches it within ten messages. Without content (--no-content)
    uniform_size catches it, and only it (with its weight 0 none is
    caught), after the template has run three hours."""
    rep = sim_json("quiet-template.yaml")
    assert_consistent(rep)
    k = rep["by_kind"]["low_and_slow"]
    assert k["zombie_accounts_caught"] == k["zombie_accounts"] > 20
    assert k["spam_accepted_per_zombie_median"] <= 10
    assert rep["legit_accounts_blocked"] == 0
    rep = sim_json("quiet-template.yaml", "--no-content")
    k = rep["by_kind"]["low_and_slow"]
    assert k["zombie_accounts_caught"] == k["zombie_accounts"]
    assert k["spam_accepted_per_zombie_median"] > 30
    assert rep["spam_share_after"] < rep["spam_share_before"] / 4
    cfg = tmp_path / "no-template.yaml"
    with open(CONFIG) as f:
        text = f.read()
    assert "    uniform_size: 6.0 " in text
    cfg.write_text(text.replace("    uniform_size: 6.0 ",
                                "    uniform_size: 0.0 "))
    off = json.loads(subprocess.run(
        [CHOKEPOINT, "sim", os.path.join(SCEN, "quiet-template.yaml"),
         "--config", str(cfg), "--json", "--no-content"],
        capture_output=True, text=True, timeout=HANG, check=True).stdout)
    assert off["by_kind"]["low_and_slow"]["zombie_accounts_caught"] == 0


@pytest.mark.parametrize("scenario", [
    week("newsletter-spike.yaml"),
    small(os.path.join(SMALL, "newsletter-spike-small.yaml")),
    "holiday-burst.yaml",
    week("slow-merge.yaml"),
    small(os.path.join(SMALL, "slow-merge-small.yaml")),
    "chain-letter.yaml"])
def test_hard_legit_scenarios_report(scenario):
    rep = sim_json(scenario)
    assert_consistent(rep)
    assert rep["spam_messages"] == 0
    # a deferred person's client retries: nothing is lost for good
    assert rep["legit_messages_lost"] == 0
    assert rep["legit_accounts_blocked"] == 0
    assert_precision(rep)


@pytest.mark.parametrize("scenario,stale,history_days", [
    week("business-staff.yaml", False, 0),
    small(os.path.join(SMALL, "business-staff-small.yaml"), False, 0),
    week("shared-office.yaml", False, 0),
    small(os.path.join(GOLDEN, "office-small.yaml"), False, 0),
    week("stale-newsletter.yaml", True, 14),
    small(os.path.join(GOLDEN, "newsletter-small.yaml"), True, 7),
    week("stale-newsletter-cold.yaml", True, 0),
    small(os.path.join(SMALL, "newsletter-small-cold.yaml"), True, 0)])
def test_business_customers_and_stale_lists(scenario, stale, history_days):
    """Real customer shapes (issue 11): a company's staff logins grouped
    as one customer, shared office logins without a map, newsletters to
    lists with 2-5 % hard bounces; cold and warm starts. No legitimate
    login blocked, and the zombies among them still caught."""
    rep = sim_json(scenario)
    assert_consistent(rep)
    assert_precision(rep)
    assert rep["zombie_accounts_caught"] == rep["zombie_accounts"] > 0
    assert rep["spam_share_after"] <= 0.005
    assert rep["spam_accepted_per_zombie_median"] <= 10
    if stale:
        assert rep["outcomes_bad_recipient"] > 0.02 * rep["outcomes_delivered"]
    else:
        assert rep["logins"] > rep["customers"]
    assert rep["history_days"] == history_days


@pytest.mark.parametrize("scenario", [
    week("mail-servers.yaml"),
    small(os.path.join(SMALL, "mail-servers-small.yaml"))])
def test_companies_own_mail_servers(scenario):
    """Companies whose own mail servers relay all their mail through the
    smarthost: their people's mail at any hour, out-of-office replies and
    backscatter with the null sender, their users' forwards without SRS,
    some of them the day's spam runs that every server receives (with the
    milter: the same text from every server). No server throttled or
    blocked, none of their days deferred; the infected office PCs behind
    some of them caught."""
    rep = sim_json(scenario)
    assert_consistent(rep)
    assert_precision(rep)
    assert rep["legit_logins_throttled"] == 0
    assert rep["legit_accounts_blocked"] == 0
    assert rep["zombie_accounts_caught"] == rep["zombie_accounts"] > 0
    assert rep["spam_accepted_per_zombie_median"] <= 10
    # what the servers passed on was there: backscatter that bounced,
    # forwarded spam that the mailboxes refused
    assert rep["outcomes_bad_recipient"] > 0.02 * rep["outcomes_delivered"]
    assert rep["outcomes_rejected"] > 0.01 * rep["outcomes_delivered"]


def test_svg_charts(tmp_path):
    out = tmp_path / "charts"
    sim("small-live.yaml", "--svg", str(out))
    names = sorted(os.listdir(out))
    assert names == ["legit-deferrals.svg", "spam-per-zombie.svg",
                     "volume.svg"]
    rects = {}
    for n in names:
        root = ET.parse(out / n).getroot()
        assert root.tag.endswith("svg")
        rects[n] = len(root.findall("{http://www.w3.org/2000/svg}rect"))
    # one bar per hour and kind of mail, at least; zombies in 3 bins
    assert rects["volume.svg"] > 24
    assert rects["spam-per-zombie.svg"] >= 7


def test_bad_scenario_is_refused_with_position(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndays: 3\ncustomers:\n  - class: residential\n"
                   "    customrs: 10\n")
    r = subprocess.run([CHOKEPOINT, "sim", str(bad)], capture_output=True,
                       text=True, timeout=HANG)
    assert r.returncode == 1
    assert re.search(r"bad\.yaml:5:5: unknown key 'customrs'", r.stderr), \
        r.stderr


def test_live_refuses_a_scenario_with_delivery_outcomes():
    """--live cannot feed bounces (the daemon reads them from the mail
    log): a scenario that models them is refused, saying what to change."""
    r = subprocess.run([CHOKEPOINT, "sim", os.path.join(SCEN, "blaster.yaml"),
                        "--live", "/nonexistent.sock"],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode != 0
    assert "delivery: false" in r.stderr


def test_reputation_pool_carries_the_suspects_mail(tmp_path):
    """With containment.suspect_transport set, the mail of accounts in
    WATCH or PROBATION leaves through the pool (FILTER): what is accepted
    does not change, but the spam share of the mail outside the pool
    falls; without it nothing is routed."""
    text = open(CONFIG).read()
    assert "  # suspect_transport:" in text
    cfg = tmp_path / "pool.yaml"
    cfg.write_text(text.replace("  # suspect_transport:",
                                "  suspect_transport:"))
    # without content: what the envelope evidence lets through
    plain = sim_json("campaign.yaml", "--no-content")
    r = subprocess.run([CHOKEPOINT, "sim", os.path.join(SCEN, "campaign.yaml"),
                        "--config", str(cfg), "--json", "--no-content"],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    pool = json.loads(r.stdout)
    assert plain["spam_delivered_via_pool"] == 0
    assert pool["spam_delivered"] == plain["spam_delivered"]
    assert pool["ham_delivered"] == plain["ham_delivered"]
    assert pool["spam_delivered_via_pool"] > 0.2 * pool["spam_delivered"]
    assert pool["spam_share_after_outside_pool"] < \
        0.9 * pool["spam_share_after"]
