"""Problems: synthetic benchmarks with known fronts, and merging problems over real models."""
