"""``python -m bench`` (``make bench``): every benchmark, then docs/performance.md."""

from bench.suite import main

raise SystemExit(main())
