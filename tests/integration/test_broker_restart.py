"""A worker's broker connection torn down with a message still unacknowledged must not end the worker."""

from __future__ import annotations

from typing import Any

import redis
from kombu import Connection, Exchange, Queue

from continuity.redisd import RedisServer
from workers import broker


def taken_unacked(url: str) -> tuple[Any, Any]:
    """A channel holding one message taken without acknowledging it (an acks_late task running), and the message."""
    broker.install()
    broker.install()  # idempotent: imported by every process that loads the app
    conn = Connection(url)
    queue = Queue("t", Exchange("t"), "t")
    with conn.Producer() as producer:
        producer.publish({"x": 1}, exchange=queue.exchange, routing_key="t", declare=[queue])
    channel = conn.default_channel
    msg = queue(channel).get(no_ack=False)
    assert msg is not None and len(channel.qos._delivered) == 1
    return channel, msg


def unacked(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return client.hlen("unacked")
    finally:
        client.close()


def test_closing_a_torn_down_channel_leaves_unacked_messages_to_the_visibility_timeout(own_redis: RedisServer) -> None:
    channel, _msg = taken_unacked(own_redis.url)
    own_redis.kill()  # Redis restarts under the worker ...
    channel.connection.client = None  # ... and Celery's error path has already let go of the connection
    channel._pool = None
    channel.close()  # kombu raised AttributeError here (the worker's "Unrecoverable error")
    own_redis.start()
    assert unacked(own_redis.url) == 1, "the message waits in the unacked hash for the visibility timeout"


def test_acking_on_a_channel_closed_by_the_reconnection_leaves_the_message_unacked(own_redis: RedisServer) -> None:
    """The task finished after the worker reconnected; its ack goes to the old channel, whose connection is gone."""
    channel, msg = taken_unacked(own_redis.url)
    channel.connection = None  # what the channel's close left behind
    channel._pool = None
    msg.ack()  # kombu raised AttributeError here (the worker's "Unrecoverable error")
    assert unacked(own_redis.url) == 1, "not acknowledged: redelivered after the visibility timeout"
