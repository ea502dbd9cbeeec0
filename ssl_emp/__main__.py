import sys

from ssl_emp.cli import main

sys.exit(main())
