from diffinv.cli import main

raise SystemExit(main())
