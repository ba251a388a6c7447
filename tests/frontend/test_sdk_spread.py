"""The eas-prediction SDK's tests (test_sdk.py, test_sdk_watch.py) against two `scalablejob frontend` processes on
one Redis behind a round-robin TCP proxy, as several hosts behind a balancer: each connection of the SDK (its
puts, gets, commits and each watcher's websocket) may reach either process, and every test holds as against one."""

from __future__ import annotations

import pytest
from test_sdk import (  # noqa: F401 - collected here again, with the `serve` below
    test_a_watcher_kept_alive_by_the_sdks_pings_still_gets_what_comes_later,
    test_a_wrong_or_missing_token_is_refused_with_401,
    test_attributes_and_search_show_waiting_running_and_done_requests,
    test_put_then_get_by_index_and_by_request_id,
    test_truncate_deletes_everything_below_an_index,
    test_two_front_ends_of_one_job_service_never_see_each_others_items,
    test_two_watchers_of_one_client_are_refused_and_of_two_clients_share_the_items,
    test_watch_with_auto_commit_reads_in_order_and_empties_the_queue,
    test_watch_with_manual_commit_holds_at_most_a_window_uncommitted,
)
from test_sdk_watch import (  # noqa: F401
    test_a_dropped_connection_leaves_each_item_committed_if_sent_and_there_if_not,
    test_a_filtered_watch_gets_only_matching_items_and_commits_only_those,
    test_auto_commit_holds_when_the_watcher_closes_right_after_the_last_frame,
    test_manual_commit_rounds_never_hold_more_than_the_window_and_lose_nothing,
)

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def serve(serve_spread):
    return serve_spread
