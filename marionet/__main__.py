from marionet.cli import main

raise SystemExit(main())
