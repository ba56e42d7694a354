"""Image analysis for Modomo: pure functions that measure photographs (no I/O, no workers)."""
