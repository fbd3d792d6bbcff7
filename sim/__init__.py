"""Golden models, simulation harnesses, waveforms and activity estimates."""
