"""NumPy golden models. Nothing here imports Amaranth: these are the independent reference."""
