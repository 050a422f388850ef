"""Choosing among endpoints: least outstanding, failing ones out for a while, then back."""

import time

from shaping.providers.endpoints import Endpoints


def test_least_outstanding_and_turns_among_equals():
    endpoints = Endpoints(["http://a", "http://b", "http://c"], "/x")
    first, second, third = endpoints.pick(), endpoints.pick(), endpoints.pick()
    assert {first.base_url, second.base_url, third.base_url} == {"http://a", "http://b", "http://c"}
    endpoints.done(second, failed=False)
    assert endpoints.pick() is second  # the only one with nothing in flight


def test_failing_endpoint_is_out_then_back_after_its_time():
    endpoints = Endpoints(["http://a", "http://b"], "/x", eject_after=2, eject_s=0.2)
    a = endpoints.all[0]
    for _ in range(2):
        a.outstanding += 1
        endpoints.done(a, failed=True)
    assert all(endpoints.pick().base_url == "http://b" for _ in range(5))
    time.sleep(0.25)
    assert any(endpoints.pick().base_url == "http://a" for _ in range(3))  # tried again
    endpoints.done(a, failed=False)
    assert a.out_until == 0.0 and a.ejections == 0


def test_all_out_still_gives_an_endpoint():
    endpoints = Endpoints(["http://a", "http://b"], "/x", eject_after=1, eject_s=60)
    for e in endpoints.all:
        e.outstanding += 1
        endpoints.done(e, failed=True)
    assert endpoints.pick() is endpoints.all[0]  # the one out the longest
