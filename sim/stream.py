"""Testbench helpers for :mod:`amaranth.lib.stream` interfaces (Amaranth 0.5 async testbenches)."""

__all__ = ["stream_collect", "stream_get", "stream_put"]


async def stream_put(ctx, stream, payload):
    """Offer ``payload`` on ``stream`` and return after the clock edge that transfers it."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Accept one transfer from ``stream`` and return its payload."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def stream_collect(ctx, stream, count, results, *, ready=lambda: True):
    """Take ``count`` transfers from ``stream`` into ``results``, checking the stream rules.

    ``ready()`` decides each cycle whether the consumer is ready (random backpressure). A payload
    offered while not taken must stay valid and unchanged until its transfer (``AssertionError``
    otherwise). ``ready`` is left low at the end.
    """
    pending = None          # a valid payload not yet taken
    while len(results) < count:
        take = bool(ready())
        ctx.set(stream.ready, take)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if pending is not None:
            assert valid, "valid dropped before the transfer"
            assert payload == pending, "payload changed before the transfer"
        if valid and take:
            results.append(payload)
            pending = None
        elif valid:
            pending = payload
    ctx.set(stream.ready, 0)
