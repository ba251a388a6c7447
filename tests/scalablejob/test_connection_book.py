"""The connection book: which client holds which connections, which are idle, and how a newcomer over a cap gets in
(the idle longest makes room) or is refused (every connection in its way busy)."""

from __future__ import annotations

import pytest

from scalablejob.model.connection_book import Admit, ConnectionBook, Reclaim, Refuse, client_of


@pytest.mark.parametrize(
    ("address", "client"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),
    ],
)
def test_a_peer_address_counts_for_its_client(address, client):
    assert client_of(address) == client


def book_of(*held: tuple[str, str, bool]) -> ConnectionBook[str]:
    """A book holding (connection, client, busy) in the order given: the first opened is idle longest."""
    book: ConnectionBook[str] = ConnectionBook()
    for conn, client, busy in held:
        book.open(conn, client)
        if busy:
            book.busy(conn)
    return book


@pytest.mark.parametrize(
    ("held", "client", "open_now", "room"),
    [
        pytest.param([], "a", 0, Admit(), id="empty"),
        pytest.param([("a1", "a", True)], "a", 1, Admit(), id="under-both-caps"),
        pytest.param([("a1", "a", False), ("a2", "a", True), ("a3", "a", False)], "a", 3, Reclaim("a1"),
                     id="client-full-its-idle-longest-makes-room"),
        pytest.param([("a1", "a", True), ("a2", "a", True), ("a3", "a", True)], "a", 3, Refuse(per_client=True),
                     id="client-full-all-busy"),
        pytest.param([("a1", "a", True), ("a2", "a", True), ("a3", "a", True)], "b", 3, Admit(),
                     id="another-client-is-not-held-back"),
        pytest.param([("b1", "b", False), ("a1", "a", True), ("c1", "c", False), ("a2", "a", True)], "d", 4,
                     Reclaim("b1"), id="all-full-anyones-idle-longest-makes-room"),
        pytest.param([("b1", "b", False), ("a1", "a", True)], "a", 4, Reclaim("b1"),
                     id="all-full-counting-websockets-too"),
        pytest.param([("b1", "b", True), ("a1", "a", True), ("c1", "c", True), ("a2", "a", True)], "d", 4,
                     Refuse(per_client=False), id="all-full-all-busy"),
    ],
)  # fmt: skip
def test_a_newcomer_gets_in_takes_an_idle_place_or_is_refused(held, client, open_now, room):
    assert book_of(*held).make_room(client, open_now, per_client=3, total=4) == room


def test_a_connection_idle_again_after_a_response_is_idle_since_then():
    book = book_of(("a1", "a", False), ("a2", "a", False))
    book.busy("a1")
    book.idle("a1")  # its response ended: now idle for less time than a2
    assert book.oldest_idle("a") == "a2" and book.oldest_idle() == "a2"


def test_idle_again_while_idle_keeps_its_place():
    book = book_of(("a1", "a", False), ("a2", "a", False))
    book.idle("a1")
    assert book.oldest_idle() == "a1"


def test_a_closed_connection_is_forgotten_and_closing_twice_or_an_unknown_one_is_harmless():
    book = book_of(("a1", "a", False), ("a2", "a", True))
    book.close("a1")
    book.close("a1")
    book.close("never-opened")
    book.idle("never-opened")
    book.busy("never-opened")
    assert (len(book), book.count("a"), book.oldest_idle("a"), book.oldest_idle()) == (1, 1, None, None)
    book.close("a2")
    assert (len(book), book.count("a")) == (0, 0)
