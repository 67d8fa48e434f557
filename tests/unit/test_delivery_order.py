"""The ingest agent applies each partition's messages in order, none skipped (``stream.delivery_order``)."""

from __future__ import annotations

from stream.delivery_order import DeliveryOrder


def test_in_order_messages_are_applied_and_a_jump_is_read_again() -> None:
    order = DeliveryOrder()
    assert [order.check(2, o) for o in (10, 11, 12)] == ["apply"] * 3
    assert order.check(2, 14) == "reread"  # 13 never reached the agent
    assert order.expected(2) == 13 and order.rereads == 1
    assert order.check(2, 15) == "reread"  # still missing: nothing after the hole is applied
    assert [order.check(2, o) for o in (12, 13, 14, 15)] == ["skip", "apply", "apply", "apply"]


def test_partitions_are_independent_and_an_assignment_forgets() -> None:
    order = DeliveryOrder()
    assert order.check(0, 5) == "apply" and order.check(1, 100) == "apply"
    assert order.check(0, 6) == "apply" and order.check(1, 101) == "apply"
    order.forget()  # faust seeks to the committed offsets after an assignment
    assert order.check(0, 3) == "apply" and order.expected(0) == 4


def test_a_gap_that_does_not_come_back_is_given_up_after_a_bounded_wait() -> None:
    now = [0.0]
    order = DeliveryOrder(clock=lambda: now[0])
    assert order.check(0, 1) == "apply"
    assert order.check(0, 3) == "reread"
    now[0] = 1.0
    assert order.check(0, 4) == "reread"
    now[0] = 2.5  # past GIVE_UP_S: no stall, the jump is accepted and logged
    assert order.check(0, 5) == "apply" and order.given_up == 1 and order.expected(0) == 6
