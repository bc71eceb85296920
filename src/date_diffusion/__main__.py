import sys

from date_diffusion.cli.main import main

sys.exit(main())
