"""Flower behind a login: one generated user and password per data folder, and `/metrics` behind it too.

`up` makes the login once (a 0600 file in the 0700 data folder), says so once, and hands it to Flower in its
environment (FLOWER_BASIC_AUTH, which Flower reads at start), never on its command line. Flower 2.2 checks the login
on its pages and API but serves `/metrics` to anyone (that handler skips the check), so the Flower that scalablejob
runs wraps it. `/healthcheck` stays open: it tells nothing but "OK", and probes have no password.

`celery -A scalablejob.local.flower flower` is that Flower alone (the Procfile's): quiet (upstream.flower_internals),
`/metrics` behind the login, the broker from CELERY_BROKER_URL, else as every scalablejob command finds it
(SCALABLEJOB_BROKER, or the data folder's embedded broker, password from the folder), and the folder's login unless
its environment gives one (FLOWER_BASIC_AUTH or Flower's OAuth FLOWER_AUTH) or SCALABLEJOB_FLOWER_NO_AUTH=1 turns it
off. `celery -A your_module flower` on a service's app is prepared the same way (`prepare_flower`, which the app calls
when it is loaded for that command): the folder's login, and 127.0.0.1 unless `--address` or FLOWER_ADDRESS says
otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalablejob.host.secret_files import ensure_secret, private_folder, random_secret
from scalablejob.model.errors import ScalableJobError
from scalablejob.store.broker import BROKER_ENV, broker_wait_s, data_dir, running_embedded, wait_for_broker
from scalablejob.upstream.flower_internals import protect_metrics, quiet_flower_inspector

FLOWER_USER = "scalablejob"
LOGIN_FILE = "flower-login"  # one line USER:PASSWORD, 0600, in the data folder
BASIC_AUTH_ENV = "FLOWER_BASIC_AUTH"  # Flower's own: USER:PASSWORD[,USER:PASSWORD...]
OAUTH_ENV = "FLOWER_AUTH"  # Flower's OAuth setting: a login of the user's own choosing
NO_AUTH_ENV = "SCALABLEJOB_FLOWER_NO_AUTH"
ADDRESS_ENV = "FLOWER_ADDRESS"  # Flower's own; its default, all addresses, would show every task to the network
LOOPBACK = "127.0.0.1"
CELERY_BROKER_ENV = "CELERY_BROKER_URL"  # Celery's own; it wins over the app's broker setting
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class FlowerLogin:
    user: str
    password: str
    path: Path
    created: bool = False

    @property
    def basic_auth(self) -> str:
        return f"{self.user}:{self.password}"

    def describe(self) -> str:
        """What may be printed: the user and where the password is, never the password."""
        return f"user {self.user}, password in {self.path}"


def flower_login(folder: Path) -> FlowerLogin:
    """The data folder's Flower login, made now if it has none."""
    path = private_folder(folder) / LOGIN_FILE
    text, created = ensure_secret(path, lambda: f"{FLOWER_USER}:{random_secret()}")
    user, _, password = text.partition(":")
    if not user or not password or "," in text:
        raise ScalableJobError(f"{path}: expected one line USER:PASSWORD (no comma); remove it to get a new one")
    return FlowerLogin(user, password, path, created)


def flower_env(broker_url: str, login: FlowerLogin | None) -> dict[str, str]:
    """The environment that hands Flower its broker and its login (None: explicitly none)."""
    auth = {BASIC_AUTH_ENV: login.basic_auth} if login else {NO_AUTH_ENV: "1"}
    return {CELERY_BROKER_ENV: broker_url, **auth}


def auth_is_off(environ: Mapping[str, str]) -> bool:
    return environ.get(NO_AUTH_ENV, "").strip().lower() in _TRUE


def prepare_flower() -> None:
    """Before Flower reads its FLOWER_* settings: quiet, `/metrics` behind the login, and the data folder's login in
    the environment (unless one is given or turned off), so the login put there is the one Flower uses."""
    quiet_flower_inspector()
    protect_metrics()
    if not (os.environ.get(BASIC_AUTH_ENV) or os.environ.get(OAUTH_ENV) or auth_is_off(os.environ)):
        login = flower_login(data_dir())
        os.environ[BASIC_AUTH_ENV] = login.basic_auth
        if login.created:
            print(f"flower login made: {login.describe()}", file=sys.stderr, flush=True)


def prepare_service_flower() -> None:
    """`celery -A module flower` on a service's app: as `up`'s Flower, on 127.0.0.1 unless told otherwise."""
    prepare_flower()
    os.environ.setdefault(ADDRESS_ENV, LOOPBACK)


def _make_app() -> Any:
    """The app of `celery -A scalablejob.local.flower flower`, made when Celery asks for it: before Flower reads its
    FLOWER_* settings, so the login put in the environment here is the one Flower uses."""
    from scalablejob.api.celery_app import BrokerCelery

    prepare_flower()
    folder = data_dir()
    broker = None
    if not os.environ.get(CELERY_BROKER_ENV):
        given = os.environ.get(BROKER_ENV)
        broker = wait_for_broker(given, broker_wait_s(), folder) if given else running_embedded(folder)
    return BrokerCelery("scalablejob", broker=broker, set_as_current=False)


def __getattr__(name: str) -> Any:
    """`app`, for `celery -A scalablejob.local.flower`: made on first use, so importing this module makes no app."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    global _app
    if _app is None:
        _app = _make_app()
    return _app


_app: Any = None
