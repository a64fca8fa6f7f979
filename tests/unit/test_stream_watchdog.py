"""A stream processor that stops consuming exits, so that it is restarted; nothing is lost."""

from stopsms.adapters.streams import ConsumerLag


def test_a_stream_processor_that_commits_nothing_while_work_waits_exits_to_be_restarted() -> None:
    exits: list[bool] = []
    watchdog = ConsumerLag("127.0.0.1:1", "g", ["t"], stall_exit_seconds=45)
    watchdog._exit = lambda: exits.append(True)  # type: ignore[method-assign]
    assert not watchdog._watch_for_stall(100, lag=5, now=0.0)
    assert not watchdog._watch_for_stall(100, lag=5, now=44.0)  # not yet
    assert not watchdog._watch_for_stall(120, lag=5, now=50.0)  # progress: the clock restarts
    assert not watchdog._watch_for_stall(120, lag=0, now=200.0)  # idle, nothing waits
    assert not watchdog._watch_for_stall(120, lag=3, now=210.0)
    assert watchdog._watch_for_stall(120, lag=3, now=256.0) and exits == [True]
    never = ConsumerLag("127.0.0.1:1", "g", ["t"], stall_exit_seconds=0)
    never._watch_for_stall(1, lag=1, now=0.0)
    assert not never._watch_for_stall(1, lag=1, now=10_000.0)
