"""The rate-limit tests in cluster mode: counters of one request live in several slots."""

from tests.services.test_rate_limits import (  # noqa: F401
    no_leftover_jobs,
    test_a_user_over_the_request_limit_gets_429_and_other_users_do_not,
    test_blocks_taken_by_two_replicas_never_exceed_the_limit,
    test_internal_calls_have_their_own_higher_limit_per_service_key,
    test_message_appends_have_their_own_limit_and_a_refused_one_writes_nothing,
    test_sliding_window_counter_strategy_enforces_the_same_limits,
    test_the_tenant_quota_counts_every_user_of_the_tenant,
    test_websocket_connections_are_limited_per_user,
)
