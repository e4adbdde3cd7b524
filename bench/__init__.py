"""sd-watchdog benchmarks: `make bench` (python -m bench)."""
