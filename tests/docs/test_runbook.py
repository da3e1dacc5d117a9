"""docs/runbook.md against the code: every alert kind, every status state, every fix it quotes.

The runbook is where an on-call lands from an alert, so it may not fall behind
the code: a new alert kind or status state without an entry fails here, and so
does a fix text, a resolved notice or a metric name the code no longer has.
Its anchors are what alerts and Prometheus rules link to: the chart's
PrometheusRule and the page's example rules are rendered and every
``runbook_url`` must land on an anchor of the page.
"""

from __future__ import annotations

import re
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rotator.alerts.fixes import grant_fix
from rotator.alerts.rules import ALERT_KINDS, Kind, Sent, evaluate, plan
from rotator.commands.rows import STATUS_STATES, health
from rotator.rotation.rotator import Outcome
from tests.alerts.test_fixes import ACCOUNTS, config
from tests.support import docs
from tests.support.alertkit import ALERTS, T0, state
from tests.support.helm import CHART, chart, manifests

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["chart"]  # the module fixture

PAGE = ROOT / "docs" / "runbook.md"
#: the name the page writes for "the account in the alert"
ACCOUNT = "ACCOUNT"

_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
_LINK = re.compile(r"\]\(([^)\s]*)\)")


@pytest.fixture(scope="module")
def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def flat(text: str) -> str:
    """Whitespace collapsed: a quoted text may wrap across lines of the Markdown."""
    return " ".join(text.split())


def section(text: str, heading: str) -> str:
    """The lines under the ``## heading`` up to the next ``## ``."""
    lines = text.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1 : end])


def entries(text: str) -> dict[str, tuple[str, str]]:
    """``### `NAME` ...`` entries: NAME -> (the anchor right before the heading, the body)."""
    found: dict[str, tuple[str, str]] = {}
    parts = re.split(r"^### ", text, flags=re.MULTILINE)
    for before, part in pairwise(parts):
        heading, _, body = part.partition("\n")
        name = re.match(r"`([^`]+)`", heading)
        if name is None:
            continue  # not an entry of a kind or state (e.g. "What brings a grant back")
        anchors = _ANCHOR.findall(before.strip().splitlines()[-1]) if before.strip() else []
        assert anchors, f"the entry {heading!r} has no <a id> anchor right before it"
        found[name.group(1)] = (anchors[-1], body.split("\n### ")[0])
    return found


def anchors(text: str) -> list[str]:
    return _ANCHOR.findall(text)


def heading_ids(text: str) -> list[str]:
    """The ids MkDocs gives headings (python-markdown's toc slugify, for plain headings)."""
    titles = re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)
    return [re.sub(r"[\s-]+", "-", re.sub(r"[^\w\s-]", "", t).strip().lower()) for t in titles]


# --- the code's lists ----------------------------------------------------------------


def test_every_alert_kind_has_an_entry_anchored_by_its_name(page: str) -> None:
    kinds = entries(section(page, "## Alerts"))
    assert set(kinds) == set(ALERT_KINDS)
    for kind, (anchor, _) in kinds.items():
        assert anchor == kind  # the payload's `kind` is the anchor: runbook/#<kind>
    summary = section(page, "## Alerts").split("<a id=")[0]
    assert {m for m in re.findall(r"\[`([a-z_]+)`\]\(#\1\)", summary)} == set(ALERT_KINDS)


def test_every_status_state_has_an_entry(page: str) -> None:
    states = entries(section(page, "## `rotator status` states"))
    assert set(states) == set(STATUS_STATES)
    for word, (anchor, _) in states.items():
        assert anchor == "status-" + re.sub(r"[^a-z]+", "-", word.lower()).strip("-").removesuffix(
            "-n"
        )


@given(
    failed=st.booleans(),
    failures=st.integers(min_value=0, max_value=10_000),
    token=st.sampled_from([None, "", "2026-11-01T10:00:00Z"]),
)
def test_every_word_status_shows_is_a_listed_state(
    failed: bool, failures: int, token: str | None
) -> None:
    row = {"failed": failed, "consecutive_failures": failures, "access_token_expires_at": token}
    assert re.sub(r"\(\d+\)", "(n)", health(row)) in STATUS_STATES


def test_every_kind_entry_names_its_resolved_notice(page: str) -> None:
    kinds = entries(section(page, "## Alerts"))
    sent = {str(kind): Sent(1, "warning", T0, T0) for kind in Kind}
    resolved, _ = plan(ACCOUNT, "oauth2", [], sent, now=T0, repeat=timedelta(hours=24))
    assert {str(alert.kind) for alert in resolved} == set(ALERT_KINDS)
    for alert in resolved:
        told = alert.summary.removeprefix("resolved: ")
        assert told in flat(kinds[str(alert.kind)][1]), (alert.kind, told)


# --- the fixes it quotes ---------------------------------------------------------------


