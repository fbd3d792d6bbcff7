"""Reusable Amaranth building blocks: multipliers, requantizer, UART, neuron units, memories."""
