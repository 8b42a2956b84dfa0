import sys

from calculator_client.cli import main

sys.exit(main())