@pytest.mark.parametrize("console", [False, True])
@pytest.mark.parametrize("case", sorted(ACCOUNTS))
def test_the_grant_fix_of_every_kind_of_account_is_quoted(
    page: str, case: str, console: bool
) -> None:
    settings = config(ACCOUNTS[case], console).accounts["acct"]
    fix = grant_fix(ACCOUNT, settings, console=console)
    assert fix.action in flat(section(page, "## Alerts")), case


@pytest.mark.parametrize(
    "code", ["invalid_client", "secret_ref", "server_error", "invalid_grant", "no_refresh_token"]
)
def test_the_dead_entry_quotes_the_action_for_each_error(page: str, code: str) -> None:
    settings = config(ACCOUNTS["oauth2 refresh_token without authorize_url"], False)
    dead = state(account=ACCOUNT, failed=True, last_error_code=code, last_error=f"{code} - refused")
    [cond] = [
        c for c in evaluate(dead, settings.accounts["acct"], ALERTS, T0) if c.kind is Kind.DEAD
    ]
    dead_entry = flat(entries(section(page, "## Alerts"))["dead"][1])
    assert code in dead_entry or code == "server_error"
    grant_fixes = flat(section(page, "## Alerts").split('<a id="grant-fixes"></a>')[1])
    assert cond.action in dead_entry or cond.action in grant_fixes


def test_every_metric_named_exists(page: str) -> None:
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "rotator").rglob("*.py"))
    named = set(re.findall(r"\brotator_[a-z_]+\b", page))
    assert named
    missing = {
        name
        for name in named
        if f'"{name}"' not in source and f'"{name.removesuffix("_total")}"' not in source
    }
    assert missing == set()


def test_every_link_lands(page: str) -> None:
    ids = anchors(page) + heading_ids(page)
    assert len(ids) == len(set(ids)), "an anchor is used twice (or is a heading's id)"
    for target in _LINK.findall(page):
        if target.startswith("#"):
            assert target[1:] in ids, target
        else:
            assert not target.startswith(("http", "/", "..")), target
            assert (PAGE.parent / target.split("#")[0]).is_file(), target


# --- Prometheus rules link to it --------------------------------------------------------


def rule_anchors(rules: list[dict[str, Any]], base: str) -> dict[str, str]:
    """Each rule's runbook anchor; fails on a rule without guidance or off the page."""
    found = {}
    for rule in rules:
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        url = notes["runbook_url"]
        assert url.startswith(f"{base}/runbook/#"), url
        found[rule["alert"]] = url.rpartition("#")[2]
    return found


def test_the_example_rules_carry_annotations_that_land_on_the_page(page: str) -> None:
    block = docs.block("runbook/prometheus-rules", PAGE)
    [group] = yaml.safe_load(block.text)["groups"]
    found = rule_anchors(group["rules"], "https://docs.example.com/rotator")
    assert all(alert == anchor for alert, anchor in found.items())
    assert set(found) <= set(anchors(page))
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "rotator").rglob("*.py"))
    outcomes = {str(outcome) for outcome in Outcome}
    for rule in group["rules"]:
        for metric in re.findall(r"\brotator_[a-z_]+", rule["expr"]):
            assert f'"{metric.removesuffix("_total")}"' in source, metric
        for results in re.findall(r'result=~"([a-z_|]+)"', rule["expr"]):
            assert set(results.split("|")) <= outcomes, results


def test_every_prometheus_alert_named_in_the_docs_or_the_chart_has_an_entry(page: str) -> None:
    texts = [p.read_text(encoding="utf-8") for p in docs.pages()]
    texts.append((CHART / "templates" / "prometheusrule.yaml").read_text(encoding="utf-8"))
    named = {name for text in texts for name in re.findall(r"- alert: (\w+)", text)}
    assert "RotatorDown" in named
    assert named <= set(anchors(page))


def chart_rules(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    [rule] = manifests(chart, {"prometheusRule": {"enabled": True, **values}}, "PrometheusRule")
    [group] = rule["spec"]["groups"]
    rules: list[dict[str, Any]] = group["rules"]
    return rules


@pytest.mark.parametrize(
    ("values", "base"),
    [
        ({}, "https://docs.example.com/rotator"),
        ({"runbookBaseUrl": "https://wiki.corp.example/ops/rotator/"}, None),
    ],
)
def test_the_charts_rules_link_to_entries_of_the_page(
    chart: Any, page: str, values: dict[str, Any], base: str | None
) -> None:
    rules = chart_rules(chart, values)
    found = rule_anchors(rules, base or values["runbookBaseUrl"].rstrip("/"))
    assert set(found.values()) <= set(anchors(page))
    assert all(alert == anchor for alert, anchor in found.items())
    for rule in rules:
        # the guidance names commands that run in the release's pod
        if rule["alert"] != "RotatorDown":
            assert "kubectl -n tokens exec deploy/rot" in rule["annotations"]["description"]


def test_the_chart_refuses_a_base_url_that_is_not_one(chart: Any) -> None:
    import helm_python.errors as helm_errors

    with pytest.raises(helm_errors.HelmError, match="runbookBaseUrl"):
        chart_rules(chart, {"runbookBaseUrl": "docs/rotator"})
