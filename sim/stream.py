"""Testbench helpers for :mod:`amaranth.lib.stream` interfaces (Amaranth 0.5 async testbenches)."""

__all__ = ["stream_get", "stream_put"]


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
