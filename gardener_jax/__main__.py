import sys

from gardener_jax.cli import main

sys.exit(main())
