"""`up`'s watch over its embedded Redis: one that exited is started again at once, one that cannot start is tried
again after pauses that double up to a bound, and each step is said in one line. The broker is a fake, time a
number."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalablejob.local.broker_restarts import BrokerRestarts, how_it_ended
from scalablejob.model.errors import BrokerError


@dataclass
class FakeServer:
    port: int = 6390
    pid: int = 100
    exit_status: int | None = None


@dataclass
class FakeBroker:
    """A broker whose server exits when the test says, and whose restarts fail `failing` times first."""

    server: FakeServer = field(default_factory=FakeServer)
    failing: int = 0
    tries: int = 0

    def restart(self) -> str:
        self.tries += 1
        if self.failing:
            self.failing -= 1
            raise BrokerError("redis-server exited with code 1 on port 6390; see redis.log")
        self.server.pid += 1
        self.server.exit_status = None
        return "redis://127.0.0.1:6390/0"


def watch(broker: FakeBroker, clock: list[float]) -> tuple[BrokerRestarts, list[str]]:
    said: list[str] = []
    restarts = BrokerRestarts(broker, said.append, first_pause_s=1, max_pause_s=4, clock=lambda: clock[0])  # type: ignore[arg-type]
    return restarts, said


def test_a_running_broker_is_left_alone():
    broker, clock = FakeBroker(), [0.0]
    restarts, said = watch(broker, clock)
    restarts.check()
    assert (broker.tries, said) == (0, [])


def test_a_broker_that_exited_is_started_again_at_once_and_said_so():
    broker, clock = FakeBroker(), [0.0]
    restarts, said = watch(broker, clock)
    broker.server.exit_status = -9
    restarts.check()
    assert broker.tries == 1 and restarts.restarts == 1
    assert said == [
        "redis-server (pid 100) exited killed by SIGKILL: restarting it on port 6390 with the same data and password",
        "redis-server is back on port 6390 (pid 101); the parts reconnect to it",
    ]


def test_a_broker_that_cannot_start_is_tried_again_after_pauses_that_double_up_to_the_bound():
    broker, clock = FakeBroker(failing=4), [0.0]
    restarts, said = watch(broker, clock)
    broker.server.exit_status = 1
    tried_at = []
    for second in range(20):
        clock[0] = float(second)
        before = broker.tries
        restarts.check()
        if broker.tries > before:
            tried_at.append(second)
    assert tried_at == [0, 1, 3, 7, 11]  # pauses of 1, 2, 4, then 4 (the bound)
    assert said[1] == (
        "redis-server did not restart: redis-server exited with code 1 on port 6390; see redis.log; trying again in 1 s"
    )
    assert said[-1] == "redis-server is back on port 6390 (pid 101); the parts reconnect to it"


def test_how_a_process_ended_is_said_in_words():
    assert [how_it_ended(status) for status in (-9, -15, 0, 3)] == [
        "killed by SIGKILL", "killed by SIGTERM", "with status 0", "with status 3",
    ]  # fmt: skip
