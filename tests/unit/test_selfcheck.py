"""The start-up checks: every way Kafka can be set up wrong is named."""

from stopsms.adapters.selfcheck import TopicState, producer_problems, topic_problems

EXPECTED = [("stopsms.suppressions.v1", {"cleanup.policy": "compact"})]
GOOD = TopicState(12, 3, {"cleanup.policy": "compact", "min.insync.replicas": "2"})


def test_a_topic_as_the_platform_needs_it_has_no_problem_even_in_production() -> None:
    found = {"stopsms.suppressions.v1": GOOD}
    assert topic_problems(EXPECTED, found, 12, production=True) == []


def test_missing_repartitioned_or_deleting_topics_are_refused() -> None:
    assert "does not exist" in topic_problems(EXPECTED, {}, 12, production=False)[0]
    wrong = TopicState(6, 1, {"cleanup.policy": "delete"})
    problems = topic_problems(EXPECTED, {"stopsms.suppressions.v1": wrong}, 12, production=False)
    assert len(problems) == 2
    assert "6 partitions" in problems[0] and "must be compact" in problems[1]


def test_production_needs_replication_insync_replicas_and_clean_elections() -> None:
    fragile = TopicState(
        12, 1, {"cleanup.policy": "compact", "unclean.leader.election.enable": "true"}
    )
    found = {"stopsms.suppressions.v1": fragile}
    assert topic_problems(EXPECTED, found, 12, production=False) == []
    problems = topic_problems(EXPECTED, found, 12, production=True)
    assert [p.split("; ")[-1] if "; " in p else p for p in problems] == [
        "production needs at least 3",
        "production needs at least 2",
        "topic stopsms.suppressions.v1 allows unclean leader election: an acknowledged "
        "record could be lost",
    ]


def test_producers_must_wait_for_all_replicas_and_be_idempotent() -> None:
    assert producer_problems("intake", -1, True) == []
    assert producer_problems("intake", "all", True) == []
    assert len(producer_problems("faust", 1, False)) == 2
