"""Query parameters: what each accepts, and the 400 message for what it does not."""

from __future__ import annotations

import pytest

from scalablejob.frontend.params import (
    MAX_GET_LENGTH,
    WAIT_MARGIN_S,
    GetParams,
    WatchParams,
    parse_duration,
    parse_get,
    parse_indexes,
    parse_truncate,
    parse_watch,
    single_values,
    tags_of,
)
from scalablejob.model.errors import ParameterError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("1.5s", 1.5), ("300ms", 0.3), ("1m30s", 90.0), ("2", 2.0), ("0", 0.0), (".5s", 0.5),
     ("250us", 0.00025), ("10m", 600.0)],
)  # fmt: skip
def test_durations_read_like_go_durations_or_plain_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5x", "s", "5 s", "-1s", "1h", "inf", "nan", "1e9", ""])
def test_a_bad_or_too_long_duration_names_the_parameter(text):
    with pytest.raises(ParameterError, match=r"^_timeout_: expected a duration") as error:
        parse_duration(text)
    assert error.value.parameter == "_timeout_"


def test_get_defaults_read_one_item_from_the_start_without_waiting():
    assert parse_get({}) == GetParams(index=0, length=1, wait_s=0.0, raw=False, auto_delete=False, filters={})


def test_get_reads_every_operation_parameter_and_keeps_the_rest_as_tag_filters():
    query = {"_index_": "4", "_length_": "10", "_timeout_": "5s", "_raw_": "false", "_auto_delete_": "TRUE",
             "requestId": "r1", "kind": "a"}  # fmt: skip
    assert parse_get(query) == GetParams(4, 10, 5.0 - WAIT_MARGIN_S, False, True, {"requestId": "r1", "kind": "a"})


@pytest.mark.parametrize(("timeout", "wait_s"), [("0.3s", 0.3), ("0.5s", 0.5), ("1s", 1.0 - WAIT_MARGIN_S)])
def test_a_get_answers_a_little_before_the_clients_deadline_except_for_short_waits(timeout, wait_s):
    assert parse_get({"_timeout_": timeout}).wait_s == pytest.approx(wait_s)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"_index_": "x"}, "_index_: expected an integer between 0 and"),
        ({"_index_": "-3"}, "_index_: expected an integer between 0 and"),
        ({"_index_": "1.5"}, "_index_: expected an integer"),
        ({"_length_": "0"}, f"_length_: expected an integer between 1 and {MAX_GET_LENGTH}, got 0"),
        ({"_length_": str(MAX_GET_LENGTH + 1)}, "_length_: expected an integer between 1 and"),
        ({"_auto_delete_": "yes"}, "_auto_delete_: expected true or false, got 'yes'"),
        ({"_raw_": "2"}, "_raw_: expected true or false"),
    ],
)
def test_a_malformed_get_parameter_is_named(query, message):
    with pytest.raises(ParameterError) as error:
        parse_get(query)
    assert str(error.value).startswith(message)


def test_watch_parameters_and_their_defaults():
    assert parse_watch({"_watch_": "true"}) == WatchParams(index=0, window=1, index_only=False, auto_commit=False)
    query = {"_watch_": "true", "_index_": "3", "_window_": "5", "_index_only_": "true", "_auto_commit_": "true"}
    assert parse_watch(query) == WatchParams(index=3, window=5, index_only=True, auto_commit=True)


def test_every_watch_parameter_that_is_not_an_operation_is_a_tag_filter():
    query = {"_watch_": "true", "_window_": "2", "type": "result", "taskType": "command"}
    assert parse_watch(query).filters == {"type": "result", "taskType": "command"}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"_window_": "0"}, "_window_: expected an integer between 1 and"),
        ({"_auto_commit_": "maybe"}, "_auto_commit_: expected true or false"),
    ],
)
def test_a_malformed_watch_parameter_is_named(query, message):
    with pytest.raises(ParameterError) as error:
        parse_watch(query)
    assert str(error.value).startswith(message)


def test_indexes_are_a_comma_separated_list():
    assert parse_indexes("1,2, 30") == (1, 2, 30)


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "_indexes_: required"), ("", "_indexes_: required"), ("1,,2", "_indexes_: expected a comma-separated"),
     ("1,x", "_indexes_: expected an integer"), ("0", "_indexes_: expected an integer between 1 and")],
)  # fmt: skip
def test_bad_indexes_are_named(value, message):
    with pytest.raises(ParameterError) as error:
        parse_indexes(value)
    assert str(error.value).startswith(message)


def test_truncate_needs_an_index_of_at_least_one():
    assert parse_truncate({"_index_": "5", "_trunc_": "true"}) == 5
    with pytest.raises(ParameterError, match=r"^_index_: required with _trunc_=true"):
        parse_truncate({"_trunc_": "true"})


def test_a_parameter_given_twice_is_refused_rather_than_one_value_dropped():
    assert single_values([("a", "1"), ("b", "2")]) == {"a": "1", "b": "2"}
    with pytest.raises(ParameterError, match=r"^a: given more than once"):
        single_values([("a", "1"), ("a", "2")])


def test_tags_are_the_parameters_that_do_not_drive_the_operation():
    assert tags_of({"taskType": "query", "_priority_": "1", "_index_": "1", "_timeout_": "1s"}) == {
        "taskType": "query",
        "_priority_": "1",
    }
