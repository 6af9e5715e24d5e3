"""pytest set-up shared by the integration tests.

Markers (scripts/run-tests.sh selects with them):

  week    a test that runs a whole simulated week at efficacy size (the
          default 100,000-customer week, the 7-day scenarios of
          doc/efficacy.md) or the golden reports (which include one). The
          sanitizer pass deselects them (-m 'not week'): under ASan one such
          run takes minutes. Each has a small-scenario twin that runs in
          both passes (named where the mark is set), so the sim and replay
          code is still run under the sanitizers.
  serial  a test that measures latency against a bound: it runs alone,
          after the parallel part of the suite (-m serial), so that the other
          worker's load is not what it measures.
  package the Debian package (test_package.py): built from a copy of the
          tree, installed, run and purged. It tests the packaging, not the
          build under test, so the sanitizer pass deselects it.

Parallel runs (pytest-xdist, -n 2 --dist loadgroup): tests that share a
module-scoped fixture (a private Postfix, the default week's report) are
put in one xdist group per module, so each such fixture is built once, on
one worker; the `week` tests, the longest, are handed out first. Every test has its own tmp directory, daemon, sockets and free
ports; postfix.py serialises its edits of /etc/postfix/main.cf.
"""
import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "week: a whole simulated week or the golden reports; "
        "deselected in the sanitizer pass (a small twin runs there)")
    config.addinivalue_line(
        "markers", "serial: measures latency; runs alone, after the "
        "parallel part")
    config.addinivalue_line(
        "markers", "package: builds, installs and purges the .deb; "
        "deselected in the sanitizer pass")
    config.addinivalue_line(
        "markers", "xdist_group(name): run on one pytest-xdist worker")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    # the longest first (the weeks), so that no worker ends alone on one
    items.sort(key=lambda item: not item.get_closest_marker("week"))
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs if info else {}
        if any(fd[-1].scope == "module" for fd in defs.values() if fd):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
