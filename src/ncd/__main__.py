import sys

from ncd.cli import main

sys.exit(main())
