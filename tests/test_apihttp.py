"""GET responses shared by identical requests (poller.api.plumbing.SharedResponses)."""

from __future__ import annotations

from fastapi.responses import Response

from poller.api.plumbing import SharedResponses


class Views:
    """A view that answers with how many times it was computed, and a settable clock."""

    def __init__(self) -> None:
        self.computed = 0
        self.now = 100.0

    def view(self) -> Response:
        self.computed += 1
        return Response(f'{{"n": {self.computed}}}', 200, media_type="application/json")


def test_identical_requests_share_one_response_while_fresh() -> None:
    views = Views()
    shared = SharedResponses(1.0, now=lambda: views.now)
    config = object()
    first = shared.get(("jobs", 0), config, views.view)
    views.now += 0.9
    second = shared.get(("jobs", 0), config, views.view)
    assert views.computed == 1
    assert second.body == first.body == b'{"n": 1}'
    assert second.media_type == "application/json"
    assert second is not first  # a response object is sent once
    views.now += 0.2  # 1.1 s after it was computed
    assert shared.get(("jobs", 0), config, views.view).body == b'{"n": 2}'


def test_other_requests_a_new_config_and_clear_compute_again() -> None:
    views = Views()
    shared = SharedResponses(1.0, now=lambda: views.now)
    config = object()
    shared.get(("jobs", 0), config, views.view)
    shared.get(("jobs", 100), config, views.view)
    assert views.computed == 2
    shared.get(("jobs", 0), object(), views.view)  # a reload made a new config
    assert views.computed == 3
    shared.clear()  # an action
    shared.get(("jobs", 100), config, views.view)
    assert views.computed == 4


def test_a_response_computed_across_a_clear_is_not_shared() -> None:
    views = Views()
    shared = SharedResponses(1.0, now=lambda: views.now)
    config = object()

    def view_during_an_action() -> Response:
        response = views.view()
        shared.clear()  # a trigger lands while the view reads the history
        return response

    assert shared.get(("jobs", 0), config, view_during_an_action).body == b'{"n": 1}'
    assert shared.get(("jobs", 0), config, views.view).body == b'{"n": 2}'


def test_the_responses_kept_are_bounded() -> None:
    views = Views()
    shared = SharedResponses(60.0, max_entries=3, now=lambda: views.now)
    config = object()
    for offset in range(4):
        shared.get(("jobs", offset), config, views.view)
    shared.get(("jobs", 3), config, views.view)
    assert views.computed == 4  # the newest is kept
    shared.get(("jobs", 0), config, views.view)
    assert views.computed == 5  # the oldest were dropped
