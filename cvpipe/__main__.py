from cvpipe.cli import main

raise SystemExit(main())
